// One policy, compiled by the real compiler to proxy-wasm and loaded into real
// sidecars talking mTLS on 127.0.0.1, decides real requests: allow, deny (by
// identity, method and path), header routing, a weighted split, delay, abort and
// a rate limit. Clients: the frontend and an "intruder" workload, each behind
// its own sidecar; servers: catalog v1 and v2, each behind its own sidecar.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compilePolicies, shutdownCompiler } from '../../compiler/index.ts';
import type { Bundle } from '../../protocol/bundle.ts';
import type { EndpointsPayload } from '../../protocol/wire.ts';
import type { Sidecar } from '../../runtime/sidecar.ts';
import { collectLog, request, startEchoApp, type EchoApp } from '../runtime/helpers.ts';
import { newSidecar } from '../runtime/mesh.ts';
import { createCa, issueLeaf, spiffeIdFor } from '../runtime/pki.ts';

const POLICY = `
service catalog {
  route beta {
    when header "x-user-group" == "beta"
    to v2
  }
  route default {
    to v1 70, v2 30
  }
  fault slow {
    when path prefix "/items/slow"
    delay 300ms percent 100
  }
  fault chaos {
    when header "x-chaos" present
    abort 503 percent 100
  }
  allow frontend-reads {
    from "spiffe://mesh.local/ns/default/sa/frontend"
    when method in [GET, HEAD]
  }
  deny no-admin {
    when path prefix "/admin"
  }
  rate_limit limited {
    key source
    rate 1/m burst 3
    when path prefix "/limited"
  }
}
`;

interface Workload {
  sidecar: Sidecar;
  app: EchoApp;
  logs: ReturnType<typeof collectLog>;
}

let bundle: Bundle;
const workloads = new Map<string, Workload>();

async function startWorkload(name: string, service: string, version: string): Promise<Workload> {
  const app = await startEchoApp(name);
  const logs = collectLog();
  const sidecar = newSidecar(service, app, { log: logs.log, node: { instance: name, service, version, namespace: 'default', serviceAccount: service } });
  await sidecar.start();
  const w = { sidecar, app, logs };
  workloads.set(name, w);
  return w;
}

function outboundPort(name: string): number {
  const w = workloads.get(name);
  if (!w) throw new Error(`no workload ${name}`);
  return w.sidecar.addresses().outbound.port;
}

const call = (from: string, path: string, headers: Record<string, string> = {}, method = 'GET') =>
  request(outboundPort(from), { path, method, headers: { host: 'catalog', ...headers } });

beforeAll(async () => {
  const result = await compilePolicies([{ path: 'catalog.meshpolicy', text: POLICY }]);
  await shutdownCompiler();
  expect(result.diagnostics.filter((d) => d.severity === 'error')).toEqual([]);
  bundle = result.bundle!;

  const ca = await createCa();
  await startWorkload('frontend-v1-0', 'frontend', 'v1');
  await startWorkload('intruder-v1-0', 'intruder', 'v1');
  const v1 = await startWorkload('catalog-v1-0', 'catalog', 'v1');
  const v2 = await startWorkload('catalog-v2-0', 'catalog', 'v2');
  const endpoints: EndpointsPayload = {
    services: {
      catalog: {
        endpoints: [
          { instance: 'catalog-v1-0', address: '127.0.0.1', port: v1.sidecar.addresses().inbound.port, version: 'v1', spiffeId: spiffeIdFor('catalog') },
          { instance: 'catalog-v2-0', address: '127.0.0.1', port: v2.sidecar.addresses().inbound.port, version: 'v2', spiffeId: spiffeIdFor('catalog') },
        ],
      },
    },
  };
  for (const [name, w] of workloads) {
    await w.sidecar.applyBundle(bundle);
    w.sidecar.applyEndpoints(endpoints);
    const service = name.split('-')[0]!;
    const cert = await issueLeaf(ca, service);
    w.sidecar.applyCertificate(cert.payload, cert.keyPem);
  }
});

afterAll(async () => {
  for (const w of workloads.values()) {
    await w.sidecar.stop();
    await w.app.close();
  }
});

