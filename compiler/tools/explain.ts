// `meshc explain`: why a request gets its answer. Runs the request through
// the compiled module (from policies, or from a built bundle) and names the
// deciding rule with the line it is written on.
// In: a bundle (modules + manifest), a service, a RequestSpec; curl-like
// arguments are turned into a RequestSpec by requestFromFlags.
// Out: an Explanation (also rendered as text).
import { readFile } from 'node:fs/promises';
import type { Bundle, SourceSpan } from '../../protocol/bundle.ts';
import { CodedError } from '../../protocol/errors.ts';
import { DecisionHost } from '../run/host.ts';
import { formatChange } from '../run/cases.ts';
import { DIRECTIONS, type DirectionName, type Outcome, type RequestSpec } from '../run/request.ts';

export class ExplainError extends CodedError {}

export interface Explanation {
  service: string;
  request: RequestSpec;
  outcome: Outcome;
  /** Where the deciding rule is written, and that line of source when the file is readable. */
  source?: { span: SourceSpan; line?: string };
  summary: string;
}

export interface RequestFlags {
  method?: string;
  header?: string[];
  source?: string;
  sourceAddress?: string;
  port?: string;
  claim?: string[];
  direction?: string;
  scheme?: string;
  /** An opaque TCP connection, not a request: the URL gives only the service and port. */
  connection?: boolean;
}

