// The compiler never crashes: random token soups and mutations of real
// policies (deleted, duplicated, swapped and replaced tokens; random bytes)
// always end in diagnostics or in a checked IR, and the front end never
// throws. A sample of the inputs that check clean also goes through code
// generation and asc. Seeded, bounded in count and time.
import { readdirSync, readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { compilePolicies, frontEnd, shutdownCompiler, BuildCache } from '../../compiler/index.ts';
import { emitService } from '../../compiler/codegen/emit.ts';
import { KEYWORDS } from '../../compiler/syntax/tokens.ts';

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

const ROOT = new URL('../../', import.meta.url);
const SEEDS: string[] = [];
for (const dir of ['examples/', 'test/fixtures/compiler/', 'test/golden/']) {
  for (const f of readdirSync(new URL(dir, ROOT)).filter((n) => n.endsWith('.meshpolicy'))) SEEDS.push(readFileSync(new URL(dir + f, ROOT), 'utf8'));
}
for (const f of readdirSync(new URL('test/corpus/', ROOT))) SEEDS.push((parse(readFileSync(new URL(`test/corpus/${f}`, ROOT), 'utf8')) as { policy: string }).policy);

const WORDS = [
  ...KEYWORDS.map((k) => k.LABEL ?? k.name),
  '{', '}', '(', ')', '[', ']', ',', '/', '==', '!=', '=', '"x"', '"/a"', '"spiffe://t/ns/a/sa/b"', '"10.0.0.0/8"', '"a(b"', '"(a)\\\\1"',
  '1', '0', '100', '65536', '250ms', '1h', '5xx', 'v1', 'v2', 'GET', 'POST', 'FOO', 'route', 'deny', 'allow', 'fault', 'rate_limit', 'traffic',
  'audit', 'a', 'b', '"', '#', '\n', '@', '~', '-', '.', '3.5', '"\\u0000"', '"é"',
];

/** Splits into rough tokens (words, strings, punctuation, whitespace) for mutation. */
function pieces(text: string): string[] {
  return text.match(/"(?:[^"\\\n]|\\.)*"?|[A-Za-z_][\w-]*|\d+(?:\.\d+)?[A-Za-z]*|==|!=|\s+|./g) ?? [];
}

function mutate(text: string, r: () => number): string {
  const p = pieces(text);
  const n = 1 + Math.floor(r() * 4);
  for (let k = 0; k < n && p.length > 0; k++) {
    const i = Math.floor(r() * p.length);
    switch (Math.floor(r() * 5)) {
      case 0:
        p.splice(i, 1);
        break;
      case 1:
        p.splice(i, 0, p[Math.floor(r() * p.length)]!);
        break;
      case 2: {
        const j = Math.floor(r() * p.length);
        [p[i], p[j]] = [p[j]!, p[i]!];
        break;
      }
      case 3:
        p[i] = ` ${WORDS[Math.floor(r() * WORDS.length)]} `;
        break;
      default:
        p[i] = String.fromCharCode(Math.floor(r() * 0x3000));
    }
  }
  return p.join('');
}

function soup(r: () => number): string {
  const n = Math.floor(r() * 60);
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(WORDS[Math.floor(r() * WORDS.length)]!);
  return out.join(' ');
}

afterAll(async () => {
  await shutdownCompiler();
});

describe('fuzz', () => {
  it('every random or mutated source ends in diagnostics or a checked IR; nothing throws', () => {
    const r = rng(7);
    const deadline = Date.now() + 20_000;
    let runs = 0;
    let clean = 0;
    let withErrors = 0;
    for (; runs < 4000 && Date.now() < deadline; runs++) {
      const text = runs % 4 === 0 ? soup(r) : mutate(SEEDS[Math.floor(r() * SEEDS.length)]!, r);
      let front;
      try {
        front = frontEnd([{ path: 'fuzz.meshpolicy', text }]);
        if (front.ir) for (const s of front.ir.services) emitService(s);
      } catch (err) {
        throw new Error(`the compiler threw on input #${runs}: ${(err as Error).stack}\n--- input ---\n${text}`);
      }
      const errors = front.diagnostics.filter((d) => d.severity === 'error');
      // Exactly one of: errors and no IR, or an IR and no errors.
      expect(errors.length > 0, `input #${runs}`).toBe(front.ir === undefined);
      for (const d of front.diagnostics) {
        expect(d.code).toMatch(/^MP[123]\d{3}$/);
        expect(d.span.line).toBeGreaterThanOrEqual(1);
        expect(d.span.col).toBeGreaterThanOrEqual(1);
      }
      if (front.ir) clean++;
      else withErrors++;
    }
    expect(runs).toBeGreaterThanOrEqual(200);
    expect(clean).toBeGreaterThan(0);
    expect(withErrors).toBeGreaterThan(0);
  });

  it('clean mutants of real policies compile to valid modules', async () => {
    const r = rng(11);
    const compiled: string[] = [];
    for (let i = 0; i < 2000 && compiled.length < 6; i++) {
      const text = mutate(SEEDS[Math.floor(r() * SEEDS.length)]!, r);
      const front = frontEnd([{ path: 'fuzz.meshpolicy', text }]);
      if (front.ir && front.ir.services.length > 0 && !SEEDS.includes(text)) compiled.push(text);
    }
    expect(compiled.length).toBeGreaterThan(0);
    for (const text of compiled) {
      const result = await compilePolicies([{ path: 'fuzz.meshpolicy', text }], { cache: new BuildCache() });
      expect(result.bundle, text).toBeDefined();
    }
  });
});