describe('a compiled policy enforced by sidecars over mTLS', () => {
  it('allows the frontend to read, and the server app sees the request', async () => {
    const res = await call('frontend-v1-0', '/items/1');
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body).url).toBe('/items/1');
  });

  it('denies another identity by the implicit default-deny, naming the rule', async () => {
    const res = await call('intruder-v1-0', '/items/1');
    expect(res.status).toBe(403);
    expect(res.headers['x-mesh-rule']).toBe('catalog/default-deny');
  });

  it('denies a method no allow rule covers', async () => {
    const res = await call('frontend-v1-0', '/items/1', {}, 'DELETE');
    expect(res.status).toBe(403);
    expect(res.headers['x-mesh-rule']).toBe('catalog/default-deny');
  });

  it('lets deny beat allow, and the server sidecar logs the deciding rule', async () => {
    const res = await call('frontend-v1-0', '/admin/users');
    expect(res.status).toBe(403);
    expect(res.headers['x-mesh-rule']).toBe('catalog/deny/no-admin');
    // Authorization runs on the server side, so one of catalog's sidecars logged the decision.
    const serverLogs = ['catalog-v1-0', 'catalog-v2-0'].flatMap((n) => workloads.get(n)!.logs.entries);
    const logged = serverLogs.some((e) => e['rule'] === 'catalog/deny/no-admin');
    expect(logged).toBe(true);
  });

  it('routes by header: every beta request reaches v2', async () => {
    const apps = new Set<string>();
    for (let i = 0; i < 20; i++) {
      const res = await call('frontend-v1-0', '/items/1', { 'x-user-group': 'beta' });
      expect(res.status).toBe(200);
      apps.add(String(res.headers['x-app']));
    }
    expect([...apps]).toEqual(['catalog-v2-0']);
  });

  it('splits by weight 70/30 within statistical bounds', async () => {
    const n = 400;
    let v2 = 0;
    for (let i = 0; i < n; i++) {
      const res = await call('frontend-v1-0', '/items/1');
      expect(res.status).toBe(200);
      if (res.headers['x-app'] === 'catalog-v2-0') v2++;
    }
    // Binomial(400, 0.3): mean 120, sd ≈ 9.2; ±5 sd never fails by chance in practice.
    expect(v2).toBeGreaterThan(120 - 46);
    expect(v2).toBeLessThan(120 + 46);
  });

  it('delays a matching request', async () => {
    const started = performance.now();
    const res = await call('frontend-v1-0', '/items/slow');
    const elapsed = performance.now() - started;
    expect(res.status).toBe(200);
    // A lower bound only: the filter held the request at least the policy's delay.
    expect(elapsed).toBeGreaterThanOrEqual(290);
  });

  it('aborts a matching request with the fault status and rule', async () => {
    const res = await call('frontend-v1-0', '/items/1', { 'x-chaos': '1' });
    expect(res.status).toBe(503);
    expect(res.headers['x-mesh-rule']).toBe('catalog/fault/chaos');
    // The abort happened on the client side: no catalog app saw the request.
    const seen = ['catalog-v1-0', 'catalog-v2-0'].flatMap((n) => workloads.get(n)!.app.seen).filter((s) => s.headers['x-chaos']);
    expect(seen).toEqual([]);
  });

  it('rate-limits per source with 429, retry-after and the rule', async () => {
    const statuses: number[] = [];
    let limited: Awaited<ReturnType<typeof call>> | undefined;
    for (let i = 0; i < 5; i++) {
      // Pinned to v2 by the beta route, so one sidecar's bucket counts every request.
      const res = await call('frontend-v1-0', '/limited', { 'x-user-group': 'beta' });
      statuses.push(res.status);
      if (res.status === 429) limited ??= res;
    }
    expect(statuses).toEqual([200, 200, 200, 429, 429]);
    expect(limited?.headers['x-mesh-rule']).toBe('catalog/rate_limit/limited');
    expect(Number(limited?.headers['retry-after'])).toBeGreaterThan(0);
  });
});
