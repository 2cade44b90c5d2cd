// The access log line of one request (HTTP/1.x and HTTP/2 alike), and its
// JSON text. The proxy writes one per request, so the line is serialised by
// hand: the fields are known, most are absent or plain ASCII, and
// JSON.stringify of the whole object (22 fields, most undefined) was the
// largest single JavaScript cost per request (docs/runtime.md, Performance).
//
// In:  an AccessLogEntry. Out: the same JSON text JSON.stringify would give
//      (same field order, absent fields left out; test/runtime/access-log.test.ts).
import { logLater } from './log.ts';

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

/** Whether `s` can go between quotes as it is: ASCII without quotes, backslashes or control characters (the rest is left to JSON.stringify). */
function plain(s: string): boolean {
  // A loop, not a regular expression: for the short strings of a log line it is several times faster.
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x22 || c === 0x5c || c >= 0x7f) return false;
  }
  return true;
}

/**
 * `,"name":` and the value as a JSON string, or '' when absent. `key` is the
 * field's opening text up to and including the value's opening quote
 * (`,"name":"`): a plain value then costs two concatenations, not four.
 */
function str(key: string, s: string | undefined): string {
  if (s === undefined) return '';
  return plain(s) ? key + s + '"' : key.slice(0, -1) + JSON.stringify(s);
}

/** Formats as JSON.stringify does: a whole number or one with up to two decimals (durations) from integers, the rest by String. */
function num(n: number): string {
  if (n >= 0 && n < 1e15) {
    if (Number.isInteger(n)) return '' + n;
    const centi = Math.round(n * 100);
    if (centi / 100 === n) {
      const whole = Math.floor(centi / 100);
      const frac = centi - whole * 100;
      return whole + (frac % 10 === 0 ? '.' + frac / 10 : frac < 10 ? '.0' + frac : '.' + frac);
    }
  }
  return Number.isFinite(n) ? String(n) : 'null';
}

/** A value in a format the proxy made itself (hex ids): nothing to escape. */
function own(key: string, s: string | undefined): string {
  return s === undefined ? '' : key + s + '"';
}

/**
 * The entry as one line of JSON (no newline). Built from as few pieces as the
 * fields allow: every concatenation is a rope node the log buffer's write
 * walks again, and this runs once per request.
 */
export function accessLogLine(e: AccessLogEntry): string {
  // time and direction are the proxy's own (an ISO time, a role name).
  let line =
    '{"time":"' + e.time + '","direction":"' + e.direction + '"' + str(',"method":"', e.method) + str(',"path":"', e.path) +
    str(',"authority":"', e.authority) + str(',"destination_service":"', e.destination_service) +
    str(',"version":"', e.version) + str(',"endpoint":"', e.endpoint) +
    ',"status":' + num(e.status) + ',"duration_ms":' + num(e.duration_ms) + ',"bytes_sent":' + num(e.bytes_sent) +
    str(',"rule":"', e.rule) + str(',"rules":"', e.rules) + str(',"filter":"', e.filter) + str(',"reason":"', e.reason) + str(',"error":"', e.error);
  if (e.attempts !== undefined) line += ',"attempts":' + num(e.attempts);
  if (e.retry_budget_spent !== undefined) line += ',"retry_budget_spent":true';
  return (
    line + str(',"protocol":"', e.protocol) + str(',"grpc_status":"', e.grpc_status) + own(',"trace_id":"', e.trace_id) +
    own(',"span_id":"', e.span_id) + own(',"parent_span_id":"', e.parent_span_id) + '}'
  );
}

/**
 * Where a proxy's access log goes: a log sink given to the proxy (tests)
 * receives each entry as an object; the default, stdout, gets the hand-built line
 * (made when the log is next written out).
 */
export function accessLogSink(log: ((entry: Record<string, unknown>) => void) | undefined): (entry: AccessLogEntry) => void {
  return log ? (entry) => log({ ...entry }) : (entry) => logLater(entry, accessLogLine);
}
