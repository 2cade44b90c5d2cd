// The proxy-wasm host's own costs, in process (no sockets, so the numbers are
// the host's and not the codec's):
//   1. host time per request through a chain of four compiled policies
//      (examples/ + bench/policies/hop.meshpolicy), metered and not metered;
//   2. reload latency, bundle received → chain ready to serve, with modules
//      already prepared (a re-rollout) and with new module digests (binaryen
//      metering in the metering process + compile);
//   3. memory as reloads accumulate (1 … 4,000), in a child process with
//      --expose-gc so a full collection precedes each reading; run once with
//      V8's defaults and once with the young generation's size pinned, which
//      shows how much of the RSS curve is V8 resizing it rather than a leak.
import { fork } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { getHeapSpaceStatistics, getHeapStatistics } from 'node:v8';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { compilePolicies, shutdownCompiler } from '../compiler/index.ts';
import { readBundle, writeBundle, type Bundle } from '../protocol/bundle.ts';
import { FilterChain, type FilterSpec } from '../runtime/chain.ts';
import { FilterRun } from '../runtime/filter-run.ts';
import { createHostEnvironment, type HostEnvironment } from '../runtime/wasm/environment.ts';
import { shutdownMeteringProcess } from '../runtime/wasm/module-cache.ts';
import { HttpStream, type StreamFacts } from '../runtime/wasm/stream.ts';
import type { Table } from './lib/report.ts';
import { median, range } from './lib/stats.ts';
import type { SuiteOptions, SuiteResult } from './run.ts';

const POLICIES = ['examples/catalog.meshpolicy', 'examples/frontend.meshpolicy', 'examples/ratings.meshpolicy', 'bench/policies/hop.meshpolicy'];
const root = new URL('..', import.meta.url).pathname;

async function compileFour(): Promise<Bundle> {
  const files = await Promise.all(POLICIES.map(async (p) => ({ path: p, text: await readFile(join(root, p), 'utf8') })));
  const result = await compilePolicies(files);
  await shutdownCompiler();
  if (!result.bundle || result.bundle.manifest.filters.length !== 4) throw new Error(`bench policies do not compile to 4 filters: ${JSON.stringify(result.diagnostics)}`);
  return result.bundle;
}

/** Every filter on every request ("*"), in the standalone direction where all four rule kinds run. */
function specs(bundle: Bundle, fuel?: number): FilterSpec[] {
  return bundle.manifest.filters.map((f) => ({
    name: f.name,
    service: '*',
    rootId: f.rootId,
    configuration: f.configuration,
    failurePolicy: 'closed',
    wasm: bundle.modules.get(f.file)!,
    ...(fuel === undefined ? {} : { limits: { fuelPerCallback: fuel } }),
  }));
}

const FACTS: StreamFacts = {
  direction: 0,
  sourcePrincipal: 'spiffe://mesh.local/ns/default/sa/frontend',
  sourceAddress: '127.0.0.1',
  sourcePort: 40000,
  destinationAddress: '127.0.0.1',
  destinationPort: 8080,
  destinationService: 'catalog',
  peerUriSan: '',
  requestId: 'bench',
  scheme: 'http',
  protocol: 'HTTP/1.1',
};

async function oneRequest(chain: FilterChain): Promise<void> {
  const stream = new HttpStream(FACTS, [
    [':method', 'GET'],
    [':path', '/items/1'],
    [':authority', 'catalog'],
    [':scheme', 'http'],
    ['user-agent', 'bench'],
    ['x-request-id', 'bench'],
  ]);
  chain.acquire();
  const run = new FilterRun(chain, 'catalog', stream, { onFilterFailure: () => {} });
  const out = await run.requestHeaders(true);
  if (out.kind === 'continue') {
    stream.responseHeaders = [[':status', '200'], ['content-length', '2']];
    await run.responseHeaders(false);
  }
  run.finish();
  chain.release();
}

/** µs per request over a timed run, after a warm-up. */
async function perRequest(chain: FilterChain, seconds: number): Promise<{ us: number; requests: number }> {
  for (let i = 0; i < 2_000; i++) await oneRequest(chain);
  const until = performance.now() + seconds * 1000;
  let n = 0;
  const start = performance.now();
  while (performance.now() < until && n < 5_000_000) {
    for (let i = 0; i < 200; i++) await oneRequest(chain);
    n += 200;
  }
  return { us: ((performance.now() - start) * 1000) / n, requests: n };
}

function env(): HostEnvironment {
  return createHostEnvironment(new Registry(), () => {});
}

