// Opaque TCP through a sidecar pair over real mTLS on 127.0.0.1: the app
// connects to a per-upstream port of the "web" sidecar, bytes cross to the
// "catalog" sidecar (ALPN meshc-tcp/1 + transport header) and on to a TCP
// server beside the catalog app. Large payloads, half-close both ways, a
// server-first protocol after the detection timeout, many connections at
// once, idle timeout, port refusal, metrics and the access log.
import net from 'node:net';
import tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MESH_TCP_ALPN, encodeTransportHeader } from '../../protocol/transport.ts';
import { issueLeaf } from '../runtime/pki.ts';
import { eventually, metricsOf, roundTrip, sample, sha, startTcpMesh, type TcpMesh } from './support.ts';

const DETECT_MS = 150;
let mesh: TcpMesh;
let unservedPort: number;

beforeAll(async () => {
  // A port nobody serves to the mesh: the catalog sidecar must refuse it.
  const probe = net.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  unservedPort = (probe.address() as net.AddressInfo).port;
  await new Promise((r) => probe.close(r));
  mesh = await startTcpMesh(
    (echoPort, greeterPort) => ({
      detectTimeoutMs: DETECT_MS,
      upstreams: [
        { service: 'catalog', port: echoPort, listen: { host: '127.0.0.1', port: 0 } },
        { service: 'catalog', port: echoPort, listen: { host: '127.0.0.1', port: 0 }, protocol: 'tcp' },
        { service: 'catalog', port: greeterPort, listen: { host: '127.0.0.1', port: 0 } },
        { service: 'catalog', port: unservedPort, listen: { host: '127.0.0.1', port: 0 }, protocol: 'tcp' },
      ],
    }),
  );
});
afterAll(async () => {
  await mesh?.stop();
});

const echoName = (): string => `upstream:catalog:${mesh.echoServer.port}`;

