// HTTP/2 through a sidecar pair on 127.0.0.1, with curl as the client:
// cleartext with prior knowledge on the outbound listener to an h2c app
// (spoken to in HTTP/2 by the server sidecar) and to an HTTP/1.1-only app
// (found out and served in HTTP/1.1), trailers both ways, and the sidecar
// hop header never reaching the app; and HTTP/2 over TLS with ALPN h2 (curl
// --http2 with a mesh client certificate against the inbound listener).
import { execFile } from 'node:child_process';
import http2 from 'node:http2';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEchoApp, type EchoApp } from '../runtime/helpers.ts';
import { issueLeaf } from '../runtime/pki.ts';
import { startH2App, startPair, type H2App, type H2Mesh } from './support.ts';

const run = promisify(execFile);

/** curl with response headers and trailers (-D) and the body, split at the marker. */
async function curl(args: string[]): Promise<{ status: number; version: string; headers: string; body: string }> {
  const { stdout } = await run('curl', ['-sS', '-D', '-', '-o', '-', '-w', '\n@@%{http_code} %{http_version}', '--max-time', '10', ...args]);
  const at = stdout.lastIndexOf('\n@@');
  const [code, version] = stdout.slice(at + 3).split(' ');
  const text = stdout.slice(0, at);
  const split = text.indexOf('\r\n\r\n');
  return { status: Number(code), version: version!, headers: text.slice(0, split).toLowerCase() + text.slice(split + 4).toLowerCase(), body: text.slice(split + 4) };
}

