// Shared pieces of the data-plane tests: an upstream app on node:http with
// routes that exercise framing (status codes, chunked trailers, echo of the
// body's length and digest), a raw TCP client that sends exact bytes, and a
// standalone meshc proxy in front of the app.
//
// In:  test parameters. Out: running servers and what they saw.
import http, { type IncomingHttpHeaders } from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { createHash } from 'node:crypto';
import { WebSocketServer } from 'ws';
import { StandaloneProxy, type StandaloneOptions } from '../../runtime/standalone.ts';

export interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  trailers: Record<string, string>;
  bodyLength: number;
  bodySha: string;
}

export interface TestApp {
  port: number;
  seen: SeenRequest[];
  /** TCP connections the app accepted. */
  connections: number;
  close(): Promise<void>;
}

/**
 * Routes: /status/<code>; /trailers (chunked response with a trailer);
 * /big/<n> (n bytes, chunked); /slow/<ms>; /ws (WebSocket echo); anything
 * else answers JSON describing the request, after reading the whole body.
 */
export async function startApp(): Promise<TestApp> {
  const seen: SeenRequest[] = [];
  const server = http.createServer((req, res) => {
    const hash = createHash('sha256');
    let length = 0;
    req.on('data', (c: Buffer) => {
      hash.update(c);
      length += c.length;
    });
    req.on('end', () => {
      const entry: SeenRequest = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, trailers: req.trailers as Record<string, string>, bodyLength: length, bodySha: hash.digest('hex') };
      seen.push(entry);
      const url = req.url ?? '/';
      const status = /^\/status\/(\d+)/.exec(url);
      if (status) {
        res.writeHead(Number(status[1]), { 'x-app': 'yes', 'content-length': '0' });
        res.end();
      } else if (url === '/trailers') {
        res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-checksum' });
        res.write('part one,');
        res.write('part two');
        res.addTrailers({ 'x-checksum': 'abc123' });
        res.end();
      } else if (url.startsWith('/big/')) {
        const n = Number(url.slice(5));
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        const block = Buffer.alloc(64 * 1024, 0x61);
        let left = n;
        const more = (): void => {
          while (left > 0) {
            const piece = block.subarray(0, Math.min(block.length, left));
            left -= piece.length;
            if (!res.write(piece)) {
              res.once('drain', more);
              return;
            }
          }
          res.end();
        };
        more();
      } else if (url === '/hop-response') {
        // Hop-by-hop fields the proxy must not pass on: Keep-Alive, and one the Connection field names.
        res.writeHead(200, { connection: 'keep-alive, x-app-private', 'x-app-private': 'secret', 'keep-alive': 'timeout=5', 'x-app-kept': '1', 'content-length': '2' });
        res.end('ok');
      } else if (url === '/hop-plain') {
        // Hop-by-hop fields around kept ones, Connection naming no other field: the proxy forwards this head as received, less those lines.
        res.writeHead(200, { 'keep-alive': 'timeout=5', 'x-app-first': '1', connection: 'keep-alive', 'x-app-kept': '1', 'content-length': '2' });
        res.end('ok');
      } else if (url.startsWith('/slow/')) {
        setTimeout(() => res.end('slow'), Number(url.slice(6)));
      } else {
        const body = JSON.stringify(entry);
        res.writeHead(200, { 'content-type': 'application/json', 'x-app': 'yes', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      }
    });
  });
  const app: TestApp = { port: 0, seen, connections: 0, close: async () => {} };
  server.on('connection', () => app.connections++);
  const wss = new WebSocketServer({ server, path: '/ws' });
  wss.on('connection', (ws) => ws.on('message', (m, binary) => ws.send(binary ? m : `echo: ${String(m)}`)));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  app.port = (server.address() as AddressInfo).port;
  app.close = () =>
    new Promise<void>((r) => {
      wss.close();
      server.closeAllConnections();
      server.close(() => r());
    });
  return app;
}

export interface RawResult {
  text: string;
  /** The server closed the connection (within the wait). */
  closed: boolean;
}

/**
 * Sends exact bytes (each string of `parts` as its own write, `gapMs` apart)
 * and collects what comes back until the server closes or `waitMs` passes.
 */
export function raw(port: number, parts: Array<string | Buffer>, options: { waitMs?: number; gapMs?: number; until?: (text: string) => boolean } = {}): Promise<RawResult> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let text = '';
    let done = false;
    const finish = (closed: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ text, closed });
    };
    const timer = setTimeout(() => finish(false), options.waitMs ?? 2_000);
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (options.until?.(text)) finish(false);
    });
    socket.on('close', () => finish(true));
    socket.on('error', (err) => (done ? undefined : text ? finish(true) : reject(err)));
    socket.on('connect', async () => {
      for (const p of parts) {
        if (socket.destroyed) return;
        socket.write(p);
        if (options.gapMs) await new Promise((r) => setTimeout(r, options.gapMs));
      }
    });
  });
}

/** Status codes of every response head in a raw transcript, in order. */
export function statuses(text: string): number[] {
  return [...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
}

export interface TestProxy {
  proxy: StandaloneProxy;
  port: number;
  logs: Array<Record<string, unknown>>;
  stop(): Promise<void>;
}

export async function startProxy(appPort: number, extra: Partial<StandaloneOptions> = {}): Promise<TestProxy> {
  const logs: Array<Record<string, unknown>> = [];
  const proxy = new StandaloneProxy({
    listen: { host: '127.0.0.1', port: 0 },
    upstream: new URL(`http://127.0.0.1:${appPort}`),
    filters: [],
    log: (e) => logs.push(e),
    ...extra,
  });
  await proxy.start();
  return { proxy, port: proxy.addresses().listen.port, logs, stop: () => proxy.stop() };
}
