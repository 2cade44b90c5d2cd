// HTTP/2 through two proxies, and the measurement behind the sidecars' choice
// of HTTP/1.1 between themselves.
//
// Table 1 (h2load, closed loop): direct to nginx (h2c, fixed body); a haproxy
// pair speaking HTTP/2 end to end (h2c in, h2 over mTLS between, h2c out); a
// haproxy pair with HTTP/1.1 over mTLS between (the sidecars' layout); the
// meshc pair (h2c in, HTTP/1.1 over mTLS between, h2c to nginx) without
// filters and with the compiled bench policy. req/s, p50/p99 from h2load's
// per-request log, ratio to the HTTP/2 haproxy pair.
//
// Table 2 (one TLS hop in one Node process, the transport choice): the server
// side (our HTTP/1.1 codec under h2load --h1 vs node:http2 under h2load) and
// the client side (our HTTP/1.1 pool vs our HTTP/2 session pool, driving
// nginx over TLS from a closed loop in a child process).
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { writeHopBundle } from './lib/hop-policy.ts';
import { makePki, runningPair, startProcess, startSidecarPair, type Child, type Pki, type RunningPair } from './lib/pairs.ts';
import { freePort, nginxConf, waitForPort } from './lib/servers.ts';
import { requireTools, which } from './lib/tools.ts';
import type { Table } from './lib/report.ts';
import type { SuiteOptions, SuiteResult } from './run.ts';

const exec = promisify(execFile);



