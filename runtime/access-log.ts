// The access log line of one request (HTTP/1.x and HTTP/2 alike), and its
// JSON text. The proxy writes one per request, so the line is serialised by
// hand: the fields are known, most are absent or plain ASCII, and
// JSON.stringify of the whole object (22 fields, most undefined) was the
// largest single JavaScript cost per request (docs/runtime.md, Performance).
//
// In:  an AccessLogEntry. Out: its line, written as UTF-8 bytes into the log's
//      buffer: the JSON text JSON.stringify would give (same field order, absent
//      fields left out; test/runtime/access-log.test.ts).
import { Buffer } from 'node:buffer';
import { logLater, type LineFormat } from './log.ts';

export interface AccessLogEntry {
  time: string;
  direction: string;
  method: string;
  path: string;
  authority: string;
  destination_service: string;
  version: string | undefined;
  endpoint: string | undefined;
  status: number;
  duration_ms: number;
  bytes_sent: number;
  /** The rule id of a filter's local response. */
  rule: string | undefined;
  /** mesh.rules, as a filter set it. */
  rules: string | undefined;
  filter: string | undefined;
  reason: string | undefined;
  error: string | undefined;
  attempts: number | undefined;
  retry_budget_spent: true | undefined;
  /** HTTP/2 requests only. */
  protocol: string | undefined;
  grpc_status: string | undefined;
  trace_id: string | undefined;
  span_id: string | undefined;
  parent_span_id: string | undefined;
}

/** A field's opening text as bytes: `,"name":` and, for a string value, its opening quote. */
function key(text: string): Uint8Array {
  return Buffer.from(text, 'latin1');
}

function putBytes(buf: Buffer, at: number, bytes: Uint8Array): number {
  // Keys are a few bytes: a loop beats the fixed cost of TypedArray.set.
  for (let i = 0; i < bytes.length; i++) buf[at + i] = bytes[i]!;
  return at + bytes.length;
}

/** A value the proxy made itself (an ISO time, a role name, hex ids): ASCII with nothing to escape. */
function putOwn(buf: Buffer, at: number, s: string): number {
  for (let i = 0; i < s.length; i++) buf[at + i] = s.charCodeAt(i);
  return at + s.length;
}

/**
 * A string's JSON text without its quotes. Plain ASCII (nearly every value)
 * is copied as it is checked; anything else (quotes, backslashes, controls,
 * non-ASCII) is rewritten from `at` as JSON.stringify escapes it, in UTF-8.
 */
function putText(buf: Buffer, at: number, s: string): number {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x22 || c === 0x5c || c >= 0x7f) {
      const json = JSON.stringify(s);
      return at + buf.write(json.slice(1, -1), at, 'utf8');
    }
    buf[at + i] = c;
  }
  return at + s.length;
}

/** A whole number 0 ≤ n < 1e15 in decimal. */
function putWhole(buf: Buffer, at: number, n: number): number {
  let digits = 1;
  for (let t = n; t >= 10; t = Math.floor(t / 10)) digits++;
  const end = at + digits;
  let p = end;
  do {
    const q = Math.floor(n / 10);
    buf[--p] = 0x30 + n - q * 10;
    n = q;
  } while (n > 0);
  return end;
}

/** A number as JSON.stringify writes it: whole numbers and ones with up to two decimals (durations) from digits, the rest by String. */
function putNumber(buf: Buffer, at: number, n: number): number {
  if (n >= 0 && n < 1e15) {
    if (Number.isInteger(n)) return putWhole(buf, at, n);
    const centi = Math.round(n * 100);
    if (centi / 100 === n) {
      const whole = Math.floor(centi / 100);
      const frac = centi - whole * 100;
      at = putWhole(buf, at, whole);
      buf[at++] = 0x2e;
      if (frac % 10 === 0) {
        buf[at++] = 0x30 + frac / 10;
      } else {
        buf[at++] = 0x30 + Math.floor(frac / 10);
        buf[at++] = 0x30 + (frac % 10);
      }
      return at;
    }
  }
  return putOwn(buf, at, Number.isFinite(n) ? String(n) : 'null');
}

const TIME = key('{"time":"');
const DIRECTION = key('","direction":"');
const METHOD = key('","method":"');
const PATH = key(',"path":"');
const AUTHORITY = key(',"authority":"');
const DESTINATION_SERVICE = key(',"destination_service":"');
const VERSION = key(',"version":"');
const ENDPOINT = key(',"endpoint":"');
const STATUS = key(',"status":');
const DURATION_MS = key(',"duration_ms":');
const BYTES_SENT = key(',"bytes_sent":');
const RULE = key(',"rule":"');
const RULES = key(',"rules":"');
const FILTER = key(',"filter":"');
const REASON = key(',"reason":"');
const ERROR = key(',"error":"');
const ATTEMPTS = key(',"attempts":');
const RETRY_BUDGET_SPENT = key(',"retry_budget_spent":true');
const PROTOCOL = key(',"protocol":"');
const GRPC_STATUS = key(',"grpc_status":"');
const TRACE_ID = key(',"trace_id":"');
const SPAN_ID = key(',"span_id":"');
const PARENT_SPAN_ID = key(',"parent_span_id":"');
const QUOTE = 0x22;

