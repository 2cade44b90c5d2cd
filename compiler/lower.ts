// Checked AST → policy IR. Runs only when the checker reported no error, so
// every kind, unit and value here is known to be valid.
// In: the ASTs of every file. Out: PolicyIR (services sorted by name).
import type * as A from './ast.ts';
import { DURATION_UNITS_MS, RATE_UNITS_SECONDS } from './check/language.ts';
import type { AuthzRuleIR, ConditionIR, FaultIR, PolicyIR, RateKeyIR, RateLimitIR, RouteIR, ServiceIR } from './ir.ts';

export function lowerFiles(files: A.PolicyFile[]): PolicyIR {
  const services: ServiceIR[] = [];
  for (const file of files) for (const s of file.services) services.push(lowerService(file.path, s));
  services.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { services };
}

function lowerService(path: string, service: A.ServiceDecl): ServiceIR {
  const name = service.name.text;
  const ir: ServiceIR = {
    name,
    sourcePath: path,
    span: service.span,
    routes: [],
    faults: [],
    authz: { denies: [], allows: [], defaultDenyId: null },
    rateLimits: [],
  };
  for (const rule of service.rules) {
    const id = `${name}/${rule.kind.text}/${rule.name.text}`;
    const when = ruleCondition(rule);
    switch (rule.kind.text) {
      case 'route':
        ir.routes.push(lowerRoute(id, rule, when));
        break;
      case 'fault':
        ir.faults.push(lowerFault(id, rule, when));
        break;
      case 'allow':
        ir.authz.allows.push({ id, span: rule.span, when } satisfies AuthzRuleIR);
        break;
      case 'deny':
        ir.authz.denies.push({ id, span: rule.span, when } satisfies AuthzRuleIR);
        break;
      case 'rate_limit':
        ir.rateLimits.push(lowerRateLimit(id, rule, when));
        break;
    }
  }
  if (ir.authz.allows.length > 0) ir.authz.defaultDenyId = `${name}/default-deny`;
  return ir;
}

function clause<T extends A.Clause['type']>(rule: A.RuleDecl, type: T): Extract<A.Clause, { type: T }> | undefined {
  return rule.clauses.find((c): c is Extract<A.Clause, { type: T }> => c.type === type);
}

/** `when` and `from` together: both must hold; several `from` sources are alternatives. */
function ruleCondition(rule: A.RuleDecl): ConditionIR {
  const parts: ConditionIR[] = [];
  const from = clause(rule, 'from');
  if (from) {
    const sources = from.sources.map((s): ConditionIR => sourceCondition(s.value, s.value.includes('*')));
    parts.push(sources.length === 1 ? sources[0]! : { op: 'or', args: sources });
  }
  const when = clause(rule, 'when');
  if (when) parts.push(lowerCondition(when.condition));
  if (parts.length === 0) return { op: 'true' };
  return parts.length === 1 ? parts[0]! : { op: 'and', args: parts };
}

function sourceCondition(value: string, glob: boolean): ConditionIR {
  return glob ? { op: 'source-glob', pattern: value } : { op: 'source-eq', value };
}

function lowerCondition(c: A.Condition): ConditionIR {
  switch (c.type) {
    case 'and':
    case 'or': {
      // Flatten chains of the same operator: a and b and c → and[a, b, c].
      const args: ConditionIR[] = [];
      for (const side of [c.left, c.right]) {
        const lowered = lowerCondition(side);
        if (lowered.op === c.type) args.push(...lowered.args);
        else args.push(lowered);
      }
      return { op: c.type, args };
    }
    case 'not':
      return { op: 'not', arg: lowerCondition(c.operand) };
    case 'method':
      return { op: 'method-in', methods: c.methods.map((m) => m.text) };
    case 'path':
      return c.op === 'eq' ? { op: 'path-eq', value: c.value.value } : { op: 'path-prefix', value: c.value.value };
    case 'header': {
      const name = c.name.value.toLowerCase();
      switch (c.op) {
        case 'eq':
          return { op: 'header-eq', name, value: c.value.value };
        case 'prefix':
          return { op: 'header-prefix', name, value: c.value.value };
        case 'present':
          return { op: 'header-present', name };
        case 'absent':
          return { op: 'not', arg: { op: 'header-present', name } };
      }
      break;
    }
    case 'source':
      return sourceCondition(c.value.value, c.op === 'matches');
  }
  throw new Error('unreachable condition');
}

function lowerRoute(id: string, rule: A.RuleDecl, when: ConditionIR): RouteIR {
  const to = clause(rule, 'to')!;
  return { id, span: rule.span, when, targets: to.targets.map((t) => ({ version: t.version.text, weight: t.weight?.value ?? 1 })) };
}

function lowerFault(id: string, rule: A.RuleDecl, when: ConditionIR): FaultIR {
  const f: FaultIR = { id, span: rule.span, when };
  const delay = clause(rule, 'delay');
  if (delay) f.delay = { ms: delay.duration.amount * DURATION_UNITS_MS[delay.duration.unit]!, percent: delay.percent?.value ?? 100 };
  const abort = clause(rule, 'abort');
  if (abort) f.abort = { status: abort.status.value, percent: abort.percent?.value ?? 100 };
  return f;
}

function lowerRateLimit(id: string, rule: A.RuleDecl, when: ConditionIR): RateLimitIR {
  const rate = clause(rule, 'rate')!;
  const key = clause(rule, 'key')?.key;
  let keyIR: RateKeyIR = { kind: 'none' };
  if (key?.kind === 'source') keyIR = { kind: 'source' };
  if (key?.kind === 'header') keyIR = { kind: 'header', name: key.name.value.toLowerCase() };
  const unitSeconds = RATE_UNITS_SECONDS[rate.unit.text]!;
  // Without burst, the bucket holds one unit's worth of requests (rate 100/s → 100).
  const burst = rate.burst?.value ?? Math.max(1, Math.ceil(rate.amount.value));
  return { id, span: rule.span, when, key: keyIR, ratePerSecond: rate.amount.value / unitSeconds, burst };
}
