// Every catalogue code is produced by a minimal source, at the marked position,
// and docs/language.md lists every code.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { checkPolicies, type Topology } from '../../compiler/index.ts';
import { CATALOGUE } from '../../compiler/diagnostics.ts';

/** `^` marks where the diagnostic must point; it is removed from the source. */
interface Case {
  code: keyof typeof CATALOGUE;
  src: string;
  topology?: Topology;
  hint?: string;
}

const CASES: Case[] = [
  { code: 'MP1001', src: 'service a { route r { to v1 ^; } }' },
  { code: 'MP1002', src: 'service a {\n  allow r { from ^"spiffe://x/y }\n}' },
  { code: 'MP1003', src: 'service a {\n  route r {\n    ^wen path == "/"\n    to v1\n  }\n}', hint: 'did you mean when?' },
  { code: 'MP2001', src: 'service a { deny d { } }\nservice ^a { deny e { } }' },
  { code: 'MP2002', src: 'service a { deny d { } deny ^d { } }' },
  { code: 'MP2003', src: 'service a { ^rout r { to v1 } }', hint: 'did you mean route?' },
  { code: 'MP2004', src: 'service a { deny d { ^to v1 } }' },
  { code: 'MP2005', src: 'service a { route ^r { when path == "/" } }' },
  { code: 'MP2006', src: 'service a { deny d { when path == "/" ^when path == "/x" } }' },
  { code: 'MP2007', src: 'service a { route r { to v1 ^0, v2 1 } }' },
  { code: 'MP2008', src: 'service a { fault f { abort 503 percent ^101 } }' },
  { code: 'MP2009', src: 'service a { fault f { abort ^700 } }' },
  { code: 'MP2010', src: 'service a { fault f { delay ^5sec } }' },
  { code: 'MP2011', src: 'service a { rate_limit l { rate 5/^d } }' },
  { code: 'MP2012', src: 'service a { rate_limit l { rate ^0/s } }' },
  { code: 'MP2013', src: 'service ^catalgo { deny d { } }', topology: { services: { catalog: { versions: ['v1'] } } }, hint: 'did you mean catalog?' },
  { code: 'MP2014', src: 'service a { route r { to ^v3 } }', topology: { services: { a: { versions: ['v1', 'v2'] } } } },
  { code: 'MP2015', src: 'service a { deny d { when method == ^GETT } }', hint: 'did you mean GET?' },
  { code: 'MP2016', src: 'service a { allow x { from ^"frontend" } }' },
  { code: 'MP2017', src: 'service a { deny d { when path prefix ^"admin" } }' },
  { code: 'MP2018', src: 'service a { deny d { when header ^"bad header" present } }' },
  { code: 'MP2019', src: 'service a { route r { to v1 90, ^v2 } }' },
  { code: 'MP2020', src: 'service a { route r { to v1 1, ^v1 2 } }' },
  { code: 'MP2021', src: 'service ^a { }' },
  { code: 'MP2022', src: 'service a { route r { to v1 } route ^s { when path == "/" to v2 } }' },
  { code: 'MP2023', src: 'service a { deny d { when source matches ^"spiffe://x/y" } }' },
];

function position(src: string): { text: string; line: number; col: number } {
  const at = src.indexOf('^');
  const before = src.slice(0, at);
  const lines = before.split('\n');
  return { text: src.slice(0, at) + src.slice(at + 1), line: lines.length, col: lines[lines.length - 1]!.length + 1 };
}

describe('checker diagnostics', () => {
  it('has a case for every catalogue code', () => {
    expect(CASES.map((c) => c.code).sort()).toEqual(Object.keys(CATALOGUE).sort());
  });

  for (const c of CASES) {
    it(`${c.code}: ${CATALOGUE[c.code].summary}`, () => {
      const { text, line, col } = position(c.src);
      const diagnostics = checkPolicies([{ path: 'case.meshpolicy', text }], c.topology ? { topology: c.topology } : {});
      const found = diagnostics.filter((d) => d.code === c.code);
      expect(found, JSON.stringify(diagnostics, null, 1)).toHaveLength(1);
      const d = found[0]!;
      expect(d.severity).toBe(CATALOGUE[c.code].severity);
      expect({ file: d.span.file, line: d.span.line, col: d.span.col }).toEqual({ file: 'case.meshpolicy', line, col });
      if (c.hint) expect(d.hint).toBe(c.hint);
    });
  }

  it('a valid policy has no diagnostics, with and without a matching topology', () => {
    const text = readFileSync(new URL('../fixtures/compiler/tour.meshpolicy', import.meta.url), 'utf8');
    expect(checkPolicies([{ path: 'tour.meshpolicy', text }])).toEqual([]);
    expect(checkPolicies([{ path: 'tour.meshpolicy', text }], { topology: { services: { catalog: { versions: ['v1', 'v2'] } } } })).toEqual([]);
  });

  it('reports duplicate services across files at the second declaration', () => {
    const d = checkPolicies([
      { path: 'a.meshpolicy', text: 'service web { deny d { } }' },
      { path: 'b.meshpolicy', text: '\n service web { deny e { } }' },
    ]);
    expect(d.map((x) => [x.code, x.span.file, x.span.line, x.span.col])).toEqual([['MP2001', 'b.meshpolicy', 2, 10]]);
    expect(d[0]!.message).toContain('a.meshpolicy:1:9');
  });

  it('docs/language.md lists every diagnostic code', () => {
    const doc = readFileSync(new URL('../../docs/language.md', import.meta.url), 'utf8');
    for (const code of Object.keys(CATALOGUE)) expect(doc, `${code} missing from docs/language.md`).toMatch(new RegExp(`\\|\\s*${code}\\s*\\|`));
  });
});
