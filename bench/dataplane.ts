// The data plane in pairs, in one run: wrk straight to nginx (direct); a
// haproxy pair and an nginx pair with mTLS between their two proxies; the
// meshc sidecar pair (outbound + inbound over pooled mTLS) without filters
// and with the compiled bench policy on both sides. Closed loop (wrk) for
// throughput and latency, then an open loop at a fixed 1,000 req/s for the
// latency the proxies add (p50/p99/p99.9) and their CPU and memory.
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { writeHopBundle } from './lib/hop-policy.ts';
import { makePki, startHaproxyPair, startNginxPair, startSidecarPair, type RunningPair } from './lib/pairs.ts';
import { cpuSeconds, pssMiB, rssMiB } from './lib/procstat.ts';
import { startNginx } from './lib/servers.ts';
import { requireTools } from './lib/tools.ts';
import { wrk, type WrkResult } from './lib/wrk.ts';
import type { Table } from './lib/report.ts';
import type { SuiteOptions, SuiteResult } from './run.ts';

const execFileAsync = promisify(execFile);

interface OpenLoop {
  sent: number;
  ok: number;
  errors: number;
  p50: number;
  p99: number;
  p999: number;
  max: number;
}

interface Row {
  closed: WrkResult;
  open: OpenLoop;
  cpuPercent: number;
  rssMiB: number;
  pssMiB: number;
}

const OPEN_RPS = 1000;

async function openLoop(port: number, host: string, seconds: number): Promise<OpenLoop> {
  const client = new URL('./lib/open-loop-client.ts', import.meta.url).pathname;
  const { stdout } = await execFileAsync(process.execPath, [client, String(port), String(OPEN_RPS), String(seconds), host], { timeout: (seconds + 30) * 1000 });
  return JSON.parse(stdout) as OpenLoop;
}


export async function run(options: SuiteOptions): Promise<SuiteResult> {
  requireTools(['wrk', 'nginx', 'haproxy']);
  const dir = await mkdtemp(join(tmpdir(), 'meshc-bench-dataplane-'));
  const bundleDir = await writeHopBundle(dir);
  const pki = await makePki();
  const upstream = await startNginx();
  const openSeconds = Math.max(5, options.seconds);
  const rows: Record<string, Row> = {};
  const measure = async (label: string, port: number, host: string, pids: () => number[]): Promise<void> => {
    const url = `http://127.0.0.1:${port}/items/1`;
    await wrk({ url, seconds: 2, connections: options.connections, headers: { Host: host } }); // warm-up
    const closed = await wrk({ url, seconds: options.seconds, connections: options.connections, headers: { Host: host } });
    const ids = pids();
    const cpu0 = ids.reduce((a, p) => a + cpuSeconds(p), 0);
    const t0 = performance.now();
    const open = await openLoop(port, host, openSeconds);
    const wall = (performance.now() - t0) / 1000;
    const cpu = ((ids.reduce((a, p) => a + cpuSeconds(p), 0) - cpu0) / wall) * 100;
    const rss = ids.reduce((a, p) => a + rssMiB(p), 0);
    const pss = ids.reduce((a, p) => a + pssMiB(p), 0);
    rows[label] = { closed, open, cpuPercent: cpu, rssMiB: rss, pssMiB: pss };
    process.stderr.write(`  ${label}: ${closed.requestsPerSec.toFixed(0)} req/s; at ${OPEN_RPS}/s p99 ${open.p99.toFixed(2)} ms, CPU ${cpu.toFixed(1)}%\n`);
  };
  const pair = async (startPair: () => Promise<RunningPair>): Promise<void> => {
    const p = await startPair();
    try {
      await measure(p.name, p.port, p.host, () => p.pids());
    } finally {
      await p.stop();
    }
  };
  try {
    await measure('direct (nginx)', upstream.port, 'bench', () => []);
    await pair(() => startHaproxyPair(upstream.port, pki));
    await pair(() => startNginxPair(upstream.port, pki));
    await pair(() => startSidecarPair(upstream.port, pki, undefined, 'meshc pair, no filters'));
    await pair(() => startSidecarPair(upstream.port, pki, bundleDir, 'meshc pair, compiled chain'));
  } finally {
    await upstream.stop();
    await rm(dir, { recursive: true, force: true });
    await rm(pki.dir, { recursive: true, force: true });
  }
  const ha = rows['haproxy pair'];
  const direct = rows['direct (nginx)'];
  const ratio = (v: number, ref: number | undefined) => (ref === undefined || !Number.isFinite(ref) || ref === 0 ? '-' : (v / ref).toFixed(2));
  const closedTable: Table = {
    title: `HTTP/1.1 through two proxies with mTLS between them, wrk -t1 -c${options.connections} -d${options.seconds}s, upstream nginx (fixed body)`,
    columns: ['target', 'req/s', 'p50 ms', 'p99 ms', 'errors', '× haproxy pair'],
    rows: Object.entries(rows).map(([label, r]) => [label, Math.round(r.closed.requestsPerSec), r.closed.p50Ms, r.closed.p99Ms, r.closed.errors, label.startsWith('direct') ? '-' : ratio(r.closed.requestsPerSec, ha?.closed.requestsPerSec)]),
    notes: ['All processes share the same 2 cores with wrk and nginx; compare rows of one run with each other.', 'The compiled chain is bench/policies/hop.meshpolicy, run by both sidecars (routes and fault on the outbound side, allow/deny and rate limit on the inbound side).'],
  };
  const added = (r: Row, k: 'p50' | 'p99' | 'p999') => r.open[k] - (direct?.open[k] ?? 0);
  const openTable: Table = {
    title: `Open loop at a fixed ${OPEN_RPS} req/s for ${openSeconds}s: latency the proxies add over direct, and their CPU and memory`,
    columns: ['target', 'p50 ms', 'p99 ms', 'p99.9 ms', 'added p50', 'added p99', 'added p99.9', 'errors', 'CPU % (both)', 'RSS MiB (both)', 'PSS MiB (both)', 'p99 × haproxy', 'CPU × haproxy'],
    rows: Object.entries(rows).map(([label, r]) => [
      label,
      r.open.p50,
      r.open.p99,
      r.open.p999,
      label.startsWith('direct') ? '-' : added(r, 'p50'),
      label.startsWith('direct') ? '-' : added(r, 'p99'),
      label.startsWith('direct') ? '-' : added(r, 'p999'),
      r.open.errors + (r.open.sent - r.open.ok - r.open.errors),
      label.startsWith('direct') ? '-' : r.cpuPercent,
      label.startsWith('direct') ? '-' : r.rssMiB,
      label.startsWith('direct') ? '-' : r.pssMiB,
      label.startsWith('direct') ? '-' : ratio(r.open.p99, ha?.open.p99),
      label.startsWith('direct') ? '-' : ratio(r.cpuPercent, ha?.cpuPercent),
    ]),
    notes: [
      'Latency counts from when each request was due (no coordinated omission); the client runs in its own process.',
      'CPU % is the two proxy processes\' user+system time over the run, as a share of one core.',
      'RSS counts every resident page of each process; PSS divides a shared page among the processes mapping it. The two sidecars share the `node` binary\'s ~55 MiB of pages, as all sidecars on a host do.',
    ],
  };
  return { tables: [closedTable, openTable], raw: rows };
}
