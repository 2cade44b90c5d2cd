// Checks parsed files: names and scopes, rule kinds and clause sets, the
// types and values in conditions and settings, and, given a topology,
// references to services, versions and ports.
// In: the ASTs of every file in the build (+ optional topology).
// Out: diagnostics (MP2xxx). The AST is valid for lower.ts when none is an error.
// What the rules mean together (shadowing, dead rules) is analysis.ts's job.
import type { SourceSpan } from '../../protocol/bundle.ts';
import type * as A from '../ast.ts';
import { didYouMean, makeDiagnostic, type Diagnostic, type DiagnosticCode } from '../diagnostics.ts';
import { compileRegex, RegexError } from '../regex/automaton.ts';
import { parseCidr } from '../ip.ts';
import {
  ALLOWED_CLAUSES,
  DURATION_UNITS_MS,
  FIELD_OPS,
  FIELD_TEXT,
  HTTP_METHODS,
  MESH_RULE_KINDS,
  OP_TEXT,
  RATE_UNITS_SECONDS,
  REDIRECT_STATUSES,
  REPEATABLE_CLAUSES,
  RETRY_ON,
  RULE_KINDS,
  type RuleKind,
} from './language.ts';
import { readOptions } from './options.ts';
import { buildScopes, describe, resolveValue, type Report, type Resolved, type Scope } from './scope.ts';
import { parseWindow } from './window.ts';

export interface Topology {
  services: Record<string, { versions: string[]; ports?: number[] }>;
}

