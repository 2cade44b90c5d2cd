// Lexer and parser: the language tour parses into the expected AST, and error
// recovery reports one error per broken rule, at the right line:col, in one run.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseSource } from '../../compiler/syntax/to-ast.ts';
import { formatDiagnostic } from '../../compiler/diagnostics.ts';

const tourText = readFileSync(new URL('../fixtures/compiler/tour.meshpolicy', import.meta.url), 'utf8');

describe('parser', () => {
  it('parses the language tour', () => {
    const { ast, diagnostics } = parseSource('tour.meshpolicy', tourText);
    expect(diagnostics).toEqual([]);
    expect(ast.services).toHaveLength(1);
    const service = ast.services[0]!;
    expect(service.name.text).toBe('catalog');
    expect(service.rules.map((r) => `${r.kind.text}/${r.name?.text}`)).toEqual([
      'route/beta',
      'route/default',
      'fault/slow-items',
      'fault/chaos',
      'allow/frontend-reads',
      'allow/any-ns-catalog',
      'deny/no-admin',
      'rate_limit/per-source',
    ]);
    const split = service.rules[1]!.clauses[0]!;
    expect(split.type === 'to' && split.targets.map((t) => [t.version.text, t.weight?.value])).toEqual([
      ['v1', 90],
      ['v2', 10],
    ]);
    const chaos = service.rules[3]!.clauses[0]!;
    expect(chaos.type).toBe('when');
    if (chaos.type === 'when') {
      expect(chaos.condition.type).toBe('and');
      expect(chaos.condition.span).toMatchObject({ line: 18, col: 10 });
    }
    const delay = service.rules[2]!.clauses[1]!;
    expect(delay.type === 'delay' && [delay.duration.amount, delay.duration.unit, delay.percent?.value]).toEqual([250, 'ms', 50]);
    const limit = service.rules[7]!.clauses;
    expect(limit.map((c) => c.type)).toEqual(['key', 'rate', 'when']);
    expect(service.rules[6]!.span).toMatchObject({ line: 30, col: 3, endLine: 32, endCol: 4 });
  });

  it('parses operator precedence: not binds tighter than and, and tighter than or', () => {
    const { ast, diagnostics } = parseSource(
      'p.meshpolicy',
      'service s { deny d { when not path == "/a" and method == GET or (header "x" absent and source == "spiffe://t/x") } }',
    );
    expect(diagnostics).toEqual([]);
    const when = ast.services[0]!.rules[0]!.clauses[0]!;
    if (when.type !== 'when') throw new Error('expected when');
    const c = when.condition;
    expect(c.type).toBe('or');
    if (c.type !== 'or') return;
    expect(c.left.type).toBe('and');
    if (c.left.type === 'and') expect(c.left.left.type).toBe('not');
    expect(c.right.type).toBe('and');
  });

  it('accepts keywords as names and # comments', () => {
    const { diagnostics, ast } = parseSource('k.meshpolicy', '# header\nservice source { route default { to none } }');
    expect(diagnostics).toEqual([]);
    expect(ast.services[0]!.name.text).toBe('source');
  });

  it('reports several syntax errors in one run with their positions', () => {
    const text = [
      'service catalog {', //       1
      '  route beta {', //          2
      '    wen header "x" == "b"', // 3: misspelled keyword
      '    to v2', //               4
      '  }', //                     5
      '  deny x {', //              6
      '    when path prefx "/a"', //  7: misspelled operator
      '  }', //                     8
      '  fault z { abort 503 percent }', // 9: missing number
      '  route q { to v1 @ }', //   10: stray character
      '}', //                       11
    ].join('\n');
    const { diagnostics } = parseSource('bad.meshpolicy', text);
    const got = diagnostics.map((d) => [d.code, d.span.line, d.span.col]).sort((a, b) => Number(a[1]) - Number(b[1]));
    expect(got).toEqual([
      ['MP1003', 3, 5],
      ['MP1003', 7, 15],
      ['MP1003', 9, 31],
      ['MP1001', 10, 19],
    ]);
    const texts = diagnostics.map(formatDiagnostic).join('\n');
    expect(texts).toContain("bad.meshpolicy:3:5: error MP1003: expected one of when, to, delay, abort, between, from, key, rate, dry_run, timeout, request_header, response_header, retry, retry_budget, load_balancer, connection_limits, outlier_detection, rewrite, redirect, respond, mirror, } but found 'wen'\n    hint: did you mean when?");
    expect(texts).toContain('hint: did you mean prefix?');
  });

  it('reports an unclosed service block at the end of the file', () => {
    const { diagnostics } = parseSource('open.meshpolicy', 'service a {\n  deny d { }\n');
    expect(diagnostics.map((d) => [d.code, d.span.line, d.span.col])).toEqual([['MP1003', 2, 13]]);
    expect(diagnostics[0]!.message).toContain('the end of the file');
  });
});
