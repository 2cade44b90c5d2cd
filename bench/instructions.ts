// User-space instructions per request on one hop, counted by callgrind:
// haproxy (the reference), the meshc sidecar without filters and with the
// compiled chain, side by side in one run, under two loads: busy (8 keep-alive
// connections, each sending its next request as soon as an answer is in) and
// one request at a time (one connection, a pause after each answer: every
// request wakes the proxy on its own, as at 1,000 req/s). Unlike CPU time, the
// count barely moves with the background noise of a shared machine (it repeats
// to about ±1.5%), so it resolves changes of a few percent that wall-clock runs
// on a shared 2-core machine cannot. Heavy load is another matter: with the
// test suite running on both cores, the sidecar's JIT tiered at other points
// and one run counted 28% more. Run it on an otherwise idle machine. What it
// leaves out: kernel time (the sidecar's is close to a bare node relay's,
// docs/runtime.md) and cache misses (the same instructions cost more when each
// request runs alone).
//
// Each proxy runs under valgrind with instrumentation off. A client in this
// process warms it up, then `callgrind_control -i on` counts the measured
// requests; each load has its own warm-up, and a dump after each measurement
// keeps the two counts apart. The sidecar runs with --single-threaded so its
// JIT compiles in the counted thread as it would on a quiet machine, not
// racing the load. Under valgrind V8 emits different code for some JavaScript
// than natively, and some native paths (hex and UTF-8 encoding, random bytes,
// string flattening) count heavier than they run: compare counts of builds
// that do the same work, not with native timings, and do not apportion a
// count between features with it.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { writeHopFilter } from './lib/hop-policy.ts';
import type { Table } from './lib/report.ts';
import { startHaproxy, startNginx, startSidecar, type Running, type StartOptions } from './lib/servers.ts';
import { requireTools } from './lib/tools.ts';
import type { SuiteOptions, SuiteResult } from './run.ts';

const exec = promisify(execFile);

const CONNECTIONS = 8;
/**
 * After 20,000 requests V8 was still compiling optimised code in the counted window (3.4–5.4% of
 * the count, and most of the spread between runs); after 60,000, 1.6–1.8%, two runs within 0.2%.
 */
const WARM_UP = 60_000;
const MEASURED = 20_000;
/** One at a time: the pause after each answer, and the requests warmed up (after the busy ones) and counted. */
const PAUSE_MS = 3;
const ALONE_WARM_UP = 6_000;
const ALONE_MEASURED = 2_000;
/** A sidecar under valgrind takes tens of seconds to load its TypeScript and start listening. */
const READY_TIMEOUT_MS = 180_000;

const REQUEST = Buffer.from('GET /items/1 HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\n\r\n');

/**
 * `total` requests over `connections` keep-alive connections; a connection
 * sends its next request `pauseMs` after the previous answer is complete.
 */
function load(port: number, total: number, connections: number, pauseMs: number): Promise<void> {
  let sent = 0;
  let done = 0;
  return new Promise((resolve, reject) => {
    for (let c = 0; c < connections; c++) {
      const socket = net.connect(port, '127.0.0.1');
      socket.setNoDelay(true);
      let pending = '';
      const next = (): void => {
        if (sent < total) {
          sent++;
          socket.write(REQUEST);
        } else socket.end();
      };
      socket.on('connect', next);
      socket.on('error', reject);
      socket.on('data', (d: Buffer) => {
        pending += d.toString('latin1');
        for (;;) {
          const end = pending.indexOf('\r\n\r\n');
          if (end < 0) return;
          const length = /content-length: (\d+)/i.exec(pending.slice(0, end));
          const need = end + 4 + (length ? Number(length[1]) : 0);
          if (pending.length < need) return;
          if (!pending.startsWith('HTTP/1.1 200')) reject(new Error(`unexpected answer: ${pending.slice(0, 60)}`));
          pending = pending.slice(need);
          if (++done === total) resolve();
          if (pauseMs > 0) setTimeout(next, pauseMs);
          else next();
        }
      });
    }
  });
}

const busy = (port: number, total: number) => load(port, total, CONNECTIONS, 0);
const oneAtATime = (port: number, total: number) => load(port, total, 1, PAUSE_MS);

/** Instructions counted by callgrind in the dump file at `path` (0 when it holds none). */
async function dumpTotal(path: string): Promise<number> {
  const totals = /^totals: (\d+)/m.exec(await readFile(path, 'utf8'));
  return totals ? Number(totals[1]) : 0;
}

