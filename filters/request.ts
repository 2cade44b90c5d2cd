// The view of one HTTP request that generated policy code evaluates
// conditions against, plus the effects a policy can have on it. An opaque
// TCP connection is seen through the same view: its decision reads only the
// connection fields (source, source address, destination port).
// In: the current HTTP or network context (host calls are made lazily, once per value).
// Out: field values (null when absent), local responses, header changes, the
// route properties, a pending delay, a connection close, and the trace of rules that applied.
import {
  addHeader,
  closeDownstream,
  countMetric,
  getPropertyInt64,
  getPropertyString,
  getRequestHeader,
  log,
  nowNanoseconds,
  removeHeader,
  sendLocalResponse,
  setHeader,
  setPropertyString,
  utf8,
  KEY_AUTHORITY,
  KEY_CONTENT_TYPE,
  KEY_METHOD,
  KEY_PATH,
} from "./hostcalls";
import {
  LOG_INFO,
  MAP_HTTP_REQUEST_HEADERS,
  PROPERTY_DESTINATION_PORT,
  PROPERTY_JWT_CLAIMS_PREFIX,
  PROPERTY_CONNECTION_RULE,
  PROPERTY_REQUEST_SCHEME,
  PROPERTY_ROUTE_ID,
  PROPERTY_ROUTE_VERSION,
  PROPERTY_RULES,
  PROPERTY_TRACE,
  PROPERTY_SOURCE_ADDRESS,
  PROPERTY_SOURCE_PRINCIPAL,
  RULE_HEADER,
} from "./constants";
import { Cidr, parseAddress } from "./ip";
import { isNull } from "./match";
import { BucketSet } from "./token-bucket";

const KEY_SOURCE_PRINCIPAL = utf8(PROPERTY_SOURCE_PRINCIPAL);
const KEY_SOURCE_ADDRESS = utf8(PROPERTY_SOURCE_ADDRESS);
const KEY_DESTINATION_PORT = utf8(PROPERTY_DESTINATION_PORT);
const KEY_REQUEST_SCHEME = utf8(PROPERTY_REQUEST_SCHEME);
const KEY_ROUTE_VERSION = utf8(PROPERTY_ROUTE_VERSION);
const KEY_ROUTE_ID = utf8(PROPERTY_ROUTE_ID);
const KEY_RULES = utf8(PROPERTY_RULES);
const KEY_CONNECTION_RULE = utf8(PROPERTY_CONNECTION_RULE);

/**
 * Whether mesh.rules is published. Off unless the host asks for it through the
 * mesh.trace property: setting it costs a host call per request (about a
 * third of a decision) and only hosts that log or explain decisions read it.
 */
let tracing = false;

/** Reads mesh.trace once (root context, proxy_on_configure). */
export function configureTrace(): void {
  const value = getPropertyString(utf8(PROPERTY_TRACE));
  tracing = value !== null && value.length > 0 && value != "0";
}

/** Header values looked up by the generated code, cached per request by slot number. */
let headerSlotCount: i32 = 0;
/** Each slot's header name, UTF-8, encoded on first use. */
let slotKeys = new Array<ArrayBuffer | null>(0);

export function setHeaderSlotCount(n: i32): void {
  headerSlotCount = n;
  slotKeys = new Array<ArrayBuffer | null>(n);
}

/**
 * The previous request's method, path, host and peer identity, handed to the
 * host-call wrappers: when a value repeats (it mostly does, per client) the
 * same string object comes back, with no allocation.
 */
let lastMethod: string | null = null;
let lastRawPath: string | null = null;
let lastHost: string | null = null;
let lastSource: string | null = null;

/** The segment after `/<label>/` in a SPIFFE ID (ns, sa), or null. */
function spiffeSegment(id: string, label: string): string | null {
  const marker = "/" + label + "/";
  const at = id.indexOf(marker);
  if (at < 0) return null;
  const start = at + marker.length;
  const end = id.indexOf("/", start);
  return end < 0 ? id.substring(start) : id.substring(start, end);
}

export class Request {
  contextId: u32;
  private methodValue: string | null = null;
  private rawPathValue: string | null = null;
  private pathValue: string | null = null;
  private hostLoaded: bool = false;
  private hostValue: string | null = null;
  private sourceLoaded: bool = false;
  private sourceValue: string | null = null;
  private grpcLoaded: bool = false;
  private grpcServiceValue: string | null = null;
  private grpcMethodValue: string | null = null;
  private portValue: i64 = -2;
  private addressLoaded: bool = false;
  private addressValue: Uint8Array | null = null;
  private slots: StaticArray<string | null>;
  private slotLoaded: StaticArray<bool>;
  /** Sum of the injected delays that apply to this request, in milliseconds. */
  delayMs: f64 = 0;
  /** Ids of the rules that applied (allow, audits, rate limits, faults, route), comma-separated. */
  trace: string = "";

