// Checked AST → policy IR. Runs only when the checker reported no error, so
// every kind, unit, name and value here is known to be valid.
// In: the ASTs of every file (+ the topology, which adds mesh-governed services).
// Out: PolicyIR (services sorted by name).
// Precedence, applied here once: mesh-wide rules come before a service's own
// in each family; a service's traffic settings override the mesh's field by
// field; routes are ordered by Gateway API match precedence (routePrecedence).
import type { SourceSpan } from '../protocol/bundle.ts';
import type { LoadBalancer, RetryPolicy, RouteTraffic, ServiceTraffic } from '../protocol/traffic.ts';
import type * as A from './ast.ts';
import { DEFAULTS, DURATION_UNITS_MS, RATE_UNITS_SECONDS } from './check/language.ts';
import { readOptions, type Options } from './check/options.ts';
import { buildScopes, resolveValue, type Resolved, type Scope } from './check/scope.ts';
import { parseWindow, type Window } from './check/window.ts';
import type { Topology } from './check/checker.ts';
import { parseCidr, type Cidr } from './ip.ts';
import type { AuthzRuleIR, ConditionIR, FaultIR, FieldIR, HeaderOpIR, PolicyIR, RateKeyIR, RateLimitIR, RedirectIR, RewriteIR, RouteIR, RuleIR, ServiceIR } from './ir.ts';
import { compileRegex } from './regex/automaton.ts';

const NO_REPORT = (): void => {};

export function lowerFiles(files: A.PolicyFile[], topology?: Topology): PolicyIR {
  const scopes = buildScopes(files);
  let mesh: { decl: A.MeshDecl; scope: Scope; path: string } | undefined;
  for (const f of files) for (const m of f.meshes) mesh ??= { decl: m, scope: scopes.get(f.path)!, path: f.path };
  const services: ServiceIR[] = [];
  const declared = new Set<string>();
  for (const file of files) {
    for (const s of file.services) {
      declared.add(s.name.text);
      services.push(lowerService(s.name.text, file.path, s.span, !!s.dryRun, s.rules, scopes.get(file.path)!, mesh));
    }
  }
  // Mesh-wide rules also govern topology services that have no block of their own.
  if (mesh && mesh.decl.rules.length > 0 && topology) {
    for (const name of Object.keys(topology.services)) {
      if (!declared.has(name)) services.push(lowerService(name, mesh.path, mesh.decl.span, false, [], mesh.scope, mesh));
    }
  }
  services.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { services };
}

function lowerService(
  name: string,
  path: string,
  span: SourceSpan,
  dryRun: boolean,
  rules: A.RuleDecl[],
  scope: Scope,
  mesh: { decl: A.MeshDecl; scope: Scope } | undefined,
): ServiceIR {
  const ir: ServiceIR = {
    name,
    sourcePath: path,
    span,
    dryRun,
    routes: [],
    faults: [],
    authz: { denies: [], allows: [], defaultDenyId: null, shadowDefaultDenyId: null },
    audits: [],
    rateLimits: [],
    traffic: { defaults: {}, routes: {} },
  };
  const meshTraffic: ServiceTraffic = { defaults: {}, routes: {} };
  const ownTraffic: ServiceTraffic = { defaults: {}, routes: {} };
  const sources: { owner: string; rules: A.RuleDecl[]; scope: Scope; traffic: ServiceTraffic }[] = [];
  if (mesh) sources.push({ owner: 'mesh', rules: mesh.decl.rules, scope: mesh.scope, traffic: meshTraffic });
  sources.push({ owner: name, rules, scope, traffic: ownTraffic });
  for (const src of sources) {
    const lower = new RuleLowering(src.scope);
    for (const rule of src.rules) {
      const kind = rule.kind.text;
      if (kind === 'traffic') {
        lower.traffic(rule, src.traffic);
        continue;
      }
      const id = `${src.owner}/${kind}/${rule.name!.text}`;
      const when = lower.ruleCondition(rule);
      const base: RuleIR = { id, span: rule.span, at: rule.name!.span, when };
      const dry = rule.clauses.some((c) => c.type === 'dry_run');
      switch (kind) {
        case 'route':
          ir.routes.push(lower.route(base, rule));
          break;
        case 'fault':
          ir.faults.push(lower.fault(base, rule));
          break;
        case 'allow':
          ir.authz.allows.push({ ...base, dryRun: dry } satisfies AuthzRuleIR);
          break;
        case 'deny':
          ir.authz.denies.push({ ...base, dryRun: dry } satisfies AuthzRuleIR);
          break;
        case 'audit':
          ir.audits.push(base);
          break;
        case 'rate_limit':
          ir.rateLimits.push(lower.rateLimit(base, rule, dry));
          break;
      }
    }
  }
  if (ir.authz.allows.some((a) => !a.dryRun)) ir.authz.defaultDenyId = `${name}/default-deny`;
  if (ir.authz.allows.length > 0) ir.authz.shadowDefaultDenyId = `${name}/default-deny`;
  ir.routes = orderRoutes(ir.routes);
  ir.traffic = mergeTraffic(meshTraffic, ownTraffic);
  for (const r of ir.routes) if (r.traffic) ir.traffic.routes[r.id] = r.traffic;
  return ir;
}

