// Authorization decision time at 10, 100 and 1,000 rules, for two policy
// shapes (rules keyed by identity and path; rules keyed by path only): the
// compiled meshc filter, run by the sidecar's own proxy-wasm host (runtime/wasm/vm.ts
// FilterVm, out of a FilterChain; host calls included) the way FilterRun
// drives it per request, against the same policies in Cedar
// (@cedar-policy/cedar-wasm, preparsed: preparsePolicySet + statefulIsAuthorized)
// and casbin (enforceSync), in this process, side by side.
// Rule i allows identity i (or, path only, anyone) to GET/HEAD under
// /api/<i>; the request measured is the last rule's (the worst case for engines that scan), its path cycling
// through 1,024 distinct values (a client does not repeat one URL), and every
// engine must allow it and deny a stranger before it is timed. The filter is
// loaded from the bundle the way the sidecar loads it (FilterChain.fromBundle:
// the manifest's limits apply, so no fuel meter).
// Out: a table of median µs per decision and the ratios.
import { Registry } from 'prom-client';
import { compilePolicies, shutdownCompiler } from '../compiler/index.ts';
import type { RequestSpec } from '../compiler/run/request.ts';
import { FilterChain } from '../runtime/chain.ts';
import { createHostEnvironment } from '../runtime/wasm/environment.ts';
import { shutdownMeteringProcess } from '../runtime/wasm/module-cache.ts';
import type { FilterVm } from '../runtime/wasm/vm.ts';
import { HttpStream, type HeaderList, type StreamFacts } from '../runtime/wasm/stream.ts';
import { inboundFacts } from '../test/support/stream-facts.ts';
import type { Table } from './lib/report.ts';
import type { SuiteOptions, SuiteResult } from './run.ts';

const SIZES = [10, 100, 1000];
const BATCHES = 21;

const identity = (i: number): string => `spiffe://mesh.local/ns/team${i % 10}/sa/app${i}`;

/** One policy shape, written for each engine. */
interface Shape {
  name: string;
  /** Rule i's source identity, or undefined when rules name none. */
  who: (i: number) => string | undefined;
}

const SHAPES: Shape[] = [
  { name: 'identity + path', who: identity },
  { name: 'path only', who: () => undefined },
];

function meshPolicy(shape: Shape, n: number): string {
  const rules: string[] = [];
  for (let i = 0; i < n; i++) {
    const who = shape.who(i);
    rules.push(`  allow r${i} { ${who ? `from "${who}" ` : ''}when method in [GET, HEAD] and path prefix "/api/${i}" }`);
  }
  return `service api {\n${rules.join('\n')}\n}\n`;
}

function cedarPolicies(shape: Shape, n: number): string {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const who = shape.who(i);
    out.push(
      `permit(principal${who ? ` == Workload::"${who}"` : ''}, action in [Action::"GET", Action::"HEAD"], resource) when { context.path == "/api/${i}" || context.path like "/api/${i}/*" };`,
    );
  }
  return out.join('\n');
}

/** The casbin model: with identities, r.sub must equal p.sub; without, p.sub is "*" and any r.sub matches. */
const CASBIN_MODEL = `
[request_definition]
r = sub, obj, act
[policy_definition]
p = sub, obj, act
[policy_effect]
e = some(where (p.eft == allow))
[matchers]
m = (p.sub == "*" || r.sub == p.sub) && (r.obj == p.obj || keyMatch2(r.obj, p.obj + "/*")) && regexMatch(r.act, p.act)
`;

/** Calls before timing: long enough for V8 to optimize the JS and tier the Wasm up (it compiles in the background). */
const WARMUP_MS = 300;

/** Median over batches of the mean time per call, in µs; each batch runs ≥ ~5 ms, after a warm-up. */
function medianMicros(fn: () => void): number {
  const warmEnd = performance.now() + WARMUP_MS;
  while (performance.now() < warmEnd) for (let i = 0; i < 100; i++) fn();
  let perBatch = 1;
  for (;;) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < perBatch; i++) fn();
    if (Number(process.hrtime.bigint() - t0) >= 5e6 || perBatch >= 1 << 20) break;
    perBatch *= 2;
  }
  const samples: number[] = [];
  for (let b = 0; b < BATCHES; b++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < perBatch; i++) fn();
    samples.push(Number(process.hrtime.bigint() - t0) / perBatch / 1000);
  }
  samples.sort((a, b) => a - b);
  return samples[Math.floor(samples.length / 2)]!;
}

/** The headers of a typical proxied request (the filter reads :method and :path). */
function headers(spec: RequestSpec, path = spec.path!): HeaderList {
  return [
    [':method', spec.method!],
    [':path', path],
    [':authority', 'api'],
    [':scheme', 'https'],
    ['user-agent', 'curl/8.5.0'],
    ['accept', '*/*'],
    ['x-request-id', 'bench'],
  ];
}

/**
 * One decision as the sidecar makes it: a fresh stream, its context created,
 * proxy_on_request_headers, its context finished (each context callback only
 * if the module exports it, as FilterRun does). Returns the
 * local response's status, or 0 when the request may go on.
 */
function decideOnce(vm: FilterVm, streamFacts: StreamFacts, spec: RequestSpec, path?: string): number {
  const list = headers(spec, path);
  const stream = new HttpStream(streamFacts, list);
  const id = vm.createStream(stream);
  vm.onStream('proxy_on_request_headers', id, list.length, 1);
  vm.finishStream(id);
  return stream.localResponse?.status ?? 0;
}

interface Row {
  shape: string;
  rules: number;
  meshc: number;
  cedar: number;
  casbin: number;
}