describe('HTTP/2 prior knowledge through a sidecar pair to an h2c app', () => {
  let app: H2App;
  let mesh: H2Mesh;
  beforeAll(async () => {
    app = await startH2App();
    mesh = await startPair(app.port);
  });
  afterAll(async () => {
    await mesh?.stop();
    await app?.close();
  });

  it('carries GET and POST bodies, in HTTP/2 on both sides of the pair', async () => {
    const get = await curl(['--http2-prior-knowledge', '-H', 'x-test: one', `http://127.0.0.1:${mesh.outbound}/items/7?q=1`, '-H', 'host: catalog']);
    expect(get.status).toBe(200);
    expect(get.version).toBe('2');
    expect(get.headers).toContain('x-app: h2');
    const seen = JSON.parse(get.body.slice(get.body.indexOf('{'))) as { method: string; path: string; headers: Record<string, string> };
    expect(seen.path).toBe('/items/7?q=1');
    expect(seen.headers['x-test']).toBe('one');
    // The hop header between the sidecars never reaches the app; the trace context does.
    expect(seen.headers['x-mesh-orig-proto']).toBeUndefined();
    expect(seen.headers.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    const body = 'x'.repeat(100_000);
    const post = await curl(['--http2-prior-knowledge', '--data-binary', body, `http://catalog:${mesh.outbound}/upload`, '--connect-to', `catalog:${mesh.outbound}:127.0.0.1:${mesh.outbound}`]);
    expect(post.status).toBe(200);
    expect(app.seen.at(-1)).toMatchObject({ method: 'POST', path: '/upload', bodyLength: 100_000 });
    // Both requests reached the app as HTTP/2 streams on one pooled session.
    expect(app.sessions).toBe(1);
    const inbound = mesh.catalogLogs.entries.filter((e) => e.direction === 'inbound' && e.path === '/upload');
    expect(inbound.at(-1)).toMatchObject({ status: 200 });
  });

  it('relays response trailers from the app to the HTTP/2 client', async () => {
    const res = await curl(['--http2-prior-knowledge', `http://127.0.0.1:${mesh.outbound}/trailers`, '-H', 'host: catalog']);
    expect(res.status).toBe(200);
    expect(res.body).toContain('with trailers');
    expect(res.headers).toContain('x-checksum: abc123');
  });

  it('relays request trailers from an HTTP/2 client to the app (chunked on the hop between the sidecars)', async () => {
    const session = http2.connect(`http://127.0.0.1:${mesh.outbound}`);
    try {
      const status = await new Promise<number>((resolve, reject) => {
        const s = session.request({ ':method': 'POST', ':path': '/with-trailers', ':authority': 'catalog' }, { waitForTrailers: true });
        s.once('wantTrailers', () => s.sendTrailers({ 'x-req-checksum': 'sum-42' }));
        s.on('response', (h) => resolve(Number(h[':status'])));
        s.on('error', reject);
        s.resume();
        s.write('part one,');
        s.end('part two');
      });
      expect(status).toBe(200);
      expect(app.seen.at(-1)).toMatchObject({ path: '/with-trailers', bodyLength: 17, trailers: { 'x-req-checksum': 'sum-42' } });
    } finally {
      session.close();
    }
  });

  it('serves HTTP/2 over TLS when the client offers ALPN h2 (inbound listener, mTLS client certificate)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'meshc-h2-'));
    try {
      const web = await issueLeaf(mesh.ca, 'web');
      await writeFile(join(dir, 'ca.pem'), mesh.ca.certPem);
      await writeFile(join(dir, 'web.pem'), web.certPem);
      await writeFile(join(dir, 'web.key'), web.keyPem);
      const inbound = mesh.catalog.addresses().inbound.port;
      // -k: the sidecar's certificate names a SPIFFE ID, not a host name; the chain and ALPN are what is tested.
      const tlsArgs = ['-k', '--cacert', join(dir, 'ca.pem'), '--cert', join(dir, 'web.pem'), '--key', join(dir, 'web.key')];
      const res = await curl(['--http2', ...tlsArgs, `https://127.0.0.1:${inbound}/direct`, '-H', 'host: catalog']);
      expect(res.status).toBe(200);
      expect(res.version).toBe('2');
      expect(res.headers).toContain('x-app: h2');
      // An HTTP/2 request is HTTP/2 to the app too.
      expect(app.seen.at(-1)).toMatchObject({ method: 'GET', path: '/direct' });
      const log = mesh.catalogLogs.entries.filter((e) => e.direction === 'inbound' && e.path === '/direct').at(-1);
      expect(log).toMatchObject({ status: 200, endpoint: expect.stringMatching(/^app /) });
      // A client offering only http/1.1 (as the sidecars do) gets HTTP/1.1 on the same listener.
      const h1 = await curl(['--http1.1', ...tlsArgs, `https://127.0.0.1:${inbound}/direct-h1`, '-H', 'host: catalog']);
      expect(h1.version).toBe('1.1');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('answers an unknown service with 503 and the reason, over HTTP/2', async () => {
    const res = await curl(['--http2-prior-knowledge', `http://127.0.0.1:${mesh.outbound}/`, '-H', 'host: nowhere']);
    expect(res.status).toBe(503);
    expect(res.version).toBe('2');
    expect(res.headers).toContain('x-mesh-reason: unknown-service');
  });
});

describe('HTTP/2 on stop', () => {
  it('sends GOAWAY and lets the stream in flight finish', async () => {
    const app = await startH2App();
    const mesh = await startPair(app.port);
    const session = http2.connect(`http://127.0.0.1:${mesh.outbound}`);
    session.on('error', () => {});
    try {
      const goaway = new Promise<void>((r) => session.once('goaway', () => r()));
      const inFlight = new Promise<{ status: number; body: string }>((resolve, reject) => {
        const s = session.request({ ':path': '/slow/400', ':authority': 'catalog' });
        let status = 0;
        let body = '';
        s.on('response', (h) => (status = Number(h[':status'])));
        s.on('data', (c: Buffer) => (body += c.toString()));
        s.on('end', () => resolve({ status, body }));
        s.on('error', reject);
        s.end();
      });
      // The request is at the app when the sidecar is told to stop.
      const deadline = Date.now() + 5_000;
      while (!app.seen.some((e) => e.path === '/slow/400') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      const stopping = mesh.web.stop();
      await goaway;
      expect(await inFlight).toEqual({ status: 200, body: 'slow' });
      await stopping;
    } finally {
      session.destroy();
      await mesh.stop();
      await app.close();
    }
  });
});

describe('HTTP/2 prior knowledge to an HTTP/1.1-only app', () => {
  let app: EchoApp;
  let mesh: H2Mesh;
  beforeAll(async () => {
    app = await startEchoApp('catalog');
    mesh = await startPair(app.port);
  });
  afterAll(async () => {
    await mesh?.stop();
    await app?.close();
  });

  it('falls back to HTTP/1.1 towards the app and keeps doing so', async () => {
    for (let i = 0; i < 3; i++) {
      const res = await curl(['--http2-prior-knowledge', `http://127.0.0.1:${mesh.outbound}/items/${i}`, '-H', 'host: catalog']);
      expect(res.status).toBe(200);
      expect(res.version).toBe('2');
      expect(res.headers).toContain('x-app: catalog');
      const seen = JSON.parse(res.body.slice(res.body.indexOf('{'))) as { url: string; headers: Record<string, string> };
      expect(seen.url).toBe(`/items/${i}`);
      expect(seen.headers['x-mesh-orig-proto']).toBeUndefined();
    }
  });
});