/** Service settings override the mesh's, field by field. */
function mergeTraffic(mesh: ServiceTraffic, own: ServiceTraffic): ServiceTraffic {
  const out: ServiceTraffic = { defaults: { ...mesh.defaults, ...own.defaults }, routes: {} };
  const lb = own.loadBalancer ?? mesh.loadBalancer;
  if (lb) out.loadBalancer = lb;
  const budget = own.retryBudget ?? mesh.retryBudget;
  if (budget) out.retryBudget = budget;
  const limits = own.connectionLimits ?? mesh.connectionLimits;
  if (limits) out.connectionLimits = limits;
  const outlier = own.outlierDetection ?? mesh.outlierDetection;
  if (outlier) out.outlierDetection = outlier;
  return out;
}

/**
 * Gateway API HTTPRoute precedence between matches, most specific first:
 * an exact path; then the longest path prefix; then a regex (or other pattern)
 * on the path; then a method match; then the most header matches; then the
 * most query matches. Ties keep source order. A route whose condition is an
 * `or` ranks by its most specific alternative.
 */
export function routePrecedence(c: ConditionIR): number[] {
  switch (c.op) {
    case 'or':
      return c.args.map(routePrecedence).reduce((a, b) => (compareKeys(a, b) >= 0 ? a : b));
    case 'and':
      return c.args.map(routePrecedence).reduce((a, b) => [Math.max(a[0]!, b[0]!), Math.max(a[1]!, b[1]!), Math.max(a[2]!, b[2]!), a[3]! + b[3]!, a[4]! + b[4]!]);
    case 'string':
    case 'present': {
      const f = c.field.kind;
      if (f === 'path' && c.op === 'string') {
        const t = c.test;
        if (t.kind === 'eq' || t.kind === 'in') return [3, 0, 0, 0, 0];
        if (t.kind === 'segment-prefix') return [2, t.value.length, 0, 0, 0];
        return [1, 0, 0, 0, 0];
      }
      if (f === 'method') return [0, 0, 1, 0, 0];
      if (f === 'header') return [0, 0, 0, 1, 0];
      if (f === 'query') return [0, 0, 0, 0, 1];
      return [0, 0, 0, 0, 0];
    }
    default:
      return [0, 0, 0, 0, 0];
  }
}

function compareKeys(a: number[], b: number[]): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return 0;
}

function orderRoutes(routes: RouteIR[]): RouteIR[] {
  const keyed = routes.map((r, i) => ({ r, i, key: routePrecedence(r.when) }));
  keyed.sort((x, y) => compareKeys(y.key, x.key) || x.i - y.i);
  return keyed.map((k) => k.r);
}