/** Appends a custom section so the module's digest (and so the preparation cache key) is new. */
function withFreshDigest(bytes: Uint8Array, tag: number): Uint8Array {
  const name = new TextEncoder().encode(`meshc-bench-${tag}`);
  const payload = [name.length, ...name];
  return new Uint8Array([...bytes, 0, payload.length, ...payload]);
}

function p99(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * 0.99))]!;
}

async function reloadLatency(bundle: Bundle): Promise<{ warm: number[]; cold: number[] }> {
  const e = env();
  let chain = await FilterChain.fromSpecs(specs(bundle), e, 'warmup');
  const warm: number[] = [];
  for (let i = 0; i < 50; i++) {
    const t = performance.now();
    const next = await FilterChain.fromSpecs(specs(bundle), e, `warm-${i}`);
    warm.push(performance.now() - t);
    chain.retire();
    chain = next;
  }
  const cold: number[] = [];
  for (let i = 0; i < 10; i++) {
    const fresh = specs(bundle).map((s, j) => ({ ...s, wasm: withFreshDigest(s.wasm, i * 10 + j) }));
    const t = performance.now();
    const next = await FilterChain.fromSpecs(fresh, e, `cold-${i}`);
    cold.push(performance.now() - t);
    chain.retire();
    chain = next;
  }
  chain.retire();
  return { warm, cold };
}

interface MemoryReading {
  reloads: number;
  rssMiB: number;
  heapUsedMiB: number;
  /** V8 heap committed (all spaces), used or not. */
  heapCommittedMiB: number;
  /** The young generation's committed size: V8 grows it with the allocation rate. */
  newSpaceMiB: number;
  externalMiB: number;
  liveInstances: number;
}

/** Reload counts at which memory is read: the curve shows whether it keeps growing or levels off. */
const CHECKPOINTS = [1, 10, 100, 1_000, 2_000, 4_000];

/** The diagnosis run: semi-spaces fixed at 16 MiB from the start, so V8 never resizes the young generation. */
const PINNED_YOUNG_GEN = ['--min-semi-space-size=16', '--max-semi-space-size=16'];

/** Runs in the child: reloads the bundle, reading memory at each checkpoint. */
async function memoryChild(dir: string): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with --expose-gc');
  const bundle = await readBundle(dir);
  const e = env();
  let chain: FilterChain | undefined;
  const reload = async (i: number) => {
    const next = await FilterChain.fromSpecs(specs(bundle), e, `r${i}`);
    for (let k = 0; k < 5; k++) await oneRequest(next);
    chain?.retire();
    chain = next;
  };
  const read = async (reloads: number): Promise<MemoryReading> => {
    for (let i = 0; i < 3; i++) {
      gc();
      await new Promise((r) => setTimeout(r, 20));
    }
    const m = process.memoryUsage();
    const mib = (b: number) => Math.round((b / 2 ** 20) * 10) / 10;
    const newSpace = getHeapSpaceStatistics().find((sp) => sp.space_name === 'new_space')?.space_size ?? 0;
    return {
      reloads,
      rssMiB: mib(m.rss),
      heapUsedMiB: mib(m.heapUsed),
      heapCommittedMiB: mib(getHeapStatistics().total_heap_size),
      newSpaceMiB: mib(newSpace),
      externalMiB: mib(m.external),
      liveInstances: e.host.liveInstances,
    };
  };
  const readings: MemoryReading[] = [];
  let done = 0;
  for (const checkpoint of CHECKPOINTS) {
    while (done < checkpoint) await reload(done++);
    readings.push(await read(done));
  }
  chain?.retire();
  await shutdownMeteringProcess();
  process.send?.(readings);
}