async function measure(shape: Shape, n: number): Promise<Row> {
  const k = n - 1;
  const allowed: RequestSpec = { direction: 'inbound', method: 'GET', path: `/api/${k}/items`, source: identity(k) };
  // Denied for its identity, or (path only) for a path no rule names.
  const stranger: RequestSpec = shape.who(k)
    ? { direction: 'inbound', method: 'GET', path: `/api/${k}/items`, source: 'spiffe://mesh.local/ns/x/sa/stranger' }
    : { direction: 'inbound', method: 'GET', path: `/apix/${k}/items`, source: identity(k) };

  const result = await compilePolicies([{ path: `bench/decisions-${n}.meshpolicy`, text: meshPolicy(shape, n) }]);
  if (!result.bundle) throw new Error(`bench policy with ${n} rules does not compile: ${JSON.stringify(result.diagnostics.slice(0, 3))}`);
  const chain = await FilterChain.fromBundle(result.bundle, createHostEnvironment(new Registry(), () => {}));
  const vm = chain.filters[0]!.vm;
  const allowedFacts = inboundFacts(allowed.source!, 'bench');
  if (decideOnce(vm, allowedFacts, allowed) !== 0 || decideOnce(vm, inboundFacts(stranger.source!, 'bench'), stranger) !== 403) throw new Error('meshc: wrong decision');

  const cedar = await import('@cedar-policy/cedar-wasm/nodejs');
  const setId = `bench-${shape.who(0) ? 'id' : 'path'}-${n}`;
  const parsed = cedar.preparsePolicySet(setId, { staticPolicies: cedarPolicies(shape, n) });
  if (parsed.type !== 'success') throw new Error(`cedar: ${JSON.stringify(parsed)}`);
  const cedarCall = (spec: RequestSpec) => ({
    principal: { type: 'Workload', id: spec.source! },
    action: { type: 'Action', id: spec.method! },
    resource: { type: 'Path', id: spec.path! },
    context: { path: spec.path! },
    preparsedPolicySetId: setId,
    entities: [],
  });
  const cedarDecide = (spec: RequestSpec): string => {
    const a = cedar.statefulIsAuthorized(cedarCall(spec));
    if (a.type !== 'success') throw new Error(`cedar: ${JSON.stringify(a.errors)}`);
    return a.response.decision;
  };
  if (cedarDecide(allowed) !== 'allow' || cedarDecide(stranger) !== 'deny') throw new Error('cedar: wrong decision');

  const casbin = await import('casbin');
  const enforcer = await casbin.newEnforcer(casbin.newModelFromString(CASBIN_MODEL));
  const rules: string[][] = [];
  for (let i = 0; i < n; i++) rules.push([shape.who(i) ?? '*', `/api/${i}`, '^(GET|HEAD)$']);
  await enforcer.addPolicies(rules);
  if (!enforcer.enforceSync(allowed.source, allowed.path, 'GET') || enforcer.enforceSync(stranger.source, stranger.path, 'GET')) throw new Error('casbin: wrong decision');

  // Distinct path strings made beforehand, so string building is not timed.
  const paths = Array.from({ length: 1024 }, (_, j) => Buffer.from(`/api/${k}/items/${j}`).toString('latin1'));
  let j = 0;
  const meshc = medianMicros(() => decideOnce(vm, allowedFacts, allowed, paths[j++ & 1023]));
  chain.retire();
  return {
    shape: shape.name,
    rules: n,
    meshc,
    cedar: medianMicros(() => cedarDecide(allowed)),
    casbin: medianMicros(() => enforcer.enforceSync(allowed.source, allowed.path, 'GET')),
  };
}

export async function run(_options: SuiteOptions): Promise<SuiteResult> {
  const rows: Row[] = [];
  for (const shape of SHAPES) {
    for (const n of SIZES) {
      process.stderr.write(`decisions: ${shape.name}, ${n} rules\n`);
      rows.push(await measure(shape, n));
    }
  }
  await shutdownCompiler();
  await shutdownMeteringProcess();
  const table: Table = {
    title: 'Authorization decision, median µs (lower is better)',
    columns: ['policy', 'rules', 'meshc (Wasm, host calls included)', 'Cedar (preparsed)', 'casbin (enforceSync)', 'Cedar / meshc', 'casbin / meshc'],
    rows: rows.map((r) => [r.shape, r.rules, r.meshc, r.cedar, r.casbin, `${(r.cedar / r.meshc).toFixed(0)}×`, `${(r.casbin / r.meshc).toFixed(0)}×`]),
    notes: [
      'identity + path: rule i allows spiffe://mesh.local/ns/team<i%10>/sa/app<i> to GET/HEAD /api/<i> and below. path only: rule i allows anyone to GET/HEAD /api/<i> and below. The request is the last rule\'s.',
      'meshc: one decision = the sidecar\'s host (runtime/wasm/vm.ts FilterVm, loaded by FilterChain.fromBundle) given a fresh header list (7 headers) and HttpStream: createStream, proxy_on_request_headers (host calls: listener_direction, source.principal, :method, :path), finishStream. The module exports no proxy_on_context_create, proxy_on_done or proxy_on_delete (nothing to do for this policy), so the host calls none.',
      'The measured request\'s path cycles through /api/<k>/items/0..1023; its identity and method repeat, as they do on one client connection.',
      'mesh.rules is not set: the sidecar does not ask for it (property mesh.trace, docs/contracts.md).',
      'The compiler indexes allow/deny rules by the exact source identity they require, else by path prefix (a hashed walk over the path\'s segments), host or method, so the cost stays flat as rules grow (docs/compiler.md).',
      `Median of ${BATCHES} batches of at least 5 ms each, after ${WARMUP_MS} ms of warm-up, in one process.`,
    ],
  };
  return { tables: [table], raw: rows };
}