describe('opaque TCP through a sidecar pair', () => {
  it('carries 8 MiB both ways intact, and passes the half-close on in both directions', async () => {
    const payload = randomBytes(8 * 1024 * 1024);
    const got = await roundTrip(mesh.port(echoName()), payload);
    expect(got.error).toBeUndefined();
    // The echo server ends only after it saw our FIN: an end back means the FIN crossed both sidecars.
    expect(got.ended).toBe(true);
    expect(got.received.length).toBe(payload.length);
    expect(sha(got.received)).toBe(sha(payload));
  });

  it('declared as TCP, the port forwards an HTTP-looking stream as bytes, without detection', async () => {
    const request = Buffer.from('GET / HTTP/1.1\r\nHost: catalog\r\n\r\n');
    const got = await roundTrip(mesh.port(`${echoName()}/tcp`), request);
    // The TCP echo server answered, not the HTTP app: the bytes come back unchanged.
    expect(got.received.toString()).toBe(request.toString());
  });

  it('serves a server-first protocol once the detection timeout passed in silence, and answers after the client half-closed', async () => {
    const started = performance.now();
    const transcript = await new Promise<string>((resolve, reject) => {
      const c = net.connect(mesh.port(`upstream:catalog:${mesh.greeterServer.port}`), '127.0.0.1');
      let got = '';
      c.on('data', (d: Buffer) => {
        got += d.toString();
        if (got === '220 catalog ready\r\n') c.end('EHLO web\r\n');
      });
      c.on('close', () => resolve(got));
      c.on('error', reject);
    });
    expect(transcript).toBe('220 catalog ready\r\n250 got EHLO web\r\n221 bye\r\n');
    // The greeting cannot arrive before the sidecar gave up waiting for the client to speak.
    expect(performance.now() - started).toBeGreaterThanOrEqual(DETECT_MS - 5);
  });

  it('carries 64 concurrent connections of 256 KiB each', async () => {
    const port = mesh.port(echoName());
    const payloads = Array.from({ length: 64 }, () => randomBytes(256 * 1024));
    const results = await Promise.all(payloads.map((p) => roundTrip(port, p, 30_000)));
    results.forEach((r, i) => {
      expect(r.error).toBeUndefined();
      expect(sha(r.received)).toBe(sha(payloads[i]!));
    });
  });

  it('counts connections and bytes with Istio names on both sidecars, and logs one line per connection', async () => {
    const payload = randomBytes(100_000);
    const before = { web: await metricsOf(mesh.web.addresses().admin.port), catalog: await metricsOf(mesh.catalog.addresses().admin.port) };
    const got = await roundTrip(mesh.port(echoName()), payload);
    expect(got.received.length).toBe(payload.length);
    const src = { reporter: 'source', source_workload: 'web', destination_service: 'catalog' };
    const dst = { reporter: 'destination', source_workload: 'web', destination_service: 'catalog' };
    let after = { web: '', catalog: '' };
    const ok = await (async () => {
      for (let i = 0; i < 50; i++) {
        after = { web: await metricsOf(mesh.web.addresses().admin.port), catalog: await metricsOf(mesh.catalog.addresses().admin.port) };
        if (sample(after.catalog, 'istio_tcp_connections_closed_total', dst) > sample(before.catalog, 'istio_tcp_connections_closed_total', dst)) return true;
        await new Promise((r) => setTimeout(r, 20));
      }
      return false;
    })();
    expect(ok).toBe(true);
    const delta = (side: 'web' | 'catalog', name: string, labels: Record<string, string>): number => sample(after[side], name, labels) - sample(before[side], name, labels);
    expect(delta('web', 'istio_tcp_connections_opened_total', src)).toBe(1);
    expect(delta('web', 'istio_tcp_connections_closed_total', src)).toBe(1);
    expect(delta('web', 'istio_tcp_received_bytes_total', src)).toBe(payload.length);
    expect(delta('web', 'istio_tcp_sent_bytes_total', src)).toBe(payload.length);
    expect(delta('catalog', 'istio_tcp_connections_opened_total', dst)).toBe(1);
    // On the inbound side the 4-byte transport header is read from the connection too.
    expect(delta('catalog', 'istio_tcp_received_bytes_total', dst)).toBe(payload.length + 4);
    expect(delta('catalog', 'istio_tcp_sent_bytes_total', dst)).toBe(payload.length);
    const outLine = mesh.webLogs.entries.filter((e) => e.protocol === 'tcp' && e.direction === 'outbound' && e.bytes_received === payload.length);
    expect(outLine).toHaveLength(1);
    expect(outLine[0]).toMatchObject({ listener: echoName(), destination_service: 'catalog', endpoint: 'catalog-v1-0', bytes_sent: payload.length });
    expect(outLine[0]!.reason).toBeUndefined();
    const inLine = mesh.catalogLogs.entries.filter((e) => e.protocol === 'tcp' && e.direction === 'inbound' && e.bytes_sent === payload.length);
    expect(inLine).toHaveLength(1);
    expect(inLine[0]).toMatchObject({ source_principal: 'spiffe://mesh.local/ns/default/sa/web', upstream: `127.0.0.1:${mesh.echoServer.port}` });
  });

  it('refuses a port the destination app does not serve to the mesh, and says why in its log', async () => {
    const got = await roundTrip(mesh.port(`upstream:catalog:${unservedPort}/tcp`), Buffer.from('hello'));
    expect(got.received.length).toBe(0);
    expect(await eventually(() => mesh.catalogLogs.entries.some((e) => e.reason === 'port-not-served' && e.target_port === unservedPort))).toBe(true);
  });

  it('accepts opaque TCP on the inbound listener only from a peer with a mesh certificate', async () => {
    const inbound = mesh.catalog.addresses().inbound.port;
    // No client certificate: the handshake fails, nothing reaches the app.
    const refused = await new Promise<string>((resolve) => {
      const c = tls.connect({ port: inbound, host: '127.0.0.1', ca: mesh.ca.certPem, ALPNProtocols: [MESH_TCP_ALPN], checkServerIdentity: () => undefined });
      c.on('secureConnect', () => c.write(Buffer.concat([encodeTransportHeader(mesh.echoServer.port), Buffer.from('hi')])));
      c.on('data', () => resolve('data'));
      c.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      c.on('close', () => resolve('closed'));
    });
    expect(refused).not.toBe('data');
    // A certificate from another CA is refused too.
    const { createCa } = await import('../runtime/pki.ts');
    const other = await createCa('rogue CA');
    const rogue = await issueLeaf(other, 'web');
    const rogueResult = await new Promise<string>((resolve) => {
      const c = tls.connect({ port: inbound, host: '127.0.0.1', ca: mesh.ca.certPem, cert: rogue.certPem, key: rogue.keyPem, ALPNProtocols: [MESH_TCP_ALPN], checkServerIdentity: () => undefined });
      c.on('secureConnect', () => c.write(Buffer.concat([encodeTransportHeader(mesh.echoServer.port), Buffer.from('hi')])));
      c.on('data', () => resolve('data'));
      c.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      c.on('close', () => resolve('closed'));
    });
    expect(rogueResult).not.toBe('data');
    // With a mesh certificate the same bytes are echoed.
    const good = await issueLeaf(mesh.ca, 'probe');
    const echoed = await new Promise<string>((resolve, reject) => {
      const c = tls.connect({ port: inbound, host: '127.0.0.1', ca: mesh.ca.certPem, cert: good.certPem, key: good.keyPem, ALPNProtocols: [MESH_TCP_ALPN], checkServerIdentity: () => undefined });
      let got = '';
      c.on('secureConnect', () => c.end(Buffer.concat([encodeTransportHeader(mesh.echoServer.port), Buffer.from('hi')])));
      c.on('data', (d: Buffer) => (got += d.toString()));
      c.on('close', () => resolve(got));
      c.on('error', reject);
    });
    expect(echoed).toBe('hi');
  });
});

