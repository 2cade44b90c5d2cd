// A sidecar pair over real mTLS on 127.0.0.1: app -> outbound -> inbound -> app,
// peer identity reaching the filter, identity checks both ways, readiness,
// reason codes, metrics, and certificate rotation under load.
import http from 'node:http';
import https from 'node:https';
import { X509Certificate } from 'node:crypto';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildFixture } from './build-fixtures.ts';
import { collectLog, makeTestBundle, request, startEchoApp } from './helpers.ts';
import { newSidecar, startMesh, type TestMesh } from './mesh.ts';
import { Sidecar } from '../../runtime/sidecar.ts';
import { createCa, issueLeaf, spiffeIdFor } from './pki.ts';

let mesh: TestMesh;

beforeAll(async () => {
  const probe = await buildFixture('probe');
  mesh = await startMesh(makeTestBundle([{ name: 'probe', wasm: probe }]));
});

afterAll(async () => {
  await mesh?.stop();
});

function outboundPort(): number {
  return mesh.web.addresses().outbound.port;
}

describe('sidecar pair over mTLS', () => {
  it('carries a request app -> outbound -> inbound -> app, with the peer identity at the inbound filter', async () => {
    const res = await request(outboundPort(), { path: '/items/7', headers: { host: 'catalog:8080', traceparent: '00-abc-def-01' } });
    expect(res.status).toBe(200);
    expect(res.headers['x-app']).toBe('catalog');
    const seen = (JSON.parse(res.body) as { url: string; headers: Record<string, string> });
    expect(seen.url).toBe('/items/7');
    // The inbound (catalog) filter ran last and saw the web sidecar's certificate identity.
    expect(seen.headers['x-seen-principal']).toBe(spiffeIdFor('web'));
    expect(seen.headers['x-seen-direction']).toBe('1');
    expect(seen.headers['x-seen-service']).toBe('catalog');
    // An invalid traceparent is replaced by a new trace (test/dataplane/observability.test.ts).
    expect(seen.headers.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    expect(seen.headers.host).toBe('catalog:8080');
    // Response filters of both sidecars ran.
    expect(res.headers['x-chain']).toBe('probe,probe');
  });

  it('is ready once chain, endpoints and certificate are applied, and reports metrics, stats and config', async () => {
    const admin = mesh.web.addresses().admin.port;
    expect((await request(admin, { path: '/ready' })).status).toBe(200);
    await request(outboundPort(), { headers: { host: 'catalog' } });
    const metrics = (await request(admin, { path: '/metrics' })).body;
    expect(metrics).toMatch(/istio_requests_total\{reporter="source",source_workload="web",destination_service="catalog",destination_version="v1",response_code="200",response_flags="-",request_protocol="http",grpc_response_status=""\} \d+/);
    expect(metrics).toMatch(/istio_request_duration_milliseconds_bucket\{/);
    const inboundMetrics = (await request(mesh.catalog.addresses().admin.port, { path: '/metrics' })).body;
    expect(inboundMetrics).toMatch(/istio_requests_total\{reporter="destination",source_workload="web",destination_service="catalog"/);
    const stats = JSON.parse((await request(admin, { path: '/stats' })).body) as { chainVersion: string; metrics: Array<{ name: string }> };
    expect(stats.chainVersion).toBe(mesh.web.chainVersion());
    expect(stats.metrics.some((m) => m.name === 'istio_requests_total')).toBe(true);
    const config = JSON.parse((await request(admin, { path: '/config' })).body) as { chainVersion: string; certificate: { spiffeId: string; notAfter: string } };
    expect(config.chainVersion).toBe(mesh.web.chainVersion());
    expect(config.certificate.spiffeId).toBe(spiffeIdFor('web'));
    expect(Date.parse(config.certificate.notAfter)).toBeGreaterThan(Date.now());
  });

  it('answers unknown services and versions without endpoints with reason codes', async () => {
    const unknown = await request(outboundPort(), { headers: { host: 'nosuch' } });
    expect(unknown.status).toBe(503);
    expect(unknown.headers['x-mesh-reason']).toBe('unknown-service');
    const noVersion = await request(outboundPort(), { headers: { host: 'catalog', 'x-test-action': 'route:v9' } });
    expect(noVersion.status).toBe(503);
    expect(noVersion.headers['x-mesh-reason']).toBe('no-healthy-endpoint');
    const v1 = await request(outboundPort(), { headers: { host: 'catalog', 'x-test-action': 'route:v1' } });
    expect(v1.status).toBe(200);
    const access = mesh.webLogs.entries.filter((e) => e.direction === 'outbound' && e.status === 503);
    expect(access.some((e) => e.reason === 'unknown-service')).toBe(true);
  });

  it('refuses an upstream whose certificate names another identity, and unreachable endpoints', async () => {
    mesh.web.applyEndpoints({
      services: {
        ...mesh.endpoints.services,
        imposter: { endpoints: [{ instance: 'imposter-0', address: '127.0.0.1', port: mesh.catalog.addresses().inbound.port, version: 'v1', spiffeId: spiffeIdFor('imposter') }] },
        gone: { endpoints: [{ instance: 'gone-0', address: '127.0.0.1', port: 1, version: 'v1', spiffeId: spiffeIdFor('gone') }] },
      },
    });
    try {
      const mismatch = await request(outboundPort(), { headers: { host: 'imposter' } });
      expect(mismatch.status).toBe(502);
      expect(mismatch.headers['x-mesh-reason']).toBe('upstream-identity-mismatch');
      const gone = await request(outboundPort(), { headers: { host: 'gone' } });
      expect(gone.status).toBe(502);
      expect(gone.headers['x-mesh-reason']).toBe('upstream-connect-failed');
    } finally {
      mesh.web.applyEndpoints(mesh.endpoints);
    }
  });

  it('inbound refuses clients without a mesh certificate', async () => {
    const port = mesh.catalog.addresses().inbound.port;
    const otherCa = await createCa('not the mesh');
    const stranger = await issueLeaf(otherCa, 'web');
    const attempt = (opts: https.RequestOptions) =>
      new Promise<string>((resolve) => {
        const req = https.request({ host: '127.0.0.1', port, path: '/', rejectUnauthorized: false, agent: false, ...opts }, (res) => {
          res.resume();
          resolve(`status ${res.statusCode}`);
        });
        req.on('error', (err) => resolve(`error ${err.message}`));
        req.end();
      });
    expect(await attempt({})).toMatch(/^error/);
    expect(await attempt({ cert: stranger.certPem, key: stranger.keyPem })).toMatch(/^error/);
  });

  it('rotates certificates on both sides without failing a request', async () => {
    let failures = 0;
    let done = 0;
    const deadline = Date.now() + 10_000;
    const total = 400;
    const worker = async () => {
      while (done < total && Date.now() < deadline) {
        done++;
        const r = await request(outboundPort(), { headers: { host: 'catalog' } }).catch(() => undefined);
        if (r?.status !== 200) failures++;
      }
    };
    let lastCatalogCert = '';
    const rotations = (async () => {
      for (let i = 0; i < 5; i++) {
        const w = await issueLeaf(mesh.ca, 'web');
        const c = await issueLeaf(mesh.ca, 'catalog');
        lastCatalogCert = c.certPem;
        mesh.web.applyCertificate(w.payload, w.keyPem);
        mesh.catalog.applyCertificate(c.payload, c.keyPem);
        await new Promise((r) => setTimeout(r, 30));
      }
    })();
    await Promise.all([worker(), worker(), worker(), worker(), rotations]);
    expect(done).toBeGreaterThan(50);
    expect(failures).toBe(0);
    // The inbound listener now presents the last certificate issued.
    const config = JSON.parse((await request(mesh.catalog.addresses().admin.port, { path: '/config' })).body) as { certificate: { spiffeId: string } };
    expect(config.certificate.spiffeId).toBe(spiffeIdFor('catalog'));
    const served = await new Promise<string>((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port: mesh.catalog.addresses().inbound.port, rejectUnauthorized: false }, () => {
        resolve(s.getPeerCertificate().serialNumber);
        s.destroy();
      });
      s.on('error', reject);
    });
    expect(served).toBe(new X509Certificate(lastCatalogCert).serialNumber);

    // Tries after the rotation use the new pools (the old ones keep no idle connection): 20 sequential
    // requests open at most a couple of connections to catalog's inbound listener, not one each.
    const opened = async (): Promise<number> => {
      const text = (await request(mesh.catalog.addresses().admin.port, { path: '/metrics' })).body;
      return [...text.matchAll(/^istio_tcp_connections_opened_total\{[^}]*reporter="destination"[^}]*\} (\d+)/gm)].reduce((a, m) => a + Number(m[1]), 0);
    };
    const before = await opened();
    for (let i = 0; i < 20; i++) expect((await request(outboundPort(), { headers: { host: 'catalog' } })).status).toBe(200);
    expect((await opened()) - before).toBeLessThanOrEqual(2);
  });
});

