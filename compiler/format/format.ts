// `meshc fmt`: canonical layout of a .meshpolicy file, comments kept.
// In: source text (which must parse). Out: formatted text; formatting it
// again changes nothing. Works on the token stream (comments included), with
// the block structure the grammar fixes: top-level items at column 0, rules
// indented 2, clauses indented 4, one clause per line; single spaces between
// tokens (none inside brackets or parentheses, before commas, around the `/`
// of a rate). Kept from the input, because they carry meaning for readers:
// comments (own-line or trailing), single blank lines between items, rules
// and clauses, rules written on one line (clauses joined by two spaces), and
// line breaks before `and` / `or` inside a long condition.
import type { IToken } from 'chevrotain';
import { parseSource } from '../syntax/to-ast.ts';
import * as T from '../syntax/tokens.ts';

interface Piece {
  token: IToken;
  comment: boolean;
}

const NO_SPACE_AFTER = new Set(['(', '[']);
const NO_SPACE_BEFORE = new Set([')', ']', ',']);
const CLAUSE = new Set(T.CLAUSE_KEYWORDS.map((k) => k.name));
const TOP = new Set(T.TOP_LEVEL_KEYWORDS.map((k) => k.name));

export class FormatError extends Error {
  readonly code = 'MESHC_FMT_SYNTAX';
}

/** Indices of tokens, by brace nesting: for each "{" the index of its "}" (or -1). */
function matchBraces(tokens: IToken[]): Map<number, number> {
  const out = new Map<number, number>();
  const stack: number[] = [];
  tokens.forEach((t, i) => {
    if (t.tokenType === T.LCurly) stack.push(i);
    else if (t.tokenType === T.RCurly && stack.length > 0) out.set(stack.pop()!, i);
  });
  for (const open of stack) out.set(open, -1);
  return out;
}

export function formatSource(text: string): string {
  if (parseSource('<input>', text).diagnostics.length > 0) throw new FormatError('the file has syntax errors; run meshc check');
  const lexed = T.policyLexer.tokenize(text);
  const tokens = lexed.tokens;
  const comments = lexed.groups['comments'] ?? [];
  const pieces: Piece[] = [...tokens.map((token) => ({ token, comment: false })), ...comments.map((token) => ({ token, comment: true }))].sort(
    (a, b) => a.token.startOffset - b.token.startOffset,
  );
  const closeOf = matchBraces(tokens);
  // Rules (and match bodies) kept on one line: their tokens share one input line and hold no comment.
  const oneLine = new Set<number>();
  for (const [open, close] of closeOf) {
    if (close < 0) continue;
    const first = tokens[open]!.startLine;
    const last = tokens[close]!.endLine;
    const hasComment = comments.some((c) => c.startOffset > tokens[open]!.startOffset && c.startOffset < tokens[close]!.startOffset);
    if (first === last && !hasComment) oneLine.add(open);
  }

  const lines: string[] = [];
  let line = '';
  let indent = 0;
  /** Contexts of the open braces: block (service/mesh), rule, match. */
  const stack: { kind: 'block' | 'rule' | 'match'; open: number; oneLine: boolean }[] = [];
  let itemKind: 'block' | 'match' | undefined;
  let prev: IToken | undefined;
  let prevPiece: Piece | undefined;
  let tokenIndex = 0;

  const flush = (): void => {
    if (line.trim().length > 0) lines.push(line.trimEnd());
    line = '';
  };
  const newLine = (depth: number, source: IToken): void => {
    flush();
    // Keep one blank line where the input had at least one (never right after an opening brace).
    const gap = prevPiece ? source.startLine! - (prevPiece.token.endLine ?? prevPiece.token.startLine!) : 0;
    const last = lines[lines.length - 1];
    if (gap > 1 && last !== undefined && last !== '' && !last.endsWith('{')) lines.push('');
    line = '  '.repeat(depth);
    indent = depth;
  };
  const append = (textPiece: string, spaced: boolean): void => {
    if (line.trim().length === 0) line += textPiece;
    else line += (spaced ? ' ' : '') + textPiece;
  };

  pieces.forEach((piece) => {
    const t = piece.token;
    if (piece.comment) {
      if (prevPiece && (prevPiece.token.endLine ?? prevPiece.token.startLine) === t.startLine && line.trim().length > 0) {
        line += `  ${t.image.trimEnd()}`;
        flush();
        line = '  '.repeat(indent);
      } else if (prevPiece && (prevPiece.token.endLine ?? prevPiece.token.startLine) === t.startLine && lines.length > 0) {
        lines[lines.length - 1] += `  ${t.image.trimEnd()}`;
      } else {
        newLine(stack.length, t);
        line += t.image.trimEnd();
        flush();
        line = '  '.repeat(indent);
      }
      prevPiece = piece;
      return;
    }
    const index = tokenIndex++;
    const top = stack[stack.length - 1];
    const inOneLine = stack.some((s) => s.oneLine);
    let spaced = true;
    if (t.tokenType === T.LCurly) {
      const kind: 'block' | 'rule' | 'match' = stack.length === 0 ? (itemKind ?? 'block') : 'rule';
      append('{', true);
      const isOneLine = oneLine.has(index) && kind !== 'block';
      stack.push({ kind, open: index, oneLine: isOneLine });
      if (!isOneLine && closeOf.get(index) !== index + 1) {
        flush();
        line = '  '.repeat(stack.length);
        indent = stack.length;
      }
    } else if (t.tokenType === T.RCurly) {
      const ctx = stack.pop();
      if (ctx && (ctx.oneLine || closeOf.get(ctx.open) === ctx.open + 1)) append('}', true);
      else {
        newLine(stack.length === 0 ? 0 : stack.length, t);
        append('}', false);
      }
      if (stack.length === 0) itemKind = undefined;
    } else {
      if (stack.length === 0 && TOP.has(t.tokenType.name)) {
        itemKind = t.tokenType === T.MatchKw ? 'match' : 'block';
        newLine(0, t);
      } else if (top?.kind === 'block' && prev && (prev.tokenType === T.LCurly || prev.tokenType === T.RCurly) && !inOneLine) {
        newLine(1, t);
      } else if (top?.kind === 'rule' && CLAUSE.has(t.tokenType.name)) {
        if (top.oneLine) {
          if (prev?.tokenType !== T.LCurly) line += ' ';
        } else newLine(stack.length, t);
      } else if ((t.tokenType === T.And || t.tokenType === T.Or) && prev && t.startLine! > (prev.endLine ?? prev.startLine!) && !inOneLine) {
        newLine(indent + 1, t);
      }
      if (prev && (NO_SPACE_AFTER.has(prev.image) || NO_SPACE_BEFORE.has(t.image))) spaced = false;
      if (t.tokenType === T.Slash || prev?.tokenType === T.Slash) spaced = false;
      append(t.image, spaced);
    }
    prev = t;
    prevPiece = piece;
  });
  flush();
  while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  return lines.length === 0 ? '' : lines.join('\n') + '\n';
}
