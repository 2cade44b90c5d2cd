// Checks parsed files: names, kinds, clause sets, values and, given a
// topology, service and version references.
// In: the ASTs of every file in the build (+ optional topology).
// Out: diagnostics (MP2xxx). The AST is valid for lower.ts when none is an error.
import type { SourceSpan } from '../../protocol/bundle.ts';
import type * as A from '../ast.ts';
import { didYouMean, makeDiagnostic, type Diagnostic, type DiagnosticCode } from '../diagnostics.ts';
import { DURATION_UNITS_MS, HTTP_METHODS, RATE_UNITS_SECONDS, RULE_KINDS, type RuleKind } from './language.ts';

export interface Topology {
  services: Record<string, { versions: string[] }>;
}

/** Which clauses each rule kind accepts. */
const ALLOWED_CLAUSES: Record<RuleKind, A.Clause['type'][]> = {
  route: ['when', 'to'],
  fault: ['when', 'delay', 'abort'],
  allow: ['when', 'from'],
  deny: ['when', 'from'],
  rate_limit: ['when', 'key', 'rate'],
};

const MAX_WEIGHT = 1_000_000;
const MAX_DELAY_MS = 3_600_000;
const HEADER_NAME = /^:?[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;

function where(span: SourceSpan): string {
  return `${span.file}:${span.line}:${span.col}`;
}

export function checkFiles(files: A.PolicyFile[], topology?: Topology): Diagnostic[] {
  const out: Diagnostic[] = [];
  const report = (code: DiagnosticCode, span: SourceSpan, args: string[], hint?: string): void => {
    out.push(makeDiagnostic(code, span, args, hint));
  };
  const seenServices = new Map<string, A.ServiceDecl>();
  for (const file of files) {
    for (const service of file.services) {
      const first = seenServices.get(service.name.text);
      if (first) {
        report('MP2001', service.name.span, [service.name.text, where(first.name.span)], 'merge the two blocks: one service block per service across the build');
        continue;
      }
      seenServices.set(service.name.text, service);
      checkService(service, topology, report);
    }
  }
  return out;
}

type Report = (code: DiagnosticCode, span: SourceSpan, args: string[], hint?: string) => void;

function checkService(service: A.ServiceDecl, topology: Topology | undefined, report: Report): void {
  const serviceName = service.name.text;
  let knownVersions: string[] | undefined;
  if (topology) {
    const entry = topology.services[serviceName];
    if (entry) knownVersions = entry.versions;
    else report('MP2013', service.name.span, [serviceName], didYouMean(serviceName, Object.keys(topology.services)));
  }
  if (service.rules.length === 0) report('MP2021', service.name.span, [serviceName]);

  const seenRules = new Map<string, A.RuleDecl>();
  let catchAllRoute: string | undefined;
  for (const rule of service.rules) {
    const kind = rule.kind.text;
    if (!(RULE_KINDS as readonly string[]).includes(kind)) {
      report('MP2003', rule.kind.span, [kind], didYouMean(kind, RULE_KINDS));
      continue;
    }
    const ruleKind = kind as RuleKind;
    const id = `${serviceName}/${kind}/${rule.name.text}`;
    const earlier = seenRules.get(id);
    if (earlier) report('MP2002', rule.name.span, [id, where(earlier.name.span)]);
    else seenRules.set(id, rule);

    const seenClauses = new Set<string>();
    for (const clause of rule.clauses) {
      if (!ALLOWED_CLAUSES[ruleKind].includes(clause.type)) {
        report('MP2004', clause.span, [clause.type, kind], `a ${kind} rule takes: ${ALLOWED_CLAUSES[ruleKind].join(', ')}`);
        continue;
      }
      if (seenClauses.has(clause.type)) {
        report('MP2006', clause.span, [clause.type], clause.type === 'when' ? 'combine the conditions with and/or' : undefined);
        continue;
      }
      seenClauses.add(clause.type);
      checkClause(clause, knownVersions, serviceName, report);
    }

    if (ruleKind === 'route') {
      if (!seenClauses.has('to')) report('MP2005', rule.name.span, [kind, 'a to clause (to <version> [weight], ...)']);
      if (catchAllRoute) report('MP2022', rule.name.span, [id, catchAllRoute], 'move it above that route or give that route a when clause');
      else if (!seenClauses.has('when')) catchAllRoute = id;
    }
    if (ruleKind === 'fault' && !seenClauses.has('delay') && !seenClauses.has('abort')) {
      report('MP2005', rule.name.span, [kind, 'a delay or an abort clause']);
    }
    if (ruleKind === 'rate_limit' && !seenClauses.has('rate')) {
      report('MP2005', rule.name.span, [kind, 'a rate clause (rate <n>/<s|m|h> [burst <n>])']);
    }
  }
}

function checkClause(clause: A.Clause, knownVersions: string[] | undefined, serviceName: string, report: Report): void {
  switch (clause.type) {
    case 'when':
      checkCondition(clause.condition, report);
      return;
    case 'to': {
      const seen = new Set<string>();
      for (const t of clause.targets) {
        if (seen.has(t.version.text)) report('MP2020', t.version.span, [t.version.text]);
        seen.add(t.version.text);
        if (knownVersions && !knownVersions.includes(t.version.text)) {
          report('MP2014', t.version.span, [t.version.text, serviceName], didYouMean(t.version.text, knownVersions) ?? `known versions: ${knownVersions.join(', ')}`);
        }
        if (t.weight) {
          if (!Number.isInteger(t.weight.value) || t.weight.value < 1 || t.weight.value > MAX_WEIGHT) report('MP2007', t.weight.span, [t.weight.text]);
        } else if (clause.targets.length > 1) {
          report('MP2019', t.version.span, [t.version.text]);
        }
      }
      return;
    }
    case 'delay': {
      const d = clause.duration;
      const unitMs = DURATION_UNITS_MS[d.unit];
      if (unitMs === undefined) {
        report('MP2010', d.span, [d.text, `has an unknown unit ${d.unit} (expected ms, s, m or h)`], didYouMean(d.unit, Object.keys(DURATION_UNITS_MS)));
      } else if (!(d.amount * unitMs > 0) || d.amount * unitMs > MAX_DELAY_MS) {
        report('MP2010', d.span, [d.text, 'must be more than 0 and at most 1h']);
      }
      if (clause.percent) checkPercent(clause.percent, report);
      return;
    }
    case 'abort':
      if (!Number.isInteger(clause.status.value) || clause.status.value < 200 || clause.status.value > 599) report('MP2009', clause.status.span, [clause.status.text]);
      if (clause.percent) checkPercent(clause.percent, report);
      return;
    case 'from':
      for (const s of clause.sources) checkSpiffe(s, report);
      return;
    case 'key':
      if (clause.key.kind === 'header') checkHeaderName(clause.key.name, report);
      return;
    case 'rate': {
      if (RATE_UNITS_SECONDS[clause.unit.text] === undefined) {
        report('MP2011', clause.unit.span, [clause.unit.text], didYouMean(clause.unit.text, Object.keys(RATE_UNITS_SECONDS)));
      }
      if (!(clause.amount.value > 0)) report('MP2012', clause.amount.span, ['rate', clause.amount.text]);
      if (clause.burst && (!Number.isInteger(clause.burst.value) || clause.burst.value < 1)) report('MP2012', clause.burst.span, ['burst', clause.burst.text]);
      return;
    }
  }
}

function checkPercent(p: A.NumberLit, report: Report): void {
  if (!(p.value >= 0 && p.value <= 100)) report('MP2008', p.span, [p.text]);
}

function checkSpiffe(s: A.StringLit, report: Report): void {
  if (!/^spiffe:\/\/[^/*]+\/\S+$/.test(s.value)) report('MP2016', s.span, [JSON.stringify(s.value)]);
}

function checkHeaderName(s: A.StringLit, report: Report): void {
  if (!HEADER_NAME.test(s.value)) report('MP2018', s.span, [JSON.stringify(s.value)]);
}

function checkCondition(c: A.Condition, report: Report): void {
  switch (c.type) {
    case 'and':
    case 'or':
      checkCondition(c.left, report);
      checkCondition(c.right, report);
      return;
    case 'not':
      checkCondition(c.operand, report);
      return;
    case 'method':
      for (const m of c.methods) {
        if (!(HTTP_METHODS as readonly string[]).includes(m.text)) report('MP2015', m.span, [m.text], didYouMean(m.text, HTTP_METHODS));
      }
      return;
    case 'path':
      if (!c.value.value.startsWith('/')) report('MP2017', c.value.span, [JSON.stringify(c.value.value)]);
      return;
    case 'header':
      checkHeaderName(c.name, report);
      return;
    case 'source':
      checkSpiffe(c.value, report);
      if (c.op === 'matches' && !c.value.value.includes('*')) report('MP2023', c.value.span, [JSON.stringify(c.value.value)]);
      return;
  }
}
