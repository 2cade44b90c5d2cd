// Source text → AST for one file: runs the lexer and the parser, turns lexer
// and parser errors into diagnostics (MP1001–MP1003), and the CST into the AST.
// In: a SourceFile. Out: the PolicyFile AST (empty when the file has syntax
// errors: recovery keeps parsing to find more errors, but the recovered tree
// is not checked) and the syntax diagnostics.
import type { CstElement, CstNode, IToken } from 'chevrotain';
import type { SourceSpan } from '../../protocol/bundle.ts';
import type * as A from '../ast.ts';
import { didYouMean, makeDiagnostic, type Diagnostic } from '../diagnostics.ts';
import { parseRule, parseServiceHeader, policyParser, type ParseErrorPayload } from './parser.ts';
import { KEYWORDS, LCurly, policyLexer, RCurly, UnterminatedString } from './tokens.ts';

export interface ParsedFile {
  ast: A.PolicyFile;
  diagnostics: Diagnostic[];
}

const KEYWORD_WORDS = KEYWORDS.map((k) => k.LABEL ?? k.name);

export function parseSource(path: string, text: string): ParsedFile {
  const diagnostics: Diagnostic[] = [];
  const lexed = policyLexer.tokenize(text);
  for (const e of lexed.errors) {
    const span: SourceSpan = {
      file: path,
      line: e.line ?? 1,
      col: e.column ?? 1,
      endLine: e.line ?? 1,
      endCol: (e.column ?? 1) + e.length,
    };
    diagnostics.push(makeDiagnostic('MP1001', span, [JSON.stringify(text.substr(e.offset, e.length))]));
  }
  for (const t of lexed.tokens) {
    if (t.tokenType === UnterminatedString) diagnostics.push(makeDiagnostic('MP1002', tokenSpan(path, t), []));
  }
  const builder = new CstToAst(path);
  const services: A.ServiceDecl[] = [];
  for (const block of splitBlocks(lexed.tokens)) {
    const header = parseServiceHeader(block.header);
    const headerError = firstSyntaxError(path, block.header, block.header.length, lexed.tokens);
    if (headerError) {
      diagnostics.push(headerError);
      continue;
    }
    const rules: A.RuleDecl[] = [];
    for (const range of block.rules) {
      const cst = parseRule(range);
      const error = firstSyntaxError(path, range, lexed.tokens.indexOf(range[range.length - 1]!) + 1, lexed.tokens);
      if (error) diagnostics.push(error);
      else rules.push(builder.rule(cst));
    }
    if (!block.closed) {
      const last = lexed.tokens[lexed.tokens.length - 1]!;
      diagnostics.push(makeDiagnostic('MP1003', afterToken(path, last), ['} to close the service block', 'the end of the file']));
    }
    services.push(builder.service(header, rules, block));
  }
  // A file with syntax errors yields no AST: its rules would be checked half-read.
  if (diagnostics.length > 0) return { ast: { path, services: [] }, diagnostics };
  return { ast: { path, services }, diagnostics };
}

/** One `service NAME {` header and the token ranges of its rules, split by brace matching. */
interface ServiceBlock {
  header: IToken[];
  rules: IToken[][];
  closed: boolean;
  closing?: IToken;
}

/**
 * Splits a file's tokens into service blocks and each block into rule ranges
 * (a rule range ends with the "}" that closes its first "{"). Only braces are
 * looked at, so a broken rule cannot swallow its neighbours' structure.
 */
function splitBlocks(tokens: IToken[]): ServiceBlock[] {
  const blocks: ServiceBlock[] = [];
  let i = 0;
  while (i < tokens.length) {
    const header: IToken[] = [];
    while (i < tokens.length && tokens[i]!.tokenType !== LCurly) header.push(tokens[i++]!);
    if (i < tokens.length) header.push(tokens[i++]!);
    const block: ServiceBlock = { header, rules: [], closed: false };
    blocks.push(block);
    let range: IToken[] = [];
    let depth = 0;
    while (i < tokens.length) {
      const t = tokens[i++]!;
      if (depth === 0 && t.tokenType === RCurly) {
        block.closed = true;
        block.closing = t;
        break;
      }
      range.push(t);
      if (t.tokenType === LCurly) depth++;
      else if (t.tokenType === RCurly && --depth === 0) {
        block.rules.push(range);
        range = [];
      }
    }
    if (range.length > 0) block.rules.push(range);
  }
  return blocks;
}

