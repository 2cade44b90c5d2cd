// The reference interpreter: evaluates a ServiceIR on a request, in
// TypeScript, with the semantics the language documents. It shares nothing
// with the filter library but the IR, so running one corpus on both engines
// (test/corpus) checks the code generator and the library against it.
// State (token buckets, metrics) lives in the instance, like a filter VM's.
// In: a ServiceIR, then requests with the clock and random draws the host
// would give. Out: the same Outcome the Wasm host reports.
import { addressHost, cidrContains, parseIp } from '../ip.ts';
import { inWindow } from '../check/window.ts';
import { connectionAuthz, hasConnectionPolicy } from '../connection.ts';
import type { AuthzIR, ConditionIR, FieldIR, HeaderOpIR, RouteIR, RuleIR, ServiceIR } from '../ir.ts';
import { decidingRule, DIRECTIONS, type HeaderChange, type Outcome, type RequestSpec } from '../run/request.ts';
import { stringTest } from './match.ts';

const MAX_KEYS_PER_RULE = 10_000;

/** Token buckets of one rate limit, keyed, with the oldest key evicted past the cap. */
class Buckets {
  readonly rate: number;
  readonly burst: number;
  private readonly buckets = new Map<string, { tokens: number; updatedNs: bigint }>();
  private readonly ring: (string | undefined)[] = new Array(MAX_KEYS_PER_RULE);
  private nextSlot = 0;

  constructor(rate: number, burst: number) {
    this.rate = rate;
    this.burst = burst;
  }

  /** 0 when a token was taken, else the seconds until one is due. */
  take(key: string, nowNs: bigint): number {
    let b = this.buckets.get(key);
    if (b) {
      const elapsed = Number(nowNs - b.updatedNs) / 1e9;
      if (elapsed > 0) {
        b.tokens = Math.min(this.burst, b.tokens + elapsed * this.rate);
        b.updatedNs = nowNs;
      }
    } else {
      b = { tokens: this.burst, updatedNs: nowNs };
      const evicted = this.ring[this.nextSlot];
      if (evicted !== undefined) this.buckets.delete(evicted);
      this.ring[this.nextSlot] = key;
      this.nextSlot = (this.nextSlot + 1) % MAX_KEYS_PER_RULE;
      this.buckets.set(key, b);
    }
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return (1 - b.tokens) / this.rate;
  }
}

/** The facts of one request, read on demand. */
class View {
  readonly spec: RequestSpec;
  readonly headers: Map<string, string>;

