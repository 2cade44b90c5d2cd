// The data plane in pairs, in one run: wrk straight to nginx (direct); a
// haproxy pair and an nginx pair with mTLS between their two proxies; a bare
// Node.js TLS relay pair (the floor: the sidecars' processes and sockets, no
// HTTP); the meshc sidecar pair (outbound + inbound over pooled mTLS) without
// filters and with the compiled bench policy on both sides. Closed loop (wrk) for
// throughput and latency, then an open loop at a fixed 1,000 req/s for the
// latency the proxies add (p50/p99/p99.9) and their CPU and memory.
//
// Every target runs once per round, back to back, and each ratio to the
// haproxy pair is taken within its round: this machine stalls for tens of
// milliseconds now and then, and one stall in one target's only run decided
// a p99 ratio (an 81 ms p99 for haproxy in one run, 4–8 ms in others). Its
// CPU also runs slower and faster by minutes (haproxy's pair took 15–38% of a
// core at 1,000 req/s within one run), so the open loop is run a second way:
// each sidecar pair at the same time as the haproxy pair, both at 1,000 req/s,
// where both see the same machine (and also each other).
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { writeHopBundle } from './lib/hop-policy.ts';
import { makePki, startHaproxyPair, startNginxPair, startNodeRelayPair, startSidecarPair, type RunningPair } from './lib/pairs.ts';
import { cpuSeconds, pssMiB, rssMiB } from './lib/procstat.ts';
import { startNginx } from './lib/servers.ts';
import { median, range } from './lib/stats.ts';
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

/** One target's open-loop round: latency, and its proxies' CPU over the round. */
interface OpenRound extends OpenLoop {
  cpuPercent: number;
}

interface Target {
  label: string;
  /** direct: nginx itself; native: the haproxy or nginx pair; floor: the Node relay pair; sidecar: a meshc pair. */
  kind: 'direct' | 'native' | 'floor' | 'sidecar';
  port: number;
  host: string;
  /** The proxies' pids; none for direct. */
  pids: () => number[];
  closed: WrkResult[];
  open: OpenRound[];
  /** Node pairs (sidecars, floor): rounds run at the same time as the haproxy pair's, [this pair's, haproxy's]. */
  besideHaproxy: Array<[OpenRound, OpenRound]>;
  rssMiB: number;
  pssMiB: number;
}

const OPEN_RPS = 1000;
const ROUNDS = 5;
const HAPROXY = 'haproxy pair';
/** A fresh Node process (sidecar or relay) runs unoptimised JavaScript for its first seconds under load. */
const WARM_UP_SECONDS = 5;

async function openLoop(port: number, host: string, seconds: number): Promise<OpenLoop> {
  const client = new URL('./lib/open-loop-client.ts', import.meta.url).pathname;
  const { stdout } = await execFileAsync(process.execPath, [client, String(port), String(OPEN_RPS), String(seconds), host], { timeout: (seconds + 30) * 1000 });
  return JSON.parse(stdout) as OpenLoop;
}

/** An open-loop round on each of `ts` at the same time (one client process each). */
async function openRounds(ts: Target[], seconds: number): Promise<OpenRound[]> {
  const cpu = (t: Target) => t.pids().reduce((a, p) => a + cpuSeconds(p), 0);
  const cpu0 = ts.map(cpu);
  const t0 = performance.now();
  const opens = await Promise.all(ts.map((t) => openLoop(t.port, t.host, seconds)));
  const wall = (performance.now() - t0) / 1000;
  return opens.map((open, i) => ({ ...open, cpuPercent: ((cpu(ts[i]!) - cpu0[i]!) / wall) * 100 }));
}

