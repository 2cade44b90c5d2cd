// The regex → DFA compiler: whole-value matching agrees with JavaScript's
// RegExp (anchored as ^(?:p)$) on random patterns of the supported subset and
// random strings; unsupported features are refused with a kind and offset;
// the classic catastrophic pattern runs in one pass.
import { describe, expect, it } from 'vitest';
import { compileRegex, dfaMatches, MAX_DFA_STATES, RegexError } from '../../compiler/regex/automaton.ts';

/** A small seeded PRNG so failures reproduce. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ATOMS = ['a', 'b', 'c', '.', '[ab]', '[^a]', '\\d', '\\w', '\\s', '[a-c]', '/', '\\.', '[0-9x-z]', '\\D', '-', 'é'];

function randomPattern(r: () => number, depth: number): string {
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)]!;
  if (depth <= 0) return pick(ATOMS);
  switch (Math.floor(r() * 6)) {
    case 0:
      return randomPattern(r, depth - 1) + randomPattern(r, depth - 1);
    case 1:
      return `(${randomPattern(r, depth - 1)}|${randomPattern(r, depth - 1)})`;
    case 2:
      return `(?:${randomPattern(r, depth - 1)})${pick(['*', '+', '?', '*?', '{2}', '{1,3}', '{0,2}', '{2,}'])}`;
    default:
      return pick(ATOMS) + randomPattern(r, depth - 1);
  }
}

function randomString(r: () => number): string {
  const chars = 'abcxyz019./- \té';
  let s = '';
  const n = Math.floor(r() * 8);
  for (let i = 0; i < n; i++) s += chars[Math.floor(r() * chars.length)];
  return s;
}

describe('regex → DFA', () => {
  it('agrees with RegExp whole-value matching on random patterns and inputs', () => {
    const r = rng(42);
    let compared = 0;
    for (let p = 0; p < 400; p++) {
      const pattern = randomPattern(r, 3);
      const dfa = compileRegex(pattern);
      const reference = new RegExp(`^(?:${pattern})$`);
      for (let i = 0; i < 40; i++) {
        const s = randomString(r);
        expect(dfaMatches(dfa, s), `/${pattern}/ on ${JSON.stringify(s)}`).toBe(reference.test(s));
        compared++;
      }
    }
    expect(compared).toBe(16_000);
  });

  it('matches the whole value; ^ and $ at the ends are accepted and redundant', () => {
    const dfa = compileRegex('/items/[0-9]+');
    expect(dfaMatches(dfa, '/items/42')).toBe(true);
    expect(dfaMatches(dfa, '/items/42/x')).toBe(false);
    expect(dfaMatches(dfa, 'x/items/42')).toBe(false);
    const anchored = compileRegex('^/items/[0-9]+$');
    expect(anchored).toEqual(dfa);
  });

  it('handles escapes, classes and bounded repetition', () => {
    const cases: [string, string, boolean][] = [
      ['a\\.b', 'a.b', true],
      ['a\\.b', 'axb', false],
      ['[\\d-]{3}', '1-2', true],
      ['\\x41\\u00e9', 'Aé', true],
      ['(?<v>v[12])', 'v2', true],
      ['a{2,3}', 'a', false],
      ['a{2,3}', 'aaa', true],
      ['a{2,3}', 'aaaa', false],
      ['a{2,}', 'aaaaaa', true],
      ['[^/]+', 'abc', true],
      ['[^/]+', 'a/c', false],
      ['{', '{', true],
      ['x|', '', true],
    ];
    for (const [p, s, want] of cases) expect(dfaMatches(compileRegex(p), s), `/${p}/ on ${s}`).toBe(want);
  });

  it('refuses what a DFA cannot run, with the kind and where', () => {
    const refused: [string, RegexError['kind'], number][] = [
      ['(a)\\1', 'unsupported', 3],
      ['(?<n>a)\\k<n>', 'unsupported', 7],
      ['a(?=b)', 'unsupported', 1],
      ['(?<!a)b', 'unsupported', 0],
      ['\\bword', 'unsupported', 0],
      ['a^b', 'unsupported', 1],
      ['a$b', 'unsupported', 1],
      ['(a', 'invalid', 0],
      ['a)', 'invalid', 1],
      ['[a', 'invalid', 0],
      ['*a', 'invalid', 0],
      ['[z-a]', 'invalid', 2],
      ['\\q', 'invalid', 0],
      ['a{500}', 'too-large', 1],
      ['\\p{L}', 'unsupported', 0],
    ];
    for (const [p, kind, offset] of refused) {
      let caught: unknown;
      try {
        compileRegex(p);
      } catch (err) {
        caught = err;
      }
      expect(caught, p).toBeInstanceOf(RegexError);
      expect([(caught as RegexError).kind, (caught as RegexError).offset], p).toEqual([kind, offset]);
    }
  });

  it('refuses patterns whose automaton would be too large', () => {
    // (a|b)*a(a|b){n}: the classic exponential DFA.
    expect(() => compileRegex('(a|b)*a(a|b){14}')).toThrow(RegexError);
    expect(MAX_DFA_STATES).toBeGreaterThan(100);
  });

  it('runs in linear time on the classic catastrophic-backtracking pattern', () => {
    const dfa = compileRegex('(a+)+b');
    // A backtracking engine needs ~2^n steps here (it would never finish within
    // the test timeout); a DFA reads each character once.
    expect(dfaMatches(dfa, 'a'.repeat(100_000))).toBe(false);
    expect(dfaMatches(dfa, 'a'.repeat(100_000) + 'b')).toBe(true);
  });
});
