// Names: which constants and match blocks each file can see, and what a
// written value means once its names are resolved.
// In: the ASTs of every file in the build. Out: one Scope per file (its own
// definitions plus those of the files it imports; imports are not transitive)
// and resolveValue(), shared by the checker (with a reporter) and the lowering
// (without one: it runs only on error-free input).
import { posix } from 'node:path';
import type { SourceSpan } from '../../protocol/bundle.ts';
import type * as A from '../ast.ts';
import { didYouMean, type DiagnosticCode } from '../diagnostics.ts';

export type Report = (code: DiagnosticCode, span: SourceSpan, args: string[], hint?: string) => void;

export interface Scope {
  path: string;
  consts: Map<string, { decl: A.ConstDecl; scope: Scope }>;
  matches: Map<string, { decl: A.MatchDecl; scope: Scope }>;
}

/** A value with its names resolved: constants replaced, list constants spliced into lists. */
export type Resolved =
  | { kind: 'string'; value: string; span: SourceSpan }
  | { kind: 'number'; value: number; text: string; span: SourceSpan }
  | { kind: 'duration'; lit: A.DurationLit; span: SourceSpan }
  /** A bare word that names no constant (a method, an option word, a version), or a constant in a cycle. */
  | { kind: 'word'; text: string; span: SourceSpan; cyclic?: boolean }
  | { kind: 'list'; items: Resolved[]; span: SourceSpan };

function where(span: SourceSpan): string {
  return `${span.file}:${span.line}:${span.col}`;
}

/** Resolves `import "x"` against the importing file's directory. */
export function importTarget(fromPath: string, spec: string): string {
  return posix.normalize(posix.join(posix.dirname(fromPath.replace(/\\/g, '/')), spec));
}

export function buildScopes(files: A.PolicyFile[], report: Report = () => {}): Map<string, Scope> {
  const own = new Map<string, Scope>();
  for (const f of files) {
    const scope: Scope = { path: f.path, consts: new Map(), matches: new Map() };
    own.set(posix.normalize(f.path.replace(/\\/g, '/')), scope);
    for (const c of f.consts) {
      const earlier = scope.consts.get(c.name.text);
      if (earlier) report('MP2025', c.name.span, ['constant', c.name.text, where(earlier.decl.name.span)]);
      else scope.consts.set(c.name.text, { decl: c, scope });
    }
    for (const m of f.matches) {
      const earlier = scope.matches.get(m.name.text);
      if (earlier) report('MP2025', m.name.span, ['match block', m.name.text, where(earlier.decl.name.span)]);
      else scope.matches.set(m.name.text, { decl: m, scope });
    }
  }
  // A file sees its own definitions first, then its imports' own definitions.
  const visible = new Map<string, Scope>();
  for (const f of files) {
    const key = posix.normalize(f.path.replace(/\\/g, '/'));
    const mine = own.get(key)!;
    const scope: Scope = { path: f.path, consts: new Map(mine.consts), matches: new Map(mine.matches) };
    for (const imp of f.imports) {
      const target = own.get(importTarget(f.path, imp.path.value));
      if (!target) {
        const known = [...own.keys()].map((k) => posix.relative(posix.dirname(key), k));
        report('MP2026', imp.path.span, [JSON.stringify(imp.path.value)], didYouMean(imp.path.value, known));
        continue;
      }
      for (const [name, c] of target.consts) if (!scope.consts.has(name)) scope.consts.set(name, c);
      for (const [name, m] of target.matches) if (!scope.matches.has(name)) scope.matches.set(name, m);
    }
    visible.set(f.path, scope);
  }
  // Definitions inside a file resolve in that file's full scope (own + imports).
  for (const s of visible.values()) {
    for (const [name, c] of s.consts) if (c.scope.path === s.path) s.consts.set(name, { decl: c.decl, scope: s });
    for (const [name, m] of s.matches) if (m.scope.path === s.path) s.matches.set(name, { decl: m.decl, scope: s });
  }
  for (const s of visible.values()) {
    for (const [name, c] of s.consts) if (c.scope.path !== s.path) s.consts.set(name, { decl: c.decl, scope: visible.get(c.scope.path)! });
    for (const [name, m] of s.matches) if (m.scope.path !== s.path) s.matches.set(name, { decl: m.decl, scope: visible.get(m.scope.path)! });
  }
  return visible;
}

/**
 * Resolves a written value: a name that is a constant becomes the constant's
 * value (lists of lists are spliced flat); any other name stays a word.
 * Cycles (`const a = b`, `const b = a`) are reported once and resolve to a word.
 */
export function resolveValue(v: A.Value, scope: Scope, report: Report = () => {}, visiting: string[] = []): Resolved {
  switch (v.type) {
    case 'string':
      return { kind: 'string', value: v.value, span: v.span };
    case 'number':
      return { kind: 'number', value: v.value, text: v.text, span: v.span };
    case 'duration':
      return { kind: 'duration', lit: v.lit, span: v.span };
    case 'list': {
      const items: Resolved[] = [];
      for (const item of v.items) {
        const r = resolveValue(item, scope, report, visiting);
        if (r.kind === 'list') items.push(...r.items);
        else items.push(r);
      }
      return { kind: 'list', items, span: v.span };
    }
    case 'name': {
      const c = scope.consts.get(v.text);
      if (!c) return { kind: 'word', text: v.text, span: v.span };
      const key = `${c.scope.path}:${v.text}`;
      if (visiting.includes(key)) {
        // Report a cycle once: when resolution started at its member declared first.
        const members = visiting.slice(visiting.indexOf(key));
        const spans = members.map((k) => scope.consts.get(k.slice(k.lastIndexOf(':') + 1))?.decl.name.span ?? c.decl.name.span);
        const first = spans.reduce((a, b) => (b.file < a.file || (b.file === a.file && (b.line < a.line || (b.line === a.line && b.col < a.col))) ? b : a));
        if (visiting[0] === key && first === spans[0]) report('MP2029', c.decl.name.span, ['constants', [...members, key].map((k) => k.slice(k.lastIndexOf(':') + 1)).join(' → ')]);
        return { kind: 'word', text: v.text, span: v.span, cyclic: true };
      }
      const inner = resolveValue(c.decl.value, c.scope, report, [...visiting, key]);
      // Keep the use site's span for messages, the constant's value for meaning.
      return { ...inner, span: v.span } as Resolved;
    }
  }
}

export function describe(r: Resolved): string {
  switch (r.kind) {
    case 'string':
      return `the string ${JSON.stringify(r.value)}`;
    case 'number':
      return `the number ${r.text}`;
    case 'duration':
      return `the duration ${r.lit.text}`;
    case 'word':
      return `the name ${r.text}`;
    case 'list':
      return 'a list';
  }
}