export async function run(options: SuiteOptions): Promise<SuiteResult> {
  requireTools(['wrk', 'nginx', 'haproxy']);
  const dir = await mkdtemp(join(tmpdir(), 'meshc-bench-dataplane-'));
  const bundleDir = await writeHopBundle(dir);
  const pki = await makePki();
  const upstream = await startNginx();
  const closedSeconds = Math.max(3, Math.ceil(options.seconds / ROUNDS));
  const openSeconds = Math.max(5, Math.ceil(options.seconds / 2));
  // Every pair runs for the whole suite (an idle proxy costs the others nothing) so the rounds can alternate.
  const pairs: RunningPair[] = [];
  const targets: Target[] = [];
  const add = (label: string, kind: Target['kind'], port: number, host: string, pids: () => number[]) =>
    targets.push({ label, kind, port, host, pids, closed: [], open: [], besideHaproxy: [], rssMiB: 0, pssMiB: 0 });
  const closedLoop = (t: Target, seconds: number) =>
    wrk({ url: `http://127.0.0.1:${t.port}/items/1`, seconds, connections: options.connections, headers: { Host: t.host } });
  try {
    add('direct (nginx)', 'direct', upstream.port, 'bench', () => []);
    for (const [kind, start] of [
      ['native', () => startHaproxyPair(upstream.port, pki)],
      ['native', () => startNginxPair(upstream.port, pki)],
      ['floor', () => startNodeRelayPair(upstream.port, pki)],
      ['sidecar', () => startSidecarPair(upstream.port, pki, undefined, 'meshc pair, no filters')],
      ['sidecar', () => startSidecarPair(upstream.port, pki, bundleDir, 'meshc pair, compiled chain')],
    ] as const) {
      const p = await start();
      pairs.push(p);
      add(p.name, kind, p.port, p.host, () => p.pids());
    }
    for (const t of targets) await closedLoop(t, t.kind === 'sidecar' || t.kind === 'floor' ? WARM_UP_SECONDS : 1);
    for (let round = 0; round < ROUNDS; round++) {
      for (const t of targets) {
        const r = await closedLoop(t, closedSeconds);
        t.closed.push(r);
        process.stderr.write(`  closed round ${round + 1}, ${t.label}: ${r.requestsPerSec.toFixed(0)} req/s\n`);
      }
    }
    for (let round = 0; round < ROUNDS; round++) {
      for (const t of targets) {
        const [r] = await openRounds([t], openSeconds);
        t.open.push(r!);
        process.stderr.write(`  open round ${round + 1}, ${t.label}: p99 ${r!.p99.toFixed(2)} ms, CPU ${r!.cpuPercent.toFixed(1)}%\n`);
      }
    }
    const haproxy = targets.find((t) => t.label === HAPROXY)!;
    const nodePairs = targets.filter((t) => t.kind === 'sidecar' || t.kind === 'floor');
    for (let round = 0; round < ROUNDS; round++) {
      for (const t of nodePairs) {
        const [mine, theirs] = await openRounds([t, haproxy], openSeconds);
        t.besideHaproxy.push([mine!, theirs!]);
        process.stderr.write(`  beside haproxy, round ${round + 1}, ${t.label}: p99 ${mine!.p99.toFixed(2)} / ${theirs!.p99.toFixed(2)} ms, CPU ${mine!.cpuPercent.toFixed(1)} / ${theirs!.cpuPercent.toFixed(1)}%\n`);
      }
    }
    for (const t of targets) {
      t.rssMiB = t.pids().reduce((a, p) => a + rssMiB(p), 0);
      t.pssMiB = t.pids().reduce((a, p) => a + pssMiB(p), 0);
    }
  } finally {
    for (const p of pairs) await p.stop();
    await upstream.stop();
    await rm(dir, { recursive: true, force: true });
    await rm(pki.dir, { recursive: true, force: true });
  }
  return {
    tables: [closedTable(targets, options, closedSeconds), openTable(targets, openSeconds), besideTable(targets, openSeconds)],
    raw: targets.map(({ label, closed, open, besideHaproxy, rssMiB, pssMiB }) => ({ label, closed, open, besideHaproxy, rssMiB, pssMiB })),
  };
}

/** Per round, `value` of each target over the haproxy pair's value in the same round. */
function ratiosToHaproxy(targets: Target[], t: Target, value: (t: Target, round: number) => number): number[] {
  const ha = targets.find((x) => x.label === HAPROXY)!;
  return Array.from({ length: ROUNDS }, (_, i) => value(t, i) / value(ha, i));
}

const fixed2 = (x: number) => x.toFixed(2);

function closedTable(targets: Target[], options: SuiteOptions, seconds: number): Table {
  return {
    title: `HTTP/1.1 through two proxies with mTLS between them, wrk -t1 -c${options.connections}, ${ROUNDS} rounds of ${seconds}s, every target in each round; upstream nginx (fixed body)`,
    columns: ['target', 'req/s (median)', 'req/s (rounds)', 'p50 ms', 'p99 ms', 'errors', '× haproxy pair (median of rounds)', '× haproxy pair (rounds)'],
    rows: targets.map((t) => {
      const rps = t.closed.map((r) => r.requestsPerSec);
      const mid = t.closed.find((r) => r.requestsPerSec === median(rps))!;
      const direct = t.kind === 'direct';
      const ratios = ratiosToHaproxy(targets, t, (x, i) => x.closed[i]!.requestsPerSec);
      return [t.label, Math.round(median(rps)), range(rps, (x) => String(Math.round(x))), mid.p50Ms, mid.p99Ms, t.closed.reduce((a, r) => a + r.errors, 0), direct ? '-' : fixed2(median(ratios)), direct ? '-' : range(ratios, fixed2)];
    }),
    notes: [
      'All processes share the same 2 cores with wrk and nginx; compare rows of one run with each other.',
      'Every pair runs for the whole suite and is warmed up first (the Node pairs 5 s, the native proxies 1 s). p50/p99 are from each target\'s median round.',
      'The Node TLS relay pair (bench/lib/node-relay.ts) is the floor under the sidecars\' CPU: the same processes, sockets and mutual TLS in Node.js, bytes piped without any HTTP. Its latency is not a reference (a plain pipe() gets a new Buffer per read).',
      'The compiled chain is bench/policies/hop.meshpolicy, run by both sidecars (routes and fault on the outbound side, allow/deny and rate limit on the inbound side).',
    ],
  };
}

