// The outbound router under protocol/traffic.ts policies, against fake
// catalog endpoints over real mTLS that fail on purpose: load balancing
// (round robin, least request, peak-EWMA, consistent hash), request and
// per-try timeouts, retries with backoff and a budget, circuit breaking,
// outlier detection with readmission and its percentage cap, mirroring, a
// route's policy over the defaults; and graceful drain of `meshc proxy` on
// SIGTERM.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import type { ServiceTraffic } from '../../protocol/traffic.ts';
import { request } from '../runtime/helpers.ts';
import { concurrently, startRouterMesh, type RouterMesh } from './router-mesh.ts';
import { startApp } from './support.ts';

let mesh: RouterMesh | undefined;

afterEach(async () => {
  await mesh?.stop();
  mesh = undefined;
});

const three = [{ instance: 'a' }, { instance: 'b' }, { instance: 'c' }];
const traffic = (t: Partial<ServiceTraffic>): ServiceTraffic => ({ defaults: {}, routes: {}, ...t });
const hits = (m: RouterMesh) => m.endpoints.map((e) => e.hits);

describe('load balancing', () => {
  it('round robin spreads sequential requests evenly', async () => {
    mesh = await startRouterMesh(traffic({ loadBalancer: { kind: 'round-robin' } }), three);
    for (let i = 0; i < 30; i++) expect((await mesh.send()).status).toBe(200);
    expect(hits(mesh)).toEqual([10, 10, 10]);
  });

  for (const kind of ['least-request', 'peak-ewma'] as const) {
    it(`${kind} steers concurrent load away from a slow endpoint`, async () => {
      mesh = await startRouterMesh(traffic({ loadBalancer: kind === 'peak-ewma' ? { kind, decayMs: 10_000 } : { kind } }), three);
      mesh.endpoints[0]!.behaviour = { kind: 'delay', ms: 150 };
      const results = await concurrently(60, 6, () => mesh!.send());
      expect(results.every((r) => r.status === 200)).toBe(true);
      // Round robin would send it exactly a third (20).
      expect(mesh.endpoints[0]!.hits).toBeLessThan(12);
    });
  }

  it('consistent hash keeps a key on one endpoint and spreads keys', async () => {
    mesh = await startRouterMesh(traffic({ loadBalancer: { kind: 'consistent-hash', hashOn: { header: 'x-user' } } }), three);
    const owner = new Map<string, string>();
    for (let round = 0; round < 3; round++) {
      for (let u = 0; u < 20; u++) {
        const r = await mesh.send({ 'x-user': `user-${u}` });
        const inst = String(r.headers['x-instance']);
        if (round === 0) owner.set(`user-${u}`, inst);
        else expect(inst).toBe(owner.get(`user-${u}`));
      }
    }
    expect(new Set(owner.values()).size).toBeGreaterThanOrEqual(2);
  });
});