function ms(d: A.DurationLit): number {
  return d.amount * DURATION_UNITS_MS[d.unit]!;
}

function num(o: Options, key: string): number | undefined {
  const v = o.values.get(key);
  return v && v !== true && v.kind === 'number' ? v.value : undefined;
}

function str(o: Options, key: string): string | undefined {
  const v = o.values.get(key);
  return v && v !== true && v.kind === 'string' ? v.value : undefined;
}

function dur(o: Options, key: string): number | undefined {
  const v = o.values.get(key);
  return v && v !== true && v.kind === 'duration' ? ms(v.lit) : undefined;
}

function clause<T extends A.ClauseType>(rule: A.RuleDecl, type: T): Extract<A.Clause, { type: T }> | undefined {
  return rule.clauses.find((c): c is Extract<A.Clause, { type: T }> => c.type === type);
}

/** The value of a top-level path prefix test in a lowered condition (for prefix rewrites). */
function matchedPrefix(c: ConditionIR): string | undefined {
  if (c.op === 'string' && c.field.kind === 'path' && c.test.kind === 'segment-prefix') return c.test.value;
  if (c.op === 'and') for (const a of c.args) if (matchedPrefix(a) !== undefined) return matchedPrefix(a);
  return undefined;
}

/** Lowers rules and conditions written in one file's scope. */
class RuleLowering {
  private readonly scope: Scope;

  constructor(scope: Scope) {
    this.scope = scope;
  }

  private resolve(v: A.Value, scope: Scope = this.scope): Resolved {
    return resolveValue(v, scope, NO_REPORT);
  }

  /** `when` and `from` together: both must hold; several `from` sources are alternatives. */
  ruleCondition(rule: A.RuleDecl): ConditionIR {
    const parts: ConditionIR[] = [];
    const from = clause(rule, 'from');
    if (from) {
      const ids: string[] = [];
      for (const v of from.sources) {
        const r = this.resolve(v);
        for (const item of r.kind === 'list' ? r.items : [r]) if (item.kind === 'string') ids.push(item.value);
      }
      const tests = ids.map((id): ConditionIR => ({ op: 'string', field: { kind: 'source' }, test: id.includes('*') ? { kind: 'glob', pattern: id } : { kind: 'eq', value: id } }));
      parts.push(tests.length === 1 ? tests[0]! : { op: 'or', args: tests });
    }
    const when = clause(rule, 'when');
    if (when) parts.push(this.condition(when.condition, this.scope));
    if (parts.length === 0) return { op: 'true' };
    return parts.length === 1 ? parts[0]! : flatten('and', parts);
  }

  condition(c: A.Condition, scope: Scope): ConditionIR {
    switch (c.type) {
      case 'and':
      case 'or':
        return flatten(c.type, [this.condition(c.left, scope), this.condition(c.right, scope)]);
      case 'not':
        return { op: 'not', arg: this.condition(c.operand, scope) };
      case 'bool':
        return { op: c.value ? 'true' : 'false' };
      case 'ref': {
        const m = scope.matches.get(c.name.text)!;
        return this.condition(m.decl.condition, m.scope);
      }
      case 'compare':
        return this.compare(c, scope);
    }
  }

