// Test cases over decisions, shared by the corpus (two engines must agree)
// and `meshc test` (the compiled Wasm must meet the expectations).
// In: parsed YAML: a case is one request, or `steps` of requests sharing one
// filter VM (for rate limits and clocks), each with optional `random` draws,
// `now` / `advance` for the clock, `repeat`, and `expect`.
// Out: typed steps, a runner over any engine, and expectation mismatches.
import { DURATION_UNITS_MS } from '../check/language.ts';
import { parseRequestSpec, RequestSpecError, type DirectionName, type HeaderChange, type Outcome, type RequestSpec } from './request.ts';

export interface Expectation {
  action?: Outcome['action'];
  status?: number;
  rule?: string;
  /** The routed version; `none` for no route. */
  route?: string;
  routeId?: string;
  rules?: string[];
  /** A subset of the local response's headers. */
  headers?: Record<string, string>;
  body?: string;
  grpcStatus?: number;
  requestHeaders?: string[];
  responseHeaders?: string[];
  delayMs?: number;
  metrics?: Record<string, number>;
}

export interface Step {
  request: RequestSpec;
  random?: number[];
  /** Absolute clock (ns since the epoch) before the step. */
  nowNs?: bigint;
  /** Clock advance (ns) before the step. */
  advanceNs?: bigint;
  repeat: number;
  expect?: Expectation;
  /** 1-based index in the case, for messages. */
  index: number;
}

export interface Case {
  name: string;
  service?: string;
  steps: Step[];
}