interface Counts {
  busy: number;
  oneAtATime: number;
}

/** Instructions per request of a proxy started by `start` (given valgrind as its wrapper), busy and one at a time. */
async function count(dir: string, start: (wrap: StartOptions) => Promise<Running>): Promise<Counts> {
  const out = join(dir, `cg-${Date.now()}`);
  const proxy = await start({ wrap: ['valgrind', '--tool=callgrind', '--instr-atstart=no', `--callgrind-out-file=${out}`], readyTimeoutMs: READY_TIMEOUT_MS });
  const measure = async (run: () => Promise<void>): Promise<void> => {
    await exec('callgrind_control', ['-i', 'on', String(proxy.pid)]);
    await run();
    await exec('callgrind_control', ['-i', 'off', String(proxy.pid)]);
    await exec('callgrind_control', ['-d', String(proxy.pid)]);
  };
  try {
    await busy(proxy.port, WARM_UP);
    await measure(() => busy(proxy.port, MEASURED));
    await oneAtATime(proxy.port, ALONE_WARM_UP);
    await measure(() => oneAtATime(proxy.port, ALONE_MEASURED));
  } finally {
    await proxy.stop();
  }
  // Dump n holds what was counted since dump n-1; the file written at exit holds nothing (counting was off).
  const [busyTotal, aloneTotal] = [await dumpTotal(`${out}.1`), await dumpTotal(`${out}.2`)];
  if (busyTotal === 0 || aloneTotal === 0) throw new Error('callgrind counted nothing');
  return { busy: busyTotal / MEASURED, oneAtATime: aloneTotal / ALONE_MEASURED };
}

export async function run(_options: SuiteOptions): Promise<SuiteResult> {
  requireTools(['valgrind', 'callgrind_control', 'nginx', 'haproxy']);
  const dir = await mkdtemp(join(tmpdir(), 'meshc-bench-instr-'));
  const wasm = await writeHopFilter(dir);
  const upstream = await startNginx();
  const raw: Record<string, Counts> = {};
  const sidecar = (filterArgs: string[], label: string) => (o: StartOptions) => startSidecar(upstream.port, filterArgs, label, { ...o, nodeFlags: ['--single-threaded'] });
  try {
    const targets: Array<[string, (o: StartOptions) => Promise<Running>]> = [
      ['haproxy', (o) => startHaproxy(upstream.port, o)],
      ['meshc sidecar, no filters', sidecar([], 'sidecar')],
      ['meshc sidecar, compiled chain', sidecar(['--service', 'bench', '--filter', wasm], 'sidecar+chain')],
    ];
    for (const [label, start] of targets) {
      raw[label] = await count(dir, start);
      process.stderr.write(`  ${label}: ${Math.round(raw[label]!.busy)} instructions per request busy, ${Math.round(raw[label]!.oneAtATime)} one at a time\n`);
    }
  } finally {
    await upstream.stop();
    await rm(dir, { recursive: true, force: true });
  }
  const haproxy = raw['haproxy']!;
  const table: Table = {
    title: `User-space instructions per request, one hop, under callgrind; upstream nginx (fixed body)`,
    columns: ['target', 'busy', '× haproxy', 'one at a time', '× haproxy'],
    rows: Object.entries(raw).map(([label, n]) => [label, Math.round(n.busy), (n.busy / haproxy.busy).toFixed(2), Math.round(n.oneAtATime), (n.oneAtATime / haproxy.oneAtATime).toFixed(2)]),
    notes: [
      `Busy: ${MEASURED} requests counted after ${WARM_UP}, over ${CONNECTIONS} keep-alive connections, each sending its next request when an answer is in. One at a time: then ${ALONE_MEASURED} requests counted after ${ALONE_WARM_UP} more, over one connection with a ${PAUSE_MS} ms pause after each answer.`,
      'Counts repeat to about ±1.5% on an otherwise idle machine (heavy load moves when the JIT tiers up: one run beside the test suite counted 28% more); kernel time is not counted.',
      'The sidecar runs with --single-threaded (its JIT compiles in the counted thread). V8 emits different code for some JavaScript under valgrind: compare rows with each other.',
      'The compiled chain is bench/policies/hop.meshpolicy.',
    ],
  };
  return { tables: [table], raw };
}