/** nginx, one worker, fixed 13-byte body: h2c on `h2c`, and HTTP/1.1 + h2 over TLS on `tls`. */
async function startUpstream(pki: Pki): Promise<{ h2c: number; tls: number; stop(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'meshc-bench-h2-nginx-'));
  const [h2c, tlsPort] = [await freePort(), await freePort()];
  const body = `location / { return 200 "hello, mesh!\\n"; }`;
  await writeFile(
    join(dir, 'nginx.conf'),
    nginxConf(dir, 'nginx', `  http2_max_requests 1000000;
  server { listen 127.0.0.1:${h2c} http2; ${body} }
  server { listen 127.0.0.1:${tlsPort} ssl http2; ssl_certificate ${pki.dir}/server.crt; ssl_certificate_key ${pki.dir}/server.key; ${body} }`),
  );
  const p = await startProcess(which('nginx') ?? 'nginx', ['-c', join(dir, 'nginx.conf'), '-p', dir], h2c);
  await waitForPort(tlsPort);
  return {
    h2c,
    tls: tlsPort,
    stop: async () => {
      await p.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** haproxy A (h2c in) → mTLS → haproxy B → nginx h2c; `between` is the protocol on the mTLS hop. */
async function startHaproxyPair(upstreamH2c: number, pki: Pki, between: 'h2' | 'http/1.1'): Promise<RunningPair> {
  const dir = await mkdtemp(join(tmpdir(), 'meshc-bench-h2-haproxy-'));
  const [pa, pb] = [await freePort(), await freePort()];
  const common = `global\n  nbthread 1\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n  option http-keep-alive\n`;
  await writeFile(join(dir, 'b.cfg'), `${common}frontend fe\n  bind 127.0.0.1:${pb} ssl crt ${pki.dir}/server.pem ca-file ${pki.dir}/ca.pem verify required alpn ${between}\n  default_backend be\nbackend be\n  http-reuse always\n  server up 127.0.0.1:${upstreamH2c} proto h2\n`);
  await writeFile(join(dir, 'a.cfg'), `${common}frontend fe\n  bind 127.0.0.1:${pa} proto h2\n  default_backend be\nbackend be\n  http-reuse always\n  server b 127.0.0.1:${pb} ssl verify required ca-file ${pki.dir}/ca.pem crt ${pki.dir}/client.pem alpn ${between}\n`);
  const bin = which('haproxy') ?? 'haproxy';
  const b = await startProcess(bin, ['-f', join(dir, 'b.cfg'), '-db'], pb);
  const a = await startProcess(bin, ['-f', join(dir, 'a.cfg'), '-db'], pa);
  return runningPair(`haproxy pair, ${between === 'h2' ? 'HTTP/2' : 'HTTP/1.1'} between`, pa, a, b, dir);
}

interface H2loadResult {
  requestsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  ok: number;
  errors: number;
}

/** h2load for `seconds` (after a 1 s warm-up), percentiles from its per-request log. */
async function h2load(url: string, seconds: number, clients: number, streams: number, extra: string[] = []): Promise<H2loadResult> {
  const dir = await mkdtemp(join(tmpdir(), 'meshc-bench-h2load-'));
  const log = join(dir, 'requests.log');
  try {
    const args = ['-t', '1', '-c', String(clients), '-m', String(streams), '-D', String(seconds), '--warm-up-time', '1', '--log-file', log, ...extra, url];
    const { stdout } = await exec('h2load', args, { timeout: (seconds + 30) * 1000, maxBuffer: 16 * 1024 * 1024 });
    const rps = /finished in [\d.]+m?s, ([\d.]+) req\/s/.exec(stdout);
    const status = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(stdout);
    const reqs = /requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(stdout);
    if (!rps || !status || !reqs) throw new Error(`cannot read h2load output:\n${stdout}`);
    // Log lines: start time (µs since epoch), status, elapsed µs.
    const times = (await readFile(log, 'utf8'))
      .split('\n')
      .filter(Boolean)
      .map((l) => Number(l.split('\t')[2]) / 1000)
      .sort((a, b) => a - b);
    const pct = (p: number): number => times[Math.min(times.length - 1, Math.floor((p / 100) * times.length))] ?? NaN;
    return {
      requestsPerSec: Number(rps[1]),
      p50Ms: pct(50),
      p99Ms: pct(99),
      ok: Number(status[1]),
      errors: Number(reqs[2]) + Number(reqs[3]) + Number(status[3]) + Number(status[4]),
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}


/** One TLS hop, server side: a Node process running our HTTP/1.1 codec or node:http2, answering a fixed body. */
async function hopServer(mode: 'h1' | 'h2', pki: Pki): Promise<Child & { port: number }> {
  const port = await freePort();
  const script = new URL('./h2-hop.ts', import.meta.url).pathname;
  const p = await startProcess(process.execPath, [script, 'serve', mode, String(port), pki.dir], port);
  return { ...p, port };
}

/** One TLS hop, client side: a Node process driving nginx through our HTTP/1.1 pool or HTTP/2 session pool. */
async function hopClient(mode: 'h1' | 'h2', port: number, seconds: number, inFlight: number): Promise<{ requestsPerSec: number; p50Ms: number; p99Ms: number; errors: number }> {
  const script = new URL('./h2-hop.ts', import.meta.url).pathname;
  const { stdout } = await exec(process.execPath, [script, 'drive', mode, String(port), String(seconds), String(inFlight)], { timeout: (seconds + 30) * 1000 });
  return JSON.parse(stdout) as { requestsPerSec: number; p50Ms: number; p99Ms: number; errors: number };
}

export async function run(options: SuiteOptions): Promise<SuiteResult> {
  requireTools(['h2load', 'nginx', 'haproxy']);
  const dir = await mkdtemp(join(tmpdir(), 'meshc-bench-h2-'));
  const bundleDir = await writeHopBundle(dir);
  const pki = await makePki();
  const upstream = await startUpstream(pki);
  // 10 connections × 10 streams: 100 requests in flight, as wrk's 50-100 connections elsewhere.
  const clients = 10;
  const streams = 10;
  const rows: Record<string, H2loadResult> = {};
  const measure = async (label: string, port: number, authority: string): Promise<void> => {
    const url = `http://127.0.0.1:${port}/items/1`;
    const extra = ['-H', `:authority: ${authority}`];
    await h2load(url, 2, clients, streams, extra); // warm-up: pools, JIT
    rows[label] = await h2load(url, options.seconds, clients, streams, extra);
    process.stderr.write(`  ${label}: ${rows[label].requestsPerSec.toFixed(0)} req/s, p99 ${rows[label].p99Ms.toFixed(2)} ms, errors ${rows[label].errors}\n`);
  };
  try {
    await measure('direct (nginx h2c)', upstream.h2c, 'bench');
    for (const between of ['h2', 'http/1.1'] as const) {
      const pair = await startHaproxyPair(upstream.h2c, pki, between);
      try {
        await measure(pair.name, pair.port, pair.host);
      } finally {
        await pair.stop();
      }
    }
    for (const [label, bundle] of [['meshc pair, no filters', undefined], ['meshc pair, compiled chain', bundleDir]] as const) {
      const pair = await startSidecarPair(upstream.h2c, pki, bundle, label);
      try {
        await measure(label, pair.port, pair.host);
      } finally {
        await pair.stop();
      }
    }
  } finally {
    await upstream.stop().catch(() => undefined);
  }

  // The transport between sidecars: one TLS hop, each side in its own process.
  const hop: Record<string, { requestsPerSec: number; p50Ms: number; p99Ms: number; errors: number }> = {};
  for (const mode of ['h1', 'h2'] as const) {
    const server = await hopServer(mode, pki);
    try {
      const url = `https://127.0.0.1:${server.port}/`;
      const args = mode === 'h1' ? ['--h1'] : [];
      // HTTP/1.1: one request per connection at a time (as the sidecar pool does); HTTP/2: multiplexed.
      const [c, m] = mode === 'h1' ? [clients * streams, 1] : [clients, streams];
      await h2load(url, 2, c, m, args);
      hop[`server ${mode}`] = await h2load(url, options.seconds, c, m, args);
    } finally {
      await server.stop();
    }
  }
  const upstreamTls = await startUpstream(pki);
  try {
    for (const mode of ['h1', 'h2'] as const) {
      await hopClient(mode, upstreamTls.tls, 2, clients * streams);
      hop[`client ${mode}`] = await hopClient(mode, upstreamTls.tls, options.seconds, clients * streams);
    }
  } finally {
    await upstreamTls.stop();
    await rm(dir, { recursive: true, force: true });
    await rm(pki.dir, { recursive: true, force: true });
  }

  const ref = rows['haproxy pair, HTTP/2 between']?.requestsPerSec ?? NaN;
  const pairs: Table = {
    title: `HTTP/2 through two proxies with mTLS between them, h2load -t1 -c${clients} -m${streams} -D${options.seconds}, upstream nginx h2c (fixed body)`,
    columns: ['target', 'req/s', 'p50 ms', 'p99 ms', 'errors', '× haproxy pair (h2)'],
    rows: Object.entries(rows).map(([label, r]) => [label, Math.round(r.requestsPerSec), r.p50Ms, r.p99Ms, r.errors, label.startsWith('direct') ? '-' : (r.requestsPerSec / ref).toFixed(2)]),
    notes: [
      'Client and upstream speak HTTP/2 in every row; the meshc pair carries the requests between its sidecars over pooled HTTP/1.1 mTLS connections (x-mesh-orig-proto: h2) and speaks h2c to nginx.',
      'All processes share the same 2 cores with h2load and nginx; compare rows of one run with each other.',
      'The compiled chain is bench/policies/hop.meshpolicy, run by both sidecars.',
    ],
  };
  const transport: Table = {
    title: `The sidecar-to-sidecar transport: one TLS hop, one Node process, ${clients * streams} requests in flight, ${options.seconds} s`,
    columns: ['side', 'HTTP/1.1 (our codec) req/s', 'HTTP/2 (node:http2) req/s', 'HTTP/2 ÷ HTTP/1.1', 'p99 ms h1 / h2'],
    rows: (['server', 'client'] as const).map((side) => {
      const a = hop[`${side} h1`]!;
      const b = hop[`${side} h2`]!;
      return [side === 'server' ? 'server (h2load → Node)' : 'client (Node → nginx)', Math.round(a.requestsPerSec), Math.round(b.requestsPerSec), (b.requestsPerSec / a.requestsPerSec).toFixed(2), `${a.p99Ms.toFixed(2)} / ${b.p99Ms.toFixed(2)}`];
    }),
    notes: [
      'Server: runtime/http1/server.ts vs runtime/http2/server.ts behind node:tls, answering a fixed body (h2load --h1 with 100 connections vs h2load with 10 connections × 10 streams).',
      'Client: runtime/http1/client.ts (100 pooled TLS connections) vs runtime/http2/client.ts (one TLS session, 100 streams) against nginx over TLS, closed loop.',
      'The faster transport is what the sidecars use between themselves (docs/runtime.md, HTTP/2 and gRPC).',
    ],
  };
  return { tables: [pairs, transport], raw: { pairs: rows, transport: hop } };
}