describe('timeouts and retries', () => {
  it('answers 504 upstream-timeout after the request timeout', async () => {
    mesh = await startRouterMesh(traffic({ defaults: { timeoutMs: 200 } }), [{ instance: 'a' }]);
    mesh.endpoints[0]!.behaviour = { kind: 'hang' };
    const r = await mesh.send();
    expect(r.status).toBe(504);
    expect(r.headers['x-mesh-reason']).toBe('upstream-timeout');
    expect(r.ms).toBeGreaterThanOrEqual(190);
  });

  it('a route policy overrides the defaults (selected by mesh.route.id)', async () => {
    const t = traffic({ defaults: { timeoutMs: 2_000 }, routes: { 'catalog/route/fast': { timeoutMs: 100 } } });
    mesh = await startRouterMesh(t, [{ instance: 'a' }]);
    mesh.endpoints[0]!.behaviour = { kind: 'delay', ms: 300 };
    expect((await mesh.send()).status).toBe(200);
    const fast = await mesh.send({ 'x-route-id': 'catalog/route/fast' });
    expect(fast.status).toBe(504);
  });

  it('retries 5xx on another endpoint and the client sees only successes', async () => {
    const retries = { attempts: 2, retryOn: ['5xx'], backoffBaseMs: 5, backoffMaxMs: 20 };
    mesh = await startRouterMesh(traffic({ defaults: { retries } }), [{ instance: 'a' }, { instance: 'b' }]);
    mesh.endpoints[0]!.behaviour = { kind: 'status', status: 503 };
    for (let i = 0; i < 10; i++) {
      const r = await mesh.send();
      expect(r.status).toBe(200);
      expect(r.headers['x-instance']).toBe('b');
    }
    expect(mesh.endpoints[0]!.hits).toBeGreaterThan(0);
    expect(mesh.logs.some((e) => e.attempts === 2 && e.status === 200)).toBe(true);
  });

  it('retries resets and connect failures, but only the conditions asked for', async () => {
    mesh = await startRouterMesh(traffic({ defaults: { retries: { attempts: 1, retryOn: ['reset'], backoffBaseMs: 1, backoffMaxMs: 5 } } }), [{ instance: 'a' }, { instance: 'b' }]);
    mesh.endpoints[0]!.behaviour = { kind: 'reset' };
    for (let i = 0; i < 6; i++) expect((await mesh.send()).status).toBe(200);
    // 503 is not a reset: with retryOn [reset] it reaches the client.
    mesh.endpoints[0]!.behaviour = { kind: 'status', status: 503 };
    mesh.endpoints[1]!.behaviour = { kind: 'status', status: 503 };
    expect((await mesh.send()).status).toBe(503);
  });

  it('a per-try timeout moves on to the next endpoint', async () => {
    const retries = { attempts: 1, retryOn: ['5xx'], perTryTimeoutMs: 100, backoffBaseMs: 1, backoffMaxMs: 5 };
    mesh = await startRouterMesh(traffic({ defaults: { timeoutMs: 3_000, retries } }), [{ instance: 'a' }, { instance: 'b' }]);
    mesh.endpoints[0]!.behaviour = { kind: 'hang' };
    for (let i = 0; i < 4; i++) {
      const r = await mesh.send();
      expect(r.status).toBe(200);
      expect(r.headers['x-instance']).toBe('b');
    }
    expect(mesh.logs.some((e) => e.attempts === 2 && Number(e.duration_ms) >= 95)).toBe(true);
  });

  it('the retry budget caps retries at a fraction of the load', async () => {
    const retries = { attempts: 3, retryOn: ['5xx'], backoffBaseMs: 1, backoffMaxMs: 2 };
    mesh = await startRouterMesh(traffic({ defaults: { retries }, retryBudget: { percent: 20, minRetriesPerSecond: 1 } }), [{ instance: 'a' }, { instance: 'b' }]);
    for (const e of mesh.endpoints) e.behaviour = { kind: 'status', status: 503 };
    const n = 50;
    for (let i = 0; i < n; i++) expect((await mesh.send()).status).toBe(503);
    const total = hits(mesh).reduce((a, b) => a + b, 0);
    // Without a budget: 4 tries each (200). With it: at most 20% of 50 + 1/s × 10 s.
    expect(total).toBeGreaterThan(n);
    expect(total - n).toBeLessThanOrEqual(0.2 * n + 10);
    expect(mesh.logs.some((e) => e.retry_budget_spent === true)).toBe(true);
  });
});

describe('circuit breaking', () => {
  it('refuses requests beyond maxRequests with 503 circuit-open', async () => {
    mesh = await startRouterMesh(traffic({ connectionLimits: { maxRequests: 2 } }), [{ instance: 'a' }]);
    mesh.endpoints[0]!.behaviour = { kind: 'delay', ms: 400 };
    const slow = [mesh.send(), mesh.send()];
    await new Promise((r) => setTimeout(r, 100));
    const over = await mesh.send();
    expect(over.status).toBe(503);
    expect(over.headers['x-mesh-reason']).toBe('circuit-open');
    expect(over.ms).toBeLessThan(300);
    expect((await Promise.all(slow)).map((r) => r.status)).toEqual([200, 200]);
    expect((await mesh.send()).status).toBe(200);
  });

  it('queues up to maxPendingRequests beyond maxConnections, refuses the rest', async () => {
    mesh = await startRouterMesh(traffic({ connectionLimits: { maxConnections: 1, maxPendingRequests: 1 } }), [{ instance: 'a' }]);
    mesh.endpoints[0]!.behaviour = { kind: 'delay', ms: 300 };
    const first = mesh.send();
    await new Promise((r) => setTimeout(r, 80));
    const queued = mesh.send();
    await new Promise((r) => setTimeout(r, 40));
    const refused = await mesh.send();
    expect(refused.status).toBe(503);
    expect(refused.headers['x-mesh-reason']).toBe('circuit-open');
    const [a, b] = await Promise.all([first, queued]);
    expect([a.status, b.status]).toEqual([200, 200]);
    // The queued request waited for the one connection.
    expect(b.ms).toBeGreaterThanOrEqual(450);
  });
});

