// One corpus, two engines: every case under test/corpus/ runs on the
// reference interpreter (compiler/interpret/) and on the compiled Wasm through
// the scripted host (compiler/run/host.ts). They must agree on every outcome
// of every step, and both must meet the case's expectations.
import { readdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { compilePolicies, frontEnd, shutdownCompiler, type SourceFile } from '../../compiler/index.ts';
import { Interpreter } from '../../compiler/interpret/interpreter.ts';
import { mismatches, parseCase, runCase, type Case } from '../../compiler/run/cases.ts';
import { DecisionHost } from '../../compiler/run/host.ts';
import type { ServiceIR } from '../../compiler/ir.ts';

const DIR = new URL('../corpus/', import.meta.url);

interface CorpusFile {
  name: string;
  sources: SourceFile[];
  cases: Case[];
}

const corpus: CorpusFile[] = readdirSync(DIR)
  .filter((f) => f.endsWith('.yaml'))
  .sort()
  .map((name) => {
    const doc = parse(readFileSync(new URL(name, DIR), 'utf8')) as { policy: string; files?: Record<string, string>; cases: unknown[] };
    const sources: SourceFile[] = [{ path: `corpus/${name.replace(/\.yaml$/, '')}.meshpolicy`, text: doc.policy }];
    for (const [file, text] of Object.entries(doc.files ?? {})) sources.push({ path: `corpus/${file}`, text });
    return { name, sources, cases: doc.cases.map((c, i) => parseCase(c, i)) };
  });

const built = new Map<string, { modules: Map<string, Uint8Array>; services: ServiceIR[] }>();

beforeAll(async () => {
  for (const file of corpus) {
    const result = await compilePolicies(file.sources);
    if (!result.bundle) throw new Error(`${file.name} does not compile: ${JSON.stringify(result.diagnostics)}`);
    built.set(file.name, { modules: result.bundle.modules, services: frontEnd(file.sources).ir!.services });
  }
}, 300_000);

afterAll(async () => {
  await shutdownCompiler();
});

describe('corpus: interpreter and Wasm agree', () => {
  it('covers every rule kind, condition field and action', () => {
    const text = corpus.map((f) => f.sources.map((s) => s.text).join('\n')).join('\n');
    for (const word of ['route', 'fault', 'allow', 'deny', 'audit', 'rate_limit', 'dry_run', 'mesh', 'import', 'const', 'match']) expect(text).toContain(word);
    for (const field of ['method', 'path', 'host', 'header', 'query', 'grpc service', 'grpc method', 'source namespace', 'source account', 'source ip', 'port', 'claim', 'source matches']) {
      expect(text, field).toContain(field);
    }
    for (const op of ['==', '!=', ' in ', 'prefix', 'suffix', 'contains', 'regex', 'matches', 'present', 'absent', ' not ', ' or ']) expect(text, op).toContain(op);
    for (const action of ['rewrite prefix', 'rewrite path', 'redirect', 'respond', 'request_header set', 'request_header add', 'request_header remove', 'response_header', 'abort grpc', 'between', 'daily', 'key header', 'key path', 'key remote_address', 'key source']) {
      expect(text, action).toContain(action);
    }
    expect(corpus.reduce((n, f) => n + f.cases.length, 0)).toBeGreaterThan(60);
  });

  for (const file of corpus) {
    describe(file.name, () => {
      for (const c of file.cases) {
        it(c.name, async () => {
          const { modules, services } = built.get(file.name)!;
          const service = c.service ?? (services.length === 1 ? services[0]!.name : undefined);
          const ir = services.find((s) => s.name === service);
          if (!ir) throw new Error(`case ${c.name}: say which service (one of ${services.map((s) => s.name).join(', ')})`);
          const wasm = runCase(c, await DecisionHost.load(modules.get(`${ir.name}.wasm`)!));
          const reference = runCase(c, new Interpreter(ir));
          wasm.forEach(({ step, outcomes }, i) => {
            const expected = reference[i]!.outcomes;
            outcomes.forEach((o, k) => expect(o, `step ${step.index}, repetition ${k + 1}: Wasm vs interpreter`).toEqual(expected[k]));
            if (step.expect) expect(mismatches(outcomes[outcomes.length - 1]!, step.expect), `step ${step.index}`).toEqual([]);
          });
        });
      }
    });
  }
});