/** The parser's first error on `range` as a diagnostic; `nextIndex` is where the range ends in `all`. */
function firstSyntaxError(path: string, range: IToken[], nextIndex: number, all: IToken[]): Diagnostic | undefined {
  const e = policyParser.errors[0];
  if (!e) return undefined;
  let payload: ParseErrorPayload;
  try {
    payload = JSON.parse(e.message) as ParseErrorPayload;
  } catch {
    payload = { expected: [], found: `'${e.token.image}'` };
  }
  let span: SourceSpan;
  if (e.token.tokenType.name !== 'EOF') span = tokenSpan(path, e.token);
  else {
    // The range ran out: point at what follows it in the file, or just past its end.
    const next = all[nextIndex];
    if (next) {
      span = tokenSpan(path, next);
      payload.found = `'${next.image}'`;
    } else {
      const last = range[range.length - 1] ?? all[all.length - 1];
      span = last ? afterToken(path, last) : point(path, 1, 1);
    }
  }
  const expected = payload.expected.length === 0 ? 'something else' : payload.expected.length === 1 ? payload.expected[0]! : `one of ${payload.expected.join(', ')}`;
  const keywordsExpected = payload.expected.filter((x) => KEYWORD_WORDS.includes(x));
  const foundWord = /^'([A-Za-z_][A-Za-z0-9_-]*)'$/.exec(payload.found)?.[1];
  const hint = foundWord && keywordsExpected.length > 0 ? didYouMean(foundWord, keywordsExpected) : undefined;
  return makeDiagnostic('MP1003', span, [expected, payload.found], hint);
}

function afterToken(file: string, t: IToken): SourceSpan {
  return point(file, t.endLine ?? 1, (t.endColumn ?? 0) + 1);
}

function point(file: string, line: number, col: number): SourceSpan {
  return { file, line, col, endLine: line, endCol: col };
}

function tokenSpan(file: string, t: IToken): SourceSpan {
  return { file, line: t.startLine ?? 1, col: t.startColumn ?? 1, endLine: t.endLine ?? 1, endCol: (t.endColumn ?? 0) + 1 };
}

function isToken(e: CstElement): e is IToken {
  return (e as IToken).image !== undefined;
}

/** Walks error-free CSTs. Every child accessed here is present by the grammar. */
class CstToAst {
  readonly path: string;

  constructor(path: string) {
    this.path = path;
  }

  service(header: CstNode, rules: A.RuleDecl[], block: ServiceBlock): A.ServiceDecl {
    const start = this.span(header);
    const end = block.closing ? this.tokenSpan(block.closing) : start;
    return { name: this.name(this.token(header, 'name')), rules, span: { ...start, endLine: end.endLine, endCol: end.endCol } };
  }

  rule(node: CstNode): A.RuleDecl {
    return {
      kind: this.name(this.token(node, 'kind')),
      name: this.name(this.token(node, 'name')),
      clauses: this.nodes(node, 'clause').map((c) => this.clause(c)),
      span: this.span(node),
    };
  }

  private clause(node: CstNode): A.Clause {
    const inner = Object.values(node.children)[0]?.[0];
    if (!inner || isToken(inner)) throw new Error('clause without a body');
    const span = this.span(inner);
    switch (inner.name) {
      case 'whenClause':
        return { type: 'when', condition: this.or(this.nodes(inner, 'orExpr')[0]!), span };
      case 'toClause':
        return { type: 'to', targets: this.nodes(inner, 'target').map((t) => this.target(t)), span };
      case 'delayClause': {
        const c: A.DelayClause = { type: 'delay', duration: this.duration(this.token(inner, 'Duration')), span };
        const p = this.optionalToken(inner, 'percent');
        if (p) c.percent = this.number(p);
        return c;
      }
      case 'abortClause': {
        const c: A.AbortClause = { type: 'abort', status: this.number(this.token(inner, 'status')), span };
        const p = this.optionalToken(inner, 'percent');
        if (p) c.percent = this.number(p);
        return c;
      }
      case 'fromClause':
        return { type: 'from', sources: this.tokens(inner, 'StringLiteral').map((t) => this.string(t)), span };
      case 'keyClause': {
        if (this.optionalToken(inner, 'Kw_source')) return { type: 'key', key: { kind: 'source' }, span };
        if (this.optionalToken(inner, 'Kw_none')) return { type: 'key', key: { kind: 'none' }, span };
        return { type: 'key', key: { kind: 'header', name: this.string(this.token(inner, 'StringLiteral')) }, span };
      }
      case 'rateClause': {
        const c: A.RateClause = { type: 'rate', amount: this.number(this.token(inner, 'amount')), unit: this.name(this.token(inner, 'unit')), span };
        const b = this.optionalToken(inner, 'burst');
        if (b) c.burst = this.number(b);
        return c;
      }
      default:
        throw new Error(`unexpected clause node ${inner.name}`);
    }
  }

