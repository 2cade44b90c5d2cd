// Analysis: what the rules of a service mean together, as warnings (MP3xxx,
// and MP2022). Routes shadowed by earlier ones, allows that a deny makes dead,
// weights that do not add up to 100, rate limits that overlap, conditions that
// are always true or always false.
// In: the IR of each service. Out: warnings. Sound but incomplete: a warning
// is only given when it is certain (implies() answers "maybe" as false).
import { makeDiagnostic, type Diagnostic } from '../diagnostics.ts';
import type { ConditionIR, PolicyIR, RuleIR, ServiceIR } from '../ir.ts';
import { cidrContains } from '../ip.ts';
import { segmentPrefix, stringTest } from '../interpret/match.ts';

export function analyse(ir: PolicyIR): Diagnostic[] {
  const out: Diagnostic[] = [];
  for (const s of ir.services) analyseService(s, out);
  // Mesh-wide rules are merged into every service: report each finding once.
  const seen = new Set<string>();
  return out.filter((d) => {
    const key = `${d.code}|${d.span.file}|${d.span.line}|${d.span.col}|${d.message}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

function analyseService(s: ServiceIR, out: Diagnostic[]): void {
  const all: RuleIR[] = [...s.routes, ...s.faults, ...s.authz.denies, ...s.authz.allows, ...s.audits, ...s.rateLimits];
  const never = new Set<string>();
  for (const r of all) {
    if (r.when.op === 'true' || r.when.op === 'false') continue;
    if (alwaysFalse(r.when)) {
      out.push(makeDiagnostic('MP3005', r.at, [`the condition of ${r.id}`]));
      never.add(r.id);
    } else if (alwaysTrue(r.when)) out.push(makeDiagnostic('MP3004', r.at, [`the condition of ${r.id}`], 'drop the when clause if the rule should apply to every request'));
  }
  s.routes.forEach((route, j) => {
    if (never.has(route.id)) return;
    const by = s.routes.slice(0, j).find((earlier) => implies(route.when, earlier.when));
    if (by) out.push(makeDiagnostic('MP2022', route.at, [route.id, by.id], 'routes are tried most specific first (exact path, longest prefix, method, headers, query); make this one more specific or the other less'));
    if (route.action.kind === 'forward' && route.action.targets.length > 1) {
      const sum = route.action.targets.reduce((a, t) => a + t.weight, 0);
      if (sum !== 100) {
        const shares = route.action.targets.map((t) => `${t.version} ${((100 * t.weight) / sum).toFixed(1).replace(/\.0$/, '')}%`).join(', ');
        out.push(makeDiagnostic('MP3002', route.at, [String(sum), shares]));
      }
    }
  });
  for (const allow of s.authz.allows) {
    if (allow.dryRun || never.has(allow.id)) continue;
    const deny = s.authz.denies.find((d) => !d.dryRun && implies(allow.when, d.when));
    if (deny) out.push(makeDiagnostic('MP3001', allow.at, [allow.id, deny.id]));
  }
  s.rateLimits.forEach((b, j) => {
    for (const a of s.rateLimits.slice(0, j)) {
      if (JSON.stringify(a.key) !== JSON.stringify(b.key) || never.has(a.id) || never.has(b.id)) continue;
      if (!alwaysFalse({ op: 'and', args: [a.when, b.when] })) {
        out.push(makeDiagnostic('MP3003', b.at, [a.id, b.id], 'scope them with disjoint when clauses, or merge them'));
        break;
      }
    }
  });
}

function negate(c: ConditionIR): ConditionIR {
  return c.op === 'not' ? c.arg : { op: 'not', arg: c };
}

export function alwaysFalse(c: ConditionIR): boolean {
  switch (c.op) {
    case 'false':
      return true;
    case 'true':
      return false;
    case 'or':
      return c.args.every(alwaysFalse);
    case 'not':
      return alwaysTrue(c.arg);
    case 'and':
      if (c.args.some(alwaysFalse)) return true;
      for (let i = 0; i < c.args.length; i++) {
        for (let j = i + 1; j < c.args.length; j++) if (implies(c.args[i]!, negate(c.args[j]!))) return true;
      }
      return false;
    case 'string':
      return c.test.kind === 'in' && c.test.values.length === 0;
    case 'port-in':
      return c.ports.length === 0;
    case 'ip-in':
      return c.blocks.length === 0;
    default:
      return false;
  }
}

export function alwaysTrue(c: ConditionIR): boolean {
  switch (c.op) {
    case 'true':
      return true;
    case 'false':
      return false;
    case 'and':
      return c.args.every(alwaysTrue);
    case 'not':
      return alwaysFalse(c.arg);
    case 'or':
      if (c.args.some(alwaysTrue)) return true;
      for (let i = 0; i < c.args.length; i++) {
        for (let j = i + 1; j < c.args.length; j++) if (implies(negate(c.args[i]!), c.args[j]!)) return true;
      }
      return false;
    case 'string':
      // Every path starts with "/".
      return c.field.kind === 'path' && c.test.kind === 'segment-prefix' && c.test.value === '/';
    case 'present':
      return c.field.kind === 'path' || c.field.kind === 'method';
    default:
      return false;
  }
}

/** Certainly: every request satisfying `a` satisfies `b`. False means "not known". */
export function implies(a: ConditionIR, b: ConditionIR): boolean {
  if (b.op === 'true' || a.op === 'false') return true;
  if (b.op === 'and') return b.args.every((x) => implies(a, x));
  if (a.op === 'or') return a.args.every((x) => implies(x, b));
  if (a.op === 'and' && a.args.some((x) => implies(x, b))) return true;
  if (b.op === 'or') return b.args.some((x) => implies(a, x));
  if (a.op === 'and') return false;
  return literalImplies(a, b);
}

function sameField(a: { kind: string; name?: string }, b: { kind: string; name?: string }): boolean {
  return a.kind === b.kind && a.name === b.name;
}

/** Values `c` certainly admits (eq / in), else undefined. */
function values(c: ConditionIR): string[] | undefined {
  if (c.op !== 'string') return undefined;
  if (c.test.kind === 'eq') return [c.test.value];
  if (c.test.kind === 'in') return c.test.values;
  return undefined;
}

function literalImplies(a: ConditionIR, b: ConditionIR): boolean {
  if (JSON.stringify(a) === JSON.stringify(b)) return true;
  if (a.op === 'not' && b.op === 'not') return implies(b.arg, a.arg);
  if (b.op === 'not') return disjoint(a, b.arg);
  if (a.op === 'not') return false;
  if (a.op === 'port-in' && b.op === 'port-in') return a.ports.every((p) => b.ports.includes(p));
  if (a.op === 'ip-in' && b.op === 'ip-in') {
    return a.blocks.every((x) => b.blocks.some((y) => y.family === x.family && y.bits <= x.bits && cidrContains(y, x.bytes)));
  }
  if (a.op === 'string' && b.op === 'present') return sameField(a.field, b.field);
  if (a.op === 'string' && b.op === 'string' && sameField(a.field, b.field)) {
    const vs = values(a);
    if (vs) return vs.every((v) => stringTest(b.test, v));
    if (a.test.kind === 'segment-prefix' && b.test.kind === 'segment-prefix') return segmentPrefix(a.test.value, b.test.value) || a.test.value === b.test.value;
    if (a.test.kind === 'prefix' && b.test.kind === 'prefix') return a.test.value.startsWith(b.test.value);
    if (a.test.kind === 'suffix' && b.test.kind === 'suffix') return a.test.value.endsWith(b.test.value);
    if (a.test.kind === 'contains' && b.test.kind === 'contains') return a.test.value.includes(b.test.value);
  }
  return false;
}

/** Certainly no request satisfies both literals. */
function disjoint(a: ConditionIR, b: ConditionIR): boolean {
  if (a.op === 'not') return implies(b, a.arg);
  if (b.op === 'not') return implies(a, b.arg);
  if (a.op === 'port-in' && b.op === 'port-in') return !a.ports.some((p) => b.ports.includes(p));
  if (a.op === 'string' && b.op === 'string' && sameField(a.field, b.field)) {
    const va = values(a);
    if (va) return va.every((v) => !stringTest(b.test, v));
    const vb = values(b);
    if (vb) return vb.every((v) => !stringTest(a.test, v));
    if (a.test.kind === 'segment-prefix' && b.test.kind === 'segment-prefix') {
      return !segmentPrefix(a.test.value, b.test.value) && !segmentPrefix(b.test.value, a.test.value);
    }
  }
  return false;
}
