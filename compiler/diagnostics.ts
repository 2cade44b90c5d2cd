// The one catalogue of compiler messages, and diagnostic construction/printing.
// In: a catalogue code, message arguments and a span. Out: Diagnostic objects
// and their `file:line:col: error CODE: message` text.
// Codes are stable: never reuse or renumber one; add new codes at the end of a range.
// MP1xxx: lexing and parsing. MP2xxx: checking (names, types, values,
// references). MP3xxx: analysis warnings (what the policy means, not how it is written).
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
  MP2003: { severity: 'error', summary: 'unknown rule kind', message: (kind) => `unknown rule kind ${kind} (expected route, fault, allow, deny, audit, rate_limit or traffic)` },
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
  MP2022: { severity: 'warning', summary: 'route can never match (shadowed)', message: (id, by) => `route ${id} can never match: every request it matches is taken by route ${by}, which comes first` },
  MP2023: { severity: 'warning', summary: 'matches pattern without a wildcard', message: (text) => `pattern ${text} has no "*": use == for an exact value` },
  MP2024: { severity: 'error', summary: 'unknown name', message: (what, name) => `unknown ${what} ${name}` },
  MP2025: { severity: 'error', summary: 'name defined twice', message: (what, name, where) => `${what} ${name} is already defined at ${where}` },
  MP2026: { severity: 'error', summary: 'import not found', message: (path) => `cannot import ${path}: no such policy file in the build` },
  MP2027: { severity: 'error', summary: 'operator does not apply to this field', message: (op, field) => `${op} does not apply to ${field}` },
  MP2028: { severity: 'error', summary: 'wrong type of value', message: (expected, found) => `expected ${expected}, found ${found}` },
  MP2029: { severity: 'error', summary: 'definition refers to itself', message: (what, chain) => `${what} refer to each other in a cycle: ${chain}` },
  MP2030: { severity: 'error', summary: 'unsupported regular expression feature', message: (why) => `unsupported in a regex: ${why}` },
  MP2031: { severity: 'error', summary: 'invalid regular expression', message: (why) => `invalid regex: ${why}` },
  MP2032: { severity: 'error', summary: 'regular expression too large', message: (why) => `regex too large: ${why}` },
  MP2033: { severity: 'error', summary: 'invalid IP address or CIDR block', message: (text) => `${text} is not an IP address or CIDR block (e.g. "10.0.0.0/8", "fd00::/8")` },
  MP2034: { severity: 'error', summary: 'invalid port', message: (text) => `port ${text} must be a whole number from 1 to 65535` },
  MP2035: { severity: 'error', summary: 'rule without a name', message: (kind) => `${kind} rules need a name: ${kind} <name> { ... }` },
  MP2036: { severity: 'error', summary: 'clauses that exclude each other', message: (a, b) => `${a} and ${b} cannot be used in the same rule` },
  MP2037: { severity: 'error', summary: 'unknown option', message: (word, clause, known) => `unknown option ${word} for ${clause} (expected ${known})` },
  MP2038: { severity: 'error', summary: 'invalid option value', message: (option, why) => `${option} ${why}` },
  MP2039: { severity: 'error', summary: 'invalid gRPC status', message: (text) => `gRPC status ${text} must be a whole number from 0 to 16` },
  MP2040: { severity: 'error', summary: 'invalid time window', message: (why) => `invalid time window: ${why}` },
  MP2041: { severity: 'error', summary: 'unknown rate-limit key', message: (word) => `unknown rate-limit key ${word} (expected none, source, path, remote_address or header "<name>")` },
  MP2042: { severity: 'error', summary: 'prefix replacement without a path prefix match', message: (clause) => `${clause} prefix needs the route to match a path prefix (when path prefix "..." [and ...])` },
  MP2043: { severity: 'error', summary: 'rule kind not allowed in the mesh block', message: (kind) => `${kind} rules belong in a service block: versions differ per service` },
  MP2044: { severity: 'error', summary: 'mesh block declared twice', message: (where) => `the mesh block is already declared at ${where}` },
  MP2045: { severity: 'error', summary: 'invalid response status', message: (text, allowed) => `status ${text} must be ${allowed}` },
  MP2046: { severity: 'error', summary: 'port not in the topology', message: (port, service) => `service ${service} has no port ${port} in the topology` },
  MP3001: { severity: 'warning', summary: 'allow rule made dead by a deny', message: (allow, deny) => `allow ${allow} can never allow anything: every request it matches is denied by ${deny}` },
  MP3002: { severity: 'warning', summary: 'route weights do not add up to 100', message: (sum, shares) => `weights add up to ${sum}, not 100; they are used as relative shares (${shares})` },
  MP3003: { severity: 'warning', summary: 'rate limits overlap', message: (a, b) => `rate limits ${a} and ${b} overlap: a request matching both takes a token from each, and the tighter one decides` },
  MP3004: { severity: 'warning', summary: 'condition is always true', message: (what) => `${what} is always true` },
  MP3005: { severity: 'warning', summary: 'condition is always false', message: (what) => `${what} is always false: the rule never applies` },
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
