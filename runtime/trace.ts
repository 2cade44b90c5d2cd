// W3C Trace Context (https://www.w3.org/TR/trace-context/) for one proxy hop:
// the sidecar is a participant, so it keeps the incoming trace id and flags
// and replaces parent-id with a span id of its own; a request without a valid
// `traceparent` starts a new trace (and its `tracestate` is dropped, as the
// spec requires when traceparent is invalid).
//
// In:  a request's header list (proxy-wasm shape, lower-case names).
// Out: the same list with exactly one `traceparent` naming this hop's span,
//      and the ids for the access log.
import { Buffer } from 'node:buffer';
import { randomPool, takeRandom } from './random-pool.ts';
import type { HeaderList } from './wasm/stream.ts';

export interface TraceHop {
  /** 32 lower-case hex digits. */
  traceId: string;
  /** This hop's span id (16 hex digits), sent upstream as parent-id. */
  spanId: string;
  /** The caller's span id, when the request carried a valid traceparent. */
  parentSpanId: string | undefined;
}

/** `bytes` random bytes as lower-case hex, never all zeros (the spec's invalid value). */
function randomHex(bytes: number): string {
  for (;;) {
    const start = takeRandom(bytes);
    const end = start + bytes;
    for (let i = start; i < end; i++) if (randomPool[i] !== 0) return randomPool.toString('hex', start, end);
  }
}

const HEX = Buffer.from('0123456789abcdef', 'latin1');
const uuidScratch = Buffer.allocUnsafe(36);

/**
 * A random (version 4) UUID for x-request-id, from the random pool: the string
 * is built in a scratch buffer and decoded once (crypto.randomUUID concatenates
 * a dozen pieces per id).
 */
export function newRequestId(): string {
  const at = takeRandom(16);
  let j = 0;
  for (let i = 0; i < 16; i++) {
    let b = randomPool[at + i]!;
    if (i === 6) b = (b & 0x0f) | 0x40; // version 4
    else if (i === 8) b = (b & 0x3f) | 0x80; // RFC 9562 variant
    if (i === 4 || i === 6 || i === 8 || i === 10) uuidScratch[j++] = 0x2d;
    uuidScratch[j++] = HEX[b >> 4]!;
    uuidScratch[j++] = HEX[b & 15]!;
  }
  return uuidScratch.toString('latin1', 0, 36);
}

export function newTraceId(): string {
  return randomHex(16);
}

export function newSpanId(): string {
  return randomHex(8);
}

function isLowerHex(s: string, from: number, to: number): boolean {
  let nonZero = false;
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x30 && c <= 0x39) {
      if (c !== 0x30) nonZero = true;
    } else if (c >= 0x61 && c <= 0x66) {
      nonZero = true;
    } else {
      return false;
    }
  }
  return nonZero || to - from === 2;
}

/**
 * The parts of a traceparent value worth keeping, or undefined when invalid:
 * `version-traceid-parentid-flags`, lower-case hex, version ff forbidden,
 * trace id and parent id not all zeros; version 00 is exactly 55 characters,
 * a later version may carry more fields after a '-'.
 */
export function parseTraceparent(v: string): { traceId: string; parentId: string; flags: string } | undefined {
  if (v.length < 55) return undefined;
  if (v.charCodeAt(2) !== 0x2d || v.charCodeAt(35) !== 0x2d || v.charCodeAt(52) !== 0x2d) return undefined;
  if (!isLowerHex(v, 0, 2) || v.startsWith('ff')) return undefined;
  if (v.startsWith('00') ? v.length !== 55 : v.length > 55 && v.charCodeAt(55) !== 0x2d) return undefined;
  if (!isLowerHex(v, 3, 35) || !isLowerHex(v, 36, 52) || !isLowerHex(v, 53, 55)) return undefined;
  return { traceId: v.slice(3, 35), parentId: v.slice(36, 52), flags: v.slice(53, 55) };
}

/** A new trace's flags: sampled, so an app's parent-based sampler records it as it would a root span. */
const NEW_TRACE_FLAGS = '01';

/** Rewrites `list` for this hop (see the file header) and returns the ids. */
export function traceHop(list: HeaderList): TraceHop {
  let at = -1;
  let count = 0;
  for (let i = 0; i < list.length; i++) {
    if (list[i]![0] === 'traceparent') {
      at = i;
      count++;
    }
  }
  // Several traceparent fields cannot be combined into one value: invalid.
  const parsed = count === 1 ? parseTraceparent(list[at]![1].trim()) : undefined;
  const spanId = newSpanId();
  if (parsed) {
    // We only speak version 00, so that is what we send on.
    list[at] = ['traceparent', '00-' + parsed.traceId + '-' + spanId + '-' + parsed.flags];
    return { traceId: parsed.traceId, spanId, parentSpanId: parsed.parentId };
  }
  const traceId = newTraceId();
  // A tracestate belongs to the trace its traceparent named: none survives a restart.
  for (let i = list.length - 1; i >= 0; i--) {
    const k = list[i]![0];
    if (k === 'traceparent' || k === 'tracestate') list.splice(i, 1);
  }
  list.push(['traceparent', '00-' + traceId + '-' + spanId + '-' + NEW_TRACE_FLAGS]);
  return { traceId, spanId, parentSpanId: undefined };
}
