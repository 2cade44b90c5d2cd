// The codec's sockets read into one shared buffer (runtime/http1/shared-read.ts):
// accepted plain and TLS sockets are switched over (Node gives no `onread` to
// server sockets, so this test is what notices a Node that no longer allows
// it), sockets we open take it as `onread`, bytes a socket already held come
// first and in order, and a socket whose reader is unset gets its bytes back
// as 'data' events (upgrades, CONNECT hand-overs).
import net, { type AddressInfo, type Socket } from 'node:net';
import tls from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { SHARED_READ, adoptSharedRead, readsShared, setReader, tlsConnectShared } from '../../runtime/http1/shared-read.ts';
import { DEFAULT_LIMITS } from '../../runtime/http1/parse.ts';
import { DEFAULT_SERVER_OPTIONS, Http1Server, type ServerExchange } from '../../runtime/http1/server.ts';
import { createCa, issueLeaf } from '../runtime/pki.ts';

const closers: Array<() => void> = [];
afterEach(() => {
  for (const c of closers.splice(0)) c();
});

/** A server whose accepted sockets are handed to `onSocket`; resolves with its port. */
async function serve(server: net.Server, onSocket: (s: Socket) => void, event = 'connection'): Promise<number> {
  server.on(event, onSocket);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  closers.push(() => server.close());
  return (server.address() as AddressInfo).port;
}

/** Collects what a reader receives; resolves once `bytes` have arrived. */
function collector(bytes: number): { reader: { onData(c: Buffer): void }; done: Promise<string> } {
  let got = '';
  let resolve: (s: string) => void = () => {};
  const done = new Promise<string>((r) => (resolve = r));
  return {
    reader: {
      onData(c: Buffer) {
        got += c.toString('latin1');
        if (got.length >= bytes) resolve(got);
      },
    },
    done,
  };
}

describe('shared read buffer', () => {
  it('switches an accepted plain socket; later reads come through the reader, not as data events', async () => {
    const { reader, done } = collector(6);
    let dataEvents = 0;
    let adopted = false;
    const port = await serve(net.createServer(), (s) => {
      s.on('data', () => dataEvents++);
      setReader(s, reader);
      adopted = adoptSharedRead(s);
    });
    const client = net.connect(port, '127.0.0.1');
    closers.push(() => client.destroy());
    await new Promise((r) => client.once('connect', r));
    client.write('abc');
    await new Promise((r) => setTimeout(r, 30));
    client.write('def');
    expect(await done).toBe('abcdef');
    expect(adopted).toBe(true);
    expect(dataEvents).toBe(0);
  });

  it('does not switch while the stream holds bytes, which then arrive first and in order', async () => {
    let socket: Socket | undefined;
    const port = await serve(net.createServer({ pauseOnConnect: false }), (s) => {
      socket = s;
      s.pause();
    });
    const client = net.connect(port, '127.0.0.1');
    closers.push(() => client.destroy());
    await new Promise((r) => client.once('connect', r));
    client.write('first ');
    // Read into the paused stream: Node keeps reading until its high-water mark.
    await new Promise((r) => setTimeout(r, 50));
    const s = socket!;
    s.read(0);
    await new Promise((r) => setTimeout(r, 20));
    expect(s.readableLength).toBeGreaterThan(0);
    expect(adoptSharedRead(s)).toBe(false);
    expect(readsShared(s)).toBe(false);
    let got = '';
    const reader = { onData: (c: Buffer) => (got += c.toString('latin1')) };
    setReader(s, reader);
    s.on('data', (c: Buffer) => {
      reader.onData(c);
      if (s.readableLength === 0) adoptSharedRead(s);
    });
    s.resume();
    await new Promise((r) => setTimeout(r, 20));
    expect(readsShared(s)).toBe(true);
    client.write('second');
    await new Promise((r) => setTimeout(r, 50));
    expect(got).toBe('first second');
  });

  it('switches an accepted TLS socket and a TLS client opened with it', async () => {
    const ca = await createCa();
    const leaf = await issueLeaf(ca, 'shared');
    const { reader: serverReader, done: serverGot } = collector(11);
    const port = await serve(
      tls.createServer({ cert: leaf.certPem, key: leaf.keyPem }),
      (s) => {
        setReader(s, serverReader);
        expect(adoptSharedRead(s)).toBe(true);
        s.write('from server');
      },
      'secureConnection',
    );
    const { reader: clientReader, done: clientGot } = collector(11);
    const client = tlsConnectShared({ host: '127.0.0.1', port, ca: ca.certPem, checkServerIdentity: () => undefined }, SHARED_READ);
    closers.push(() => client.destroy());
    setReader(client, clientReader);
    await new Promise((r) => client.once('secureConnect', r));
    expect(readsShared(client)).toBe(true);
    client.write('from client');
    expect(await serverGot).toBe('from client');
    expect(await clientGot).toBe('from server');
  });

  it('a socket without a reader gets its bytes back as data events', async () => {
    let server: Socket | undefined;
    const port = await serve(net.createServer(), (s) => (server = s));
    const client = net.connect({ port, host: '127.0.0.1', onread: SHARED_READ });
    closers.push(() => client.destroy());
    await new Promise((r) => client.once('connect', r));
    const chunks: string[] = [];
    client.on('data', (c: Buffer) => chunks.push(c.toString()));
    server!.write('raw bytes');
    await new Promise((r) => setTimeout(r, 50));
    expect(chunks.join('')).toBe('raw bytes');
  });

  it('the HTTP/1.1 codec reads requests through it, including bytes that came before it switched', async () => {
    const seen: string[] = [];
    let socket: Socket | undefined;
    const codec = new Http1Server(
      { limits: DEFAULT_LIMITS, ...DEFAULT_SERVER_OPTIONS },
      {
        request: (ex: ServerExchange) => {
          seen.push(ex.head.target);
          ex.respond(200, [], Buffer.from('ok'));
        },
        refused: () => {},
      },
    );
    const port = await serve(net.createServer({ allowHalfOpen: true }), (s) => {
      socket = s;
      // As protocol detection does: the first bytes are read, then put back into the paused stream.
      s.once('data', (first: Buffer) => {
        s.pause();
        s.unshift(first);
        codec.accept(s);
        s.resume();
      });
    });
    closers.push(() => codec.destroyAll());
    const client = net.connect(port, '127.0.0.1');
    closers.push(() => client.destroy());
    let answers = '';
    client.on('data', (c: Buffer) => (answers += c.toString('latin1')));
    await new Promise((r) => client.once('connect', r));
    client.write('GET /one HTTP/1.1\r\nHost: a\r\n\r\n');
    await new Promise((r) => setTimeout(r, 50));
    client.write('GET /two HTTP/1.1\r\nHost: a\r\n\r\n');
    await new Promise((r) => setTimeout(r, 50));
    expect(seen).toEqual(['/one', '/two']);
    expect(readsShared(socket!)).toBe(true);
    expect(answers.match(/HTTP\/1\.1 200 OK/g)).toHaveLength(2);
  });
});