describe('an app that speaks TLS itself', () => {
  it('passes its TLS through an undeclared upstream port untouched (detected as TLS, relayed as opaque TCP)', async () => {
    const { createCa } = await import('../runtime/pki.ts');
    const appCa = await createCa('app CA');
    const appLeaf = await issueLeaf(appCa, 'db');
    const tlsEcho = tls.createServer({ key: appLeaf.keyPem, cert: appLeaf.certPem }, (s) => s.pipe(s));
    await new Promise<void>((r) => tlsEcho.listen(0, '127.0.0.1', r));
    const tlsPort = (tlsEcho.address() as net.AddressInfo).port;
    const local = await startTcpMesh(() => ({ upstreams: [{ service: 'catalog', port: tlsPort, listen: { host: '127.0.0.1', port: 0 } }] }), { tcp: { appPorts: [tlsPort] } });
    try {
      const port = local.port(`upstream:catalog:${tlsPort}`);
      const echoed = await new Promise<{ text: string; issuer: string }>((resolve, reject) => {
        // The app's own CA and its own certificate: end to end, the sidecars never see the plaintext.
        const c = tls.connect({ port, host: '127.0.0.1', ca: appCa.certPem, servername: 'db.example', checkServerIdentity: () => undefined });
        let text = '';
        c.on('secureConnect', () => c.write('over the app\'s own TLS'));
        c.on('data', (d: Buffer) => {
          text += d.toString();
          if (text === 'over the app\'s own TLS') {
            const issuer = String(c.getPeerCertificate().issuer?.CN ?? '');
            c.destroy();
            resolve({ text, issuer });
          }
        });
        c.on('error', reject);
      });
      expect(echoed.text).toBe("over the app's own TLS");
      expect(echoed.issuer).toBe('app CA');
      expect(await eventually(() => local.webLogs.entries.some((e) => e.protocol === 'tcp' && e.listener === `upstream:catalog:${tlsPort}` && e.destination_service === 'catalog'))).toBe(true);
    } finally {
      await local.stop();
      await new Promise((r) => tlsEcho.close(r));
    }
  });
});