  constructor(contextId: u32) {
    this.contextId = contextId;
    this.slots = new StaticArray<string | null>(headerSlotCount);
    this.slotLoaded = new StaticArray<bool>(headerSlotCount);
  }

  /**
   * Makes this object the view of a new request (policy.ts keeps one and
   * reuses it: three allocations fewer per decision). Every field above.
   */
  reset(contextId: u32): Request {
    this.contextId = contextId;
    this.methodValue = null;
    this.rawPathValue = null;
    this.pathValue = null;
    this.hostLoaded = false;
    this.hostValue = null;
    this.sourceLoaded = false;
    this.sourceValue = null;
    this.grpcLoaded = false;
    this.grpcServiceValue = null;
    this.grpcMethodValue = null;
    this.portValue = -2;
    this.addressLoaded = false;
    this.addressValue = null;
    for (let i = 0; i < this.slots.length; i++) {
      unchecked((this.slots[i] = null));
      unchecked((this.slotLoaded[i] = false));
    }
    this.delayMs = 0;
    this.trace = "";
    return this;
  }

  get method(): string {
    if (isNull(this.methodValue)) {
      const m = getRequestHeader(KEY_METHOD, lastMethod);
      if (isNull(m)) this.methodValue = "";
      else this.methodValue = lastMethod = m;
    }
    return changetype<string>(this.methodValue);
  }

  /** `:path` as sent, query string included. */
  get rawPath(): string {
    if (isNull(this.rawPathValue)) {
      const raw = getRequestHeader(KEY_PATH, lastRawPath);
      if (isNull(raw)) this.rawPathValue = "/";
      else this.rawPathValue = lastRawPath = raw;
    }
    return changetype<string>(this.rawPathValue);
  }

  /** `:path` without the query string. */
  get path(): string {
    if (isNull(this.pathValue)) {
      const p = this.rawPath;
      const q = p.indexOf("?");
      this.pathValue = q >= 0 ? p.substring(0, q) : p;
    }
    return changetype<string>(this.pathValue);
  }

  get host(): string | null {
    if (!this.hostLoaded) {
      const h = getRequestHeader(KEY_AUTHORITY, lastHost);
      if (!isNull(h)) lastHost = h;
      this.hostValue = h;
      this.hostLoaded = true;
    }
    return this.hostValue;
  }

  /** The peer's SPIFFE ID (property source.principal), null when the host has none. */
  get source(): string | null {
    if (!this.sourceLoaded) {
      const s = getPropertyString(KEY_SOURCE_PRINCIPAL, lastSource);
      if (!isNull(s)) lastSource = s;
      this.sourceValue = s;
      this.sourceLoaded = true;
    }
    return this.sourceValue;
  }

  get sourceNamespace(): string | null {
    const s = this.source;
    return s !== null ? spiffeSegment(s, "ns") : null;
  }

  get sourceAccount(): string | null {
    const s = this.source;
    return s !== null ? spiffeSegment(s, "sa") : null;
  }

  /** The value of header slot `slot` (name lower-case), fetched once per request. */
  hdr(slot: i32, name: string): string | null {
    if (!unchecked(this.slotLoaded[slot])) {
      let key = slotKeys[slot];
      if (key === null) {
        key = utf8(name);
        slotKeys[slot] = key;
      }
      unchecked((this.slots[slot] = getRequestHeader(key)));
      unchecked((this.slotLoaded[slot] = true));
    }
    return unchecked(this.slots[slot]);
  }

  /** The first query parameter `name` (undecoded), "" when given without "=", null when absent. */
  query(name: string): string | null {
    const p = this.rawPath;
    const q = p.indexOf("?");
    if (q < 0) return null;
    let start = q + 1;
    while (start <= p.length) {
      let end = p.indexOf("&", start);
      if (end < 0) end = p.length;
      const eq = p.indexOf("=", start);
      const keyEnd = eq >= 0 && eq < end ? eq : end;
      if (keyEnd - start == name.length && p.substring(start, keyEnd) == name) {
        return keyEnd == end ? "" : p.substring(keyEnd + 1, end);
      }
      start = end + 1;
    }
    return null;
  }

  /** A verified JWT claim the host supplies as property mesh.jwt.claims.<name>. */
  claim(name: string): string | null {
    return getPropertyString(utf8(PROPERTY_JWT_CLAIMS_PREFIX + name));
  }

