// The controller tests' own helpers, where a flaw shows up as another test's flake.
import { describe, expect, it } from 'vitest';
import { freePort } from './helpers.ts';

describe('freePort', () => {
  it('never hands out the same port twice in a test file', async () => {
    // 400 draws from its 12,000 ports would repeat one with near certainty if draws were independent.
    const ports: number[] = [];
    for (let i = 0; i < 400; i++) ports.push(await freePort());
    expect(new Set(ports).size).toBe(ports.length);
    expect(ports.every((p) => p >= 20_000 && p < 32_000)).toBe(true);
  });
});