  private target(node: CstNode): A.RouteTarget {
    const v = this.token(node, 'version');
    const version = v.tokenType.name === 'Identifier' || v.tokenType.name.startsWith('Kw_') ? this.name(v) : { text: this.string(v).value, span: this.tokenSpan(v) };
    const t: A.RouteTarget = { version, span: this.span(node) };
    const w = this.optionalToken(node, 'weight');
    if (w) t.weight = this.number(w);
    return t;
  }

  private or(node: CstNode): A.Condition {
    return this.nodes(node, 'operands')
      .map((n) => this.and(n))
      .reduce((left, right) => ({ type: 'or', left, right, span: this.join(left.span, right.span) }));
  }

  private and(node: CstNode): A.Condition {
    return this.nodes(node, 'operands')
      .map((n) => this.unary(n))
      .reduce((left, right) => ({ type: 'and', left, right, span: this.join(left.span, right.span) }));
  }

  private unary(node: CstNode): A.Condition {
    const span = this.span(node);
    const negated = this.nodes(node, 'negated')[0];
    if (negated) return { type: 'not', operand: this.unary(negated), span };
    const inner = this.nodes(node, 'inner')[0];
    if (inner) return { ...this.or(inner), span };
    const atom = (['methodAtom', 'pathAtom', 'headerAtom', 'sourceAtom'] as const).map((k) => this.nodes(node, k)[0]).find((n) => n !== undefined);
    if (!atom) throw new Error('condition without an atom');
    const atomSpan = this.span(atom);
    switch (atom.name) {
      case 'methodAtom':
        return { type: 'method', methods: this.tokens(atom, 'methods').map((t) => this.name(t)), span: atomSpan };
      case 'pathAtom':
        return { type: 'path', op: this.optionalToken(atom, 'EqEq') ? 'eq' : 'prefix', value: this.string(this.token(atom, 'StringLiteral')), span: atomSpan };
      case 'headerAtom': {
        const name = this.string(this.token(atom, 'name'));
        if (this.optionalToken(atom, 'Kw_present')) return { type: 'header', name, op: 'present', span: atomSpan };
        if (this.optionalToken(atom, 'Kw_absent')) return { type: 'header', name, op: 'absent', span: atomSpan };
        const op = this.optionalToken(atom, 'EqEq') ? 'eq' : 'prefix';
        return { type: 'header', name, op, value: this.string(this.token(atom, 'value')), span: atomSpan };
      }
      default:
        return { type: 'source', op: this.optionalToken(atom, 'EqEq') ? 'eq' : 'matches', value: this.string(this.token(atom, 'StringLiteral')), span: atomSpan };
    }
  }

  private name(t: IToken): A.Name {
    return { text: t.image, span: this.tokenSpan(t) };
  }

  private number(t: IToken): A.NumberLit {
    return { text: t.image, value: Number(t.image), span: this.tokenSpan(t) };
  }

  private duration(t: IToken): A.DurationLit {
    const m = /^(\d+(?:\.\d+)?)([A-Za-z]+)$/.exec(t.image);
    return { text: t.image, amount: Number(m?.[1] ?? NaN), unit: m?.[2] ?? '', span: this.tokenSpan(t) };
  }

  private string(t: IToken): A.StringLit {
    const closed = t.tokenType !== UnterminatedString;
    const literal = closed ? t.image : `${t.image}"`;
    let value: string;
    try {
      value = JSON.parse(literal) as string;
    } catch {
      value = literal.slice(1, -1);
    }
    return { value, span: this.tokenSpan(t) };
  }

  private nodes(node: CstNode, key: string): CstNode[] {
    return (node.children[key] ?? []).filter((e): e is CstNode => !isToken(e));
  }

  private tokens(node: CstNode, key: string): IToken[] {
    return (node.children[key] ?? []).filter(isToken);
  }

  private optionalToken(node: CstNode, key: string): IToken | undefined {
    return this.tokens(node, key)[0];
  }

  private token(node: CstNode, key: string): IToken {
    const t = this.optionalToken(node, key);
    if (!t) throw new Error(`missing ${key} in ${node.name}`);
    return t;
  }

  private tokenSpan(t: IToken): SourceSpan {
    return tokenSpan(this.path, t);
  }

  /** A node's span: from its first token to its last (CstNode.location with full position tracking). */
  private span(node: CstNode): SourceSpan {
    const l = node.location;
    return {
      file: this.path,
      line: l?.startLine ?? 1,
      col: l?.startColumn ?? 1,
      endLine: l?.endLine ?? 1,
      endCol: (l?.endColumn ?? 0) + 1,
    };
  }

  private join(a: SourceSpan, b: SourceSpan): SourceSpan {
    return { file: a.file, line: a.line, col: a.col, endLine: b.endLine, endCol: b.endCol };
  }
}