  private loadGrpc(): void {
    if (this.grpcLoaded) return;
    this.grpcLoaded = true;
    const ct = getRequestHeader(KEY_CONTENT_TYPE);
    if (ct === null || !ct.startsWith("application/grpc")) return;
    const p = this.path;
    const slash = p.indexOf("/", 1);
    if (!p.startsWith("/") || slash < 0) return;
    this.grpcServiceValue = p.substring(1, slash);
    this.grpcMethodValue = p.substring(slash + 1);
  }

  get grpcService(): string | null {
    this.loadGrpc();
    return this.grpcServiceValue;
  }

  get grpcMethod(): string | null {
    this.loadGrpc();
    return this.grpcMethodValue;
  }

  /** Property destination.port, -1 when the host has none. */
  get destinationPort(): i64 {
    if (this.portValue == -2) this.portValue = getPropertyInt64(KEY_DESTINATION_PORT, -1);
    return this.portValue;
  }

  sourceIpIn(blocks: StaticArray<Cidr>): bool {
    if (!this.addressLoaded) {
      this.addressLoaded = true;
      const a = getPropertyString(KEY_SOURCE_ADDRESS);
      this.addressValue = a !== null ? parseAddress(a) : null;
    }
    const address = this.addressValue;
    if (address === null) return false;
    for (let i = 0; i < blocks.length; i++) if (blocks[i].contains(address)) return true;
    return false;
  }

  /** Rate-limit key helpers: the value, "" when absent (requests without it share one bucket). */
  keyHeader(slot: i32, name: string): string {
    const v = this.hdr(slot, name);
    return v !== null ? v : "";
  }

  get keySource(): string {
    const s = this.source;
    return s !== null ? s : "";
  }

  get keyAddress(): string {
    const a = getPropertyString(KEY_SOURCE_ADDRESS);
    if (a === null) return "";
    // The peer's IP without its port: one bucket per client address.
    if (a.startsWith("[")) {
      const end = a.indexOf("]");
      return end < 0 ? a : a.substring(1, end);
    }
    const last = a.lastIndexOf(":");
    return last < 0 ? a : a.substring(0, last);
  }

  /** Notes that a rule applied, for the mesh.rules property. */
  applied(ruleId: string): void {
    if (!tracing) return;
    this.trace = this.trace.length == 0 ? ruleId : this.trace + "," + ruleId;
  }

  /** Answers with `status` on behalf of `ruleId` (x-mesh-rule header and status details). */
  respond(status: i32, ruleId: string, body: string, contentType: string): void {
    const names = new Array<string>();
    const values = new Array<string>();
    names.push(RULE_HEADER);
    values.push(ruleId);
    names.push("content-type");
    values.push(contentType);
    sendLocalResponse(status, ruleId, body, names, values);
  }

  deny(ruleId: string): void {
    this.respond(403, ruleId, "denied by " + ruleId + "\n", "text/plain");
  }

  /** Closes the opaque TCP connection of this (network) context on behalf of `ruleId`. */
  closeConnection(ruleId: string): void {
    setPropertyString(KEY_CONNECTION_RULE, ruleId);
    closeDownstream();
  }

  abort(status: i32, ruleId: string): void {
    this.respond(status, ruleId, "aborted by " + ruleId + "\n", "text/plain");
  }

  /** A gRPC error as a trailers-only response: HTTP 200 with grpc-status. */
  abortGrpc(grpcStatus: i32, ruleId: string): void {
    const names = new Array<string>();
    const values = new Array<string>();
    names.push(RULE_HEADER);
    values.push(ruleId);
    names.push("content-type");
    values.push("application/grpc");
    names.push("grpc-status");
    values.push(grpcStatus.toString());
    names.push("grpc-message");
    values.push("aborted by " + ruleId);
    sendLocalResponse(200, ruleId, "", names, values, grpcStatus);
  }

  /** Path after replacing the matched segment prefix `matched` with `value` (Gateway API ReplacePrefixMatch). */
  replacePrefix(matched: string, value: string): string {
    const p = this.path;
    let rest = p.length >= matched.length ? p.substring(matched.length) : "";
    if (matched.endsWith("/") && !rest.startsWith("/")) rest = "/" + rest;
    let out = value.endsWith("/") && rest.startsWith("/") ? value + rest.substring(1) : value + rest;
    if (out.length == 0) out = "/";
    return out;
  }

  /** The query string with its "?", or "". */
  get queryString(): string {
    const p = this.rawPath;
    const q = p.indexOf("?");
    return q >= 0 ? p.substring(q) : "";
  }

