// Source text → AST for one file: runs the lexer and the parser, turns lexer
// and parser errors into diagnostics (MP1001–MP1003), and the CST into the AST.
// In: a SourceFile. Out: the PolicyFile AST (empty when the file has syntax
// errors: recovery keeps parsing to find more errors, but the recovered tree
// is not checked) and the syntax diagnostics.
import type { CstElement, CstNode, IToken, TokenType } from 'chevrotain';
import type { SourceSpan } from '../../protocol/bundle.ts';
import type * as A from '../ast.ts';
import { OP_TEXT } from '../check/language.ts';
import { didYouMean, makeDiagnostic, type Diagnostic } from '../diagnostics.ts';
import { parseWith, policyParser, type EntryRule, type ParseErrorPayload } from './parser.ts';
import * as T from './tokens.ts';

export interface ParsedFile {
  ast: A.PolicyFile;
  diagnostics: Diagnostic[];
}

const KEYWORD_WORDS = T.KEYWORDS.map((k) => k.LABEL ?? k.name);
const TOP_LEVEL = new Set<TokenType>(T.TOP_LEVEL_KEYWORDS);

export function emptyFile(path: string): A.PolicyFile {
  return { path, imports: [], consts: [], matches: [], meshes: [], services: [] };
}

export function parseSource(path: string, text: string): ParsedFile {
  const diagnostics: Diagnostic[] = [];
  const lexed = T.policyLexer.tokenize(text);
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
  const tokens = lexed.tokens;
  for (const t of tokens) {
    if (t.tokenType === T.UnterminatedString) diagnostics.push(makeDiagnostic('MP1002', tokenSpan(path, t), []));
  }
  const builder = new CstToAst(path);
  const ast = emptyFile(path);
  /** Parses `range` with `entry`; on a syntax error reports it and returns undefined. */
  const parse = (entry: EntryRule, range: IToken[]): CstNode | undefined => {
    const cst = parseWith(entry, range);
    const last = range[range.length - 1];
    const error = firstSyntaxError(path, range, last ? tokens.indexOf(last) + 1 : tokens.length, tokens);
    if (error) {
      diagnostics.push(error);
      return undefined;
    }
    return cst;
  };

  let i = 0;
  while (i < tokens.length) {
    const t = tokens[i]!;
    if (t.tokenType === T.Import || t.tokenType === T.Const) {
      const end = nextTopLevel(tokens, i + 1);
      const cst = parse(t.tokenType === T.Import ? 'importDecl' : 'constDecl', tokens.slice(i, end));
      if (cst && t.tokenType === T.Import) ast.imports.push(builder.importDecl(cst));
      if (cst && t.tokenType === T.Const) ast.consts.push(builder.constDecl(cst));
      i = end;
    } else if (t.tokenType === T.MatchKw) {
      const end = blockEnd(tokens, i);
      const cst = parse('matchDecl', tokens.slice(i, end.next));
      if (cst) ast.matches.push(builder.matchDecl(cst));
      i = end.next;
    } else if (t.tokenType === T.Service || t.tokenType === T.MeshKw) {
      const block = splitBlock(tokens, i);
      i = block.next;
      const header = parse('blockHeader', block.header);
      if (!header) continue;
      const rules: A.RuleDecl[] = [];
      for (const range of block.rules) {
        const cst = parse('rule', range);
        if (cst) rules.push(builder.rule(cst));
      }
      if (!block.closing) {
        diagnostics.push(makeDiagnostic('MP1003', afterToken(path, tokens[tokens.length - 1]!), ['} to close the block', 'the end of the file']));
      }
      const span = builder.blockSpan(header, block.closing);
      if (t.tokenType === T.Service) ast.services.push(builder.service(header, rules, span));
      else ast.meshes.push({ rules, span, keyword: tokenSpan(path, t) });
    } else {
      diagnostics.push(makeDiagnostic('MP1003', tokenSpan(path, t), ['one of service, mesh, import, const, match', `'${t.image}'`], didYouMean(t.image, ['service', 'mesh', 'import', 'const', 'match'])));
      i = nextTopLevel(tokens, i + 1);
    }
  }
  // A file with syntax errors yields no AST: its rules would be checked half-read.
  if (diagnostics.length > 0) return { ast: emptyFile(path), diagnostics };
  return { ast, diagnostics };
}

/** Index of the next top-level keyword at nesting depth 0 at or after `from`. */
function nextTopLevel(tokens: IToken[], from: number): number {
  let depth = 0;
  for (let i = from; i < tokens.length; i++) {
    const k = tokens[i]!.tokenType;
    if (depth === 0 && TOP_LEVEL.has(k)) return i;
    if (k === T.LCurly || k === T.LBracket || k === T.LParen) depth++;
    else if ((k === T.RCurly || k === T.RBracket || k === T.RParen) && depth > 0) depth--;
  }
  return tokens.length;
}