/** What a case runs on: the compiled module through DecisionHost, or the Interpreter. */
export interface Engine {
  nowNs: bigint;
  randoms: number[];
  decide(spec: RequestSpec): Outcome;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function durationNs(text: string, what: string): bigint {
  const m = /^(\d+)(ms|s|m|h)$/.exec(text.trim());
  if (!m) throw new RequestSpecError('CASE_INVALID', `${what} must be a duration like 50ms, 2s, 1m, not ${JSON.stringify(text)}`);
  return BigInt(Number(m[1]) * DURATION_UNITS_MS[m[2]!]!) * 1_000_000n;
}

const EXPECT_KEYS: Record<string, keyof Expectation> = {
  action: 'action',
  status: 'status',
  rule: 'rule',
  route: 'route',
  route_id: 'routeId',
  rules: 'rules',
  headers: 'headers',
  body: 'body',
  grpc_status: 'grpcStatus',
  request_headers: 'requestHeaders',
  response_headers: 'responseHeaders',
  delay_ms: 'delayMs',
  metrics: 'metrics',
};

function parseExpectation(v: unknown, where: string): Expectation {
  if (!isRecord(v)) throw new RequestSpecError('CASE_INVALID', `${where}: expect must be a map`);
  const out: Record<string, unknown> = {};
  for (const [k, val] of Object.entries(v)) {
    const key = EXPECT_KEYS[k];
    if (!key) throw new RequestSpecError('CASE_INVALID', `${where}: unknown expectation ${k} (known: ${Object.keys(EXPECT_KEYS).join(', ')})`);
    out[key] = key === 'headers' && isRecord(val) ? Object.fromEntries(Object.entries(val).map(([h, x]) => [h.toLowerCase(), String(x)])) : val;
  }
  return out as Expectation;
}

/** One case from YAML: `{ name, service?, request, random?, now?, expect? }` or `{ name, service?, steps: [...] }`. */
export function parseCase(v: unknown, index: number, defaultDirection: DirectionName = 'unspecified'): Case {
  if (!isRecord(v)) throw new RequestSpecError('CASE_INVALID', `case ${index + 1} must be a map`);
  const name = v['name'] === undefined ? `case ${index + 1}` : String(v['name']);
  const rawSteps = v['steps'] === undefined ? [v] : v['steps'];
  if (!Array.isArray(rawSteps) || rawSteps.length === 0) throw new RequestSpecError('CASE_INVALID', `${name}: steps must be a non-empty list`);
  const steps = rawSteps.map((s: unknown, i): Step => {
    const where = `${name}, step ${i + 1}`;
    if (!isRecord(s)) throw new RequestSpecError('CASE_INVALID', `${where} must be a map`);
    let request: RequestSpec;
    try {
      request = parseRequestSpec(s['request'], defaultDirection);
    } catch (err) {
      throw new RequestSpecError('CASE_INVALID', `${where}: ${(err as Error).message}`);
    }
    const step: Step = { request, repeat: 1, index: i + 1 };
    if (s['random'] !== undefined) {
      if (!Array.isArray(s['random'])) throw new RequestSpecError('CASE_INVALID', `${where}: random must be a list of u32 draws`);
      step.random = s['random'].map(Number);
    }
    if (s['now'] !== undefined) {
      const ms = Date.parse(String(s['now']));
      if (Number.isNaN(ms)) throw new RequestSpecError('CASE_INVALID', `${where}: now must be an ISO 8601 instant`);
      step.nowNs = BigInt(ms) * 1_000_000n;
    }
    if (s['advance'] !== undefined) step.advanceNs = durationNs(String(s['advance']), `${where}: advance`);
    if (s['repeat'] !== undefined) {
      const n = Number(s['repeat']);
      if (!Number.isInteger(n) || n < 1 || n > 100_000) throw new RequestSpecError('CASE_INVALID', `${where}: repeat must be a whole number from 1 to 100000`);
      step.repeat = n;
    }
    if (s['expect'] !== undefined) step.expect = parseExpectation(s['expect'], where);
    return step;
  });
  const c: Case = { name, steps };
  if (v['service'] !== undefined) c.service = String(v['service']);
  return c;
}

/** Runs a case's steps on an engine; every repetition's outcome, step by step. */
export function runCase(c: Case, engine: Engine): { step: Step; outcomes: Outcome[] }[] {
  return c.steps.map((step) => {
    if (step.nowNs !== undefined) engine.nowNs = step.nowNs;
    if (step.advanceNs !== undefined) engine.nowNs += step.advanceNs;
    engine.randoms = [...(step.random ?? [])];
    const outcomes: Outcome[] = [];
    for (let i = 0; i < step.repeat; i++) outcomes.push(engine.decide(step.request));
    return { step, outcomes };
  });
}

export function formatChange(c: HeaderChange): string {
  return c.op === 'remove' ? `remove ${c.name}` : `${c.op} ${c.name}: ${c.value ?? ''}`;
}

/** What an outcome fails of an expectation, as messages ([] when it meets it). */
export function mismatches(o: Outcome, e: Expectation): string[] {
  const out: string[] = [];
  const eq = (what: string, want: unknown, got: unknown): void => {
    if (JSON.stringify(want) !== JSON.stringify(got)) out.push(`${what}: expected ${JSON.stringify(want)}, got ${JSON.stringify(got)}`);
  };
  if (e.action !== undefined) eq('action', e.action, o.action);
  if (e.status !== undefined) eq('status', e.status, o.local?.status ?? (o.action === 'local' ? undefined : 'sent on'));
  if (e.rule !== undefined) eq('deciding rule', e.rule, o.rule ?? 'none');
  if (e.route !== undefined) eq('route', e.route, o.route?.version ?? 'none');
  if (e.routeId !== undefined) eq('route id', e.routeId, o.route?.id ?? 'none');
  if (e.rules !== undefined) eq('rules applied', e.rules, o.rules);
  if (e.headers !== undefined) for (const [k, v] of Object.entries(e.headers)) eq(`response header ${k}`, v, o.local?.headers[k]);
  if (e.body !== undefined) eq('body', e.body, o.local?.body);
  if (e.grpcStatus !== undefined) eq('grpc status', e.grpcStatus, o.local?.grpcStatus);
  if (e.requestHeaders !== undefined) eq('request header changes', e.requestHeaders, o.requestHeaders.map(formatChange));
  if (e.responseHeaders !== undefined) eq('response header changes', e.responseHeaders, o.responseHeaders.map(formatChange));
  if (e.delayMs !== undefined) eq('delay ms', e.delayMs, o.delayMs ?? 0);
  if (e.metrics !== undefined) for (const [k, v] of Object.entries(e.metrics)) eq(`metric ${k}`, v, o.metrics[k] ?? 0);
  return out;
}
