// Pieces of transparent mode that need no namespace: which mesh service an
// original destination is, a connection that was not redirected, and the
// permissive inbound split between mTLS and plaintext (real sockets on 127.0.0.1).
import net from 'node:net';
import tls from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import type { EndpointsPayload } from '../../protocol/wire.ts';
import { meshDestination, permissiveInbound, redirectedDestination } from '../../runtime/interception/transparent.ts';
import { createCa, issueLeaf } from '../runtime/pki.ts';

const ep = (instance: string, address: string, port: number) => ({ instance, address, port, version: 'v1', spiffeId: `spiffe://mesh.local/ns/default/sa/${instance}` });

const endpoints: EndpointsPayload = {
  services: {
    catalog: { endpoints: [ep('catalog-0', '10.0.0.5', 8080), ep('catalog-1', '10.0.0.6', 8080)], addresses: ['10.96.0.10'] },
    ratings: { endpoints: [ep('ratings-0', '10.0.0.7', 15006)] },
    // Two services on one pod address: the address alone cannot tell them apart.
    a: { endpoints: [ep('a-0', '10.0.0.9', 8080)] },
    b: { endpoints: [ep('b-0', '10.0.0.9', 9090)] },
  },
};

describe('meshDestination', () => {
  it('names the service of an endpoint address; the endpoint port itself means the main port (0)', () => {
    expect(meshDestination({ address: '10.0.0.6', port: 8080 }, endpoints)).toEqual({ service: 'catalog', port: 0 });
    expect(meshDestination({ address: '10.0.0.6', port: 5432 }, endpoints)).toEqual({ service: 'catalog', port: 5432 });
    expect(meshDestination({ address: '::ffff:10.0.0.7', port: 15006 }, endpoints)).toEqual({ service: 'ratings', port: 0 });
  });

  it('names the service of a service address (a virtual IP), at its main port', () => {
    // A ClusterIP's port 80 usually maps to another target port: the endpoint's own port is the one served.
    expect(meshDestination({ address: '10.96.0.10', port: 80 }, endpoints)).toEqual({ service: 'catalog', port: 0 });
  });

  it('is undefined outside the mesh, without endpoints, and for an address two services share', () => {
    expect(meshDestination({ address: '93.184.216.34', port: 443 }, endpoints)).toBeUndefined();
    expect(meshDestination({ address: '10.0.0.5', port: 8080 }, undefined)).toBeUndefined();
    expect(meshDestination({ address: '10.0.0.9', port: 8080 }, endpoints)).toBeUndefined();
  });
});

describe('redirectedDestination', () => {
  it('is undefined for a connection dialed straight to the listener', async () => {
    const seen: unknown[] = [];
    const server = net.createServer((s) => {
      seen.push(redirectedDestination(s) ?? 'not redirected');
      s.end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    await new Promise<void>((r) => net.connect((server.address() as net.AddressInfo).port, '127.0.0.1').on('close', () => r()).resume());
    server.close();
    expect(seen).toEqual(['not redirected']);
  });
});

describe('permissiveInbound', () => {
  const closers: Array<() => void> = [];
  afterEach(() => {
    for (const c of closers.splice(0)) c();
  });

  async function start(): Promise<{ port: number; ca: Awaited<ReturnType<typeof createCa>>; raw: net.Server; handed: net.Socket[] }> {
    const ca = await createCa();
    const server = await issueLeaf(ca, 'catalog');
    const handed: net.Socket[] = [];
    const secure = tls.createServer({ cert: server.certPem, key: server.keyPem, allowHalfOpen: true }, (s) => s.end(`tls:${s.getProtocol()}`));
    const raw = permissiveInbound(
      secure,
      (s) => {
        handed.push(s);
        s.once('data', (d: Buffer) => s.end(`plain:${d.toString()}`));
      },
      200,
    );
    await new Promise<void>((r) => raw.listen(0, '127.0.0.1', r));
    closers.push(() => raw.close());
    return { port: (raw.address() as net.AddressInfo).port, ca, raw, handed };
  }

  const read = (s: net.Socket): Promise<string> =>
    new Promise((resolve, reject) => {
      let out = '';
      s.on('data', (d: Buffer) => (out += d.toString()));
      s.on('end', () => resolve(out));
      s.on('error', reject);
    });

  it('hands a TLS handshake to the TLS server and anything else to the plaintext side', async () => {
    const { port, ca } = await start();
    const secured = tls.connect({ host: '127.0.0.1', port, ca: ca.certPem, checkServerIdentity: () => undefined });
    expect(await read(secured)).toMatch(/^tls:TLSv1\.[23]$/);
    const plain = net.connect(port, '127.0.0.1', () => plain.write('GET / HTTP/1.1\r\n'));
    expect(await read(plain)).toBe('plain:GET / HTTP/1.1\r\n');
  });

  it('hands nothing on once the listener is closed (the sidecar is stopping): an undecided connection is closed', async () => {
    const { port, raw, handed } = await start();
    const quiet = net.connect(port, '127.0.0.1');
    await new Promise((r) => quiet.once('connect', r));
    const closed = new Promise((r) => quiet.once('close', r));
    quiet.resume();
    raw.close();
    await closed;
    expect(handed).toEqual([]);
  });

  it('treats silence as a plaintext (server-first) client once the first-byte wait is over', async () => {
    const { port } = await start();
    const quiet = net.connect(port, '127.0.0.1');
    const got = read(quiet);
    // Sent only after the 200 ms wait: the plaintext side took over the socket and reads it.
    setTimeout(() => quiet.write('late'), 400);
    expect(await got).toBe('plain:late');
  });
});