describe('sidecar without a certificate', () => {
  it('answers 503 no-certificate on outbound, refuses TLS on inbound and is not ready', async () => {
    const app = await startEchoApp('lonely');
    const logs = collectLog();
    const s = newSidecar('lonely', app, { log: logs.log });
    await s.start();
    try {
      const res = await request(s.addresses().outbound.port, { headers: { host: 'catalog' } });
      expect(res.status).toBe(503);
      expect(res.headers['x-mesh-reason']).toBe('no-certificate');
      const ca = await createCa();
      const client = await issueLeaf(ca, 'web');
      const outcome = await new Promise<string>((resolve) => {
        const req = https.request(
          { host: '127.0.0.1', port: s.addresses().inbound.port, cert: client.certPem, key: client.keyPem, ca: ca.certPem, agent: false },
          (r) => resolve(`status ${r.statusCode}`),
        );
        req.on('error', (e) => resolve(`error ${e.message}`));
        req.end();
      });
      expect(outcome).toMatch(/^error/);
      expect((await request(s.addresses().admin.port, { path: '/ready' })).status).toBe(503);
    } finally {
      await s.stop();
      await app.close();
    }
  });
});

describe('graceful stop', () => {
  it('finishes a request in flight, then closes the listeners', async () => {
    const slow = http.createServer((_req, res) => {
      setTimeout(() => res.end('slow answer'), 300);
    });
    await new Promise<void>((r) => slow.listen(0, '127.0.0.1', r));
    const slowPort = (slow.address() as import('node:net').AddressInfo).port;
    const s = new Sidecar({
      node: { instance: 'slow-0', service: 'slow', version: 'v1', namespace: 'default', serviceAccount: 'slow' },
      inbound: { host: '127.0.0.1', port: 0 },
      outbound: { host: '127.0.0.1', port: 0 },
      admin: { host: '127.0.0.1', port: 0 },
      app: { host: '127.0.0.1', port: slowPort },
      log: () => {},
    });
    await s.start();
    const serverCert = await issueLeaf(mesh.ca, 'slow');
    s.applyCertificate(serverCert.payload, serverCert.keyPem);
    const client = await issueLeaf(mesh.ca, 'web');
    const port = s.addresses().inbound.port;
    const call = () =>
      new Promise<string>((resolve) => {
        const req = https.request(
          { host: '127.0.0.1', port, cert: client.certPem, key: client.keyPem, ca: mesh.ca.certPem, checkServerIdentity: () => undefined, agent: false },
          (r) => {
            let body = '';
            r.on('data', (c: Buffer) => (body += c.toString()));
            r.on('end', () => resolve(`${r.statusCode} ${body}`));
          },
        );
        req.on('error', (e) => resolve(`error ${e.message}`));
        req.end();
      });
    const inFlight = call();
    await new Promise((r) => setTimeout(r, 100));
    const stopped = s.stop();
    expect(await inFlight).toBe('200 slow answer');
    await stopped;
    expect(await call()).toMatch(/^error/);
    slow.close();
  });
});
