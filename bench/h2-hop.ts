// One TLS hop in one Node process, for bench/h2.ts's transport comparison.
//   node bench/h2-hop.ts serve h1|h2 <port> <pki dir>
//     a TLS server on 127.0.0.1:<port> running the sidecar's HTTP/1.1 codec
//     (runtime/http1/server) or its HTTP/2 server (runtime/http2/server),
//     answering every request with a fixed 13-byte body.
//   node bench/h2-hop.ts drive h1|h2 <port> <seconds> <in flight>
//     a closed loop through the sidecar's HTTP/1.1 pool (runtime/http1/client)
//     or HTTP/2 session pool (runtime/http2/client) to a TLS server on <port>;
//     prints {requestsPerSec, p50Ms, p99Ms, errors} as JSON.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import tls from 'node:tls';
import { MeshError } from '../runtime/errors.ts';
import { UpstreamPool } from '../runtime/http1/client.ts';
import { DEFAULT_LIMITS } from '../runtime/http1/parse.ts';
import { DEFAULT_SERVER_OPTIONS, Http1Server } from '../runtime/http1/server.ts';
import type { OutgoingFraming, Upstream, UpstreamHandler } from '../runtime/http-proxy.ts';
import { H2Pool } from '../runtime/http2/client.ts';
import { DEFAULT_H2_OPTIONS, Http2Server } from '../runtime/http2/server.ts';

const [cmd, mode, portArg, a4, a5] = process.argv.slice(2);
const port = Number(portArg);
const BODY = Buffer.from('hello, mesh!\n');

if (cmd === 'serve') {
  const dir = a4!;
  const secure = { cert: readFileSync(join(dir, 'server.crt')), key: readFileSync(join(dir, 'server.key')) };
  const respond = (ex: { respond(status: number, headers: Array<[string, string]>, body: Buffer): void }): void => ex.respond(200, [['content-type', 'text/plain']], BODY);
  const refused = (): void => {};
  if (mode === 'h1') {
    const http = new Http1Server({ limits: DEFAULT_LIMITS, ...DEFAULT_SERVER_OPTIONS }, { request: respond, refused });
    tls.createServer({ ...secure, ALPNProtocols: ['http/1.1'], allowHalfOpen: true }, (s) => http.accept(s)).listen(port, '127.0.0.1');
  } else {
    const h2 = new Http2Server({ limits: DEFAULT_LIMITS, ...DEFAULT_H2_OPTIONS }, { request: respond, refused });
    tls.createServer({ ...secure, ALPNProtocols: ['h2'] }, (s) => h2.accept(s)).listen(port, '127.0.0.1');
  }
  process.once('SIGTERM', () => process.exit(0));
} else if (cmd === 'drive') {
  const seconds = Number(a4);
  const inFlight = Number(a5);
  const connect = (alpn: string) => () => tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ALPNProtocols: [alpn] });
  const h1 = new UpstreamPool({ connect: connect('http/1.1'), secure: true, limits: DEFAULT_LIMITS, idleTimeoutMs: 60_000, maxIdle: inFlight });
  const pool: Upstream = mode === 'h1' ? h1 : new H2Pool({ connect: connect('h2'), fallback: h1, idleTimeoutMs: 60_000 });
  const head = 'GET /items/1 HTTP/1.1\r\nhost: bench\r\n\r\n';
  const framing: OutgoingFraming = { method: 'GET', length: 0, upgrade: false, headers: [[':method', 'GET'], [':path', '/items/1'], [':authority', 'bench'], [':scheme', 'https']] };
  const latencies: number[] = [];
  let errors = 0;
  let measuring = true;
  const end = performance.now() + seconds * 1000;
  let running = inFlight;
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  /** One closed-loop worker: the next request starts when the previous response ended. */
  const loop = (): void => {
    if (performance.now() > end) {
      measuring = false;
      if (--running === 0) done();
      return;
    }
    const t0 = performance.now();
    const handler: UpstreamHandler = {
      response: () => {},
      data: () => {},
      end: () => {
        if (measuring) latencies.push(performance.now() - t0);
        setImmediate(loop);
      },
      failed: (_err: MeshError) => {
        errors++;
        setImmediate(loop);
      },
    };
    pool.request(head, framing, handler);
  };
  const started = performance.now();
  for (let i = 0; i < inFlight; i++) loop();
  await finished;
  const wall = (performance.now() - started) / 1000;
  latencies.sort((x, y) => x - y);
  const pct = (p: number): number => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? NaN;
  process.stdout.write(JSON.stringify({ requestsPerSec: latencies.length / wall, p50Ms: pct(50), p99Ms: pct(99), errors }) + '\n');
  process.exit(0);
} else {
  process.stderr.write('usage: h2-hop.ts serve h1|h2 <port> <pki dir> | drive h1|h2 <port> <seconds> <in flight>\n');
  process.exit(2);
}