  private compare(c: Extract<A.Condition, { type: 'compare' }>, scope: Scope): ConditionIR {
    const field = c.subject.field;
    const operand = c.operand ? this.resolve(c.operand, scope) : undefined;
    const values = operand ? (operand.kind === 'list' ? operand.items : [operand]) : [];
    if (field === 'port') {
      const test: ConditionIR = { op: 'port-in', ports: values.map((v) => (v.kind === 'number' ? v.value : 0)) };
      return c.op === 'ne' ? { op: 'not', arg: test } : test;
    }
    if (field === 'source-ip') {
      const test: ConditionIR = { op: 'ip-in', blocks: values.map((v) => parseCidr(v.kind === 'string' ? v.value : '') as Cidr) };
      return c.op === 'ne' ? { op: 'not', arg: test } : test;
    }
    const f = fieldIR(c.subject);
    const texts = values.map((v) => (v.kind === 'string' ? v.value : v.kind === 'word' ? v.text : ''));
    const one = texts[0] ?? '';
    switch (c.op) {
      case 'present':
        return { op: 'present', field: f };
      case 'absent':
        return { op: 'not', arg: { op: 'present', field: f } };
      case 'eq':
        return { op: 'string', field: f, test: { kind: 'eq', value: one } };
      case 'ne':
        return { op: 'not', arg: { op: 'string', field: f, test: { kind: 'eq', value: one } } };
      case 'in':
        return { op: 'string', field: f, test: { kind: 'in', values: texts } };
      case 'prefix':
        return { op: 'string', field: f, test: field === 'path' ? { kind: 'segment-prefix', value: one } : { kind: 'prefix', value: one } };
      case 'suffix':
        return { op: 'string', field: f, test: { kind: 'suffix', value: one } };
      case 'contains':
        return { op: 'string', field: f, test: { kind: 'contains', value: one } };
      case 'matches':
        return { op: 'string', field: f, test: { kind: 'glob', pattern: one } };
      case 'regex':
        return { op: 'string', field: f, test: { kind: 'regex', pattern: one, dfa: compileRegex(one) } };
    }
  }

  route(base: RuleIR, rule: A.RuleDecl): RouteIR {
    const requestHeaders: HeaderOpIR[] = [];
    const responseHeaders: HeaderOpIR[] = [];
    for (const c of rule.clauses) {
      if (c.type === 'request_header' || c.type === 'response_header') {
        (c.type === 'request_header' ? requestHeaders : responseHeaders).push({ op: c.op, name: c.name.value.toLowerCase(), value: c.value?.value ?? '' });
      }
    }
    const route: RouteIR = { ...base, action: { kind: 'forward', targets: [] }, requestHeaders, responseHeaders };
    const to = clause(rule, 'to');
    const redirect = clause(rule, 'redirect');
    const respond = clause(rule, 'respond');
    if (to) {
      route.action = { kind: 'forward', targets: to.targets.map((t) => ({ version: t.version.text, weight: t.weight?.value ?? 1 })) };
      const rw = clause(rule, 'rewrite');
      if (rw) {
        const o = readOptions(rw, this.scope, NO_REPORT);
        const rewrite: RewriteIR = {};
        const path = str(o, 'path');
        const prefix = str(o, 'prefix');
        if (path !== undefined) rewrite.path = { kind: 'full', value: path };
        if (prefix !== undefined) rewrite.path = { kind: 'prefix', matched: matchedPrefix(base.when)!, value: prefix };
        const host = str(o, 'host');
        if (host !== undefined) rewrite.host = host;
        route.action.rewrite = rewrite;
      }
    } else if (redirect) {
      const o = readOptions(redirect, this.scope, NO_REPORT);
      const r: RedirectIR = { status: num(o, 'status') ?? DEFAULTS.redirectStatus };
      const scheme = str(o, 'scheme');
      if (scheme !== undefined) r.scheme = scheme;
      const host = str(o, 'host');
      if (host !== undefined) r.host = host;
      const port = num(o, 'port');
      if (port !== undefined) r.port = port;
      const path = str(o, 'path');
      const prefix = str(o, 'prefix');
      if (path !== undefined) r.path = { kind: 'full', value: path };
      if (prefix !== undefined) r.path = { kind: 'prefix', matched: matchedPrefix(base.when)!, value: prefix };
      route.action = { kind: 'redirect', redirect: r };
    } else if (respond) {
      const o = readOptions(respond, this.scope, NO_REPORT, 'number');
      const status = o.leading?.kind === 'number' ? o.leading.value : 200;
      route.action = { kind: 'respond', status, body: str(o, 'body') ?? '', contentType: str(o, 'content_type') ?? 'text/plain' };
    }
    const traffic: RouteTraffic = {};
    const timeout = clause(rule, 'timeout');
    if (timeout) traffic.timeoutMs = ms(timeout.duration);
    const retry = clause(rule, 'retry');
    if (retry) traffic.retries = this.retry(retry);
    const mirror = clause(rule, 'mirror');
    if (mirror) {
      const o = readOptions(mirror, this.scope, NO_REPORT, 'word');
      traffic.mirror = { version: o.leading?.kind === 'word' ? o.leading.text : '', percent: num(o, 'percent') ?? 100 };
    }
    if (Object.keys(traffic).length > 0) route.traffic = traffic;
    return route;
  }

