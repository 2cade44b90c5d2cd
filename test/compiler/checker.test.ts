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
  { code: 'MP2022', src: 'service a { route r { when path prefix "/a" and header "x" present to v1 } route ^s { when header "x" == "1" and path prefix "/a" to v2 } }' },
  { code: 'MP2023', src: 'service a { deny d { when source matches ^"spiffe://x/y" } }' },
  { code: 'MP2024', src: 'service a { deny d { when match ^internl } }\nmatch internal { method == GET }', hint: 'did you mean internal?' },
  { code: 'MP2025', src: 'const A = "/a"\nconst ^A = "/b"\nservice a { deny d { when path == A } }' },
  { code: 'MP2026', src: 'import ^"nope.meshpolicy"\nservice a { deny d { } }' },
  { code: 'MP2027', src: 'service a { deny d { when method ^prefix "G" } }' },
  { code: 'MP2028', src: 'service a { deny d { when header "x" == ^5 } }' },
  { code: 'MP2029', src: 'match ^a { match b }\nmatch b { match a }\nservice s { deny d { when match a } }' },
  { code: 'MP2030', src: 'service a { deny d { when path regex "/(a)^\\\\1" } }' },
  { code: 'MP2031', src: 'service a { deny d { when path regex "/^(a" } }' },
  { code: 'MP2032', src: 'service a { deny d { when path regex "/a^{500}" } }' },
  { code: 'MP2033', src: 'service a { deny d { when source ip in [^"10.0.0.0/33"] } }' },
  { code: 'MP2034', src: 'service a { deny d { when port == ^70000 } }' },
  { code: 'MP2035', src: 'service a { ^deny { } }' },
  { code: 'MP2036', src: 'service a { route r { to v1 ^respond 200 } }' },
  { code: 'MP2037', src: 'service a { traffic { load_balancer ^round_robn } }', hint: 'did you mean round_robin?' },
  { code: 'MP2038', src: 'service a { traffic { ^retry on ["5xx"] } }' },
  { code: 'MP2039', src: 'service a { fault f { abort grpc ^17 } }' },
  { code: 'MP2040', src: 'service a { fault f { abort 503 ^between "25:00" and "02:00" daily } }' },
  { code: 'MP2041', src: 'service a { rate_limit l { key ^ip rate 1/s } }' },
  { code: 'MP2042', src: 'service a { route r { when path == "/a" to v1 rewrite prefix ^"/b" } }' },
  { code: 'MP2043', src: 'mesh { ^route r { to v1 } }' },
  { code: 'MP2044', src: 'mesh { deny a { } }\n^mesh { deny b { } }' },
  { code: 'MP2045', src: 'service a { route r { redirect status ^200 } }' },
  { code: 'MP2046', src: 'service a { deny d { when port == ^81 } }', topology: { services: { a: { versions: ['v1'], ports: [80] } } } },
  { code: 'MP3001', src: 'service a { deny d { when path prefix "/admin" } allow ^x { when path prefix "/admin/x" } }' },
  { code: 'MP3002', src: 'service a { route ^r { to v1 1, v2 2 } }' },
  { code: 'MP3003', src: 'service a { rate_limit x { rate 5/s } rate_limit ^y { rate 1/s when method == GET } }' },
  { code: 'MP3004', src: 'service a { deny ^d { when header "x" present or header "x" absent } }' },
  { code: 'MP3005', src: 'service a { deny ^d { when method == GET and method == POST } }' },
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
