// The hand-written access-log serialiser must give exactly what JSON.stringify
// gives for the same entry: field order, absent fields left out, escaping of
// whatever a client put in the path or Host, non-ASCII and control characters;
// and it must stay within the bytes it said it needs.
import { Buffer } from 'node:buffer';
import { describe, expect, it } from 'vitest';
import { ACCESS_LOG_LINE, type AccessLogEntry } from '../../runtime/access-log.ts';

/** The entry's line as the log writes it: into a buffer, here after other bytes, which must stay as they were. */
function accessLogLine(e: AccessLogEntry): string {
  const at = 7;
  const need = ACCESS_LOG_LINE.maxBytes(e);
  const buf = Buffer.alloc(at + need + 16, 0xee);
  const end = ACCESS_LOG_LINE.write(e, buf, at);
  expect(end - at).toBeLessThanOrEqual(need);
  expect(buf.subarray(0, at).every((b) => b === 0xee)).toBe(true);
  expect(buf.subarray(end).every((b) => b === 0xee)).toBe(true);
  return buf.toString('utf8', at, end);
}

function entry(over: Partial<AccessLogEntry> = {}): AccessLogEntry {
  return {
    time: '2026-11-25T14:00:00.000Z',
    direction: 'outbound',
    method: 'GET',
    path: '/items/1?x=2',
    authority: 'catalog:8080',
    destination_service: 'catalog',
    version: undefined,
    endpoint: undefined,
    status: 200,
    duration_ms: 1.25,
    bytes_sent: 13,
    rule: undefined,
    rules: undefined,
    filter: undefined,
    reason: undefined,
    error: undefined,
    attempts: undefined,
    retry_budget_spent: undefined,
    protocol: undefined,
    grpc_status: undefined,
    trace_id: undefined,
    span_id: undefined,
    parent_span_id: undefined,
    ...over,
  };
}

const full: Partial<AccessLogEntry> = {
  version: 'v2',
  endpoint: '10.0.0.7:8080',
  rule: 'catalog/deny/no-admin',
  rules: 'catalog/route/default,catalog/deny/no-admin',
  filter: 'catalog',
  reason: 'upstream-timeout',
  error: 'no response within 2000 ms',
  attempts: 3,
  retry_budget_spent: true,
  protocol: 'HTTP/2',
  grpc_status: '14',
  trace_id: '4bf92f3577b34da6a3ce929d0e0e4736',
  span_id: '00f067aa0ba902b7',
  parent_span_id: 'b7ad6b7169203331',
};

describe('ACCESS_LOG_LINE', () => {
  it.each([
    ['the common case (most fields absent)', {}],
    ['every field present', full],
    ['a path with quotes, backslashes and control characters', { path: '/a"b\\c\u0001\u001f\u007f\ttab' }],
    ['non-ASCII and lone surrogates in the authority and path', { authority: 'ünïcode.example', path: '/\ud800x/\u2028/😀' }],
    ['values that escape to the most bytes', { path: '\u0001'.repeat(300), authority: '\udfff'.repeat(50), rule: '😀'.repeat(40), method: '"\\' }],
    ['an error message with newlines', { ...full, error: 'line one\nline "two"\r\n' }],
    ['numbers at the edges', { status: 0, duration_ms: 0.01, bytes_sent: 1e21, attempts: 2 }],
    ['a duration that is not a number', { duration_ms: Number.NaN }],
    ['empty strings', { method: '', path: '', authority: '', destination_service: '', version: '', rule: '' }],
  ])('%s: the same text as JSON.stringify', (_name, over) => {
    const e = entry(over as Partial<AccessLogEntry>);
    const line = accessLogLine(e);
    expect(line).toBe(JSON.stringify(e));
    expect(line).not.toContain('\n');
  });

  it('writes every duration (whole or two decimals, as the proxy rounds them) and count as JSON.stringify does', () => {
    const durations = [0, 0.01, 0.07, 0.1, 0.5, 1, 1.05, 2.1, 12.34, 99.99, 100, 1234.5, 0.3 + 0.6, 1e15 + 2, 123456.78];
    for (let i = 0; i < 2_000; i++) durations.push(Math.round(Math.random() * 10 ** (i % 8) * 100) / 100);
    for (const d of durations) {
      const e = entry({ duration_ms: d, bytes_sent: Math.floor(d * 1000), status: 200 + (Math.floor(d) % 400) });
      expect(accessLogLine(e)).toBe(JSON.stringify(e));
    }
  });
});