/** From a `match` keyword: the index after the "}" closing its first "{". */
function blockEnd(tokens: IToken[], from: number): { next: number } {
  let depth = 0;
  for (let i = from; i < tokens.length; i++) {
    const k = tokens[i]!.tokenType;
    if (k === T.LCurly) depth++;
    else if (k === T.RCurly && --depth === 0) return { next: i + 1 };
    else if (depth === 0 && i > from && TOP_LEVEL.has(k)) return { next: i };
  }
  return { next: tokens.length };
}

/** A `service NAME {` or `mesh {` header, the token ranges of its rules, and its closing brace. */
interface Block {
  header: IToken[];
  rules: IToken[][];
  closing?: IToken;
  next: number;
}

/**
 * Splits one block into its header and rule ranges (a rule range ends with the
 * "}" that closes its first "{"). Only braces are looked at, so a broken rule
 * cannot swallow its neighbours' structure.
 */
function splitBlock(tokens: IToken[], from: number): Block {
  let i = from;
  const header: IToken[] = [];
  while (i < tokens.length && tokens[i]!.tokenType !== T.LCurly && !(i > from && TOP_LEVEL.has(tokens[i]!.tokenType))) header.push(tokens[i++]!);
  const block: Block = { header, rules: [], next: i };
  if (i >= tokens.length || tokens[i]!.tokenType !== T.LCurly) return block;
  header.push(tokens[i++]!);
  let range: IToken[] = [];
  let depth = 0;
  while (i < tokens.length) {
    const t = tokens[i++]!;
    if (depth === 0 && t.tokenType === T.RCurly) {
      block.closing = t;
      break;
    }
    range.push(t);
    if (t.tokenType === T.LCurly) depth++;
    else if (t.tokenType === T.RCurly && --depth === 0) {
      block.rules.push(range);
      range = [];
    }
  }
  if (range.length > 0) block.rules.push(range);
  block.next = i;
  return block;
}

