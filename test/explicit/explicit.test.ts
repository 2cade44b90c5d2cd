// Explicit mode through a real sidecar pair with curl: a per-upstream port
// (HTTP detected, routed to its one service whatever the Host), the HTTP
// proxy port (absolute-form requests; CONNECT tunnels to a mesh service over
// mTLS; CONNECT to non-mesh hosts refused unless egress is allowed).
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { curl, eventually, metricsOf, startTcpMesh, tcpServer, echo, type TcpMesh, type TcpServer } from '../tcp/support.ts';

let mesh: TcpMesh;
let outside: TcpServer;

beforeAll(async () => {
  outside = await tcpServer(echo);
  mesh = await startTcpMesh(() => ({
    upstreams: [{ service: 'catalog', port: 0, listen: { host: '127.0.0.1', port: 0 } }],
    httpProxy: { host: '127.0.0.1', port: 0 },
  }));
});
afterAll(async () => {
  await mesh?.stop();
  await outside?.close();
});

/** Sends raw bytes to a port and collects the answer until the server closes (or `until` holds). */
function rawExchange(port: number, text: string, until?: (got: string) => boolean, waitMs = 5_000): Promise<string> {
  return new Promise((resolve) => {
    const c = net.connect(port, '127.0.0.1');
    let got = '';
    const timer = setTimeout(() => c.destroy(), waitMs);
    c.on('connect', () => c.write(text));
    c.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (until?.(got)) c.destroy();
    });
    c.on('close', () => {
      clearTimeout(timer);
      resolve(got);
    });
    c.on('error', () => {});
  });
}

/** The sum of a metric over every series the sidecar reports as the source (its outbound side). */
function sourceTotal(text: string, name: string): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(name + '{') && line.includes('reporter="source"')) total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

describe('per-upstream ports', () => {
  it('routes curl on the port to its service, whatever the Host', async () => {
    const port = mesh.port('upstream:catalog');
    const r = await curl(['-i', `http://127.0.0.1:${port}/items?id=7`]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^HTTP\/1\.1 200/);
    expect(r.stdout.toLowerCase()).toContain('x-app: catalog');
    const body = JSON.parse(r.stdout.slice(r.stdout.indexOf('\r\n\r\n') + 4)) as { url: string; headers: Record<string, string> };
    expect(body.url).toBe('/items?id=7');
    // It crossed the inbound sidecar: the access log there has the request from web's identity.
    expect(await eventually(() => mesh.catalogLogs.entries.some((e) => e.direction === 'inbound' && e.path === '/items?id=7'))).toBe(true);
    expect(mesh.webLogs.entries.find((e) => e.path === '/items?id=7')).toMatchObject({ direction: 'outbound', destination_service: 'catalog', status: 200 });
  });

  it('serves HTTP/2 with prior knowledge on the port (a gRPC client\'s way), to the same service', async () => {
    const port = mesh.port('upstream:catalog');
    const r = await curl(['-i', '--http2-prior-knowledge', `http://127.0.0.1:${port}/h2-items`]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^HTTP\/2 200/);
    expect(r.stdout.toLowerCase()).toContain('x-app: catalog');
    expect(await eventually(() => mesh.catalogLogs.entries.some((e) => e.direction === 'inbound' && e.path === '/h2-items'))).toBe(true);
  });

  it('keeps the connection alive across requests on the port', async () => {
    const port = mesh.port('upstream:catalog');
    const r = await curl(['-s', '-o', '/dev/null', '-w', '%{http_code} %{num_connects}\\n', `http://127.0.0.1:${port}/a`, '-o', '/dev/null', `http://127.0.0.1:${port}/b`]);
    expect(r.stdout.trim().split('\n')).toEqual(['200 1', '200 0']);
  });
});