  private retry(c: { type: string; items: A.Value[] }): RetryPolicy {
    const o = readOptions(c, this.scope, NO_REPORT);
    const on = o.values.get('on');
    const retryOn: string[] = [];
    const codes: number[] = [];
    if (on && on !== true && on.kind === 'list') {
      for (const item of on.items) {
        if (item.kind === 'number') codes.push(item.value);
        else if (item.kind === 'string' && !retryOn.includes(item.value)) retryOn.push(item.value);
      }
    } else retryOn.push('connect-failure', 'reset', 'gateway-error');
    if (codes.length > 0 && !retryOn.includes('retriable-status-codes')) retryOn.push('retriable-status-codes');
    const base = dur(o, 'backoff') ?? DEFAULTS.retryBackoffBaseMs;
    const policy: RetryPolicy = { attempts: num(o, 'attempts') ?? 1, retryOn, backoffBaseMs: base, backoffMaxMs: dur(o, 'backoff_max') ?? Math.max(base, 10 * base) };
    if (codes.length > 0) policy.retriableStatusCodes = codes;
    const perTry = dur(o, 'per_try_timeout');
    if (perTry !== undefined) policy.perTryTimeoutMs = perTry;
    return policy;
  }

  fault(base: RuleIR, rule: A.RuleDecl): FaultIR {
    const f: FaultIR = { ...base };
    const delay = clause(rule, 'delay');
    if (delay) f.delay = { ms: ms(delay.duration), percent: delay.percent?.value ?? 100 };
    const abort = clause(rule, 'abort');
    if (abort) {
      f.abort = abort.grpc ? { status: 200, grpcStatus: abort.status.value, percent: abort.percent?.value ?? 100 } : { status: abort.status.value, percent: abort.percent?.value ?? 100 };
    }
    const between = clause(rule, 'between');
    if (between) f.window = parseWindow(between.start.value, between.end.value, between.daily) as Window;
    return f;
  }

  rateLimit(base: RuleIR, rule: A.RuleDecl, dryRun: boolean): RateLimitIR {
    const rate = clause(rule, 'rate')!;
    const key = clause(rule, 'key');
    let keyIR: RateKeyIR = { kind: 'none' };
    if (key?.word.text === 'source') keyIR = { kind: 'source' };
    if (key?.word.text === 'path') keyIR = { kind: 'path' };
    if (key?.word.text === 'remote_address') keyIR = { kind: 'remote-address' };
    if (key?.word.text === 'header') keyIR = { kind: 'header', name: key.arg!.value.toLowerCase() };
    const unitSeconds = RATE_UNITS_SECONDS[rate.unit.text]!;
    // Without burst, the bucket holds one unit's worth of requests (rate 100/s → 100).
    const burst = rate.burst?.value ?? Math.max(1, Math.ceil(rate.amount.value));
    return { ...base, key: keyIR, ratePerSecond: rate.amount.value / unitSeconds, burst, dryRun };
  }

