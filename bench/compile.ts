// Compile time: a service of 1,000 rules, and ten services of 100 mixed rules,
// from scratch (parse, check, analyse, lower, generate, asc), then an unchanged rebuild in a new process (`meshc
// build` with the on-disk cache, process start included) and in the same process
// (memory cache), then a rebuild after one rule changed in one of ten services.
// Targets: ≤ 5 s for 1,000 rules, ≤ 0.2 s for an unchanged rebuild.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BuildCache, compilePolicies, frontEnd, shutdownCompiler, type SourceFile } from '../compiler/index.ts';
import type { Table } from './lib/report.ts';
import type { SuiteOptions, SuiteResult } from './run.ts';

const ROOT = new URL('../', import.meta.url).pathname;

/** Ten services of 100 rules each: allows by identity, denies, rate limits, routes. */
function sources(changed = false): SourceFile[] {
  const files: SourceFile[] = [];
  for (let s = 0; s < 10; s++) {
    const rules: string[] = [];
    for (let i = 0; i < 100; i++) {
      const n = s * 100 + i;
      if (i % 10 === 0) rules.push(`  deny d${n} { when path prefix "/blocked/${n}" and header "x-k" == "${n}" }`);
      else if (i % 10 === 1) rules.push(`  rate_limit l${n} { key header "x-key-${n}" rate ${n + 1}/s when path prefix "/rl/${n}" }`);
      else if (i % 10 === 2) rules.push(`  route r${n} { when path prefix "/v/${n}" and header "x-v" regex "v[0-9]+" to v${(n % 2) + 1} }`);
      else rules.push(`  allow a${n} { from "spiffe://mesh.local/ns/ns${s}/sa/app${n}" when method in [GET, HEAD] and path prefix "/api/${n}" }`);
    }
    if (changed && s === 3) rules[5] = rules[5]!.replace('/api/', '/apis/');
    files.push({ path: `bench/compile/s${s}.meshpolicy`, text: `service s${s} {\n${rules.join('\n')}\n}\n` });
  }
  return files;
}

function seconds(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e9;
}

/** One service of 1,000 rules (the decision benchmark's shape). */
function oneService(): SourceFile[] {
  const rules: string[] = [];
  for (let i = 0; i < 1000; i++) rules.push(`  allow r${i} { from "spiffe://mesh.local/ns/team${i % 10}/sa/app${i}" when method in [GET, HEAD] and path prefix "/api/${i}" }`);
  return [{ path: 'bench/compile/one.meshpolicy', text: `service api {\n${rules.join('\n')}\n}\n` }];
}

export async function run(_options: SuiteOptions): Promise<SuiteResult> {
  const single = process.hrtime.bigint();
  if (!(await compilePolicies(oneService(), { cache: new BuildCache() })).bundle) throw new Error('bench policy does not compile');
  const singleSeconds = seconds(single);
  const files = sources();
  const t0 = process.hrtime.bigint();
  const front = frontEnd(files);
  const frontSeconds = seconds(t0);
  if (!front.ir) throw new Error('bench policies do not check');

  const cold = process.hrtime.bigint();
  const first = await compilePolicies(files, { cache: new BuildCache() });
  const coldSeconds = seconds(cold);
  if (!first.bundle) throw new Error('bench policies do not compile');

  const warmCache = new BuildCache();
  await compilePolicies(files, { cache: warmCache });
  const warm = process.hrtime.bigint();
  await compilePolicies(files, { cache: warmCache });
  const warmSeconds = seconds(warm);

  const oneChanged = process.hrtime.bigint();
  const changed = await compilePolicies(sources(true), { cache: warmCache });
  const oneChangedSeconds = seconds(oneChanged);
  if (!changed.bundle) throw new Error('changed bench policies do not compile');
  await shutdownCompiler();

  // `meshc build` twice in new processes sharing an on-disk cache: the second is the unchanged rebuild.
  const dir = mkdtempSync(join(tmpdir(), 'meshc-bench-compile-'));
  const policyDir = join(dir, 'policies');
  mkdirSync(policyDir);
  for (const f of files) writeFileSync(join(policyDir, f.path.split('/').pop()!), f.text);
  const env = { ...process.env, MESHC_CACHE_DIR: join(dir, 'cache') };
  const cli = (): number => {
    const start = process.hrtime.bigint();
    const r = spawnSync(process.execPath, [join(ROOT, 'bin/meshc'), 'build', policyDir, '-o', join(dir, 'out')], { env, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`meshc build failed: ${r.stderr}`);
    return seconds(start);
  };
  const cliCold = cli();
  const cliWarm = cli();
  const nodeStart = process.hrtime.bigint();
  spawnSync(process.execPath, ['-e', '0']);
  const nodeSeconds = seconds(nodeStart);
  rmSync(dir, { recursive: true, force: true });

  const rows: (string | number)[][] = [
    ['1 service of 1,000 rules, from scratch, in process', singleSeconds, '≤ 5 s'],
    ['10 services of 100 mixed rules: front end (parse, check, analyse, lower)', frontSeconds, ''],
    ['10 services of 100 mixed rules, from scratch, in process', coldSeconds, '≤ 5 s'],
    ['unchanged rebuild, in process (memory cache)', warmSeconds, '≤ 0.2 s'],
    ['one rule changed in one service, in process', oneChangedSeconds, ''],
    ['`meshc build`, new process, empty disk cache', cliCold, ''],
    ['`meshc build`, new process, unchanged (disk cache)', cliWarm, '≤ 0.2 s'],
    ['(a new Node process doing nothing)', nodeSeconds, ''],
  ];
  const table: Table = {
    title: 'Compile time, seconds',
    columns: ['what', 'seconds', 'target'],
    rows,
    notes: ['asc runs in a pool of worker threads (one per core, here 2), one module per worker at a time; the cores are shared with other work.'],
  };
  return { tables: [table], raw: { singleSeconds, frontSeconds, coldSeconds, warmSeconds, oneChangedSeconds, cliCold, cliWarm, nodeSeconds } };
}
