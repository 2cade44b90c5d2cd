// The one catalogue of compiler messages, and diagnostic construction/printing.
// In: a catalogue code, message arguments and a span. Out: Diagnostic objects
// and their `file:line:col: error CODE: message` text.
// Codes are stable: never reuse or renumber one; add new codes at the end of a range.
// MP1xxx: lexing and parsing. MP2xxx: checking (names, values, references).
import type { SourceSpan } from '../protocol/bundle.ts';

export type Severity = 'error' | 'warning';

export interface Diagnostic {
  code: string;
  severity: Severity;
  message: string;
  hint?: string;
  span: SourceSpan;
}

interface CatalogueEntry {
  severity: Severity;
  /** One-line summary for docs/language.md. */
  summary: string;
  message: (...args: string[]) => string;
}

export const CATALOGUE = {
  MP1001: { severity: 'error', summary: 'unexpected character', message: (text) => `unexpected character ${text}` },
  MP1002: { severity: 'error', summary: 'unterminated string', message: () => 'string is not closed before the end of the line' },
  MP1003: { severity: 'error', summary: 'syntax error', message: (expected, found) => `expected ${expected} but found ${found}` },
  MP2001: { severity: 'error', summary: 'service declared twice', message: (name, where) => `service ${name} is already declared at ${where}` },
  MP2002: { severity: 'error', summary: 'rule name used twice in one service and kind', message: (id, where) => `rule ${id} is already declared at ${where}` },
  MP2003: { severity: 'error', summary: 'unknown rule kind', message: (kind) => `unknown rule kind ${kind} (expected route, fault, allow, deny or rate_limit)` },
  MP2004: { severity: 'error', summary: 'clause not allowed in this rule kind', message: (clause, kind) => `${clause} is not allowed in a ${kind} rule` },
  MP2005: { severity: 'error', summary: 'required clause missing', message: (kind, what) => `a ${kind} rule needs ${what}` },
  MP2006: { severity: 'error', summary: 'clause given twice', message: (clause) => `${clause} is given more than once in this rule` },
  MP2007: { severity: 'error', summary: 'invalid route weight', message: (text) => `weight ${text} must be a whole number from 1 to 1000000` },
  MP2008: { severity: 'error', summary: 'percent out of range', message: (text) => `percent ${text} must be between 0 and 100` },
  MP2009: { severity: 'error', summary: 'invalid abort status', message: (text) => `status ${text} must be a whole number from 200 to 599` },
  MP2010: { severity: 'error', summary: 'invalid duration', message: (text, why) => `duration ${text} ${why}` },
  MP2011: { severity: 'error', summary: 'unknown rate unit', message: (unit) => `unknown rate unit /${unit} (expected /s, /m or /h)` },
  MP2012: { severity: 'error', summary: 'invalid rate or burst', message: (what, text) => `${what} ${text} must be a positive number` },
  MP2013: { severity: 'error', summary: 'service not in the topology', message: (name) => `service ${name} is not in the topology` },
  MP2014: { severity: 'error', summary: 'version not in the topology', message: (version, service) => `service ${service} has no version ${version} in the topology` },
  MP2015: { severity: 'error', summary: 'unknown HTTP method', message: (method) => `unknown HTTP method ${method}` },
  MP2016: { severity: 'error', summary: 'invalid SPIFFE ID or pattern', message: (text) => `${text} is not a SPIFFE ID (spiffe://<trust-domain>/<path>)` },
  MP2017: { severity: 'error', summary: 'path does not start with /', message: (text) => `path ${text} must start with "/"` },
  MP2018: { severity: 'error', summary: 'invalid header name', message: (text) => `${text} is not a valid header name` },
  MP2019: { severity: 'error', summary: 'split target without a weight', message: (version) => `target ${version} needs a weight when a route splits across several versions` },
  MP2020: { severity: 'error', summary: 'version listed twice in one route', message: (version) => `version ${version} is listed twice in this route` },
  MP2021: { severity: 'warning', summary: 'service without rules', message: (name) => `service ${name} has no rules` },
  MP2022: { severity: 'warning', summary: 'route can never match', message: (id, by) => `route ${id} can never match: route ${by} before it matches every request` },
  MP2023: { severity: 'warning', summary: 'matches pattern without a wildcard', message: (text) => `pattern ${text} has no "*": use source == for an exact ID` },
} satisfies Record<string, CatalogueEntry>;

export type DiagnosticCode = keyof typeof CATALOGUE;

export function makeDiagnostic(code: DiagnosticCode, span: SourceSpan, args: string[], hint?: string): Diagnostic {
  const entry: CatalogueEntry = CATALOGUE[code];
  const d: Diagnostic = { code, severity: entry.severity, message: entry.message(...args), span };
  if (hint !== undefined) d.hint = hint;
  return d;
}

export function formatDiagnostic(d: Diagnostic): string {
  const head = `${d.span.file}:${d.span.line}:${d.span.col}: ${d.severity} ${d.code}: ${d.message}`;
  return d.hint ? `${head}\n    hint: ${d.hint}` : head;
}

/** Sorts by file, position, then code, so output order never depends on checking order. */
export function sortDiagnostics(list: Diagnostic[]): Diagnostic[] {
  return [...list].sort(
    (a, b) =>
      (a.span.file < b.span.file ? -1 : a.span.file > b.span.file ? 1 : 0) ||
      a.span.line - b.span.line ||
      a.span.col - b.span.col ||
      (a.code < b.code ? -1 : a.code > b.code ? 1 : 0),
  );
}

export function hasErrors(list: Diagnostic[]): boolean {
  return list.some((d) => d.severity === 'error');
}

/** Levenshtein distance, for "did you mean" hints. */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur.push(Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + cost));
    }
    prev = cur;
  }
  return prev[b.length] ?? 0;
}

/** "did you mean `x`?" for the closest candidate within a third of the word's length, else undefined. */
export function didYouMean(word: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(1, Math.floor(word.length / 3)) + 1;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return best === undefined ? undefined : `did you mean ${best}?`;
}
