// The proxy's own JavaScript per request, without sockets: the HTTP/1.1
// codec, the proxy (handleRequest), the access log line and the metrics, with
// and without the compiled chain, driven in process through stand-in sockets
// (a downstream that sends `GET /items/1` as soon as the previous response is
// out, an upstream that answers as nginx does). No kernel, no other process:
// the numbers move only when the request path's own work does, which the
// one-hop benchmark (shared cores, wrk and nginx beside the proxy) cannot
// resolve below a few microseconds. The baseline is the same path without a
// filter; the floor it misses (Node's streams and the four syscalls) is what
// http-hop adds.
import { Buffer } from 'node:buffer';
import { EventEmitter } from 'node:events';
import { Registry } from 'prom-client';
import { hopFilterBytes } from './lib/hop-policy.ts';
import { ACCESS_LOG_LINE, type AccessLogEntry } from '../runtime/access-log.ts';
import { FilterChain } from '../runtime/chain.ts';
import { UpstreamPool } from '../runtime/http1/client.ts';
import { DEFAULT_LIMITS } from '../runtime/http1/parse.ts';
import { DEFAULT_SERVER_OPTIONS, Http1Server, type ServerExchange } from '../runtime/http1/server.ts';
import { fixedRoute, handleRequest, type DownstreamExchange, type ListenerRole, type ProxyDeps } from '../runtime/http-proxy.ts';
import { SidecarMetrics } from '../runtime/metrics.ts';
import { standaloneFacts } from '../runtime/standalone.ts';
import { createHostEnvironment } from '../runtime/wasm/environment.ts';
import type { Table } from './lib/report.ts';
import { median } from './lib/stats.ts';
import type { SuiteOptions, SuiteResult } from './run.ts';

const REQUEST = Buffer.from('GET /items/1 HTTP/1.1\r\nHost: 127.0.0.1:18080\r\nUser-Agent: bench\r\n\r\n');
const RESPONSE = Buffer.from(
  'HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Wed, 25 Nov 2026 14:00:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: keep-alive\r\n\r\nhello, mesh!\n',
);
const BODY_END = 'hello, mesh!\n';

/** Just enough of net.Socket for the codec: writes go to `peer`, reads are emitted by the driver. */
class StandInSocket extends EventEmitter {
  destroyed = false;
  writable = true;
  remoteAddress = '127.0.0.1';
  remotePort = 40000;
  localAddress = '127.0.0.1';
  localPort = 18080;
  peer: (data: Buffer | string) => void = () => {};
  setNoDelay(): this { return this; }
  pause(): this { return this; }
  resume(): this { return this; }
  isPaused(): boolean { return false; }
  cork(): void {}
  uncork(): void {}
  write(data: Buffer | string): boolean {
    this.peer(data);
    return true;
  }
  end(data?: Buffer | string): this {
    if (data) this.peer(data);
    return this;
  }
  destroy(): this {
    this.destroyed = true;
    return this;
  }
}

/** An upstream connection that answers every request head with RESPONSE, a microtask later. */
function upstreamSocket(): StandInSocket {
  const s = new StandInSocket();
  s.peer = (d) => {
    if (typeof d === 'string' && d.startsWith('GET')) queueMicrotask(() => s.emit('data', RESPONSE));
  };
  queueMicrotask(() => s.emit('connect'));
  return s;
}

/** Runs `count` requests one after another through a proxy; returns µs per request. */
async function measure(chain: FilterChain | undefined, count: number): Promise<number> {
  const pool = new UpstreamPool({ connect: () => upstreamSocket() as never, secure: false, limits: DEFAULT_LIMITS, idleTimeoutMs: 4_000, maxIdle: 4 });
  const target = { pool, version: 'v1', endpoint: 'http://127.0.0.1:18081/', address: '127.0.0.1:18081' };
  const role: ListenerRole = {
    name: 'standalone',
    reporter: 'source',
    facts: (ex: DownstreamExchange) => standaloneFacts(ex, 'bench'),
    chain: () => chain,
    route: () => fixedRoute(target, 15_000),
    sourceWorkload: () => '',
    ownVersion: () => '',
  };
  let logBytes = 0;
  const logBuffer = Buffer.allocUnsafe(64 * 1024);
  const deps: ProxyDeps = {
    metrics: new SidecarMetrics(),
    log: () => {},
    // The line is written into a buffer as in production; only the write to stdout is left out.
    accessLog: (entry: AccessLogEntry) => (logBytes += ACCESS_LOG_LINE.write(entry, logBuffer, 0)),
    upstreamTimeoutMs: 15_000,
    track: () => {},
  };
  const server = new Http1Server(
    { limits: DEFAULT_LIMITS, ...DEFAULT_SERVER_OPTIONS },
    { request: (ex: ServerExchange) => handleRequest(role, deps, ex), refused: (_c, err) => { throw err; } },
  );
  const down = new StandInSocket();
  let done = 0;
  let onResponse = (): void => {};
  down.peer = (d) => {
    if ((typeof d === 'string' ? d : d.toString('latin1')).endsWith(BODY_END)) onResponse();
  };
  server.accept(down as never, {});
  const started = process.hrtime.bigint();
  await new Promise<void>((resolve) => {
    onResponse = () => {
      // The next request waits for the turn to end, as a real client's would (and the proxy's write batch flushes).
      if (++done === count) resolve();
      else setImmediate(() => down.emit('data', REQUEST));
    };
    down.emit('data', REQUEST);
  });
  const us = Number(process.hrtime.bigint() - started) / 1e3 / count;
  server.drain();
  pool.destroy();
  if (logBytes === 0) throw new Error('no access log line was built');
  return us;
}

export async function run(options: SuiteOptions): Promise<SuiteResult> {
  const env = createHostEnvironment(new Registry(), () => {});
  const wasm = await hopFilterBytes();
  const chain = await FilterChain.fromSpecs([{ name: 'bench', service: '*', rootId: 'bench', configuration: '', failurePolicy: 'closed', wasm }], env, 'bench');
  // Requests per measured round: about a second each; the first round of each case warms the JIT.
  const count = Math.max(10_000, Math.round(options.seconds * 10_000));
  const rounds = 5;
  const cases: Array<[string, FilterChain | undefined]> = [
    ['no filters', undefined],
    ['compiled chain', chain],
  ];
  const raw: Record<string, number[]> = {};
  for (let r = 0; r <= rounds; r++) {
    for (const [label, c] of cases) {
      const us = await measure(c, count);
      if (r > 0) (raw[label] ??= []).push(us);
    }
  }
  chain.retire();
  const base = median(raw['no filters']!);
  const table: Table = {
    title: `The request path in process (no sockets), ${count} requests a round, ${rounds} rounds alternating`,
    columns: ['case', 'median µs/request', 'min', 'max', '× no filters'],
    rows: Object.entries(raw).map(([label, xs]) => [label, median(xs).toFixed(2), Math.min(...xs).toFixed(2), Math.max(...xs).toFixed(2), (median(xs) / base).toFixed(2)]),
    notes: [
      'One request at a time: codec, proxy, access-log line (built, not written), metrics; the chain is bench/policies/hop.meshpolicy.',
      'Not in these numbers: Node\'s stream machinery and the kernel (bench/http-hop.ts measures the whole hop).',
    ],
  };
  return { tables: [table], raw };
}