async function memoryAfterReloads(bundle: Bundle, v8Flags: string[]): Promise<MemoryReading[]> {
  const dir = await mkdtemp(join(tmpdir(), 'meshc-bench-host-'));
  try {
    await writeBundle(dir, bundle);
    const child = fork(new URL(import.meta.url).pathname, ['--memory-child', dir], { execArgv: ['--expose-gc', ...v8Flags], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    return await new Promise((resolve, reject) => {
      child.on('message', (m) => resolve(m as MemoryReading[]));
      child.on('exit', (code) => (code === 0 ? undefined : reject(new Error(`memory child exited with ${code}`))));
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export async function run(options: SuiteOptions): Promise<SuiteResult> {
  const bundle = await compileFour();
  const seconds = Math.max(1, Math.min(options.seconds, 10));
  const measured: Record<string, { us: number; requests: number }> = {};
  for (const [label, fuel] of [['4 filters, metered (default fuel)', undefined], ['4 filters, not metered', 0]] as const) {
    const chain = await FilterChain.fromSpecs(specs(bundle, fuel), env(), label);
    measured[label] = await perRequest(chain, seconds);
    chain.retire();
    process.stderr.write(`  ${label}: ${measured[label]!.us.toFixed(2)} µs/request\n`);
  }
  const empty = await FilterChain.fromSpecs([], env(), 'none');
  measured['no filters (FilterRun only)'] = await perRequest(empty, Math.min(seconds, 2));
  const metered = measured['4 filters, metered (default fuel)']!.us;
  const plain = measured['4 filters, not metered']!.us;

  const reloads = await reloadLatency(bundle);
  process.stderr.write(`  reload: warm median ${median(reloads.warm).toFixed(2)} ms, cold median ${median(reloads.cold).toFixed(1)} ms\n`);
  const memory = await memoryAfterReloads(bundle, []);
  process.stderr.write(`  memory: ${JSON.stringify(memory)}\n`);
  const pinned = await memoryAfterReloads(bundle, PINNED_YOUNG_GEN);
  process.stderr.write(`  memory (${PINNED_YOUNG_GEN.join(' ')}): ${JSON.stringify(pinned)}\n`);
  await shutdownMeteringProcess();

  const cost: Table = {
    title: 'Host cost per request, in process (request + response headers through the chain, contexts created and finished)',
    columns: ['chain', 'µs/request', 'requests measured'],
    rows: Object.entries(measured).map(([k, v]) => [k, v.us, v.requests]),
    notes: [
      `Metering costs ${(metered - plain).toFixed(2)} µs/request here (${(((metered - plain) / plain) * 100).toFixed(0)}% of the unmetered host time).`,
      'The four filters are examples/{catalog,frontend,ratings}.meshpolicy and bench/policies/hop.meshpolicy, compiled by compilePolicies, all applied to every request (standalone direction: authorization, rate limit, fault and routing rules all run).',
      'No sockets: the HTTP codec is measured by bench/http-hop.ts.',
    ],
  };
  const latency: Table = {
    title: 'Reload latency: bundle received → new chain verified, instantiated and configured (4 filters)',
    columns: ['case', 'median ms', 'p99 ms', 'runs'],
    rows: [
      ['modules already prepared (same digests)', median(reloads.warm), p99(reloads.warm), reloads.warm.length],
      ['new module digests (metering in the metering process + compile)', median(reloads.cold), p99(reloads.cold), reloads.cold.length],
    ],
    notes: ['The swap itself is one reference assignment; requests in flight finish on the old chain.'],
  };
  const first = memory[0]!;
  const last = memory.at(-1)!;
  const at2k = memory.find((m) => m.reloads === 2_000)!;
  const mem: Table = {
    title: 'Memory as reloads accumulate (child process, full GC before each reading)',
    columns: ['V8 flags', 'after reloads', 'rss MiB', 'heap used MiB', 'heap committed MiB', 'young gen MiB', 'external MiB', 'live filter instances'],
    rows: [
      ...memory.map((m) => ['defaults', m.reloads, m.rssMiB, m.heapUsedMiB, m.heapCommittedMiB, m.newSpaceMiB, m.externalMiB, m.liveInstances]),
      ...pinned.map((m) => [PINNED_YOUNG_GEN.join(' '), m.reloads, m.rssMiB, m.heapUsedMiB, m.heapCommittedMiB, m.newSpaceMiB, m.externalMiB, m.liveInstances]),
    ],
    notes: [
      'Each reload builds a 4-filter chain, serves 5 requests on it and retires the previous chain.',
      `With V8's defaults RSS grows ${(last.rssMiB - first.rssMiB).toFixed(1)} MiB from 1 to ${last.reloads.toLocaleString('en-US')} reloads while V8 resizes its young generation from ${first.newSpaceMiB} to ${last.newSpaceMiB} MiB committed (it enlarges the semi-spaces as the allocation rate of serving requests rises; committed pages are not all resident, and they are mostly empty after a full GC).`,
      `Between 2,000 and ${last.reloads.toLocaleString('en-US')} reloads RSS moves ${(last.rssMiB - at2k.rssMiB).toFixed(1)} MiB. Across all readings: heap used ${range(memory.map((m) => m.heapUsedMiB))} MiB, external ${range(memory.map((m) => m.externalMiB))} MiB, live filter instances ${range(memory.map((m) => m.liveInstances))}.`,
      `With the young generation's size pinned (${PINNED_YOUNG_GEN.join(' ')}, a diagnosis run) RSS moves ${(pinned.at(-1)!.rssMiB - pinned[0]!.rssMiB).toFixed(1)} MiB over the same ${last.reloads.toLocaleString('en-US')} reloads.`,
    ],
  };
  return { tables: [cost, latency, mem], raw: { measured, reloads, memory, pinned } };
}

if (process.argv[2] === '--memory-child') await memoryChild(process.argv[3]!);
