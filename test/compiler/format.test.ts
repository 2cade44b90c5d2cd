// meshc fmt's formatter: canonical (messy input → fixed layout), idempotent on
// every policy in the repository, and lossless (same tokens, same comments).
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { formatSource, FormatError } from '../../compiler/format/format.ts';
import { policyLexer } from '../../compiler/syntax/tokens.ts';

const ROOT = new URL('../../', import.meta.url);

function policies(): { name: string; text: string }[] {
  const out: { name: string; text: string }[] = [];
  for (const dir of ['examples/', 'test/fixtures/compiler/', 'bench/policies/']) {
    for (const f of readdirSync(new URL(dir, ROOT)).filter((n) => n.endsWith('.meshpolicy'))) out.push({ name: dir + f, text: readFileSync(new URL(dir + f, ROOT), 'utf8') });
  }
  for (const f of readdirSync(new URL('test/corpus/', ROOT))) {
    const doc = parse(readFileSync(new URL(`test/corpus/${f}`, ROOT), 'utf8')) as { policy: string };
    out.push({ name: `test/corpus/${f}`, text: doc.policy });
  }
  const doc = readFileSync(new URL('docs/language.md', ROOT), 'utf8');
  [...doc.matchAll(/```meshpolicy\n([\s\S]*?)```/g)].forEach((m, i) => out.push({ name: `docs/language.md #${i + 1}`, text: m[1]! }));
  return out;
}

function tokens(text: string): { images: string[]; comments: string[] } {
  const lexed = policyLexer.tokenize(text);
  return { images: lexed.tokens.map((t) => t.image), comments: (lexed.groups['comments'] ?? []).map((c) => c.image.trimEnd()) };
}

describe('meshc fmt', () => {
  it('lays out a messy file canonically, keeping comments and blank lines between rules', () => {
    const messy = 'const  A="x"\nservice   a{route r{when path prefix A and\n  header "x" present\n  to v1 90,v2 10 # split\n}\n\n\n   deny d {}  }\nmatch m { method==GET }\n';
    expect(formatSource(messy)).toBe(
      [
        'const A = "x"',
        'service a {',
        '  route r {',
        '    when path prefix A and header "x" present',
        '    to v1 90, v2 10  # split',
        '  }',
        '',
        '  deny d { }',
        '}',
        'match m { method == GET }',
        '',
      ].join('\n'),
    );
  });

  it('keeps one-line rules on one line and breaks long conditions before and/or', () => {
    const text = 'service a {\n  route beta { when header "x" == "b"  to v2 }\n  deny d {\n    when path == "/a"\n      or path == "/b"\n  }\n}\n';
    expect(formatSource(text)).toBe(text);
  });

  it('refuses a file with syntax errors', () => {
    expect(() => formatSource('service a { route r { to } }')).toThrow(FormatError);
  });

  for (const { name, text } of policies()) {
    it(`is idempotent and lossless on ${name}`, () => {
      const once = formatSource(text);
      expect(formatSource(once)).toBe(once);
      expect(tokens(once)).toEqual(tokens(text));
    });
  }
});
