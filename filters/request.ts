// The view of one HTTP request that generated policy code evaluates
// conditions against, plus the effects a policy can have on it.
// In: the current HTTP context (host calls are made lazily, once per value).
// Out: matcher answers, local responses, the route property, a pending delay.
import { getPropertyString, getRequestHeader, nowNanoseconds, sendLocalResponse, setPropertyString } from "./hostcalls";
import { PROPERTY_ROUTE_VERSION, PROPERTY_SOURCE_PRINCIPAL, RULE_HEADER } from "./constants";
import { globMatchSegments, pathHasSegmentPrefix } from "./match";
import { BucketSet } from "./token-bucket";

export class Request {
  contextId: u32;
  private methodValue: string | null = null;
  private pathValue: string | null = null;
  private sourceValue: string | null = null;
  /** Sum of the injected delays that apply to this request, in milliseconds. */
  delayMs: f64 = 0;

  constructor(contextId: u32) {
    this.contextId = contextId;
  }

  get method(): string {
    if (this.methodValue === null) {
      const m = getRequestHeader(":method");
      this.methodValue = m !== null ? m : "";
    }
    return this.methodValue!;
  }

  /** `:path` without the query string. */
  get path(): string {
    if (this.pathValue === null) {
      const raw = getRequestHeader(":path");
      let p = raw !== null ? raw : "";
      const q = p.indexOf("?");
      if (q >= 0) p = p.substring(0, q);
      this.pathValue = p;
    }
    return this.pathValue!;
  }

  /** The peer's SPIFFE ID (property source.principal), "" when the host has none. */
  get source(): string {
    if (this.sourceValue === null) {
      const s = getPropertyString(PROPERTY_SOURCE_PRINCIPAL);
      this.sourceValue = s !== null ? s : "";
    }
    return this.sourceValue!;
  }

  methodIs(m: string): bool {
    return this.method == m;
  }

  pathIs(p: string): bool {
    return this.path == p;
  }

  pathPrefix(p: string): bool {
    return pathHasSegmentPrefix(this.path, p);
  }

  /** The header's value, "" when absent (rate-limit keys). */
  headerOrEmpty(name: string): string {
    const v = getRequestHeader(name);
    return v !== null ? v : "";
  }

  headerIs(name: string, value: string): bool {
    const v = getRequestHeader(name);
    return v !== null && v == value;
  }

  headerPrefix(name: string, prefix: string): bool {
    const v = getRequestHeader(name);
    return v !== null && v.startsWith(prefix);
  }

  headerPresent(name: string): bool {
    return getRequestHeader(name) !== null;
  }

  sourceIs(id: string): bool {
    return this.source == id;
  }

  sourceMatches(pattern: string): bool {
    return globMatchSegments(this.source, pattern);
  }

  /** Answers with `status` on behalf of `ruleId` (x-mesh-rule header and status details). */
  respond(status: i32, ruleId: string, body: string): void {
    const names = new Array<string>();
    const values = new Array<string>();
    names.push(RULE_HEADER);
    values.push(ruleId);
    names.push("content-type");
    values.push("text/plain");
    sendLocalResponse(status, ruleId, body, names, values);
  }

  deny(ruleId: string): void {
    this.respond(403, ruleId, "denied by " + ruleId + "\n");
  }

  abort(status: i32, ruleId: string): void {
    this.respond(status, ruleId, "aborted by " + ruleId + "\n");
  }

  /** Takes a token from `buckets` for `key`; answers 429 and returns false when none is left. */
  takeToken(buckets: BucketSet, key: string, ruleId: string): bool {
    const waitSeconds = buckets.take(key, nowNanoseconds());
    if (waitSeconds <= 0) return true;
    const names = new Array<string>();
    const values = new Array<string>();
    names.push(RULE_HEADER);
    values.push(ruleId);
    names.push("retry-after");
    values.push((<i64>Math.ceil(waitSeconds)).toString());
    names.push("content-type");
    values.push("text/plain");
    sendLocalResponse(429, ruleId, "rate limited by " + ruleId + "\n", names, values);
    return false;
  }

  addDelay(ms: f64): void {
    this.delayMs += ms;
  }

  routeTo(version: string): void {
    setPropertyString(PROPERTY_ROUTE_VERSION, version);
  }
}
