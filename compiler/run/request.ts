// What a policy decision is asked and what it answers, independent of the
// engine (the compiled Wasm in host.ts, or the reference interpreter).
// In: a request description (from YAML/JSON tests, `meshc explain` flags).
// Out: typed RequestSpec / Outcome, and outcome comparison helpers.
import { CodedError } from '../../protocol/errors.ts';

export type DirectionName = 'inbound' | 'outbound' | 'unspecified';

export const DIRECTIONS: Record<DirectionName, number> = { unspecified: 0, inbound: 1, outbound: 2 };

export interface RequestSpec {
  direction: DirectionName;
  /**
   * An opaque TCP connection rather than an HTTP request: the filter's
   * proxy_on_new_connection decides, reading only direction, source,
   * source address and port (compiler/connection.ts).
   */
  connection?: boolean;
  method?: string;
  /** `:path`, query string included. */
  path?: string;
  /** `:authority`. */
  host?: string;
  /** Request headers (names lower-cased on input). */
  headers?: Record<string, string>;
  /** Property source.principal (the peer's SPIFFE ID). */
  source?: string;
  /** Property source.address ("ip:port"). */
  sourceAddress?: string;
  /** Property destination.port. */
  port?: number;
  /** Property request.scheme. */
  scheme?: string;
  /** Properties mesh.jwt.claims.<name>. */
  claims?: Record<string, string>;
}

export interface HeaderChange {
  op: 'set' | 'add' | 'remove';
  name: string;
  value?: string;
}

/** Everything observable about one decision. */
export interface Outcome {
  /** continue: sent on; local: answered by the filter; delayed: paused for an injected delay, then sent on; closed: a connection the filter closed. */
  action: 'continue' | 'local' | 'delayed' | 'closed';
  /** The rule that closed a connection (property mesh.connection.rule). */
  closedBy?: string;
  local?: { status: number; headers: Record<string, string>; body: string; grpcStatus?: number };
  /** The deciding rule: the local response's x-mesh-rule, else the route's id, else the allowing rule. */
  rule?: string;
  route?: { version: string; id: string };
  /** Property mesh.rules: every rule that applied, in order. */
  rules: string[];
  requestHeaders: HeaderChange[];
  /** Changes applied to a response (an empty 200 is passed through). */
  responseHeaders: HeaderChange[];
  delayMs?: number;
  /** Counters the filter incremented (dry-run, audit). */
  metrics: Record<string, number>;
}

export class RequestSpecError extends CodedError {}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function stringMap(v: unknown, what: string, lower: boolean): Record<string, string> | undefined {
  if (v === undefined) return undefined;
  if (!isRecord(v)) throw new RequestSpecError('REQUEST_INVALID', `${what} must be a map of names to strings`);
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v)) out[lower ? k.toLowerCase() : k] = String(val);
  return out;
}

const KNOWN_FIELDS = new Set(['connection', 'direction', 'method', 'path', 'host', 'headers', 'source', 'source_address', 'sourceAddress', 'port', 'scheme', 'claims']);

/** A request from parsed YAML/JSON (`source_address` and `sourceAddress` both accepted). */
export function parseRequestSpec(value: unknown, defaultDirection: DirectionName = 'unspecified'): RequestSpec {
  if (!isRecord(value)) throw new RequestSpecError('REQUEST_INVALID', 'a request must be a map (method, path, headers, source, ...)');
  for (const k of Object.keys(value)) if (!KNOWN_FIELDS.has(k)) throw new RequestSpecError('REQUEST_INVALID', `unknown request field ${k} (known: ${[...KNOWN_FIELDS].join(', ')})`);
  const direction = (value['direction'] ?? defaultDirection) as DirectionName;
  if (!(direction in DIRECTIONS)) throw new RequestSpecError('REQUEST_INVALID', `direction must be inbound, outbound or unspecified, not ${String(direction)}`);
  const spec: RequestSpec = { direction };
  if (value['connection'] !== undefined) {
    if (typeof value['connection'] !== 'boolean') throw new RequestSpecError('REQUEST_INVALID', `connection must be true or false, not ${String(value['connection'])}`);
    if (value['connection']) {
      const http = ['method', 'path', 'host', 'headers', 'scheme', 'claims'].filter((k) => value[k] !== undefined);
      if (http.length > 0) throw new RequestSpecError('REQUEST_INVALID', `a connection has no ${http.join(', ')} (only direction, source, source_address, port)`);
      spec.connection = true;
    }
  }
  if (value['method'] !== undefined) spec.method = String(value['method']).toUpperCase();
  if (value['path'] !== undefined) spec.path = String(value['path']);
  if (value['host'] !== undefined) spec.host = String(value['host']);
  const headers = stringMap(value['headers'], 'headers', true);
  if (headers) spec.headers = headers;
  if (value['source'] !== undefined) spec.source = String(value['source']);
  const address = value['source_address'] ?? value['sourceAddress'];
  if (address !== undefined) spec.sourceAddress = String(address);
  if (value['port'] !== undefined) {
    const port = Number(value['port']);
    if (!Number.isInteger(port)) throw new RequestSpecError('REQUEST_INVALID', `port must be a number, not ${String(value['port'])}`);
    spec.port = port;
  }
  if (value['scheme'] !== undefined) spec.scheme = String(value['scheme']);
  const claims = stringMap(value['claims'], 'claims', false);
  if (claims) spec.claims = claims;
  return spec;
}

/** The deciding rule of an outcome (see Outcome.rule). */
export function decidingRule(o: Omit<Outcome, 'rule'>): string | undefined {
  if (o.closedBy) return o.closedBy;
  const local = o.local?.headers['x-mesh-rule'];
  if (local) return local;
  if (o.route) return o.route.id;
  return o.rules[0];
}