describe('the HTTP proxy port', () => {
  it('routes absolute-form requests (curl -x) by the service they name', async () => {
    const proxy = `http://127.0.0.1:${mesh.port('http-proxy')}`;
    const r = await curl(['-i', '-x', proxy, 'http://catalog/via-proxy']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^HTTP\/1\.1 200/);
    expect(r.stdout.toLowerCase()).toContain('x-app: catalog');
    expect(JSON.parse(r.stdout.slice(r.stdout.indexOf('\r\n\r\n') + 4))).toMatchObject({ url: '/via-proxy' });
  });

  it('refuses an absolute-form request for a host outside the mesh with 403 egress-denied', async () => {
    const r = await curl(['-i', '-x', `http://127.0.0.1:${mesh.port('http-proxy')}`, 'http://nowhere.example/']);
    expect(r.stdout).toMatch(/^HTTP\/1\.1 403/);
    expect(r.stdout.toLowerCase()).toContain('x-mesh-reason: egress-denied');
  });

  it('answers an origin-form request on the proxy port by its Host, like the outbound listener (503 unknown-service)', async () => {
    const r = await curl(['-i', `http://127.0.0.1:${mesh.port('http-proxy')}/`]);
    expect(r.stdout).toMatch(/^HTTP\/1\.1 503/);
    expect(r.stdout.toLowerCase()).toContain('x-mesh-reason: unknown-service');
  });

  it('tunnels CONNECT to a mesh service over mTLS (curl --proxytunnel)', async () => {
    const proxy = `http://127.0.0.1:${mesh.port('http-proxy')}`;
    // curl sends CONNECT catalog:<app port>, then plain HTTP inside the tunnel, which reaches the catalog app.
    const r = await curl(['-i', '-p', '-x', proxy, `http://catalog:${mesh.catalogApp.port}/in-tunnel`]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^HTTP\/1\.1 200 Connection Established\r\n\r\nHTTP\/1\.1 200/);
    expect(r.stdout.toLowerCase()).toContain('x-app: catalog');
    // Opaque on both sidecars: no HTTP log line for /in-tunnel, one TCP line on each side.
    expect(await eventually(() => mesh.catalogLogs.entries.some((e) => e.protocol === 'tcp' && e.direction === 'inbound' && e.upstream === `127.0.0.1:${mesh.catalogApp.port}`))).toBe(true);
    expect(await eventually(() => mesh.webLogs.entries.some((e) => e.protocol === 'tcp' && e.listener === 'http-proxy' && e.destination_service === 'catalog'))).toBe(true);
    expect(mesh.catalogLogs.entries.some((e) => e.path === '/in-tunnel')).toBe(false);
  });

  it('tunnels raw bytes after 200 (a TCP echo beside the catalog app)', async () => {
    const got = await rawExchange(mesh.port('http-proxy'), `CONNECT catalog:${mesh.echoServer.port} HTTP/1.1\r\nHost: catalog:${mesh.echoServer.port}\r\n\r\nhello through the tunnel`, (g) => g.endsWith('tunnel'));
    expect(got).toBe('HTTP/1.1 200 Connection Established\r\n\r\nhello through the tunnel');
  });

  it('tunnels a CONNECT that follows an absolute-form request on the same connection (pipelined), counted as one connection', async () => {
    const admin = mesh.web.addresses().admin.port;
    // Earlier tests' connections finish closing first, so the counts below are this connection's.
    let before = await metricsOf(admin);
    for (let i = 0; i < 100 && sourceTotal(before, 'istio_tcp_connections_opened_total') !== sourceTotal(before, 'istio_tcp_connections_closed_total'); i++) {
      await new Promise((r) => setTimeout(r, 20));
      before = await metricsOf(admin);
    }
    const connect = `CONNECT catalog:${mesh.echoServer.port} HTTP/1.1\r\nHost: catalog:${mesh.echoServer.port}\r\n\r\n`;
    const got = await rawExchange(mesh.port('http-proxy'), `GET http://catalog/before-tunnel HTTP/1.1\r\nHost: catalog\r\n\r\n${connect}after a request`, (g) => g.endsWith('after a request'));
    expect(got).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(got.toLowerCase()).toContain('x-app: catalog');
    expect(got).toContain('"/before-tunnel"');
    expect(got).toContain('HTTP/1.1 200 Connection Established\r\n\r\nafter a request');
    expect(got).not.toContain('405');
    // The HTTP codec handed the socket to the tunnel: still one listener connection in the TCP metrics.
    const closedBefore = sourceTotal(before, 'istio_tcp_connections_closed_total');
    let after = before;
    for (let i = 0; i < 100 && sourceTotal(after, 'istio_tcp_connections_closed_total') === closedBefore; i++) {
      await new Promise((r) => setTimeout(r, 20));
      after = await metricsOf(admin);
    }
    expect(sourceTotal(after, 'istio_tcp_connections_opened_total') - sourceTotal(before, 'istio_tcp_connections_opened_total')).toBe(1);
    expect(sourceTotal(after, 'istio_tcp_connections_closed_total') - closedBefore).toBe(1);
    expect(sourceTotal(after, 'istio_tcp_sent_bytes_total') - sourceTotal(before, 'istio_tcp_sent_bytes_total')).toBe(Buffer.byteLength(got, 'latin1'));
  });

  it('tunnels a CONNECT sent after the response to an earlier request has arrived', async () => {
    const c = net.connect(mesh.port('http-proxy'), '127.0.0.1');
    let got = '';
    c.on('data', (d: Buffer) => (got += d.toString('latin1')));
    c.write('GET http://catalog/first HTTP/1.1\r\nHost: catalog\r\n\r\n');
    try {
      expect(await eventually(() => got.includes('"/first"'))).toBe(true);
      const before = got.length;
      c.write(`CONNECT catalog:${mesh.echoServer.port} HTTP/1.1\r\nHost: catalog:${mesh.echoServer.port}\r\n\r\necho me`);
      expect(await eventually(() => got.endsWith('echo me'))).toBe(true);
      expect(got.slice(before)).toBe('HTTP/1.1 200 Connection Established\r\n\r\necho me');
    } finally {
      c.destroy();
    }
  });

  it('refuses CONNECT to a host outside the mesh with 403 egress-denied', async () => {
    const got = await rawExchange(mesh.port('http-proxy'), `CONNECT 127.0.0.1:${outside.port} HTTP/1.1\r\nHost: 127.0.0.1:${outside.port}\r\n\r\n`);
    expect(got).toMatch(/^HTTP\/1\.1 403 Forbidden\r\n/);
    expect(got).toContain('x-mesh-reason: egress-denied\r\n');
    expect(outside.accepted).toBe(0);
    const r = await curl(['-p', '-x', `http://127.0.0.1:${mesh.port('http-proxy')}`, `http://127.0.0.1:${outside.port}/`]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('403');
  });

  it.each([
    ['CONNECT catalog HTTP/1.1\r\nHost: catalog\r\n\r\n', 400, 'malformed-request'],
    ['CONNECT catalog:0 HTTP/1.1\r\nHost: catalog:0\r\n\r\n', 400, 'malformed-request'],
    ['CONNECT catalog:1 HTTP/1.1\r\n\r\n', 400, 'malformed-request'],
  ])('refuses a malformed CONNECT %j', async (request, status, reason) => {
    const got = await rawExchange(mesh.port('http-proxy'), request);
    expect(got).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
    expect(got).toContain(`x-mesh-reason: ${reason}\r\n`);
  });

  it('answers 503 when the mesh service has no endpoint, and 502 when its sidecar cannot be reached', async () => {
    const local = await startTcpMesh(() => ({ httpProxy: { host: '127.0.0.1', port: 0 }, tcp: { connectTimeoutMs: 2_000 } }));
    try {
      const closed = net.createServer();
      await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
      const deadPort = (closed.address() as net.AddressInfo).port;
      await new Promise((r) => closed.close(r));
      local.web.applyEndpoints({
        services: {
          catalog: { endpoints: [] },
          billing: { endpoints: [{ instance: 'billing-0', address: '127.0.0.1', port: deadPort, version: 'v1', spiffeId: 'spiffe://mesh.local/ns/default/sa/billing' }] },
        },
      });
      const none = await rawExchange(local.port('http-proxy'), 'CONNECT catalog:80 HTTP/1.1\r\nHost: catalog:80\r\n\r\n');
      expect(none).toMatch(/^HTTP\/1\.1 503 /);
      expect(none).toContain('x-mesh-reason: no-healthy-endpoint\r\n');
      const dead = await rawExchange(local.port('http-proxy'), 'CONNECT billing:80 HTTP/1.1\r\nHost: billing:80\r\n\r\n');
      expect(dead).toMatch(/^HTTP\/1\.1 502 /);
      expect(dead).toContain('x-mesh-reason: upstream-connect-failed\r\n');
    } finally {
      await local.stop();
    }
  });

  it('with egress allowed, sends an absolute-form request for a host outside the mesh there as plain HTTP', async () => {
    const { startEchoApp } = await import('../runtime/helpers.ts');
    const external = await startEchoApp('external');
    const local = await startTcpMesh(() => ({ httpProxy: { host: '127.0.0.1', port: 0 }, allowEgress: true }));
    try {
      // "localhost" is no mesh service name and no endpoint address: egress.
      const r = await curl(['-i', '-x', `http://127.0.0.1:${local.port('http-proxy')}`, `http://localhost:${external.port}/outside?q=1`]);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/^HTTP\/1\.1 200/);
      expect(r.stdout.toLowerCase()).toContain('x-app: external');
      expect(external.seen.at(-1)).toMatchObject({ url: '/outside?q=1' });
      // A mesh service by name still goes through the mesh.
      const m = await curl(['-i', '-x', `http://127.0.0.1:${local.port('http-proxy')}`, 'http://catalog/in-mesh']);
      expect(m.stdout.toLowerCase()).toContain('x-app: catalog');
    } finally {
      await local.stop();
      await external.close();
    }
  });

  it('with egress allowed, tunnels CONNECT to a host outside the mesh', async () => {
    const local = await startTcpMesh(() => ({ httpProxy: { host: '127.0.0.1', port: 0 }, allowEgress: true }));
    try {
      const before = outside.accepted;
      const got = await rawExchange(local.port('http-proxy'), `CONNECT 127.0.0.1:${outside.port} HTTP/1.1\r\nHost: 127.0.0.1:${outside.port}\r\n\r\nping`, (g) => g.endsWith('ping'));
      expect(got).toBe('HTTP/1.1 200 Connection Established\r\n\r\nping');
      expect(outside.accepted).toBe(before + 1);
      expect(await eventually(() => local.webLogs.entries.some((e) => e.protocol === 'tcp' && e.egress === true && e.upstream === `127.0.0.1:${outside.port}`))).toBe(true);
    } finally {
      await local.stop();
    }
  });
});