describe('resets', () => {
  it('passes an app\'s reset back to the client as a reset, across the mTLS hop, with one log line per side', async () => {
    const { tcpServer } = await import('./support.ts');
    const rst = await tcpServer((s) => s.once('data', () => s.resetAndDestroy()));
    const local = await startTcpMesh(() => ({ upstreams: [{ service: 'catalog', port: rst.port, listen: { host: '127.0.0.1', port: 0 }, protocol: 'tcp' }] }), { tcp: { appPorts: [rst.port] } });
    try {
      const outcome = await new Promise<string>((resolve) => {
        const c = net.connect(local.port(`upstream:catalog:${rst.port}/tcp`), '127.0.0.1');
        c.on('connect', () => c.write('boom'));
        c.on('end', () => resolve('clean end'));
        c.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      });
      // A clean end would tell the client the stream was complete; it was cut.
      expect(outcome).toBe('ECONNRESET');
      expect(await eventually(() => local.catalogLogs.entries.some((e) => e.protocol === 'tcp' && e.reason === 'upstream-reset'))).toBe(true);
      expect(await eventually(() => local.webLogs.entries.some((e) => e.protocol === 'tcp' && e.reason === 'upstream-reset'))).toBe(true);
      await new Promise((r) => setTimeout(r, 100));
      expect(local.catalogLogs.entries.filter((e) => e.protocol === 'tcp')).toHaveLength(1);
      expect(local.webLogs.entries.filter((e) => e.protocol === 'tcp')).toHaveLength(1);
    } finally {
      await local.stop();
      await rst.close();
    }
  });

  it('passes a client\'s reset on to the app as a reset', async () => {
    const { tcpServer } = await import('./support.ts');
    let appSaw = '';
    let saw: () => void = () => {};
    const seen = new Promise<void>((resolve) => (saw = resolve));
    const app = await tcpServer((s) => {
      s.on('error', (e: NodeJS.ErrnoException) => {
        appSaw = e.code ?? e.message;
        saw();
      });
      s.on('end', () => {
        appSaw = 'clean end';
        saw();
      });
      s.once('data', () => s.write('ready'));
      s.resume();
    });
    const local = await startTcpMesh(() => ({ upstreams: [{ service: 'catalog', port: app.port, listen: { host: '127.0.0.1', port: 0 }, protocol: 'tcp' }] }), { tcp: { appPorts: [app.port] } });
    try {
      await new Promise<void>((resolve) => {
        const c = net.connect(local.port(`upstream:catalog:${app.port}/tcp`), '127.0.0.1');
        c.on('connect', () => c.write('hello'));
        c.once('data', () => {
          c.resetAndDestroy();
          resolve();
        });
        c.on('error', () => {});
      });
      await seen;
      expect(appSaw).toBe('ECONNRESET');
    } finally {
      await local.stop();
      await app.close();
    }
  });
});

describe('opaque TCP limits and sessions', () => {
  it('resumes the TLS session on the next connection to the same endpoint', async () => {
    const port = mesh.port(echoName());
    for (let i = 0; i < 2; i++) expect((await roundTrip(port, Buffer.from(`hello ${i}`))).received.toString()).toBe(`hello ${i}`);
    const lines = mesh.webLogs.entries.filter((e) => e.protocol === 'tcp' && e.listener === echoName() && e.tls_resumed !== undefined);
    expect(lines.length).toBeGreaterThanOrEqual(2);
    expect(lines.at(-1)!.tls_resumed).toBe(true);
  });

  it('refuses connections over the relay limit and serves again once one closes', async () => {
    const local = await startTcpMesh((echoPort) => ({
      tcp: { maxConnections: 2 },
      upstreams: [{ service: 'catalog', port: echoPort, listen: { host: '127.0.0.1', port: 0 }, protocol: 'tcp' }],
    }));
    try {
      const port = local.port(`upstream:catalog:${local.echoServer.port}/tcp`);
      // Two connections held open (each proven relayed by an echo).
      const open = await Promise.all(
        [0, 1].map(
          (i) =>
            new Promise<net.Socket>((resolve, reject) => {
              const c = net.connect(port, '127.0.0.1');
              c.on('connect', () => c.write(`hold ${i}`));
              c.once('data', () => resolve(c));
              c.on('error', reject);
            }),
        ),
      );
      const third = await roundTrip(port, Buffer.from('third'));
      expect(third.received.length).toBe(0);
      expect(await eventually(() => local.webLogs.entries.some((e) => e.reason === 'too-many-connections'))).toBe(true);
      for (const c of open) c.destroy();
      // The first connection's close frees its slot (the catalog side holds its own two).
      expect(await eventually(() => local.web.tcpProxy.live.size === 0)).toBe(true);
      expect((await roundTrip(port, Buffer.from('fourth'))).received.toString()).toBe('fourth');
    } finally {
      await local.stop();
    }
  });
});

