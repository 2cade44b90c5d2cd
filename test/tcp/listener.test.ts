// Protocol detection (runtime/listener.ts): the classifier over the four
// classes, and a ProtocolListener behind a real net server fed by real
// clients: all at once, one byte at a time, silent (server-first), a TLS
// ClientHello, an early close, declared ports, ALPN.
import net from 'node:net';
import tls from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { classify, ProtocolListener, type Accepted, type Protocol } from '../../runtime/listener.ts';
import { MESH_TCP_ALPN } from '../../protocol/transport.ts';
import { createCa, issueLeaf } from '../runtime/pki.ts';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');

describe('classify', () => {
  it.each([
    ['GET / HTTP/1.1\r\nHost: x\r\n\r\n', 'http1'],
    ['POST /a?b=c HTTP/1.0\r\n', 'http1'],
    ['\r\nGET / HTTP/1.1\r\n', 'http1'],
    ['CONNECT catalog:5432 HTTP/1.1\r\n', 'http1'],
    ['GET http://catalog/x HTTP/1.1\n', 'http1'],
    ['PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'h2'],
    ['PING\r\n', 'opaque'],
    ['SET k v\r\n', 'opaque'],
    ['GET / SMTP/1.1\r\n', 'opaque'],
    ['GET /\x00 HTTP/1.1\r\n', 'opaque'],
    ['G\x01T / HTTP/1.1\r\n', 'opaque'],
    ['GET / HTTP/1.1\rX', 'opaque'],
    ['\x00\x00\x00\x01', 'opaque'],
    ['\x16\x02', 'opaque'],
  ] as Array<[string, Protocol]>)('%j → %s', (input, want) => {
    expect(classify(b(input))).toBe(want);
  });

  it('knows a TLS ClientHello from its record header', () => {
    expect(classify(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00]))).toBe('tls');
  });

  it('asks for more bytes while a prefix could be either', () => {
    for (const prefix of ['G', 'GET', 'GET ', 'GET /x', 'GET /x HTTP/1', 'GET / HTTP/1.1\r', 'PRI * HTTP/2.0\r\n', '\x16']) {
      expect(classify(b(prefix)), prefix).toBeUndefined();
    }
    // Every prefix of a request line is undecided until the line ends; then it is HTTP/1.
    const line = 'DELETE /items/7 HTTP/1.1\r\n';
    for (let i = 1; i < line.length; i++) expect(classify(b(line.slice(0, i)))).toBeUndefined();
    expect(classify(b(line))).toBe('http1');
  });

  it('takes a prefix that never completed for opaque when no more bytes will come', () => {
    expect(classify(b('GET /x'), true)).toBe('opaque');
    expect(classify(b('hello 0'), true)).toBe('opaque');
    expect(classify(b('PRI * HTTP'), true)).toBe('opaque');
    expect(classify(b('\x16'), true)).toBe('opaque');
    expect(classify(b('GET /x HTTP/1.1\r\n'), true)).toBe('http1');
    expect(classify(b(''), true)).toBeUndefined();
  });

  it('gives up on a method longer than any HTTP method', () => {
    expect(classify(b('A'.repeat(40)))).toBe('opaque');
  });
});

interface Seen {
  protocol: Protocol | undefined;
  by: string;
  head: string;
  /** Everything the handler read from the socket (head included) until the client ended. */
  read: string;
  alpn: string | undefined;
}

const servers: net.Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

/** A net server whose sockets go through a ProtocolListener; every handler reads to the end and records what it saw. */
async function detectingServer(
  options: { serverFirstTimeoutMs?: number; maxWaitMs?: number; declare?: (conn: Accepted) => void; tls?: tls.SecureContextOptions } = {},
): Promise<{ port: number; seen: Promise<Seen>[]; logs: Array<Record<string, unknown>> }> {
  const logs: Array<Record<string, unknown>> = [];
  const listener = new ProtocolListener({ name: 'test', serverFirstTimeoutMs: options.serverFirstTimeoutMs, maxWaitMs: options.maxWaitMs, log: (e) => logs.push(e) });
  const seen: Promise<Seen>[] = [];
  const handler = (socket: net.Socket, conn: Accepted): void => {
    seen.push(
      new Promise((resolve) => {
        const done = (read: string): void => {
          resolve({ protocol: conn.protocol, by: conn.by, head: conn.head.toString('latin1'), read, alpn: conn.alpn });
          socket.end(`bye ${conn.protocol}`);
        };
        // A client that closed during detection: its bytes are in conn.head only.
        if (conn.ended) return done(conn.head.toString('latin1'));
        let read = '';
        socket.on('data', (d: Buffer) => (read += d.toString('latin1')));
        socket.on('end', () => done(read));
        socket.resume();
      }),
    );
  };
  for (const p of ['http1', 'h2', 'tls', 'opaque'] as Protocol[]) listener.handle(p, handler);
  if (options.declare) listener.onAccept((_s, conn) => options.declare!(conn));
  const server = options.tls
    ? tls.createServer({ ...options.tls, allowHalfOpen: true, ALPNCallback: listener.selectAlpn }, (s) => listener.accept(s))
    : net.createServer({ allowHalfOpen: true }, (s) => listener.accept(s));
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, seen, logs };
}