function openTable(targets: Target[], seconds: number): Table {
  const direct = targets.find((t) => t.kind === 'direct')!;
  const med = (t: Target, k: 'p50' | 'p99' | 'p999') => median(t.open.map((r) => r[k]));
  return {
    title: `Open loop at a fixed ${OPEN_RPS} req/s, ${ROUNDS} rounds of ${seconds}s, every target in each round: latency the proxies add over direct, their CPU and memory`,
    columns: ['target', 'p50 ms', 'p99 ms', 'p99.9 ms', 'added p50', 'added p99', 'added p99.9', 'errors', 'CPU % (both)', 'RSS MiB (both)', 'PSS MiB (both)', 'p99 × haproxy (median of rounds)', 'p99 × haproxy (rounds)', 'CPU × haproxy (median of rounds)'],
    rows: targets.map((t) => {
      const isDirect = t === direct;
      const p99Ratios = ratiosToHaproxy(targets, t, (x, i) => x.open[i]!.p99);
      const cpuRatios = ratiosToHaproxy(targets, t, (x, i) => x.open[i]!.cpuPercent);
      const dash = (v: string | number) => (isDirect ? '-' : v);
      return [
        t.label,
        med(t, 'p50'),
        med(t, 'p99'),
        med(t, 'p999'),
        dash(med(t, 'p50') - med(direct, 'p50')),
        dash(med(t, 'p99') - med(direct, 'p99')),
        dash(med(t, 'p999') - med(direct, 'p999')),
        t.open.reduce((a, r) => a + r.errors + (r.sent - r.ok - r.errors), 0),
        dash(median(t.open.map((r) => r.cpuPercent))),
        dash(t.rssMiB),
        dash(t.pssMiB),
        dash(fixed2(median(p99Ratios))),
        dash(range(p99Ratios, fixed2)),
        dash(fixed2(median(cpuRatios))),
      ];
    }),
    notes: [
      'Latency counts from when each request was due (no coordinated omission); the client runs in its own process. Each latency column is the median over the rounds of that round\'s percentile.',
      'A ratio is taken within its round, then the median of the rounds is reported: one stall of this machine in one round no longer decides it.',
      'CPU % is the two proxy processes\' user+system time over a round, as a share of one core (median of rounds).',
      'RSS counts every resident page of each process, read after the last round; PSS divides a shared page among the processes mapping it. The two sidecars share the `node` binary\'s ~55 MiB of pages, as all sidecars on a host do.',
    ],
  };
}

function besideTable(targets: Target[], seconds: number): Table {
  return {
    title: `Open loop at ${OPEN_RPS} req/s on a Node pair (sidecars, relay floor) and on the haproxy pair at the same time, ${ROUNDS} rounds of ${seconds}s`,
    columns: ['target', 'p50 ms', 'p99 ms', 'CPU % (both)', 'haproxy pair beside it: p99 ms', 'CPU %', 'p99 × haproxy (median of rounds)', 'p99 × haproxy (rounds)', 'CPU × haproxy (median of rounds)', 'CPU × haproxy (rounds)'],
    rows: targets
      .filter((t) => t.besideHaproxy.length > 0)
      .map((t) => {
        const mine = t.besideHaproxy.map(([m]) => m);
        const theirs = t.besideHaproxy.map(([, h]) => h);
        const p99Ratios = t.besideHaproxy.map(([m, h]) => m.p99 / h.p99);
        const cpuRatios = t.besideHaproxy.map(([m, h]) => m.cpuPercent / h.cpuPercent);
        return [
          t.label,
          median(mine.map((r) => r.p50)),
          median(mine.map((r) => r.p99)),
          median(mine.map((r) => r.cpuPercent)),
          median(theirs.map((r) => r.p99)),
          median(theirs.map((r) => r.cpuPercent)),
          fixed2(median(p99Ratios)),
          range(p99Ratios, fixed2),
          fixed2(median(cpuRatios)),
          range(cpuRatios, fixed2),
        ];
      }),
    notes: [
      'Both pairs take load at once, each from its own client process: a stall or a slow minute of this machine hits both, so the ratios move less than those of rounds run one after the other; the two pairs also share the cores with each other.',
    ],
  };
}