describe('outlier detection', () => {
  it('ejects an endpoint after consecutive 5xx, readmits it after the ejection time', async () => {
    const od = { consecutive5xx: 3, intervalMs: 50, baseEjectionMs: 600, maxEjectionPercent: 50 };
    mesh = await startRouterMesh(traffic({ outlierDetection: od }), three);
    const bad = mesh.endpoints[0]!;
    bad.behaviour = { kind: 'status', status: 500 };
    for (let i = 0; i < 12; i++) await mesh.send();
    expect(mesh.logs.filter((e) => e.event === 'endpoint-ejected' && e.endpoint === 'a')).toHaveLength(1);
    const atEjection = bad.hits;
    expect(atEjection).toBe(3);
    bad.behaviour = { kind: 'ok' };
    for (let i = 0; i < 12; i++) expect((await mesh.send()).status).toBe(200);
    expect(bad.hits).toBe(atEjection);
    await new Promise((r) => setTimeout(r, 800));
    expect(mesh.logs.some((e) => e.event === 'endpoint-readmitted' && e.endpoint === 'a')).toBe(true);
    for (let i = 0; i < 6; i++) await mesh.send();
    expect(bad.hits).toBeGreaterThan(atEjection);
  });

  it('never ejects more than maxEjectionPercent of the endpoints', async () => {
    const od = { consecutiveGatewayErrors: 2, intervalMs: 50, baseEjectionMs: 10_000, maxEjectionPercent: 50 };
    mesh = await startRouterMesh(traffic({ outlierDetection: od }), three);
    for (const e of mesh.endpoints) e.behaviour = { kind: 'status', status: 502 };
    for (let i = 0; i < 30; i++) await mesh.send();
    // 50% of 3 endpoints: one may be ejected, never two.
    expect(mesh.logs.filter((e) => e.event === 'endpoint-ejected')).toHaveLength(1);
    expect(mesh.logs.some((e) => e.event === 'endpoint-ejection-skipped')).toBe(true);
  });
});

describe('mirroring', () => {
  it('copies a share of requests to the mirror version and ignores its answers', async () => {
    const t = traffic({ defaults: { mirror: { version: 'shadow', percent: 100 } } });
    mesh = await startRouterMesh(t, [{ instance: 'a', version: 'v1' }, { instance: 'm', version: 'shadow' }]);
    mesh.endpoints[1]!.behaviour = { kind: 'status', status: 500 };
    for (let i = 0; i < 5; i++) {
      const r = await mesh.send({ 'x-route-version': 'v1' });
      expect(r.status).toBe(200);
      expect(r.headers['x-instance']).toBe('a');
    }
    await new Promise((r) => setTimeout(r, 100));
    expect(mesh.endpoints[1]!.hits).toBe(5);
    expect(mesh.endpoints[1]!.authorities.every((a) => a === 'catalog-shadow')).toBe(true);
  });

  it('copies a request body to the mirror once it is complete, and does not mirror a body past the 64 KiB kept for replays', async () => {
    const t = traffic({ defaults: { mirror: { version: 'shadow', percent: 100 } } });
    mesh = await startRouterMesh(t, [{ instance: 'a', version: 'v1' }, { instance: 'm', version: 'shadow' }]);
    const port = mesh.web.addresses().outbound.port;
    const small = 'order=' + 'x'.repeat(2_000);
    const r = await request(port, { method: 'POST', path: '/orders', headers: { host: 'catalog', 'x-route-version': 'v1', 'content-type': 'text/plain' }, body: small });
    expect(r.status).toBe(200);
    const large = 'y'.repeat(70 * 1024);
    const r2 = await request(port, { method: 'POST', path: '/orders', headers: { host: 'catalog', 'x-route-version': 'v1' }, body: large });
    expect(r2.status).toBe(200);
    await new Promise((r) => setTimeout(r, 200));
    const [primary, mirror] = mesh.endpoints;
    expect(primary!.bodies).toEqual([small, large]);
    expect(mirror!.bodies).toEqual([small]);
    expect(mirror!.authorities).toEqual(['catalog-shadow']);
  });
});

describe('graceful drain', () => {
  it('on SIGTERM, meshc proxy stops accepting, finishes the request in flight, and exits 0', async () => {
    const app = await startApp();
    const root = fileURLToPath(new URL('../..', import.meta.url));
    const proc = spawn(process.execPath, [`${root}bin/meshc`, 'proxy', '--listen', '127.0.0.1:0', '--upstream', `http://127.0.0.1:${app.port}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      const port = await new Promise<number>((resolve, reject) => {
        createInterface({ input: proc.stdout }).on('line', (line) => {
          const e = JSON.parse(line) as { event?: string; listen?: { port: number } };
          if (e.event === 'listening' && e.listen) resolve(e.listen.port);
        });
        proc.once('exit', (code) => reject(new Error(`exited ${code}`)));
      });
      const inFlight = request(port, { path: '/slow/600', headers: { host: 'app' }, agent: false });
      await new Promise((r) => setTimeout(r, 150));
      const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
      proc.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 100));
      // Not accepting any more.
      await expect(request(port, { path: '/', headers: { host: 'app' }, agent: false })).rejects.toThrow(/ECONNREFUSED/);
      const r = await inFlight;
      expect(r.status).toBe(200);
      expect(r.body).toBe('slow');
      expect(await exited).toBe(0);
    } finally {
      proc.kill('SIGKILL');
      await app.close();
    }
  });
});
