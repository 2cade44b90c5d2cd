// Every ```meshpolicy example in docs/language.md checks without errors and
// builds a module: the reference cannot drift from the compiler.
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { compilePolicies, formatDiagnostic, shutdownCompiler } from '../../compiler/index.ts';

const doc = readFileSync(new URL('../../docs/language.md', import.meta.url), 'utf8');
const blocks = [...doc.matchAll(/```meshpolicy\n([\s\S]*?)```/g)].map((m) => m[1]!);
// The first example imports a file; give it one.
const common = { path: 'docs/common.meshpolicy', text: 'const UNUSED = "x"\n' };

afterAll(async () => {
  await shutdownCompiler();
});

describe('docs/language.md examples', () => {
  it('has examples', () => {
    expect(blocks.length).toBeGreaterThanOrEqual(8);
  });

  blocks.forEach((text, i) => {
    it(`example ${i + 1} compiles`, async () => {
      const result = await compilePolicies([common, { path: `docs/example-${i + 1}.meshpolicy`, text }]);
      const errors = result.diagnostics.filter((d) => d.severity === 'error');
      expect(errors.map(formatDiagnostic)).toEqual([]);
      expect(result.bundle).toBeDefined();
    });
  });
});
