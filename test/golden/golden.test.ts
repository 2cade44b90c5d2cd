// Each golden input renders exactly as its checked-in .errors.txt
// (regenerate with `npm run golden:update` and review the diff).
import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { expectedFile, goldenInputs, render } from './golden.ts';

describe('golden diagnostics', () => {
  it('has inputs', () => {
    expect(goldenInputs().length).toBeGreaterThanOrEqual(5);
  });
  for (const name of goldenInputs()) {
    it(name, () => {
      const file = expectedFile(name);
      expect(existsSync(file), `${file.pathname} is missing: run npm run golden:update`).toBe(true);
      expect(render(name)).toBe(readFileSync(file, 'utf8'));
    });
  }
});