  /** A `traffic { }` rule into `into` (service defaults and destination settings). */
  traffic(rule: A.RuleDecl, into: ServiceTraffic): void {
    for (const c of rule.clauses) {
      switch (c.type) {
        case 'timeout':
          into.defaults.timeoutMs = ms(c.duration);
          break;
        case 'retry':
          into.defaults.retries = this.retry(c);
          break;
        case 'retry_budget': {
          const o = readOptions(c, this.scope, NO_REPORT);
          into.retryBudget = { percent: num(o, 'percent') ?? 20, minRetriesPerSecond: num(o, 'min_per_second') ?? DEFAULTS.retryBudgetMinPerSecond };
          break;
        }
        case 'load_balancer':
          into.loadBalancer = this.loadBalancer(readOptions(c, this.scope, NO_REPORT));
          break;
        case 'connection_limits': {
          const o = readOptions(c, this.scope, NO_REPORT);
          const limits: NonNullable<ServiceTraffic['connectionLimits']> = {};
          const conns = num(o, 'max_connections');
          if (conns !== undefined) limits.maxConnections = conns;
          const pending = num(o, 'max_pending');
          if (pending !== undefined) limits.maxPendingRequests = pending;
          const requests = num(o, 'max_requests');
          if (requests !== undefined) limits.maxRequests = requests;
          into.connectionLimits = limits;
          break;
        }
        case 'outlier_detection': {
          const o = readOptions(c, this.scope, NO_REPORT);
          const c5 = num(o, 'consecutive_5xx');
          const cg = num(o, 'consecutive_gateway_errors');
          const od: NonNullable<ServiceTraffic['outlierDetection']> = {
            intervalMs: dur(o, 'interval') ?? DEFAULTS.outlierIntervalMs,
            baseEjectionMs: dur(o, 'base_ejection') ?? DEFAULTS.outlierBaseEjectionMs,
            maxEjectionPercent: num(o, 'max_ejection_percent') ?? DEFAULTS.outlierMaxEjectionPercent,
          };
          if (c5 !== undefined) od.consecutive5xx = c5;
          if (cg !== undefined) od.consecutiveGatewayErrors = cg;
          if (c5 === undefined && cg === undefined) od.consecutive5xx = DEFAULTS.outlierConsecutive5xx;
          into.outlierDetection = od;
          break;
        }
        default:
          break;
      }
    }
  }

  private loadBalancer(o: Options): LoadBalancer {
    if (o.values.has('least_request')) return { kind: 'least-request' };
    if (o.values.has('peak_ewma')) return { kind: 'peak-ewma', decayMs: dur(o, 'decay') ?? DEFAULTS.peakEwmaDecayMs };
    if (o.values.has('consistent_hash')) {
      const header = str(o, 'header');
      if (header !== undefined) return { kind: 'consistent-hash', hashOn: { header: header.toLowerCase() } };
      const cookie = str(o, 'cookie');
      if (cookie !== undefined) return { kind: 'consistent-hash', hashOn: { cookie } };
      return { kind: 'consistent-hash', hashOn: { source: true } };
    }
    return { kind: 'round-robin' };
  }
}

function fieldIR(s: A.Subject): FieldIR {
  switch (s.field) {
    case 'header':
      return { kind: 'header', name: s.name!.value.toLowerCase() };
    case 'query':
      return { kind: 'query', name: s.name!.value };
    case 'claim':
      return { kind: 'claim', name: s.name!.value };
    case 'method':
    case 'path':
    case 'host':
    case 'grpc-service':
    case 'grpc-method':
    case 'source':
    case 'source-namespace':
    case 'source-account':
      return { kind: s.field };
    default:
      throw new Error(`field ${s.field} has no string form`);
  }
}

/** Flattens chains of the same operator: a and b and c → and[a, b, c]. */
function flatten(op: 'and' | 'or', parts: ConditionIR[]): ConditionIR {
  const args: ConditionIR[] = [];
  for (const p of parts) {
    if (p.op === op) args.push(...p.args);
    else args.push(p);
  }
  return { op, args };
}