  /** Sends a redirect; empty scheme/host/path keep the request's, port 0 keeps (or, with a new scheme, drops) it. */
  redirect(status: i32, ruleId: string, scheme: string, host: string, port: i32, path: string): void {
    let s = scheme;
    if (s.length == 0) {
      const fromHost = getPropertyString(KEY_REQUEST_SCHEME);
      s = fromHost !== null && fromHost.length > 0 ? fromHost : "http";
    }
    const authority = this.host;
    const current = authority !== null ? authority : "";
    let h = host;
    let portText = "";
    const colon = current.lastIndexOf(":");
    const currentHost = colon >= 0 && !current.endsWith("]") ? current.substring(0, colon) : current;
    if (h.length == 0) h = currentHost;
    if (port > 0) portText = ":" + port.toString();
    else if (scheme.length == 0 && colon >= 0 && !current.endsWith("]")) portText = current.substring(colon);
    const p = path.length > 0 ? path : this.path;
    const location = s + "://" + h + portText + p + this.queryString;
    const names = new Array<string>();
    const values = new Array<string>();
    names.push(RULE_HEADER);
    values.push(ruleId);
    names.push("location");
    values.push(location);
    sendLocalResponse(status, ruleId, "", names, values);
  }

  setRequestHeader(name: string, value: string): void {
    setHeader(MAP_HTTP_REQUEST_HEADERS, name, value);
  }

  addRequestHeader(name: string, value: string): void {
    addHeader(MAP_HTTP_REQUEST_HEADERS, name, value);
  }

  removeRequestHeader(name: string): void {
    removeHeader(MAP_HTTP_REQUEST_HEADERS, name);
  }

  /** Rewrites `:path` (the query string is kept). */
  rewritePath(path: string): void {
    setHeader(MAP_HTTP_REQUEST_HEADERS, ":path", path + this.queryString);
  }

  rewriteHost(host: string): void {
    setHeader(MAP_HTTP_REQUEST_HEADERS, ":authority", host);
  }

  /**
   * Takes a token from `buckets` for `key`. Returns false when a 429 was sent;
   * a dry-run limit logs and counts instead and returns true.
   */
  takeToken(buckets: BucketSet, key: string, ruleId: string, dryRun: bool): bool {
    const waitSeconds = buckets.take(key, nowNanoseconds());
    if (waitSeconds <= 0) {
      this.applied(ruleId);
      return true;
    }
    if (dryRun) {
      dryRunHit(ruleId, "would rate-limit");
      return true;
    }
    const reset = (<i64>Math.ceil(waitSeconds)).toString();
    const names = new Array<string>();
    const values = new Array<string>();
    names.push(RULE_HEADER);
    values.push(ruleId);
    names.push("retry-after");
    values.push(reset);
    // IETF draft RateLimit header fields: the bucket size, what is left, seconds until a token.
    names.push("ratelimit-limit");
    values.push((<i64>buckets.burst).toString());
    names.push("ratelimit-remaining");
    values.push("0");
    names.push("ratelimit-reset");
    values.push(reset);
    names.push("content-type");
    values.push("text/plain");
    sendLocalResponse(429, ruleId, "rate limited by " + ruleId + "\n", names, values);
    return false;
  }

  addDelay(ms: f64, ruleId: string): void {
    this.delayMs += ms;
    this.applied(ruleId);
  }

  routeTo(version: string, ruleId: string): void {
    setPropertyString(KEY_ROUTE_VERSION, version);
    setPropertyString(KEY_ROUTE_ID, ruleId);
    this.applied(ruleId);
  }

  /** Publishes the trace as property mesh.rules (for access logs, meshc test and explain) when tracing is on. */
  publishTrace(): void {
    if (this.trace.length > 0) setPropertyString(KEY_RULES, this.trace);
  }
}

/** A dry-run rule that would have changed the decision: logged and counted, not enforced. */
export function dryRunHit(ruleId: string, what: string): void {
  log(LOG_INFO, "meshc dry-run: " + ruleId + " " + what);
  countMetric("meshc_dry_run." + ruleId);
}

/** An audit rule matched an opaque TCP connection (no method or path to show): logged and counted. */
export function connectionAuditHit(r: Request, ruleId: string): void {
  const s = r.source;
  log(LOG_INFO, "meshc audit: " + ruleId + " matched a TCP connection from " + (s !== null ? s : "an unauthenticated peer"));
  countMetric("meshc_audit." + ruleId);
  r.applied(ruleId);
}

/** An audit rule matched: logged and counted. */
export function auditHit(r: Request, ruleId: string): void {
  log(LOG_INFO, "meshc audit: " + ruleId + " matched " + r.method + " " + r.path);
  countMetric("meshc_audit." + ruleId);
  r.applied(ruleId);
}
