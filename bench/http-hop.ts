// One HTTP/1.1 hop, side by side in one run: wrk straight to the upstream
// (direct), through haproxy (the reference), through the meshc sidecar with no
// filters, and through the sidecar running the compiled policy chain; every
// target once per round, the ratios to haproxy taken within each round.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeHopFilter } from './lib/hop-policy.ts';
import { startHaproxy, startNginx, startSidecar, type Running } from './lib/servers.ts';
import { requireTools } from './lib/tools.ts';
import { wrk, type WrkResult } from './lib/wrk.ts';
import type { Table } from './lib/report.ts';
import { median, range } from './lib/stats.ts';
import type { SuiteOptions, SuiteResult } from './run.ts';


/**
 * Rounds per target: haproxy's figure drifts by up to 20% between minutes here, so each round
 * measures every target back to back and the ratio is taken within the round; with three rounds
 * one disturbed round moved the median, so five.
 */
const ROUNDS = 5;
/** A fresh sidecar runs unoptimised JavaScript for its first seconds under load: it is warmed up this long first. */
const WARM_UP_SECONDS = 5;
/** haproxy and nginx need no JIT warm-up: a second fills their pools and caches. */
const NATIVE_WARM_UP_SECONDS = 1;

export async function run(options: SuiteOptions): Promise<SuiteResult> {
  requireTools(['wrk', 'nginx', 'haproxy']);
  const dir = await mkdtemp(join(tmpdir(), 'meshc-bench-hop-'));
  const wasm = await writeHopFilter(dir);
  const upstream = await startNginx();
  const roundSeconds = Math.max(3, Math.ceil(options.seconds / ROUNDS));
  const raw: Record<string, WrkResult[]> = {};
  // Each proxy is started for its measurement (and warmed up) and stopped after it, so only the
  // measured proxy shares the cores with wrk and nginx.
  const targets: Array<[string, (() => Promise<Running>) | undefined, number]> = [
    ['direct (nginx)', undefined, NATIVE_WARM_UP_SECONDS],
    ['haproxy', () => startHaproxy(upstream.port), NATIVE_WARM_UP_SECONDS],
    ['meshc sidecar, no filters', () => startSidecar(upstream.port, [], 'sidecar'), WARM_UP_SECONDS],
    ['meshc sidecar, compiled chain', () => startSidecar(upstream.port, ['--service', 'bench', '--filter', wasm], 'sidecar+chain'), WARM_UP_SECONDS],
  ];
  try {
    for (let round = 0; round < ROUNDS; round++) {
      for (const [label, start, warmUp] of targets) {
        const proc = start ? await start() : undefined;
        try {
          const url = `http://127.0.0.1:${proc?.port ?? upstream.port}/items/1`;
          await wrk({ url, seconds: warmUp, connections: options.connections }); // warm-up (JIT, pools)
          const r = await wrk({ url, seconds: roundSeconds, connections: options.connections });
          (raw[label] ??= []).push(r);
          process.stderr.write(`  round ${round + 1}, ${label}: ${r.requestsPerSec.toFixed(0)} req/s\n`);
        } finally {
          await proc?.stop();
        }
      }
    }
  } finally {
    await upstream.stop();
    await rm(dir, { recursive: true, force: true });
  }
  const haproxy = raw['haproxy']!;
  const rows = Object.entries(raw).map(([label, rounds]) => {
    const rps = rounds.map((r) => r.requestsPerSec);
    const mid = rounds.find((r) => r.requestsPerSec === median(rps))!;
    const ratios = rounds.map((r, i) => r.requestsPerSec / haproxy[i]!.requestsPerSec);
    const direct = label.startsWith('direct');
    return [
      label,
      Math.round(median(rps)),
      range(rps, (x) => String(Math.round(x))),
      mid.p50Ms,
      mid.p99Ms,
      rounds.reduce((a, r) => a + r.errors, 0),
      direct ? '-' : median(ratios).toFixed(2),
      direct ? '-' : range(ratios, (x) => x.toFixed(2)),
    ];
  });
  const table: Table = {
    title: `HTTP/1.1, one hop, wrk -t1 -c${options.connections}, ${ROUNDS} rounds of ${roundSeconds}s, every target in each round; upstream nginx (fixed body)`,
    columns: ['target', 'req/s (median)', 'req/s (rounds)', 'p50 ms', 'p99 ms', 'errors', '× haproxy (median of rounds)', '× haproxy (rounds)'],
    rows,
    notes: [
      'Every process shares the same 2 cores with wrk; compare rows with each other, not with other machines.',
      `Each round measures every target back to back, each in a fresh process warmed up first (the sidecars ${WARM_UP_SECONDS} s, haproxy and nginx ${NATIVE_WARM_UP_SECONDS} s); a ratio is taken within its round (haproxy's own figure moves between minutes here). p50/p99 are from the median round.`,
      'The compiled chain is bench/policies/hop.meshpolicy: routes, a fault, allow/deny and a rate limit evaluated on every request.',
    ],
  };
  return { tables: [table], raw };
}