/** `-X POST -H 'k: v' --source ... http://catalog:8080/items?x=1` → a request; the URL's host names the service. */
export function requestFromFlags(url: string | undefined, flags: RequestFlags): { spec: RequestSpec; serviceHint?: string } {
  const direction = (flags.direction ?? 'unspecified') as DirectionName;
  if (!(direction in DIRECTIONS)) throw new ExplainError('EXPLAIN_ARGS', `--direction must be inbound, outbound or unspecified, not ${direction}`);
  if (flags.connection) return connectionFromFlags(url, flags, direction);
  const spec: RequestSpec = { direction, method: (flags.method ?? 'GET').toUpperCase() };
  let serviceHint: string | undefined;
  if (url) {
    let parsed: URL;
    try {
      parsed = new URL(/^[a-z]+:\/\//i.test(url) ? url : `http://${url.startsWith('/') ? `localhost${url}` : url}`);
    } catch {
      throw new ExplainError('EXPLAIN_ARGS', `not a URL or path: ${url}`);
    }
    spec.path = parsed.pathname + parsed.search;
    if (!url.startsWith('/')) {
      spec.host = parsed.host;
      serviceHint = parsed.hostname;
      spec.scheme = parsed.protocol.replace(/:$/, '');
      if (parsed.port) spec.port = Number(parsed.port);
    }
  }
  const headers: Record<string, string> = {};
  for (const h of flags.header ?? []) {
    const colon = h.indexOf(':');
    if (colon <= 0) throw new ExplainError('EXPLAIN_ARGS', `-H needs "name: value", got ${JSON.stringify(h)}`);
    headers[h.slice(0, colon).trim().toLowerCase()] = h.slice(colon + 1).trim();
  }
  if (headers['host'] !== undefined) {
    spec.host = headers['host'];
    serviceHint = headers['host'].replace(/:\d+$/, '');
    delete headers['host'];
  }
  if (Object.keys(headers).length > 0) spec.headers = headers;
  applyPeerFlags(spec, flags);
  if (flags.scheme !== undefined) spec.scheme = flags.scheme;
  for (const c of flags.claim ?? []) {
    const eq = c.indexOf('=');
    if (eq <= 0) throw new ExplainError('EXPLAIN_ARGS', `--claim needs name=value, got ${JSON.stringify(c)}`);
    (spec.claims ??= {})[c.slice(0, eq)] = c.slice(eq + 1);
  }
  return serviceHint === undefined ? { spec } : { spec, serviceHint };
}

/** `--connection --source ... tcp://catalog:9000`: an opaque TCP connection; HTTP flags are refused. */
function connectionFromFlags(url: string | undefined, flags: RequestFlags, direction: DirectionName): { spec: RequestSpec; serviceHint?: string } {
  const http = [flags.header?.length && '-H', flags.claim?.length && '--claim', flags.scheme !== undefined && '--scheme', flags.method !== undefined && flags.method.toUpperCase() !== 'GET' && '-X'].filter(Boolean);
  if (http.length > 0) throw new ExplainError('EXPLAIN_ARGS', `a connection has no ${http.join(', ')} (only --source, --source-address, --port and the URL's host and port)`);
  const spec: RequestSpec = { direction, connection: true };
  let serviceHint: string | undefined;
  if (url) {
    let parsed: URL;
    try {
      parsed = new URL(/^[a-z]+:\/\//i.test(url) ? url : `tcp://${url}`);
    } catch {
      throw new ExplainError('EXPLAIN_ARGS', `not a host[:port]: ${url}`);
    }
    serviceHint = parsed.hostname;
    if (parsed.port) spec.port = Number(parsed.port);
  }
  applyPeerFlags(spec, flags);
  return serviceHint === undefined ? { spec } : { spec, serviceHint };
}

/** --source, --source-address and --port, which requests and connections share. */
function applyPeerFlags(spec: RequestSpec, flags: RequestFlags): void {
  if (flags.source !== undefined) spec.source = flags.source;
  if (flags.sourceAddress !== undefined) spec.sourceAddress = flags.sourceAddress;
  if (flags.port !== undefined) {
    const port = Number(flags.port);
    if (!Number.isInteger(port)) throw new ExplainError('EXPLAIN_ARGS', `--port must be a number, not ${flags.port}`);
    spec.port = port;
  }
}

function summarize(o: Outcome, request: RequestSpec): string {
  if (request.connection) {
    if (o.action === 'closed') return `connection refused by ${o.rule ?? 'the filter (no rule named)'}`;
    return o.rule ? `connection admitted by ${o.rule}` : 'connection admitted (no rule decided: nothing denies it)';
  }
  if (o.action === 'local') {
    const l = o.local!;
    if (l.headers['location']) return `redirected (${l.status}) to ${l.headers['location']} by ${o.rule}`;
    if (l.status === 403) return `denied (403) by ${o.rule}`;
    if (l.status === 429) return `rate-limited (429) by ${o.rule}; retry after ${l.headers['retry-after']}s`;
    if (l.grpcStatus !== undefined) return `aborted with gRPC status ${l.grpcStatus} by ${o.rule}`;
    return `answered ${l.status} by ${o.rule}`;
  }
  const parts: string[] = [o.action === 'delayed' ? `sent on after a ${o.delayMs} ms delay` : 'sent on'];
  if (o.route) parts.push(`to version ${o.route.version} by ${o.route.id}`);
  else if (o.rule) parts.push(`allowed by ${o.rule}`);
  else parts.push('(no rule decided: nothing denies it, no route matches)');
  return parts.join(' ');
}

export async function explain(bundle: Bundle, service: string | undefined, request: RequestSpec): Promise<Explanation> {
  const filters = bundle.manifest.filters;
  const filter = filters.find((f) => f.service === service) ?? (service === undefined && filters.length === 1 ? filters[0] : undefined);
  if (!filter) {
    throw new ExplainError('EXPLAIN_SERVICE', `${service === undefined ? 'say which service (--service)' : `no policy for service ${service}`}; services: ${filters.map((f) => f.service).join(', ')}`);
  }
  const host = await DecisionHost.load(bundle.modules.get(filter.file)!);
  const outcome = host.decide(request);
  const explanation: Explanation = { service: filter.service, request, outcome, summary: summarize(outcome, request) };
  const span = outcome.rule ? filter.rules[outcome.rule] : undefined;
  if (span) {
    explanation.source = { span };
    try {
      const line = (await readFile(span.file, 'utf8')).split('\n')[span.line - 1];
      if (line !== undefined) explanation.source.line = line.trim();
    } catch {
      // The bundle may have been built elsewhere: the span is still the answer.
    }
  }
  return explanation;
}

export function formatExplanation(e: Explanation): string {
  const o = e.outcome;
  const out = [`${e.service}: ${e.summary}`];
  if (e.source) out.push(`  ${e.source.span.file}:${e.source.span.line}:${e.source.span.col}${e.source.line ? `  ${e.source.line}` : ''}`);
  if (o.rules.length > 0) out.push(`rules applied: ${o.rules.join(', ')}`);
  if (o.requestHeaders.length > 0) out.push(`request headers: ${o.requestHeaders.map(formatChange).join('; ')}`);
  if (o.responseHeaders.length > 0) out.push(`response headers: ${o.responseHeaders.map(formatChange).join('; ')}`);
  const metrics = Object.entries(o.metrics);
  if (metrics.length > 0) out.push(`counted: ${metrics.map(([k, v]) => `${k}=${v}`).join(', ')}`);
  return out.join('\n') + '\n';
}
