// `meshc test`: policy unit tests written beside the policies, run on the
// compiled Wasm (the very module sidecars load), through compiler/run/host.ts.
// In: test files (`<policy>.meshpolicy.test.yaml`) or directories of them.
// Out: a report: passes, failures with the deciding rule, and the rules no
// test reached (with where they are written).
//
// A test file:
//   policies: [catalog.meshpolicy]   # optional; default: the policy the file is named after
//   policy: |                        # or the policy inline (an example that is not deployed)
//     service catalog { ... }
//   topology: topology.yaml          # optional: check names against it
//   service: catalog                 # default service for the tests
//   direction: inbound               # default direction of requests
//   tests:                           # cases (compiler/run/cases.ts)
//     - name: beta users go to v2
//       request: { direction: outbound, path: /items, headers: { x-user-group: beta } }
//       expect: { route: v2, rule: catalog/route/beta }
// Imports of the named policies are followed on disk.
import { readdir, readFile, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { parse } from 'yaml';
import type { SourceSpan } from '../../protocol/bundle.ts';
import { CodedError } from '../../protocol/errors.ts';
import type { Diagnostic } from '../diagnostics.ts';
import { compilePolicies, type CompileOptions, type SourceFile } from '../index.ts';
import { DecisionHost } from '../run/host.ts';
import { mismatches, parseCase, runCase } from '../run/cases.ts';
import type { DirectionName } from '../run/request.ts';
import { importTarget } from '../check/scope.ts';
import { parseSource } from '../syntax/to-ast.ts';
import { parseTopology } from '../topology.ts';

export const TEST_SUFFIX = '.meshpolicy.test.yaml';

export class PolicyTestError extends CodedError {}

export interface CaseResult {
  name: string;
  ok: boolean;
  /** Per failing step: what differed, and the rule that decided. */
  failures: { step: number; repetition: number; problems: string[]; rule: string | null }[];
}

export interface FileResult {
  file: string;
  cases: CaseResult[];
  /** Compile errors (then no case ran). */
  diagnostics: Diagnostic[];
}

export interface TestReport {
  files: FileResult[];
  passed: number;
  failed: number;
  /** Rules of the tested policies that no case reached, with where they are written. */
  unreached: { rule: string; span: SourceSpan }[];
}

/** Test files named or found under directories, sorted. */
export async function findTestFiles(paths: string[]): Promise<string[]> {
  const out = new Set<string>();
  const walk = async (p: string): Promise<void> => {
    const info = await stat(p);
    if (!info.isDirectory()) {
      out.add(p);
      return;
    }
    for (const entry of await readdir(p, { withFileTypes: true })) {
      const child = join(p, entry.name);
      if (entry.isDirectory()) await walk(child);
      else if (entry.name.endsWith(TEST_SUFFIX)) out.add(child);
    }
  };
  for (const p of paths) await walk(p);
  return [...out].sort();
}

/** The named policies plus every file they import, read from disk. */
async function withImports(paths: string[]): Promise<SourceFile[]> {
  const files = new Map<string, SourceFile>();
  const queue = [...paths];
  while (queue.length > 0) {
    const path = queue.shift()!;
    if (files.has(path)) continue;
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      // A missing import is reported by the compiler (MP2026); a missing named policy is an input error.
      if (paths.includes(path)) throw new PolicyTestError('TEST_POLICY_MISSING', `cannot read policy ${path}: ${(err as Error).message}`);
      continue;
    }
    files.set(path, { path, text });
    for (const imp of parseSource(path, text).ast.imports) queue.push(importTarget(path, imp.path.value));
  }
  return [...files.values()];
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export async function runPolicyTests(testFiles: string[], options: Pick<CompileOptions, 'cache'> = {}): Promise<TestReport> {
  const report: TestReport = { files: [], passed: 0, failed: 0, unreached: [] };
  const allRules = new Map<string, SourceSpan>();
  const reached = new Set<string>();
  for (const file of testFiles) {
    let doc: unknown;
    try {
      doc = parse(await readFile(file, 'utf8'));
    } catch (err) {
      throw new PolicyTestError('TEST_FILE_INVALID', `${file}: ${(err as Error).message}`);
    }
    if (!isRecord(doc) || !Array.isArray(doc['tests'])) throw new PolicyTestError('TEST_FILE_INVALID', `${file}: expected a map with a tests: list`);
    const dir = dirname(file);
    let sources: SourceFile[];
    if (typeof doc['policy'] === 'string') {
      // An inline policy stands for the file the test is named after (examples that must not be deployed).
      sources = [{ path: file.slice(0, -'.test.yaml'.length), text: doc['policy'] }];
    } else {
      const named = Array.isArray(doc['policies']) ? doc['policies'].map((p) => resolve(dir, String(p))) : [resolve(file.slice(0, -'.test.yaml'.length))];
      sources = await withImports(named);
    }
    const compileOptions: CompileOptions = { ...options };
    if (doc['topology'] !== undefined) {
      const topologyPath = resolve(dir, String(doc['topology']));
      compileOptions.topology = parseTopology(await readFile(topologyPath, 'utf8'), topologyPath);
    }
    const direction = (doc['direction'] ?? 'unspecified') as DirectionName;
    const cases = doc['tests'].map((c, i) => {
      try {
        return parseCase(c, i, direction);
      } catch (err) {
        throw new PolicyTestError('TEST_FILE_INVALID', `${file}: ${(err as Error).message}`);
      }
    });
    const result = await compilePolicies(sources, compileOptions);
    const fileResult: FileResult = { file, cases: [], diagnostics: result.diagnostics.filter((d) => d.severity === 'error') };
    report.files.push(fileResult);
    if (!result.bundle) {
      report.failed += cases.length;
      continue;
    }
    const bundle = result.bundle;
    for (const f of bundle.manifest.filters) for (const [id, span] of Object.entries(f.rules)) allRules.set(id, span);
    const defaultService = doc['service'] !== undefined ? String(doc['service']) : bundle.manifest.filters.length === 1 ? bundle.manifest.filters[0]!.service : undefined;
    for (const c of cases) {
      const service = c.service ?? defaultService;
      const filter = bundle.manifest.filters.find((f) => f.service === service);
      if (!filter) {
        const known = bundle.manifest.filters.map((f) => f.service).join(', ');
        throw new PolicyTestError('TEST_SERVICE', `${file}: ${c.name}: ${service === undefined ? 'say which service to test' : `no service ${service}`} (services: ${known})`);
      }
      const host = await DecisionHost.load(bundle.modules.get(filter.file)!);
      const caseResult: CaseResult = { name: c.name, ok: true, failures: [] };
      for (const { step, outcomes } of runCase(c, host)) {
        for (const o of outcomes) {
          if (o.rule) reached.add(o.rule);
          for (const r of o.rules) reached.add(r);
        }
        const last = outcomes[outcomes.length - 1]!;
        const problems = step.expect ? mismatches(last, step.expect) : [];
        if (problems.length > 0) {
          caseResult.ok = false;
          caseResult.failures.push({ step: step.index, repetition: outcomes.length, problems, rule: last.rule ?? null });
        }
      }
      fileResult.cases.push(caseResult);
      if (caseResult.ok) report.passed++;
      else report.failed++;
    }
  }
  report.unreached = [...allRules].filter(([id]) => !reached.has(id)).map(([rule, span]) => ({ rule, span }));
  return report;
}

export function formatReport(r: TestReport): string {
  const out: string[] = [];
  for (const f of r.files) {
    out.push(f.file);
    for (const d of f.diagnostics) out.push(`  compile error: ${d.span.file}:${d.span.line}:${d.span.col}: ${d.code}: ${d.message}`);
    for (const c of f.cases) {
      out.push(`  ${c.ok ? 'ok  ' : 'FAIL'} ${c.name}`);
      for (const fail of c.failures) {
        for (const p of fail.problems) out.push(`         step ${fail.step}: ${p}`);
        out.push(`         deciding rule: ${fail.rule ?? 'none'}`);
      }
    }
  }
  out.push(`${r.passed} passed, ${r.failed} failed`);
  if (r.unreached.length > 0) {
    out.push(`rules no test reached (${r.unreached.length}):`);
    for (const u of r.unreached) out.push(`  ${u.rule}  ${u.span.file}:${u.span.line}:${u.span.col}`);
  }
  return out.join('\n') + '\n';
}