describe('opaque TCP timeouts', () => {
  it('closes a connection that never speaks on the plain outbound listener after the head timeout', async () => {
    const local = await startTcpMesh(() => ({ http: { headersTimeoutMs: 300 } }));
    try {
      const started = performance.now();
      await new Promise<void>((resolve) => {
        const c = net.connect(local.web.addresses().outbound.port, '127.0.0.1');
        c.on('close', () => resolve());
        c.on('error', () => {});
      });
      expect(performance.now() - started).toBeGreaterThanOrEqual(290);
      expect(await eventually(() => local.webLogs.entries.some((e) => e.event === 'connection-refused' && e.listener === 'outbound' && e.reason === 'detect-timeout'))).toBe(true);
    } finally {
      await local.stop();
    }
  });

  it('closes a connection idle for the idle timeout, with the reason in the log', async () => {
    const local = await startTcpMesh((echoPort) => ({
      tcp: { idleTimeoutMs: 300 },
      upstreams: [{ service: 'catalog', port: echoPort, listen: { host: '127.0.0.1', port: 0 }, protocol: 'tcp' }],
    }));
    try {
      const port = local.port(`upstream:catalog:${local.echoServer.port}/tcp`);
      const started = performance.now();
      const got = await new Promise<string>((resolve) => {
        const c = net.connect(port, '127.0.0.1');
        let text = '';
        c.on('connect', () => c.write('ping'));
        c.on('data', (d: Buffer) => (text += d.toString()));
        c.on('close', () => resolve(text));
        c.on('error', () => {});
      });
      expect(got).toBe('ping');
      expect(performance.now() - started).toBeGreaterThanOrEqual(290);
      expect(await eventually(() => local.webLogs.entries.some((e) => e.protocol === 'tcp' && e.reason === 'idle-timeout'))).toBe(true);
    } finally {
      await local.stop();
    }
  });

  it('gives up on an upstream that does not connect, and resets the client', async () => {
    // An endpoint that completes the TCP handshake but never answers the TLS ClientHello.
    const silent = net.createServer((s) => s.resume());
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const local = await startTcpMesh((echoPort) => ({
      tcp: { connectTimeoutMs: 300 },
      upstreams: [{ service: 'catalog', port: echoPort, listen: { host: '127.0.0.1', port: 0 }, protocol: 'tcp' }],
    }));
    try {
      const silentPort = (silent.address() as net.AddressInfo).port;
      local.web.applyEndpoints({
        services: { catalog: { endpoints: [{ instance: 'catalog-silent', address: '127.0.0.1', port: silentPort, version: 'v1', spiffeId: 'spiffe://mesh.local/ns/default/sa/catalog' }] } },
      });
      const got = await roundTrip(local.port(`upstream:catalog:${local.echoServer.port}/tcp`), Buffer.from('hello'));
      expect(got.received.length).toBe(0);
      expect(got.ended).toBe(false);
      expect(await eventually(() => local.webLogs.entries.some((e) => e.protocol === 'tcp' && e.reason === 'upstream-connect-timeout' && e.endpoint === 'catalog-silent'))).toBe(true);
    } finally {
      await local.stop();
      await new Promise((r) => silent.close(r));
    }
  });
});
