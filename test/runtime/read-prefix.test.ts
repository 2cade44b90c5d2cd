// readPrefix (runtime/net.ts) and the readers built on it: the mesh TCP
// transport header (runtime/tcp/mesh.ts). Real sockets on 127.0.0.1: a
// decision, leftover bytes put back, a refusal, an early end, a timeout.
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { readPrefix } from '../../runtime/net.ts';
import { readTransportHeader } from '../../runtime/tcp/mesh.ts';
import { encodeTransportHeader } from '../../protocol/transport.ts';

let server: net.Server | undefined;
afterEach(() => server?.close());

/** A server whose first accepted socket (paused, as the listener hands it over) goes to `onSocket`; returns a connected client. */
async function pair(onSocket: (s: net.Socket) => void): Promise<net.Socket> {
  server = net.createServer({ pauseOnConnect: true }, onSocket);
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const client = net.connect(port, '127.0.0.1');
  await new Promise((r) => client.once('connect', r));
  return client;
}

const failures = { ended: () => 'ended', timedOut: () => 'timed out' };

describe('readPrefix', () => {
  it('decides once the bytes suffice, across several writes, and hands over every byte read', async () => {
    const got = new Promise<{ err: unknown; value: number | undefined; buf: string }>((resolve) => {
      void pair((s) => readPrefix(s, 5_000, (buf) => (buf.includes('\n') ? buf.indexOf('\n') : undefined), failures, (err, value, buf) => resolve({ err, value, buf: buf.toString() }))).then((c) => {
        c.write('ab');
        setTimeout(() => c.write('c\nrest'), 50);
      });
    });
    expect(await got).toEqual({ err: undefined, value: 3, buf: 'abc\nrest' });
  });

  it('reports what examine throws, an early end, and a timeout', async () => {
    const run = (act: (c: net.Socket) => void, timeoutMs = 5_000) =>
      new Promise<unknown>((resolve) => {
        void pair((s) =>
          readPrefix(s, timeoutMs, (buf) => {
            if (buf[0] === 0x21) throw new Error('refused');
            return undefined;
          }, failures, (err) => resolve(err)),
        ).then(act);
      });
    expect(((await run((c) => c.write('!'))) as Error).message).toBe('refused');
    server?.close();
    expect(await run((c) => c.end('partial'))).toBe('ended');
    server?.close();
    expect(await run(() => {}, 100)).toBe('timed out');
  });
});

describe('readTransportHeader', () => {
  it('returns the port and puts the bytes after the header back into the socket', async () => {
    const got = new Promise<{ err: string | undefined; port: number; rest: string }>((resolve) => {
      void pair((s) =>
        readTransportHeader(s, 5_000, (err, port) => {
          s.once('data', (d: Buffer) => resolve({ err, port, rest: d.toString() }));
          s.resume();
        }),
      ).then((c) => c.write(Buffer.concat([encodeTransportHeader(9000), Buffer.from('payload')])));
    });
    expect(await got).toEqual({ err: undefined, port: 9000, rest: 'payload' });
  });

  it('refuses a bad header', async () => {
    const err = await new Promise<string | undefined>((resolve) => {
      void pair((s) => readTransportHeader(s, 5_000, (e) => resolve(e))).then((c) => c.write('GET / HTTP/1.1\r\n'));
    });
    expect(err).toBe('bad transport header');
  });
});