const MAX_WEIGHT = 1_000_000;
const MAX_DELAY_MS = 3_600_000;
const MAX_TIMEOUT_MS = 24 * 3_600_000;
const MAX_RETRY_ATTEMPTS = 10;
const HEADER_NAME = /^:?[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;
const SPIFFE_ID = /^spiffe:\/\/[^/*]+\/\S+$/;

function where(span: SourceSpan): string {
  return `${span.file}:${span.line}:${span.col}`;
}

export function checkFiles(files: A.PolicyFile[], topology?: Topology): Diagnostic[] {
  const out: Diagnostic[] = [];
  const report: Report = (code: DiagnosticCode, span: SourceSpan, args: string[], hint?: string): void => {
    out.push(makeDiagnostic(code, span, args, hint));
  };
  const scopes = buildScopes(files, report);
  const seenServices = new Map<string, A.ServiceDecl>();
  let mesh: A.MeshDecl | undefined;
  for (const file of files) {
    const scope = scopes.get(file.path)!;
    for (const c of file.consts) resolveValue(c.value, scope, report);
    for (const m of file.matches) {
      checkMatchCycles(m, scope, report);
      new ConditionChecker(scope, report, undefined).check(m.condition);
    }
    for (const block of file.meshes) {
      if (mesh) {
        report('MP2044', block.keyword, [where(mesh.keyword)], 'merge the two mesh blocks: there is one mesh-wide policy');
        continue;
      }
      mesh = block;
      checkRules('mesh', block.rules, scope, undefined, report, true);
    }
    for (const service of file.services) {
      const first = seenServices.get(service.name.text);
      if (first) {
        report('MP2001', service.name.span, [service.name.text, where(first.name.span)], 'merge the two blocks: one service block per service across the build');
        continue;
      }
      seenServices.set(service.name.text, service);
      let known: Topology['services'][string] | undefined;
      if (topology) {
        known = topology.services[service.name.text];
        if (!known) report('MP2013', service.name.span, [service.name.text], didYouMean(service.name.text, Object.keys(topology.services)));
      }
      if (service.rules.length === 0) report('MP2021', service.name.span, [service.name.text]);
      checkRules(service.name.text, service.rules, scope, known, report, false);
    }
  }
  return out;
}

/** Reports match blocks that reach themselves through `match` references. */
function checkMatchCycles(start: A.MatchDecl, scope: Scope, report: Report): void {
  const refs = (c: A.Condition, into: A.Name[]): A.Name[] => {
    if (c.type === 'ref') into.push(c.name);
    else if (c.type === 'and' || c.type === 'or') [c.left, c.right].forEach((x) => refs(x, into));
    else if (c.type === 'not') refs(c.operand, into);
    return into;
  };
  const before = (a: SourceSpan, b: SourceSpan): boolean => a.file < b.file || (a.file === b.file && (a.line < b.line || (a.line === b.line && a.col < b.col)));
  // Depth-first over references, bounded by the number of match blocks. A
  // cycle is reported once, at its member declared first.
  const walk = (decl: A.MatchDecl, s: Scope, path: A.MatchDecl[]): boolean => {
    for (const r of refs(decl.condition, [])) {
      const target = s.matches.get(r.text);
      if (!target) continue;
      if (target.decl === start) {
        if (path.every((m) => m === start || before(start.name.span, m.name.span))) {
          report('MP2029', start.name.span, ['match blocks', [...path, start].map((m) => m.name.text).join(' → ')]);
        }
        return true;
      }
      if (path.includes(target.decl)) continue;
      if (walk(target.decl, target.scope, [...path, target.decl])) return true;
    }
    return false;
  };
  walk(start, scope, [start]);
}

function checkRules(owner: string, rules: A.RuleDecl[], scope: Scope, known: Topology['services'][string] | undefined, report: Report, inMesh: boolean): void {
  const seenRules = new Map<string, A.RuleDecl>();
  for (const rule of rules) {
    const kind = rule.kind.text;
    if (!(RULE_KINDS as readonly string[]).includes(kind)) {
      report('MP2003', rule.kind.span, [kind], didYouMean(kind, RULE_KINDS));
      continue;
    }
    const ruleKind = kind as RuleKind;
    if (inMesh && !MESH_RULE_KINDS.includes(ruleKind)) {
      report('MP2043', rule.kind.span, [kind]);
      continue;
    }
    if (!rule.name && ruleKind !== 'traffic') report('MP2035', rule.kind.span, [kind]);
    const id = ruleKind === 'traffic' ? `${owner}/traffic` : `${owner}/${kind}/${rule.name?.text ?? ''}`;
    const earlier = seenRules.get(id);
    const at = rule.name?.span ?? rule.kind.span;
    if (earlier) report('MP2002', at, [id, where(earlier.name?.span ?? earlier.kind.span)]);
    else seenRules.set(id, rule);
    new RuleChecker(rule, ruleKind, scope, known, owner, report).check();
  }
}

/** The checks of one rule: its clause set, each clause's values, and clause combinations. */
class RuleChecker {
  private readonly seen = new Map<A.ClauseType, A.Clause>();
  private readonly rule: A.RuleDecl;
  private readonly kind: RuleKind;
  private readonly scope: Scope;
  private readonly known: Topology['services'][string] | undefined;
  private readonly service: string;
  private readonly report: Report;

  constructor(rule: A.RuleDecl, kind: RuleKind, scope: Scope, known: Topology['services'][string] | undefined, service: string, report: Report) {
    this.rule = rule;
    this.kind = kind;
    this.scope = scope;
    this.known = known;
    this.service = service;
    this.report = report;
  }

  check(): void {
    const allowed = ALLOWED_CLAUSES[this.kind];
    for (const clause of this.rule.clauses) {
      if (!allowed.includes(clause.type)) {
        this.report('MP2004', clause.span, [clause.type, this.kind], `a ${this.kind} rule takes: ${allowed.join(', ')}`);
        continue;
      }
      if (this.seen.has(clause.type) && !REPEATABLE_CLAUSES.includes(clause.type)) {
        this.report('MP2006', clause.span, [clause.type], clause.type === 'when' ? 'combine the conditions with and/or' : undefined);
        continue;
      }
      this.seen.set(clause.type, clause);
      this.clause(clause);
    }
    this.combinations();
  }

  private has(type: A.ClauseType): boolean {
    return this.seen.has(type);
  }

  private combinations(): void {
    const name = this.rule.name?.span ?? this.rule.kind.span;
    switch (this.kind) {
      case 'route': {
        const actions = (['to', 'redirect', 'respond'] as const).filter((t) => this.has(t));
        if (actions.length === 0) this.report('MP2005', name, ['route', 'a to, redirect or respond clause']);
        if (actions.length > 1) this.report('MP2036', this.seen.get(actions[1]!)!.span, [actions[0]!, actions[1]!]);
        if (!this.has('to')) {
          for (const t of ['rewrite', 'mirror', 'timeout', 'retry'] as const) {
            const c = this.seen.get(t);
            if (c && actions.length > 0) this.report('MP2036', c.span, [t, actions[0]!], `${t} applies to requests sent on to a version (to ...)`);
          }
        }
        return;
      }
      case 'fault':
        if (!this.has('delay') && !this.has('abort')) this.report('MP2005', name, ['fault', 'a delay or an abort clause']);
        return;
      case 'rate_limit':
        if (!this.has('rate')) this.report('MP2005', name, ['rate_limit', 'a rate clause (rate <n>/<s|m|h> [burst <n>])']);
        return;
      default:
        return;
    }
  }

  private clause(clause: A.Clause): void {
    const report = this.report;
    switch (clause.type) {
      case 'when':
        new ConditionChecker(this.scope, report, this.known && { ...this.known, service: this.service }).check(clause.condition);
        return;
      case 'to': {
        const seen = new Set<string>();
        for (const t of clause.targets) {
          if (seen.has(t.version.text)) report('MP2020', t.version.span, [t.version.text]);
          seen.add(t.version.text);
          this.checkVersion(t.version.text, t.version.span);
          if (t.weight) {
            if (!Number.isInteger(t.weight.value) || t.weight.value < 1 || t.weight.value > MAX_WEIGHT) report('MP2007', t.weight.span, [t.weight.text]);
          } else if (clause.targets.length > 1) {
            report('MP2019', t.version.span, [t.version.text]);
          }
        }
        return;
      }
      case 'delay':
        this.duration(clause.duration, MAX_DELAY_MS, '1h');
        if (clause.percent) this.percent(clause.percent.value, clause.percent.text, clause.percent.span);
        return;
      case 'abort':
        if (clause.grpc) {
          if (!Number.isInteger(clause.status.value) || clause.status.value < 0 || clause.status.value > 16) report('MP2039', clause.status.span, [clause.status.text]);
        } else if (!Number.isInteger(clause.status.value) || clause.status.value < 200 || clause.status.value > 599) {
          report('MP2009', clause.status.span, [clause.status.text]);
        }
        if (clause.percent) this.percent(clause.percent.value, clause.percent.text, clause.percent.span);
        return;
      case 'between': {
        const w = parseWindow(clause.start.value, clause.end.value, clause.daily);
        if ('error' in w) report('MP2040', clause.span, [w.error], clause.daily ? 'daily windows are "HH:MM" in UTC' : 'windows are ISO 8601 instants, e.g. "2026-12-01T10:00Z"');
        return;
      }
      case 'from':
        for (const v of clause.sources) {
          const r = resolveValue(v, this.scope, report);
          for (const item of r.kind === 'list' ? r.items : [r]) {
            if (item.kind !== 'string') report('MP2028', item.span, ['a SPIFFE ID string', describe(item)], item.kind === 'word' ? didYouMean(item.text, this.scope.consts.keys()) : undefined);
            else checkSpiffe(item.value, item.span, report);
          }
        }
        return;
      case 'key': {
        const word = clause.word.text;
        if (word === 'header') {
          if (!clause.arg) report('MP2038', clause.word.span, ['key header', 'needs the header name: key header "x-api-key"']);
          else checkHeaderName(clause.arg, report);
        } else if (!['none', 'source', 'path', 'remote_address'].includes(word)) {
          report('MP2041', clause.word.span, [word], didYouMean(word, ['none', 'source', 'path', 'remote_address', 'header']));
        } else if (clause.arg) report('MP2038', clause.arg.span, [`key ${word}`, 'takes no value']);
        return;
      }
      case 'rate':
        if (RATE_UNITS_SECONDS[clause.unit.text] === undefined) {
          report('MP2011', clause.unit.span, [clause.unit.text], didYouMean(clause.unit.text, Object.keys(RATE_UNITS_SECONDS)));
        }
        if (!(clause.amount.value > 0)) report('MP2012', clause.amount.span, ['rate', clause.amount.text]);
        if (clause.burst && (!Number.isInteger(clause.burst.value) || clause.burst.value < 1)) report('MP2012', clause.burst.span, ['burst', clause.burst.text]);
        return;
      case 'dry_run':
        return;
      case 'timeout':
        this.duration(clause.duration, MAX_TIMEOUT_MS, '24h');
        return;
      case 'request_header':
      case 'response_header':
        checkHeaderName(clause.name, report);
        if (clause.name.value.startsWith(':')) report('MP2038', clause.name.span, [clause.type, 'cannot change pseudo-headers; use rewrite for the path or host']);
        return;
      case 'retry':
        this.retry(clause);
        return;
      case 'retry_budget': {
        const o = readOptions(clause, this.scope, report);
        if (o.values.size === 0) report('MP2038', clause.span, ['retry_budget', 'needs percent <n> and/or min_per_second <n>']);
        const p = o.values.get('percent');
        if (p && p !== true && p.kind === 'number') this.percent(p.value, p.text, p.span);
        const m = o.values.get('min_per_second');
        if (m && m !== true && m.kind === 'number' && !(m.value >= 0)) report('MP2038', m.span, ['min_per_second', 'must be 0 or more']);
        return;
      }
      case 'load_balancer': {
        const o = readOptions(clause, this.scope, report);
        const algos = ['round_robin', 'least_request', 'peak_ewma', 'consistent_hash'].filter((a) => o.values.has(a));
        if (algos.length !== 1) {
          report('MP2038', clause.span, ['load_balancer', algos.length === 0 ? 'needs one of round_robin, least_request, peak_ewma, consistent_hash' : `takes one algorithm, found ${algos.join(' and ')}`]);
          return;
        }
        const hashOn = ['header', 'cookie', 'source'].filter((a) => o.values.has(a));
        if (algos[0] === 'consistent_hash' && hashOn.length !== 1) report('MP2038', clause.span, ['consistent_hash', 'needs exactly one of header "<name>", cookie "<name>", source']);
        if (algos[0] !== 'consistent_hash' && hashOn.length > 0) report('MP2038', clause.span, [hashOn[0]!, 'applies to consistent_hash only']);
        if (algos[0] !== 'peak_ewma' && o.values.has('decay')) report('MP2038', clause.span, ['decay', 'applies to peak_ewma only']);
        const h = o.values.get('header');
        if (h && h !== true && h.kind === 'string') checkHeaderName({ value: h.value, span: h.span }, report);
        this.positiveDuration(o.values.get('decay'));
        return;
      }
      case 'connection_limits': {
        const o = readOptions(clause, this.scope, report);
        if (o.values.size === 0) report('MP2038', clause.span, ['connection_limits', 'needs max_connections, max_pending and/or max_requests']);
        for (const v of o.values.values()) if (v !== true && v.kind === 'number') this.positiveInteger(v, 'limit');
        return;
      }
      case 'outlier_detection': {
        const o = readOptions(clause, this.scope, report);
        for (const k of ['consecutive_5xx', 'consecutive_gateway_errors']) {
          const v = o.values.get(k);
          if (v && v !== true && v.kind === 'number') this.positiveInteger(v, k);
        }
        const p = o.values.get('max_ejection_percent');
        if (p && p !== true && p.kind === 'number') this.percent(p.value, p.text, p.span);
        this.positiveDuration(o.values.get('interval'));
        this.positiveDuration(o.values.get('base_ejection'));
        return;
      }
      case 'rewrite': {
        const o = readOptions(clause, this.scope, report);
        if (o.values.size === 0) report('MP2038', clause.span, ['rewrite', 'needs path "<path>", prefix "<prefix>" and/or host "<host>"']);
        this.pathOrPrefix(o.values, 'rewrite');
        return;
      }
      case 'redirect': {
        const o = readOptions(clause, this.scope, report);
        if (o.values.size === 0) report('MP2038', clause.span, ['redirect', 'needs at least one of scheme, host, port, path, prefix, status']);
        this.pathOrPrefix(o.values, 'redirect');
        const status = o.values.get('status');
        if (status && status !== true && status.kind === 'number' && !REDIRECT_STATUSES.includes(status.value)) {
          report('MP2045', status.span, [status.text, REDIRECT_STATUSES.join(', ')]);
        }
        const port = o.values.get('port');
        if (port && port !== true && port.kind === 'number' && !validPort(port.value)) report('MP2034', port.span, [port.text]);
        const scheme = o.values.get('scheme');
        if (scheme && scheme !== true && scheme.kind === 'string' && !['http', 'https'].includes(scheme.value)) {
          report('MP2038', scheme.span, ['scheme', 'must be "http" or "https"']);
        }
        return;
      }
      case 'respond': {
        const o = readOptions(clause, this.scope, report, 'number');
        const s = o.leading;
        if (!s || s.kind !== 'number') report('MP2038', clause.span, ['respond', 'needs a status first: respond 200 [body "..."]']);
        else if (!Number.isInteger(s.value) || s.value < 200 || s.value > 599) report('MP2045', s.span, [s.text, 'a whole number from 200 to 599']);
        return;
      }
      case 'mirror': {
        const o = readOptions(clause, this.scope, report, 'word');
        const v = o.leading;
        if (!v || v.kind !== 'word') report('MP2038', clause.span, ['mirror', 'needs a version first: mirror v2 [percent 10]']);
        else this.checkVersion(v.text, v.span);
        const p = o.values.get('percent');
        if (p && p !== true && p.kind === 'number') this.percent(p.value, p.text, p.span);
        return;
      }
    }
  }

  private retry(clause: { type: string; items: A.Value[]; span: SourceSpan }): void {
    const report = this.report;
    const o = readOptions(clause, this.scope, report);
    const attempts = o.values.get('attempts');
    if (!attempts) report('MP2038', clause.span, ['retry', 'needs attempts <n>']);
    else if (attempts !== true && attempts.kind === 'number' && (!Number.isInteger(attempts.value) || attempts.value < 0 || attempts.value > MAX_RETRY_ATTEMPTS)) {
      report('MP2038', attempts.span, ['attempts', `must be a whole number from 0 to ${MAX_RETRY_ATTEMPTS}`]);
    }
    const on = o.values.get('on');
    if (on && on !== true && on.kind === 'list') {
      for (const item of on.items) {
        if (item.kind === 'number') {
          if (!Number.isInteger(item.value) || item.value < 100 || item.value > 599) report('MP2045', item.span, [item.text, 'a whole number from 100 to 599']);
        } else if (item.kind !== 'string' || !(RETRY_ON as readonly string[]).includes(item.value)) {
          const text = item.kind === 'string' ? item.value : item.kind === 'word' ? item.text : describe(item);
          report('MP2038', item.span, [`retry on ${JSON.stringify(text)}`, `is not a retry condition (${RETRY_ON.map((r) => `"${r}"`).join(', ')} or a status code)`], didYouMean(text, RETRY_ON));
        }
      }
    }
    for (const k of ['per_try_timeout', 'backoff', 'backoff_max']) this.positiveDuration(o.values.get(k));
  }

  private pathOrPrefix(values: Map<string, Resolved | true>, clause: 'rewrite' | 'redirect'): void {
    const path = values.get('path');
    const prefix = values.get('prefix');
    if (path && prefix) {
      this.report('MP2036', (prefix as Resolved).span, [`${clause} path`, `${clause} prefix`]);
      return;
    }
    for (const v of [path, prefix]) if (v && v !== true && v.kind === 'string' && !v.value.startsWith('/')) this.report('MP2017', v.span, [JSON.stringify(v.value)]);
    if (prefix && !topLevelPathPrefix(this.rule)) this.report('MP2042', (prefix as Resolved).span, [clause]);
  }

  private checkVersion(version: string, span: SourceSpan): void {
    if (this.known && !this.known.versions.includes(version)) {
      this.report('MP2014', span, [version, this.service], didYouMean(version, this.known.versions) ?? `known versions: ${this.known.versions.join(', ')}`);
    }
  }

  private duration(d: A.DurationLit, maxMs: number, maxText: string): void {
    const unitMs = DURATION_UNITS_MS[d.unit];
    if (unitMs === undefined) {
      this.report('MP2010', d.span, [d.text, `has an unknown unit ${d.unit} (expected ms, s, m or h)`], didYouMean(d.unit, Object.keys(DURATION_UNITS_MS)));
    } else if (!(d.amount * unitMs > 0) || d.amount * unitMs > maxMs) {
      this.report('MP2010', d.span, [d.text, `must be more than 0 and at most ${maxText}`]);
    }
  }

  private positiveDuration(v: Resolved | true | undefined): void {
    if (v && v !== true && v.kind === 'duration') this.duration(v.lit, MAX_TIMEOUT_MS, '24h');
  }

  private positiveInteger(v: Extract<Resolved, { kind: 'number' }>, what: string): void {
    if (!Number.isInteger(v.value) || v.value < 1) this.report('MP2038', v.span, [what, `${v.text} must be a whole number of at least 1`]);
  }

  private percent(value: number, text: string, span: SourceSpan): void {
    if (!(value >= 0 && value <= 100)) this.report('MP2008', span, [text]);
  }
}

/** Does the rule's `when` hold a path prefix at its top level (alone or in an `and`)? */
export function topLevelPathPrefix(rule: A.RuleDecl): boolean {
  const when = rule.clauses.find((c) => c.type === 'when');
  if (!when || when.type !== 'when') return false;
  const conj = (c: A.Condition): boolean =>
    (c.type === 'compare' && c.subject.field === 'path' && c.op === 'prefix') || (c.type === 'and' && (conj(c.left) || conj(c.right)));
  return conj(when.condition);
}

function validPort(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && n <= 65535;
}

function checkSpiffe(value: string, span: SourceSpan, report: Report): void {
  if (!SPIFFE_ID.test(value)) report('MP2016', span, [JSON.stringify(value)]);
}

function checkHeaderName(s: A.StringLit, report: Report): void {
  if (!HEADER_NAME.test(s.value)) report('MP2018', s.span, [JSON.stringify(s.value)]);
}

/** Reports a regex the DFA compiler refuses, pointing into the string literal where possible. */
function checkRegex(pattern: string, span: SourceSpan, report: Report): void {
  try {
    compileRegex(pattern);
  } catch (err) {
    if (!(err instanceof RegexError)) throw err;
    const code: DiagnosticCode = err.kind === 'unsupported' ? 'MP2030' : err.kind === 'invalid' ? 'MP2031' : 'MP2032';
    // Column of the offending character inside a one-line literal ("..." adds 1); escapes shift it, so clamp.
    const col = span.line === span.endLine ? Math.min(span.col + 1 + err.offset, span.endCol - 1) : span.col;
    report(code, { ...span, col }, [err.message], err.hint);
  }
}

/** Type-checks conditions: operators per field, operand types, literal formats. */
class ConditionChecker {
  private readonly scope: Scope;
  private readonly report: Report;
  private readonly topology: { versions: string[]; ports?: number[]; service: string } | undefined;

  constructor(scope: Scope, report: Report, topology: { versions: string[]; ports?: number[]; service: string } | undefined) {
    this.scope = scope;
    this.report = report;
    this.topology = topology;
  }

  check(c: A.Condition): void {
    switch (c.type) {
      case 'and':
      case 'or':
        this.check(c.left);
        this.check(c.right);
        return;
      case 'not':
        this.check(c.operand);
        return;
      case 'bool':
        return;
      case 'ref':
        if (!this.scope.matches.has(c.name.text)) this.report('MP2024', c.name.span, ['match block', c.name.text], didYouMean(c.name.text, this.scope.matches.keys()));
        return;
      case 'compare':
        this.compare(c);
        return;
    }
  }

  private compare(c: Extract<A.Condition, { type: 'compare' }>): void {
    const field = c.subject.field;
    const ops = FIELD_OPS[field];
    if (!ops.includes(c.op)) {
      this.report('MP2027', c.opSpan, [OP_TEXT[c.op], FIELD_TEXT[field]], `${FIELD_TEXT[field]} takes: ${ops.map((o) => OP_TEXT[o]).join(', ')}`);
      return;
    }
    if (c.subject.name && field === 'header') checkHeaderName(c.subject.name, this.report);
    if (c.op === 'present' || c.op === 'absent' || !c.operand) return;
    const operand = resolveValue(c.operand, this.scope, this.report);
    if (c.op === 'in') {
      if (operand.kind !== 'list') {
        this.report('MP2028', operand.span, ['a list [ ... ] or a list constant', describe(operand)], operand.kind === 'word' ? didYouMean(operand.text, this.scope.consts.keys()) : undefined);
        return;
      }
      for (const item of operand.items) this.value(field, c.op, item);
      return;
    }
    if (operand.kind === 'list') {
      this.report('MP2028', operand.span, ['one value', 'a list'], 'use in [ ... ] to test against several values');
      return;
    }
    this.value(field, c.op, operand);
  }

  /** One operand value for `field op value`. */
  private value(field: A.Field, op: A.CompareOp, v: Resolved): void {
    const report = this.report;
    if (field === 'method') {
      const text = v.kind === 'word' ? v.text : v.kind === 'string' ? v.value : undefined;
      if (text === undefined) report('MP2028', v.span, ['an HTTP method', describe(v)]);
      else if (!(HTTP_METHODS as readonly string[]).includes(text)) report('MP2015', v.span, [text], didYouMean(text, HTTP_METHODS));
      return;
    }
    if (field === 'port') {
      if (v.kind !== 'number') report('MP2028', v.span, ['a port number', describe(v)]);
      else if (!validPort(v.value)) report('MP2034', v.span, [v.text]);
      else if (this.topology?.ports && !this.topology.ports.includes(v.value)) report('MP2046', v.span, [v.text, this.topology.service], `known ports: ${this.topology.ports.join(', ')}`);
      return;
    }
    if (v.kind === 'word' && v.cyclic) return; // reported as MP2029
    if (v.kind !== 'string') {
      const hint = v.kind === 'word' ? didYouMean(v.text, this.scope.consts.keys()) ?? `write a string "${v.text}", or define const ${v.text} = "..."` : undefined;
      report(v.kind === 'word' ? 'MP2024' : 'MP2028', v.span, v.kind === 'word' ? ['constant', v.text] : ['a string', describe(v)], hint);
      return;
    }
    if (field === 'source-ip') {
      if (!parseCidr(v.value)) report('MP2033', v.span, [JSON.stringify(v.value)]);
      return;
    }
    if (op === 'regex') {
      checkRegex(v.value, v.span, report);
      return;
    }
    if (op === 'matches' && !v.value.includes('*')) report('MP2023', v.span, [JSON.stringify(v.value)]);
    if (field === 'path' && (op === 'eq' || op === 'ne' || op === 'prefix' || op === 'in' || op === 'matches') && !v.value.startsWith('/')) {
      report('MP2017', v.span, [JSON.stringify(v.value)]);
    }
    if (field === 'source' && (op === 'eq' || op === 'ne' || op === 'in' || op === 'matches')) checkSpiffe(v.value, v.span, report);
  }
}
