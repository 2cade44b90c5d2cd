// One HTTP/1.1 hop, side by side in one run: wrk straight to the upstream
// (direct), through haproxy (the reference), through the meshc sidecar with no
// filters, and through the sidecar running the compiled policy chain.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compilePolicies, shutdownCompiler } from '../compiler/index.ts';
import { startHaproxy, startNginx, startSidecar, type Running } from './lib/servers.ts';
import { requireTools } from './lib/tools.ts';
import { wrk, type WrkResult } from './lib/wrk.ts';
import type { Table } from './lib/report.ts';
import type { SuiteOptions, SuiteResult } from './run.ts';


async function compileHopPolicy(dir: string): Promise<string> {
  const path = new URL('./policies/hop.meshpolicy', import.meta.url).pathname;
  const result = await compilePolicies([{ path, text: await readFile(path, 'utf8') }]);
  await shutdownCompiler();
  const bundle = result.bundle;
  if (!bundle) throw new Error(`bench policy does not compile: ${JSON.stringify(result.diagnostics)}`);
  const filter = bundle.manifest.filters[0];
  const bytes = filter && bundle.modules.get(filter.file);
  if (!bytes) throw new Error('bench bundle has no module');
  const file = join(dir, filter.file);
  await writeFile(file, bytes);
  return file;
}

export async function run(options: SuiteOptions): Promise<SuiteResult> {
  requireTools(['wrk', 'nginx', 'haproxy']);
  const dir = await mkdtemp(join(tmpdir(), 'meshc-bench-hop-'));
  const wasm = await compileHopPolicy(dir);
  const upstream = await startNginx();
  const raw: Record<string, WrkResult> = {};
  const measure = async (label: string, port: number) => {
    const url = `http://127.0.0.1:${port}/items/1`;
    await wrk({ url, seconds: 2, connections: options.connections }); // warm-up (JIT, pools)
    raw[label] = await wrk({ url, seconds: options.seconds, connections: options.connections });
    process.stderr.write(`  ${label}: ${raw[label]?.requestsPerSec.toFixed(0)} req/s\n`);
  };
  const one = async (label: string, start: () => Promise<Running>) => {
    const proc = await start();
    try {
      await measure(label, proc.port);
    } finally {
      await proc.stop();
    }
  };
  try {
    await measure('direct (nginx)', upstream.port);
    await one('haproxy', () => startHaproxy(upstream.port));
    await one('meshc sidecar, no filters', () => startSidecar(upstream.port, [], 'sidecar'));
    await one('meshc sidecar, compiled chain', () => startSidecar(upstream.port, ['--service', 'bench', '--filter', wasm], 'sidecar+chain'));
  } finally {
    await upstream.stop();
    await rm(dir, { recursive: true, force: true });
  }
  const haproxy = raw['haproxy']?.requestsPerSec ?? Number.NaN;
  const table: Table = {
    title: `HTTP/1.1, one hop, wrk -t1 -c${options.connections} -d${options.seconds}s, upstream nginx (fixed body)`,
    columns: ['target', 'req/s', 'p50 ms', 'p99 ms', 'errors', '× haproxy'],
    rows: Object.entries(raw).map(([label, r]) => [label, Math.round(r.requestsPerSec), r.p50Ms, r.p99Ms, r.errors, label.startsWith('direct') ? '-' : (r.requestsPerSec / haproxy).toFixed(2)]),
    notes: [
      'Every process shares the same 2 cores with wrk; compare rows with each other, not with other machines.',
      'The compiled chain is bench/policies/hop.meshpolicy: routes, a fault, allow/deny and a rate limit evaluated on every request.',
    ],
  };
  return { tables: [table], raw };
}