/** Connects, writes `parts` `gapMs` apart, half-closes, and returns what the server answered. */
function send(port: number, parts: Array<string | Buffer>, gapMs = 0, waitBeforeMs = 0): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    let got = '';
    socket.on('data', (d: Buffer) => (got += d.toString('latin1')));
    socket.on('close', () => resolve(got));
    socket.on('error', reject);
    socket.on('connect', async () => {
      if (waitBeforeMs) await new Promise((r) => setTimeout(r, waitBeforeMs));
      for (const p of parts) {
        socket.write(p);
        if (gapMs) await new Promise((r) => setTimeout(r, gapMs));
      }
      socket.end();
    });
  });
}

async function until<T>(list: Promise<T>[], n: number): Promise<T> {
  for (let i = 0; i < 200 && list.length < n; i++) await new Promise((r) => setTimeout(r, 10));
  return list[n - 1]!;
}

describe('ProtocolListener over real sockets', () => {
  it('hands an HTTP/1.1 request to the http1 handler with every byte intact', async () => {
    const srv = await detectingServer();
    const request = 'GET /hello HTTP/1.1\r\nHost: catalog\r\n\r\n';
    expect(await send(srv.port, [request])).toBe('bye http1');
    const s = await until(srv.seen, 1);
    expect(s).toMatchObject({ protocol: 'http1', by: 'bytes', read: request });
  });

  it('waits for a client that sends one byte at a time, then hands over every byte', async () => {
    const srv = await detectingServer({ serverFirstTimeoutMs: 100 });
    const request = 'GET /slow HTTP/1.1\r\nHost: x\r\n\r\n';
    // The first byte comes at once, the rest 5 ms apart: longer in total than the server-first timeout.
    expect(await send(srv.port, [...request], 5)).toBe('bye http1');
    const s = await until(srv.seen, 1);
    expect(s.protocol).toBe('http1');
    expect(s.read).toBe(request);
  });

  it('recognises the HTTP/2 preface, also one byte at a time', async () => {
    const srv = await detectingServer();
    const preface = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n';
    expect(await send(srv.port, [...preface, '\x00\x00\x00\x04'], 2)).toBe('bye h2');
    expect(await until(srv.seen, 1)).toMatchObject({ protocol: 'h2', read: preface + '\x00\x00\x00\x04' });
  });

  it('recognises a TLS ClientHello and passes its bytes on', async () => {
    const srv = await detectingServer();
    const port = srv.port;
    // A real ClientHello from node:tls; the handler just reads it and closes, so the handshake fails.
    await new Promise<void>((resolve) => {
      const c = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false, servername: 'catalog.example' });
      c.on('error', () => resolve());
      c.on('close', () => resolve());
      setTimeout(() => c.end(), 50);
    });
    const s = await until(srv.seen, 1);
    expect(s.protocol).toBe('tls');
    expect(s.read.charCodeAt(0)).toBe(0x16);
    expect(s.read).toContain('catalog.example');
  });

  it('treats bytes that are no known protocol as opaque at once', async () => {
    const srv = await detectingServer();
    const payload = Buffer.from([0x00, 0x00, 0x00, 0x0c, 0x01, 0x02, 0xff]);
    expect(await send(srv.port, [payload])).toBe('bye opaque');
    expect(await until(srv.seen, 1)).toMatchObject({ protocol: 'opaque', by: 'bytes', read: payload.toString('latin1') });
  });

  it('hands a silent client to the opaque handler after the server-first timeout, and it can greet', async () => {
    const logs: Accepted[] = [];
    const listener = new ProtocolListener({ name: 'greeter', serverFirstTimeoutMs: 60 });
    listener.handle('opaque', (socket, conn) => {
      logs.push(conn);
      socket.write('220 ready\r\n');
      socket.on('data', (d: Buffer) => socket.end(`echo ${d.toString()}`));
      socket.resume();
    });
    const server = net.createServer({ allowHalfOpen: true }, (s) => listener.accept(s));
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    const started = performance.now();
    const transcript = await new Promise<string>((resolve, reject) => {
      const c = net.connect(port, '127.0.0.1');
      let got = '';
      c.on('data', (d: Buffer) => {
        got += d.toString();
        if (got === '220 ready\r\n') c.write('EHLO me');
      });
      c.on('close', () => resolve(got));
      c.on('error', reject);
    });
    expect(transcript).toBe('220 ready\r\necho EHLO me');
    expect(performance.now() - started).toBeGreaterThanOrEqual(55);
    expect(logs[0]).toMatchObject({ protocol: 'opaque', by: 'server-first' });
  });

  it('closes a silent client after the longest wait when the listener has no server-first timeout', async () => {
    const srv = await detectingServer({ maxWaitMs: 100 });
    expect(await send(srv.port, [], 0, 300)).toBe('');
    expect(srv.seen).toHaveLength(0);
    expect(srv.logs).toContainEqual(expect.objectContaining({ event: 'connection-refused', reason: 'detect-timeout' }));
  });

  it('closes a connect-and-close (a TCP health check) quietly', async () => {
    const srv = await detectingServer({ serverFirstTimeoutMs: 5_000 });
    expect(await send(srv.port, [])).toBe('');
    await new Promise((r) => setTimeout(r, 50));
    expect(srv.seen).toHaveLength(0);
    expect(srv.logs).toEqual([]);
  });

  it('decides from what arrived when the client closes early, and hands those bytes over in conn.head', async () => {
    const srv = await detectingServer();
    expect(await send(srv.port, ['GET /x'])).toBe('bye opaque');
    expect(await until(srv.seen, 1)).toMatchObject({ protocol: 'opaque', by: 'end', read: 'GET /x', head: 'GET /x' });
  });

  it('skips detection (and its delay) on a port an accept hook declares as TCP', async () => {
    const srv = await detectingServer({ serverFirstTimeoutMs: 5_000, declare: (conn) => (conn.protocol = 'opaque') });
    const request = 'GET / HTTP/1.1\r\n\r\n';
    expect(await send(srv.port, [request])).toBe('bye opaque');
    expect(await until(srv.seen, 1)).toMatchObject({ protocol: 'opaque', by: 'declared', read: request });
  });

  it('uses the ALPN a TLS handshake chose, and detects on the plaintext without one', async () => {
    const ca = await createCa();
    const leaf = await issueLeaf(ca, 'catalog');
    const srv = await detectingServer({ tls: { key: leaf.keyPem, cert: leaf.certPem } });
    const talk = (alpn: string[] | undefined, payload: string): Promise<string> =>
      new Promise((resolve, reject) => {
        const c = tls.connect({ port: srv.port, host: '127.0.0.1', ca: ca.certPem, servername: 'localhost', checkServerIdentity: () => undefined, ALPNProtocols: alpn });
        let got = '';
        c.on('secureConnect', () => c.end(payload));
        c.on('data', (d: Buffer) => (got += d.toString()));
        c.on('close', () => resolve(got));
        c.on('error', reject);
      });
    expect(await talk([MESH_TCP_ALPN], 'GET / HTTP/1.1\r\n\r\n')).toBe('bye opaque');
    expect(await until(srv.seen, 1)).toMatchObject({ protocol: 'opaque', by: 'alpn', alpn: MESH_TCP_ALPN });
    expect(await talk(['x-unknown', 'http/1.1'], 'GET / HTTP/1.1\r\n\r\n')).toBe('bye http1');
    expect(await until(srv.seen, 2)).toMatchObject({ protocol: 'http1', by: 'alpn', alpn: 'http/1.1' });
    expect(await talk(undefined, '\x00binary')).toBe('bye opaque');
    expect(await until(srv.seen, 3)).toMatchObject({ protocol: 'opaque', by: 'bytes', read: '\x00binary' });
  });

  it('hands a request line still going at the byte cap to the HTTP/1 handler (its codec answers 414)', async () => {
    const srv = await detectingServer();
    const long = 'GET /' + 'a'.repeat(9000);
    expect(await send(srv.port, [long])).toBe('bye http1');
    expect(await until(srv.seen, 1)).toMatchObject({ protocol: 'http1', by: 'bytes', read: long });
  });

  it('refuses, with a log line, a protocol nothing handles', async () => {
    const logs: Array<Record<string, unknown>> = [];
    const listener = new ProtocolListener({ name: 'http-only', log: (e) => logs.push(e) });
    listener.handle('http1', (s) => s.destroy());
    const server = net.createServer({ allowHalfOpen: true }, (s) => listener.accept(s));
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    expect(await send((server.address() as net.AddressInfo).port, ['\x00\x01\x02'])).toBe('');
    expect(logs).toContainEqual(expect.objectContaining({ event: 'connection-refused', listener: 'http-only', protocol: 'opaque', reason: 'unsupported-protocol' }));
  });
});