/** The parser's first error on `range` as a diagnostic; `nextIndex` is where the range ends in `all`. */
function firstSyntaxError(path: string, range: IToken[], nextIndex: number, all: IToken[]): Diagnostic | undefined {
  const e = policyParser().errors[0];
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

  importDecl(node: CstNode): A.ImportDecl {
    return { path: this.string(this.token(node, 'StringLiteral')), span: this.span(node) };
  }

  constDecl(node: CstNode): A.ConstDecl {
    return { name: this.name(this.token(node, 'name')), value: this.value(this.nodes(node, 'value')[0]!), span: this.span(node) };
  }

  matchDecl(node: CstNode): A.MatchDecl {
    return { name: this.name(this.token(node, 'name')), condition: this.or(this.nodes(node, 'orExpr')[0]!), span: this.span(node) };
  }

  blockSpan(header: CstNode, closing: IToken | undefined): SourceSpan {
    const start = this.span(header);
    const end = closing ? this.tokenSpan(closing) : start;
    return { ...start, endLine: end.endLine, endCol: end.endCol };
  }

  service(header: CstNode, rules: A.RuleDecl[], span: SourceSpan): A.ServiceDecl {
    const decl: A.ServiceDecl = { name: this.name(this.token(header, 'name')), rules, span };
    const dry = this.optionalToken(header, 'Kw_dry_run');
    if (dry) decl.dryRun = this.tokenSpan(dry);
    return decl;
  }

  rule(node: CstNode): A.RuleDecl {
    const rule: A.RuleDecl = {
      kind: this.name(this.token(node, 'kind')),
      clauses: this.nodes(node, 'clause').map((c) => this.clause(c)),
      span: this.span(node),
    };
    const name = this.optionalToken(node, 'name');
    if (name) rule.name = this.name(name);
    return rule;
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
        const c: Extract<A.Clause, { type: 'delay' }> = { type: 'delay', duration: this.duration(this.token(inner, 'Duration')), span };
        const p = this.optionalToken(inner, 'percent');
        if (p) c.percent = this.number(p);
        return c;
      }
      case 'abortClause': {
        const c: Extract<A.Clause, { type: 'abort' }> = { type: 'abort', status: this.number(this.token(inner, 'status')), grpc: !!this.optionalToken(inner, 'Kw_grpc'), span };
        const p = this.optionalToken(inner, 'percent');
        if (p) c.percent = this.number(p);
        return c;
      }
      case 'betweenClause':
        return { type: 'between', start: this.string(this.token(inner, 'start')), end: this.string(this.token(inner, 'end')), daily: !!this.optionalToken(inner, 'Kw_daily'), span };
      case 'fromClause':
        return { type: 'from', sources: this.nodes(inner, 'scalar').map((n) => this.scalar(n)), span };
      case 'keyClause': {
        const c: Extract<A.Clause, { type: 'key' }> = { type: 'key', word: this.name(this.token(inner, 'word')), span };
        const arg = this.optionalToken(inner, 'arg');
        if (arg) c.arg = this.string(arg);
        return c;
      }
      case 'rateClause': {
        const c: Extract<A.Clause, { type: 'rate' }> = { type: 'rate', amount: this.number(this.token(inner, 'amount')), unit: this.name(this.token(inner, 'unit')), span };
        const b = this.optionalToken(inner, 'burst');
        if (b) c.burst = this.number(b);
        return c;
      }
      case 'dryRunClause':
        return { type: 'dry_run', span };
      case 'timeoutClause':
        return { type: 'timeout', duration: this.duration(this.token(inner, 'Duration')), span };
      case 'headerClause': {
        const which = this.token(inner, 'which').image as 'request_header' | 'response_header';
        const op = this.token(inner, 'op').image as 'set' | 'add' | 'remove';
        const c: Extract<A.Clause, { type: 'request_header' | 'response_header' }> = { type: which, op, name: this.string(this.token(inner, 'name')), span };
        const value = this.optionalToken(inner, 'value');
        if (value) c.value = this.string(value);
        return c;
      }
      case 'settingsClause':
        return { type: this.token(inner, 'keyword').image as A.SettingsKeyword, items: this.nodes(inner, 'items').map((n) => this.value(n)), span };
      default:
        throw new Error(`unexpected clause node ${inner.name}`);
    }
  }

  private target(node: CstNode): A.RouteTarget {
    const v = this.token(node, 'version');
    const version = v.tokenType === T.StringLiteral || v.tokenType === T.UnterminatedString ? { text: this.string(v).value, span: this.tokenSpan(v) } : this.name(v);
    const t: A.RouteTarget = { version, span: this.span(node) };
    const w = this.optionalToken(node, 'weight');
    if (w) t.weight = this.number(w);
    return t;
  }

  private value(node: CstNode): A.Value {
    const scalar = this.nodes(node, 'scalar')[0];
    if (scalar) return this.scalar(scalar);
    return { type: 'list', items: this.nodes(node, 'items').map((n) => this.scalar(n)), span: this.span(node) };
  }

  private scalar(node: CstNode): A.Value {
    const t = Object.values(node.children)[0]![0] as IToken;
    const span = this.tokenSpan(t);
    switch (t.tokenType) {
      case T.StringLiteral:
      case T.UnterminatedString:
        return { type: 'string', value: this.string(t).value, span };
      case T.NumberLiteral:
        return { type: 'number', value: Number(t.image), text: t.image, span };
      case T.Duration:
        return { type: 'duration', lit: this.duration(t), span };
      default:
        return { type: 'name', text: t.image, span };
    }
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
    const ref = this.optionalToken(node, 'ref');
    if (ref) return { type: 'ref', name: this.name(ref), span };
    const bool = this.optionalToken(node, 'bool');
    if (bool) return { type: 'bool', value: bool.tokenType === T.True, span };
    const subjectNode = this.nodes(node, 'subject')[0]!;
    const testNode = this.nodes(node, 'test')[0]!;
    const opToken = this.token(testNode, 'op');
    const c: Extract<A.Condition, { type: 'compare' }> = {
      type: 'compare',
      subject: this.subject(subjectNode),
      op: OPS[opToken.image]!,
      opSpan: this.tokenSpan(opToken),
      span,
    };
    const operand = this.nodes(testNode, 'operand')[0];
    if (operand) c.operand = this.scalar(operand);
    const items = this.nodes(testNode, 'items');
    if (items.length > 0) {
      const first = this.optionalToken(testNode, 'LBracket')!;
      const last = this.optionalToken(testNode, 'RBracket')!;
      c.operand = { type: 'list', items: items.map((n) => this.scalar(n)), span: this.join(this.tokenSpan(first), this.tokenSpan(last)) };
    }
    const listRef = this.optionalToken(testNode, 'ref');
    if (listRef) c.operand = { type: 'name', text: listRef.image, span: this.tokenSpan(listRef) };
    return c;
  }

  private subject(node: CstNode): A.Subject {
    const field = this.token(node, 'field').image;
    const part = this.optionalToken(node, 'part')?.image;
    const span = this.span(node);
    const name = this.optionalToken(node, 'name');
    let f: A.Field;
    if (field === 'grpc') f = part === 'service' ? 'grpc-service' : 'grpc-method';
    else if (field === 'source') f = part === 'namespace' ? 'source-namespace' : part === 'account' ? 'source-account' : part === 'ip' ? 'source-ip' : 'source';
    else f = field as A.Field;
    const s: A.Subject = { field: f, span };
    if (name) s.name = this.string(name);
    return s;
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
    const closed = t.tokenType !== T.UnterminatedString;
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

/** Operator spelling → operator: the inverse of the one table in check/language.ts. */
const OPS = Object.fromEntries(Object.entries(OP_TEXT).map(([op, text]) => [text, op])) as Record<string, A.CompareOp>;