/** `,"name":"value"` for a string field that may be absent. */
function putField(buf: Buffer, at: number, name: Uint8Array, s: string | undefined): number {
  if (s === undefined) return at;
  at = putText(buf, putBytes(buf, at, name), s);
  buf[at] = QUOTE;
  return at + 1;
}

function putOwnField(buf: Buffer, at: number, name: Uint8Array, s: string | undefined): number {
  if (s === undefined) return at;
  at = putOwn(buf, putBytes(buf, at, name), s);
  buf[at] = QUOTE;
  return at + 1;
}

const len = (s: string | undefined): number => (s === undefined ? 0 : s.length);

/** Every key, the three numbers at their longest, the attempts count and the braces. */
const FIXED_BYTES =
  [TIME, DIRECTION, METHOD, PATH, AUTHORITY, DESTINATION_SERVICE, VERSION, ENDPOINT, STATUS, DURATION_MS, BYTES_SENT, RULE, RULES, FILTER, REASON, ERROR,
    ATTEMPTS, RETRY_BUDGET_SPENT, PROTOCOL, GRPC_STATUS, TRACE_ID, SPAN_ID, PARENT_SPAN_ID].reduce((n, k) => n + k.length + 1, 0) + 4 * 24 + 2;

/**
 * The access log's line format (runtime/log.ts): the entry's JSON, written
 * as bytes straight into the log's buffer. Building it as a string instead
 * made a rope of ~30 pieces that the buffer's write then flattened and
 * encoded again (docs/runtime.md, Ninth round).
 */
export const ACCESS_LOG_LINE: LineFormat<AccessLogEntry> = {
  maxBytes(e) {
    // A character takes at most 6 bytes of JSON (\u001f); a UTF-16 unit at most 3 of UTF-8.
    const text =
      len(e.time) + len(e.direction) + len(e.method) + len(e.path) + len(e.authority) + len(e.destination_service) + len(e.version) + len(e.endpoint) +
      len(e.rule) + len(e.rules) + len(e.filter) + len(e.reason) + len(e.error) + len(e.protocol) + len(e.grpc_status) + len(e.trace_id) +
      len(e.span_id) + len(e.parent_span_id);
    return FIXED_BYTES + 6 * text;
  },

  write(e, buf, at) {
    // time and direction are the proxy's own; each key's text closes the value before it where that is a string.
    at = putOwn(buf, putBytes(buf, at, TIME), e.time);
    at = putOwn(buf, putBytes(buf, at, DIRECTION), e.direction);
    at = putText(buf, putBytes(buf, at, METHOD), e.method);
    buf[at++] = QUOTE;
    at = putField(buf, at, PATH, e.path);
    at = putField(buf, at, AUTHORITY, e.authority);
    at = putField(buf, at, DESTINATION_SERVICE, e.destination_service);
    at = putField(buf, at, VERSION, e.version);
    at = putField(buf, at, ENDPOINT, e.endpoint);
    at = putNumber(buf, putBytes(buf, at, STATUS), e.status);
    at = putNumber(buf, putBytes(buf, at, DURATION_MS), e.duration_ms);
    at = putNumber(buf, putBytes(buf, at, BYTES_SENT), e.bytes_sent);
    at = putField(buf, at, RULE, e.rule);
    at = putField(buf, at, RULES, e.rules);
    at = putField(buf, at, FILTER, e.filter);
    at = putField(buf, at, REASON, e.reason);
    at = putField(buf, at, ERROR, e.error);
    if (e.attempts !== undefined) at = putNumber(buf, putBytes(buf, at, ATTEMPTS), e.attempts);
    if (e.retry_budget_spent !== undefined) at = putBytes(buf, at, RETRY_BUDGET_SPENT);
    at = putField(buf, at, PROTOCOL, e.protocol);
    at = putField(buf, at, GRPC_STATUS, e.grpc_status);
    at = putOwnField(buf, at, TRACE_ID, e.trace_id);
    at = putOwnField(buf, at, SPAN_ID, e.span_id);
    at = putOwnField(buf, at, PARENT_SPAN_ID, e.parent_span_id);
    buf[at] = 0x7d;
    return at + 1;
  },
};

/**
 * Where a proxy's access log goes: a log sink given to the proxy (tests)
 * receives each entry as an object; the default, stdout, gets the hand-built line
 * (made when the log is next written out).
 */
export function accessLogSink(log: ((entry: Record<string, unknown>) => void) | undefined): (entry: AccessLogEntry) => void {
  return log ? (entry) => log({ ...entry }) : (entry) => logLater(entry, ACCESS_LOG_LINE);
}