  constructor(spec: RequestSpec) {
    this.spec = spec;
    this.headers = new Map(Object.entries(spec.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
  }

  get rawPath(): string {
    return this.spec.path ?? '/';
  }

  get path(): string {
    const q = this.rawPath.indexOf('?');
    return q >= 0 ? this.rawPath.slice(0, q) : this.rawPath;
  }

  get queryString(): string {
    const q = this.rawPath.indexOf('?');
    return q >= 0 ? this.rawPath.slice(q) : '';
  }

  query(name: string): string | undefined {
    const q = this.rawPath.indexOf('?');
    if (q < 0) return undefined;
    for (const pair of this.rawPath.slice(q + 1).split('&')) {
      const eq = pair.indexOf('=');
      const key = eq >= 0 ? pair.slice(0, eq) : pair;
      if (key === name) return eq >= 0 ? pair.slice(eq + 1) : '';
    }
    return undefined;
  }

  private grpc(): [string, string] | undefined {
    if (!(this.headers.get('content-type') ?? '').startsWith('application/grpc') || !this.headers.has('content-type')) return undefined;
    const p = this.path;
    const slash = p.indexOf('/', 1);
    if (!p.startsWith('/') || slash < 0) return undefined;
    return [p.slice(1, slash), p.slice(slash + 1)];
  }

  private spiffe(label: string): string | undefined {
    const s = this.spec.source;
    if (s === undefined) return undefined;
    const at = s.indexOf(`/${label}/`);
    if (at < 0) return undefined;
    const start = at + label.length + 2;
    const end = s.indexOf('/', start);
    return end < 0 ? s.slice(start) : s.slice(start, end);
  }

  field(f: FieldIR): string | undefined {
    switch (f.kind) {
      case 'method':
        return this.spec.method ?? 'GET';
      case 'path':
        return this.path;
      case 'host':
        return this.spec.host;
      case 'grpc-service':
        return this.grpc()?.[0];
      case 'grpc-method':
        return this.grpc()?.[1];
      case 'source':
        return this.spec.source;
      case 'source-namespace':
        return this.spiffe('ns');
      case 'source-account':
        return this.spiffe('sa');
      case 'header':
        return this.headers.get(f.name);
      case 'query':
        return this.query(f.name);
      case 'claim':
        return this.spec.claims?.[f.name];
    }
  }

  holds(c: ConditionIR): boolean {
    switch (c.op) {
      case 'true':
        return true;
      case 'false':
        return false;
      case 'and':
        return c.args.every((a) => this.holds(a));
      case 'or':
        return c.args.some((a) => this.holds(a));
      case 'not':
        return !this.holds(c.arg);
      case 'present':
        return this.field(c.field) !== undefined;
      case 'string': {
        const v = this.field(c.field);
        return v !== undefined && stringTest(c.test, v);
      }
      case 'port-in':
        return this.spec.port !== undefined && c.ports.includes(this.spec.port);
      case 'ip-in': {
        const address = this.spec.sourceAddress === undefined ? undefined : parseIp(addressHost(this.spec.sourceAddress));
        return address !== undefined && c.blocks.some((b) => cidrContains(b, address));
      }
    }
  }
}

export class Interpreter {
  readonly service: ServiceIR;
  /** Wall clock in nanoseconds, as the host reports it. */
  nowNs = 1_000_000_000n;
  /** u32 draws, consumed in the order the filter draws them. */
  randoms: number[] = [];
  private readonly buckets: Buckets[];
  private readonly metrics = new Map<string, number>();

  constructor(service: ServiceIR) {
    this.service = service;
    this.buckets = service.rateLimits.map((rl) => new Buckets(rl.ratePerSecond, rl.burst));
  }

  private draw(): number {
    return this.randoms.shift() ?? 0;
  }

  /** Probability percent/100; draws only when the outcome is uncertain, as the filter does. */
  private chance(percent: number): boolean {
    if (percent >= 100) return true;
    if (percent <= 0) return false;
    return (this.draw() / 4294967296) * 100 < percent;
  }

  private count(name: string): void {
    this.metrics.set(name, (this.metrics.get(name) ?? 0) + 1);
  }

  decide(spec: RequestSpec): Outcome {
    if (spec.connection) return this.decideConnection(spec);
    const r = new View(spec);
    const trace: string[] = [];
    const state: { local?: Outcome['local']; route?: RouteIR; version?: string; requestHeaders: HeaderChange[]; delayMs: number } = { requestHeaders: [], delayMs: 0 };
    this.run(r, DIRECTIONS[spec.direction], trace, state);
    const responseHeaders: HeaderChange[] = [];
    if (!state.local && state.route) for (const op of state.route.responseHeaders) responseHeaders.push(change(op));
    const partial: Omit<Outcome, 'rule'> = {
      action: state.local ? 'local' : state.delayMs > 0 ? 'delayed' : 'continue',
      rules: trace,
      requestHeaders: state.local ? [] : state.requestHeaders,
      responseHeaders,
      metrics: Object.fromEntries([...this.metrics].sort()),
    };
    if (state.local) partial.local = state.local;
    if (state.route && state.version !== undefined) partial.route = { version: state.version, id: state.route.id };
    if (!state.local && state.delayMs > 0) partial.delayMs = state.delayMs;
    const outcome: Outcome = { ...partial };
    const rule = decidingRule(partial);
    if (rule !== undefined) outcome.rule = rule;
    return outcome;
  }

  private run(r: View, direction: number, trace: string[], state: { local?: Outcome['local']; route?: RouteIR; version?: string; requestHeaders: HeaderChange[]; delayMs: number }): void {
    const s = this.service;
    const text = (status: number, id: string, body: string, contentType = 'text/plain'): Outcome['local'] => ({ status, headers: { 'x-mesh-rule': id, 'content-type': contentType }, body });
    if (direction !== DIRECTIONS.outbound) {
      const decision = this.authorize(r, trace);
      if (decision !== undefined) {
        state.local = text(403, decision, `denied by ${decision}\n`);
        return;
      }
      for (let i = 0; i < s.rateLimits.length; i++) {
        const rl = s.rateLimits[i]!;
        if (!r.holds(rl.when)) continue;
        const key = rl.key.kind === 'none' ? '' : rl.key.kind === 'source' ? (r.spec.source ?? '') : rl.key.kind === 'path' ? r.path : rl.key.kind === 'remote-address' ? (r.spec.sourceAddress === undefined ? '' : addressHost(r.spec.sourceAddress)) : (r.headers.get(rl.key.name) ?? '');
        const wait = this.buckets[i]!.take(key, this.nowNs);
        if (wait <= 0) {
          trace.push(rl.id);
          continue;
        }
        if (rl.dryRun) {
          this.count(`meshc_dry_run.${rl.id}`);
          continue;
        }
        const reset = String(Math.ceil(wait));
        state.local = {
          status: 429,
          headers: { 'x-mesh-rule': rl.id, 'retry-after': reset, 'ratelimit-limit': String(Math.trunc(rl.burst)), 'ratelimit-remaining': '0', 'ratelimit-reset': reset, 'content-type': 'text/plain' },
          body: `rate limited by ${rl.id}\n`,
        };
        return;
      }
    }
    if (direction !== DIRECTIONS.inbound) {
      const nowMs = Number(this.nowNs / 1_000_000n);
      for (const f of s.faults) {
        if (!r.holds(f.when) || (f.window && !inWindow(f.window, nowMs))) continue;
        if (f.delay && this.chance(f.delay.percent)) {
          state.delayMs += f.delay.ms;
          trace.push(f.id);
        }
        if (f.abort && this.chance(f.abort.percent)) {
          state.local =
            f.abort.grpcStatus !== undefined
              ? { status: 200, headers: { 'x-mesh-rule': f.id, 'content-type': 'application/grpc', 'grpc-status': String(f.abort.grpcStatus), 'grpc-message': `aborted by ${f.id}` }, body: '', grpcStatus: f.abort.grpcStatus }
              : text(f.abort.status, f.id, `aborted by ${f.id}\n`);
          return;
        }
      }
      const route = s.routes.find((rt) => r.holds(rt.when));
      if (route) this.route(r, route, trace, state);
    }
  }

  /** An opaque TCP connection: the connection-time reading of the service's authorization (server side only). */
  private decideConnection(spec: RequestSpec): Outcome {
    const trace: string[] = [];
    let closedBy: string | undefined;
    if (DIRECTIONS[spec.direction] !== DIRECTIONS.outbound && hasConnectionPolicy(this.service)) {
      const { authz, audits } = connectionAuthz(this.service);
      closedBy = this.authorize(new View(spec), trace, authz, audits);
    }
    const partial: Omit<Outcome, 'rule'> = {
      action: closedBy !== undefined ? 'closed' : 'continue',
      rules: trace,
      requestHeaders: [],
      responseHeaders: [],
      metrics: Object.fromEntries([...this.metrics].sort()),
    };
    if (closedBy !== undefined) partial.closedBy = closedBy;
    const outcome: Outcome = { ...partial };
    const rule = decidingRule(partial);
    if (rule !== undefined) outcome.rule = rule;
    return outcome;
  }

  /** Enforced decision (a denying rule id, or undefined), with dry-run comparison and audits. */
  private authorize(r: View, trace: string[], authz: AuthzIR = this.service.authz, audits: RuleIR[] = this.service.audits): string | undefined {
    const { denies, allows, defaultDenyId, shadowDefaultDenyId } = authz;
    let decision: string | undefined;
    let allowedBy: string | undefined;
    const deny = denies.find((d) => !d.dryRun && r.holds(d.when));
    if (deny) decision = deny.id;
    else if (defaultDenyId !== null) {
      allowedBy = allows.find((a) => !a.dryRun && r.holds(a.when))?.id;
      if (allowedBy === undefined) decision = defaultDenyId;
    }
    if (denies.some((d) => d.dryRun) || allows.some((a) => a.dryRun)) {
      let shadow = denies.find((d) => r.holds(d.when))?.id;
      let shadowAllow: string | undefined;
      if (shadow === undefined && allows.length > 0) {
        shadowAllow = allows.find((a) => r.holds(a.when))?.id;
        if (shadowAllow === undefined) shadow = shadowDefaultDenyId ?? '';
      }
      if ((shadow === undefined) !== (decision === undefined)) this.count(`meshc_dry_run.${shadow ?? shadowAllow ?? ''}`);
    }
    if (decision === undefined && allowedBy !== undefined) trace.push(allowedBy);
    for (const audit of audits) {
      if (r.holds(audit.when)) {
        this.count(`meshc_audit.${audit.id}`);
        trace.push(audit.id);
      }
    }
    return decision;
  }

  private route(r: View, rt: RouteIR, trace: string[], state: { local?: Outcome['local']; route?: RouteIR; version?: string; requestHeaders: HeaderChange[] }): void {
    const a = rt.action;
    const replacePrefix = (matched: string, value: string): string => {
      const p = r.path;
      let rest = p.length >= matched.length ? p.slice(matched.length) : '';
      if (matched.endsWith('/') && !rest.startsWith('/')) rest = '/' + rest;
      const out = value.endsWith('/') && rest.startsWith('/') ? value + rest.slice(1) : value + rest;
      return out.length === 0 ? '/' : out;
    };
    if (a.kind === 'respond') {
      state.local = { status: a.status, headers: { 'x-mesh-rule': rt.id, 'content-type': a.contentType }, body: a.body };
      return;
    }
    if (a.kind === 'redirect') {
      const rd = a.redirect;
      const scheme = rd.scheme ?? (r.spec.scheme ? r.spec.scheme : 'http');
      const current = r.spec.host ?? '';
      const colon = current.lastIndexOf(':');
      const hasPort = colon >= 0 && !current.endsWith(']');
      const host = rd.host ?? (hasPort ? current.slice(0, colon) : current);
      const port = rd.port !== undefined ? `:${rd.port}` : rd.scheme === undefined && hasPort ? current.slice(colon) : '';
      const path = !rd.path ? r.path : rd.path.kind === 'full' ? rd.path.value : replacePrefix(rd.path.matched, rd.path.value);
      state.local = { status: rd.status, headers: { 'x-mesh-rule': rt.id, location: `${scheme}://${host}${port}${path}${r.queryString}` }, body: '' };
      return;
    }
    let version = a.targets[0]!.version;
    if (a.targets.length > 1) {
      const total = a.targets.reduce((sum, t) => sum + t.weight, 0);
      let draw = this.draw() % total;
      version = a.targets[a.targets.length - 1]!.version;
      for (const t of a.targets) {
        if (draw < t.weight) {
          version = t.version;
          break;
        }
        draw -= t.weight;
      }
    }
    if (a.rewrite?.path) {
      const p = a.rewrite.path;
      state.requestHeaders.push({ op: 'set', name: ':path', value: (p.kind === 'full' ? p.value : replacePrefix(p.matched, p.value)) + r.queryString });
    }
    if (a.rewrite?.host !== undefined) state.requestHeaders.push({ op: 'set', name: ':authority', value: a.rewrite.host });
    for (const op of rt.requestHeaders) state.requestHeaders.push(change(op));
    state.route = rt;
    state.version = version;
    trace.push(rt.id);
  }
}

function change(op: HeaderOpIR): HeaderChange {
  return op.op === 'remove' ? { op: 'remove', name: op.name } : { op: op.op, name: op.name, value: op.value };
}
