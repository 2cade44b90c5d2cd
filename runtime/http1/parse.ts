// Strict HTTP/1.1 message heads (RFC 9112): the request line or status line
// and the field section, validated byte by byte, with the framing facts the
// codec needs (Content-Length, chunked, Connection tokens, Upgrade, Expect).
//
// In:  a Buffer holding a complete head (the caller found the CRLFCRLF) and
//      the limits. Out: a RequestHead / ResponseHead, or a thrown MeshError
//      with a stable reason (malformed-request, ambiguous-framing, …).
//
// Strictness is the point: everything a smuggling or desync attack relies on
// (CL+TE, duplicate lengths, obs-fold, bare CR/LF, whitespace before the
// colon, odd transfer codings) is refused, never "repaired".
import { Buffer } from 'node:buffer';
import { MeshError } from '../errors.ts';
import type { HeaderList } from '../wasm/stream.ts';

export interface HeadLimits {
  /** Request line longer than this: 414. */
  maxRequestLineBytes: number;
  /** Whole head (request line + fields) larger than this: 431. */
  maxHeaderBytes: number;
  /** More fields than this: 431. */
  maxHeaderCount: number;
}

export const DEFAULT_LIMITS: HeadLimits = { maxRequestLineBytes: 8192, maxHeaderBytes: 32 * 1024, maxHeaderCount: 100 };

/** Facts shared by request and response heads. */
interface HeadBase {
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  minor: number;
  /** Every field line in order; names lowercase, values with surrounding whitespace removed. */
  headers: HeaderList;
  /** -1 when absent. */
  contentLength: number;
  chunked: boolean;
  /** Lowercase tokens of the Connection field(s), or undefined when there is none. */
  connection: string[] | undefined;
  /** The connection persists after this message (Connection and version rules). */
  keepAlive: boolean;
}

export interface RequestHead extends HeadBase {
  method: string;
  target: string;
  /** The Host field ('' when absent, which only HTTP/1.0 may do). */
  host: string;
  /** Upgrade protocol when Connection lists "upgrade" (e.g. "websocket"), else ''. */
  upgrade: string;
  /** The Expect field, lowercase ('' when absent). */
  expect: string;
}

export interface ResponseHead extends HeadBase {
  status: number;
  reason: string;
  /**
   * The head as received, for forwarding it without rebuilding it: its bytes
   * (status line to the empty line) and the [start, end) offsets of its
   * HOP_BY_HOP field lines (CRLF included), which a proxy drops. Undefined
   * for HTTP/1.0 (a proxy rewrites its status line) and when Connection names
   * other fields.
   */
  wire: HeadWire | undefined;
}

export interface HeadWire {
  /** The head is bytes[start, end) of this buffer, which the receiver does not reuse. */
  buffer: Buffer;
  start: number;
  end: number;
  /** Two offsets (from `start`) per HOP_BY_HOP field line, in order. */
  hopByHop: number[];
}

/**
 * The head's bytes less its HOP_BY_HOP lines, as one Buffer: the dropped
 * lines are closed up in place (the buffer is the receiver's own), the kept
 * bytes before each one moving towards the end, so the kept head ends where
 * the head did. One Buffer is one write; a piece per run of kept lines cost
 * ~1–2% of a hop's instructions.
 */
export function keptHeadBytes(wire: HeadWire): Buffer {
  const { buffer, start, end } = wire;
  const drop = wire.hopByHop;
  // Runs of kept bytes, last first: [start + drop[i], keptTo) for odd i, then [start, start + drop[0]).
  let to = end;
  let keptTo = end;
  for (let i = drop.length - 1; i >= -1; i -= 2) {
    const keptFrom = i >= 0 ? start + drop[i]! : start;
    const n = keptTo - keptFrom;
    if (to !== keptTo) buffer.copyWithin(to - n, keptFrom, keptTo);
    to -= n;
    if (i >= 1) keptTo = start + drop[i - 1]!;
  }
  return buffer.subarray(to, end);
}

// tchar (RFC 9110 5.6.2)
const TOKEN = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~") TOKEN[c.charCodeAt(0)] = 1;
for (let c = 0x30; c <= 0x39; c++) TOKEN[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) TOKEN[c] = 1;
for (let c = 0x61; c <= 0x7a; c++) TOKEN[c] = 1;

/** field-vchar / SP / HTAB (obs-text allowed, every other control refused: that covers bare CR, LF and NUL). */
function isValueChar(c: number): boolean {
  return c === 9 || (c >= 0x20 && c !== 0x7f);
}
/** isValueChar as a table, for the loops over every byte of a value. */
const VALUE = Uint8Array.from({ length: 256 }, (_, c) => (isValueChar(c) ? 1 : 0));

export const CRLFCRLF = Buffer.from('\r\n\r\n');

/**
 * Fields a proxy never forwards, whatever Connection says: RFC 9110 7.6.1's
 * connection-specific fields, Proxy-Connection, and RFC 2616's hop-by-hop
 * Proxy-Authenticate and Proxy-Authorization.
 */
export const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

/**
 * Field names common enough to share: a name that matches one (ignoring
 * case) is this constant instead of a slice lower-cased per message, which
 * saves two strings per field and makes later Set/Map lookups and compares
 * on the name cheap (the constants are internalized).
 */
const COMMON_NAMES = [
  'host', 'content-length', 'content-type', 'transfer-encoding', 'connection', 'keep-alive', 'upgrade', 'expect', 'te',
  'trailer', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'date', 'server', 'user-agent', 'accept', 'accept-encoding', 'accept-language', 'accept-ranges',
  'cache-control', 'pragma', 'expires', 'age', 'etag', 'last-modified', 'if-none-match', 'if-modified-since', 'vary',
  'location', 'cookie', 'set-cookie', 'authorization', 'origin', 'referer', 'content-encoding', 'via', 'range',
  'x-request-id', 'traceparent', 'tracestate', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host',
  'x-mesh-rule', 'x-mesh-reason', 'x-mesh-orig-proto', 'grpc-status', 'grpc-message', 'grpc-timeout',
];
/** Indexes into COMMON_NAMES by name length. */
const NAMES_BY_LENGTH: number[][] = [];
COMMON_NAMES.forEach((n, i) => (NAMES_BY_LENGTH[n.length] ??= []).push(i));
/** 1 where COMMON_NAMES[i] is in HOP_BY_HOP (all of which are common names). */
const COMMON_HOP_BY_HOP = Uint8Array.from(COMMON_NAMES, (n) => (HOP_BY_HOP.has(n) ? 1 : 0));

/** Indexes of the names FieldReader acts on (COMMON_NAMES order). */
const CONTENT_LENGTH = COMMON_NAMES.indexOf('content-length');
const TRANSFER_ENCODING = COMMON_NAMES.indexOf('transfer-encoding');
const CONNECTION = COMMON_NAMES.indexOf('connection');
const HOST = COMMON_NAMES.indexOf('host');
const UPGRADE = COMMON_NAMES.indexOf('upgrade');
const EXPECT = COMMON_NAMES.indexOf('expect');

/** COMMON_NAMES as bytes: comparing bytes with bytes is cheaper than with a string's characters. */
const COMMON_NAME_BYTES = COMMON_NAMES.map((n) => Buffer.from(n, 'latin1'));

/** The index in COMMON_NAMES of the name `b[start, end)` (a valid token) spells in any case, or -1. */
function commonName(b: Uint8Array, start: number, end: number): number {
  const candidates = NAMES_BY_LENGTH[end - start];
  if (candidates === undefined) return -1;
  next: for (let k = 0; k < candidates.length; k++) {
    const index = candidates[k]!;
    const name = COMMON_NAME_BYTES[index]!;
    for (let i = 0; i < name.length; i++) {
      // Token characters: setting 0x20 lower-cases a letter and leaves digits and '-' as they are.
      let c = b[start + i]!;
      if (c >= 0x41 && c <= 0x5a) c |= 0x20;
      if (c !== name[i]) continue next;
    }
    return index;
  }
  return -1;
}

/**
 * A head in the making, checked line by line. The checks read the head's
 * bytes; its Latin-1 text `s` (one character per byte, `s[k]` is byte
 * `offset + k`) is only sliced for names and values. Reading a string
 * character by character cost several times as much: each `charCodeAt`
 * dispatches on the string's representation.
 */
class FieldReader {
  readonly headers: HeaderList = [];
  contentLength = -1;
  transferEncoding: string | undefined;
  connection: string[] | undefined;
  host: string | undefined;
  upgrade = '';
  expect = '';
  /** [start, end) of each HOP_BY_HOP field line (CRLF included), when the caller keeps the head's bytes. */
  readonly hopByHop: number[] | undefined;
  private readonly isRequest: boolean;
  private readonly limits: HeadLimits;

  constructor(isRequest: boolean, limits: HeadLimits, recordHopByHop = false) {
    this.isRequest = isRequest;
    this.limits = limits;
    this.hopByHop = recordHopByHop ? [] : undefined;
  }

  /** Reads `s` from `pos` to `end`: field lines separated by CRLF (no final empty line). `s[k]` is `b[offset + k]`. */
  read(b: Uint8Array, offset: number, s: string, pos: number, end: number): void {
    while (pos < end) pos = this.line(b, offset, s, pos, end);
  }

  /** Reads the field line at `start`; returns where the next one starts. */
  private line(b: Uint8Array, offset: number, s: string, start: number, end: number): number {
    if (this.headers.length >= this.limits.maxHeaderCount) {
      throw new MeshError(this.isRequest ? 'headers-too-large' : 'upstream-protocol-error', `more than ${this.limits.maxHeaderCount} header fields`);
    }
    const first = b[offset + start];
    if (first === 0x20 || first === 0x09) throw this.malformed('obs-fold (a field line starting with whitespace) is not accepted');
    // The two loops over every byte run on positions in `b`, not in `s`: no offset added per byte.
    const stop = offset + end;
    let p = offset + start;
    while (p < stop && TOKEN[b[p]!] === 1) p++;
    const i = p - offset;
    if (i === start || i >= end || b[offset + i] !== 0x3a) {
      const c = i < end ? b[offset + i]! : -1;
      if (c === 0x20 || c === 0x09) throw this.malformed('whitespace between a field name and the colon');
      if (c === -1 || (c === 0x0d && i + 1 < end && b[offset + i + 1] === 0x0a)) throw this.malformed('a field line without a colon');
      if (c === 0x0d || c === 0x0a) throw this.malformed('bare CR or LF in the header section');
      throw this.malformed(i === start ? 'empty or invalid field name' : `invalid character 0x${c.toString(16)} in a field name`);
    }
    const common = commonName(b, offset + start, offset + i);
    const name = common >= 0 ? COMMON_NAMES[common]! : s.slice(start, i).toLowerCase();
    let vs = i + 1;
    while (vs < end && (b[offset + vs] === 0x20 || b[offset + vs] === 0x09)) vs++;
    // The value runs to the line's CR, which must be followed by LF; any other control character is refused.
    p = offset + vs;
    while (p < stop && VALUE[b[p]!] === 1) p++;
    const eol = p - offset;
    if (eol < end && !(b[offset + eol] === 0x0d && eol + 1 < end && b[offset + eol + 1] === 0x0a)) {
      const c = b[offset + eol]!;
      throw this.malformed(c === 0x0d || c === 0x0a ? `bare CR or LF in the value of ${name}` : `control character 0x${c.toString(16)} in the value of ${name}`);
    }
    let ve = eol;
    while (ve > vs && (b[offset + ve - 1] === 0x20 || b[offset + ve - 1] === 0x09)) ve--;
    const value = s.slice(vs, ve);
    this.headers.push([name, value]);
    if (common < 0) return eol + 2;
    if (this.hopByHop !== undefined && COMMON_HOP_BY_HOP[common] === 1) this.hopByHop.push(start, eol + 2);
    switch (common) {
      case CONTENT_LENGTH:
        this.setLength(value);
        break;
      case TRANSFER_ENCODING:
        this.transferEncoding = this.transferEncoding === undefined ? value : `${this.transferEncoding}, ${value}`;
        break;
      case CONNECTION: {
        const tokens = (this.connection ??= []);
        // One token, as nearly every peer sends (keep-alive, close, upgrade): no split, no copies.
        if (value.indexOf(',') === -1) {
          const t = value === 'keep-alive' || value === 'close' ? value : value.toLowerCase();
          if (t !== '') tokens.push(t);
        } else {
          for (const t of splitTokens(value)) tokens.push(t);
        }
        break;
      }
      case HOST:
        if (this.host !== undefined) throw this.malformed('more than one Host field');
        this.host = value;
        break;
      case UPGRADE:
        this.upgrade = value;
        break;
      case EXPECT:
        this.expect = value.toLowerCase();
        break;
    }
    return eol + 2;
  }

  private setLength(value: string): void {
    if (this.contentLength !== -1) throw this.ambiguous('more than one Content-Length field');
    if (value.length === 0 || value.length > 15) throw this.ambiguous(`invalid Content-Length "${value}"`);
    let n = 0;
    for (let j = 0; j < value.length; j++) {
      const c = value.charCodeAt(j);
      if (c < 0x30 || c > 0x39) throw this.ambiguous(`invalid Content-Length "${value}"`);
      n = n * 10 + (c - 0x30);
    }
    this.contentLength = n;
  }

  /** Applies RFC 9112 6.1-6.3: returns whether the body is chunked; refuses ambiguity. */
  framing(minor: number): boolean {
    const te = this.transferEncoding;
    if (te === undefined) return false;
    if (this.contentLength !== -1) throw this.ambiguous('both Content-Length and Transfer-Encoding');
    if (minor === 0) throw this.ambiguous('Transfer-Encoding in an HTTP/1.0 message');
    const codings = splitTokens(te);
    if (codings.length === 1 && codings[0] === 'chunked') return true;
    if (!this.isRequest && codings[codings.length - 1] === 'chunked' && !codings.slice(0, -1).includes('chunked')) return true;
    if (this.isRequest) throw new MeshError('unsupported-transfer-coding', `Transfer-Encoding "${te}" is not supported (only chunked)`);
    throw new MeshError('upstream-protocol-error', `upstream sent Transfer-Encoding "${te}"`);
  }

  malformed(message: string): MeshError {
    return new MeshError(this.isRequest ? 'malformed-request' : 'upstream-protocol-error', message);
  }

  ambiguous(message: string): MeshError {
    return new MeshError(this.isRequest ? 'ambiguous-framing' : 'upstream-protocol-error', message);
  }
}

/** Comma-separated list, lowercase, empty elements dropped (RFC 9110 5.6.1). */
export function splitTokens(value: string): string[] {
  const out: string[] = [];
  for (const part of value.split(',')) {
    const t = part.trim().toLowerCase();
    if (t) out.push(t);
  }
  return out;
}

/** Whether Connection holds only its own options (no other field names, whose lines a proxy would also drop). */
function namesOnlyOptions(connection: string[] | undefined): boolean {
  if (connection === undefined) return true;
  for (let i = 0; i < connection.length; i++) {
    const t = connection[i];
    if (t !== 'keep-alive' && t !== 'close') return false;
  }
  return true;
}

function persistent(minor: number, connection: string[] | undefined): boolean {
  if (connection === undefined) return minor === 1;
  if (connection.includes('close')) return false;
  return minor === 1 || connection.includes('keep-alive');
}

function version(s: string, at: number, isRequest: boolean): number {
  // "HTTP/1.1" or "HTTP/1.0" exactly.
  if (s.startsWith('HTTP/1.', at) && s.length >= at + 8) {
    const m = s.charCodeAt(at + 7);
    if (m === 0x31) return 1;
    if (m === 0x30) return 0;
  }
  if (isRequest && /^HTTP\/\d\.\d$/.test(s.slice(at, at + 8))) {
    throw new MeshError('version-not-supported', `${s.slice(at, at + 8)} is not supported on this listener`);
  }
  throw new MeshError(isRequest ? 'malformed-request' : 'upstream-protocol-error', 'invalid HTTP version');
}

/**
 * Parses a request head. `buf[start, end)` ends just before the CRLFCRLF.
 * Leading empty lines (RFC 9112 2.2) must already be skipped by the caller.
 */
export function parseRequestHead(buf: Buffer, start: number, end: number, limits: HeadLimits): RequestHead {
  if (end - start + 4 > limits.maxHeaderBytes) throw new MeshError('headers-too-large', `request head larger than ${limits.maxHeaderBytes} bytes`);
  const s = buf.toString('latin1', start, end);
  let eol = s.indexOf('\r\n');
  if (eol === -1) eol = s.length;
  if (eol > limits.maxRequestLineBytes) throw new MeshError('uri-too-long', `request line longer than ${limits.maxRequestLineBytes} bytes`);
  // method SP request-target SP HTTP-version
  let i = 0;
  while (i < eol && TOKEN[buf[start + i]!] === 1) i++;
  if (i === 0 || buf[start + i] !== 0x20) throw new MeshError('malformed-request', 'invalid request line (method)');
  const method = s.slice(0, i);
  const ts = i + 1;
  let j = ts;
  while (j < eol) {
    const c = buf[start + j]!;
    if (c <= 0x20 || c >= 0x7f) break;
    j++;
  }
  if (j === ts || j >= eol || buf[start + j] !== 0x20) throw new MeshError('malformed-request', 'invalid request line (request target)');
  if (eol - (j + 1) !== 8) throw new MeshError('malformed-request', 'invalid request line (version)');
  const minor = version(s, j + 1, true);
  const target = s.slice(ts, j);
  const fields = new FieldReader(true, limits);
  fields.read(buf, start, s, eol + 2, s.length);
  const chunked = fields.framing(minor);
  if (minor === 1 && fields.host === undefined) throw new MeshError('malformed-request', 'HTTP/1.1 request without a Host field');
  const connection = fields.connection;
  return {
    method,
    target,
    minor,
    headers: fields.headers,
    contentLength: fields.contentLength,
    chunked,
    connection,
    keepAlive: persistent(minor, connection),
    host: fields.host ?? '',
    upgrade: connection !== undefined && fields.upgrade !== '' && connection.includes('upgrade') ? fields.upgrade : '',
    expect: fields.expect,
  };
}

/** Parses a response head from an upstream; anything off is `upstream-protocol-error`. */
export function parseResponseHead(buf: Buffer, start: number, end: number, limits: HeadLimits): ResponseHead {
  if (end - start + 4 > limits.maxHeaderBytes) throw new MeshError('upstream-protocol-error', `response head larger than ${limits.maxHeaderBytes} bytes`);
  const s = buf.toString('latin1', start, end);
  let eol = s.indexOf('\r\n');
  if (eol === -1) eol = s.length;
  // HTTP-version SP 3DIGIT SP reason-phrase (the SP before an empty reason is tolerated when missing)
  const minor = version(s, 0, false);
  const d0 = s.charCodeAt(9) - 0x30;
  const d1 = s.charCodeAt(10) - 0x30;
  const d2 = s.charCodeAt(11) - 0x30;
  if (s.charCodeAt(8) !== 0x20 || !(d0 >= 1 && d0 <= 5) || !(d1 >= 0 && d1 <= 9) || !(d2 >= 0 && d2 <= 9) || (eol > 12 && s.charCodeAt(12) !== 0x20)) {
    throw new MeshError('upstream-protocol-error', `invalid status line "${s.slice(0, Math.min(eol, 64))}"`);
  }
  const status = d0 * 100 + d1 * 10 + d2;
  const reason = eol > 13 ? s.slice(13, eol) : '';
  for (let k = start + 13; k < start + eol; k++) {
    if (VALUE[buf[k]!] !== 1) throw new MeshError('upstream-protocol-error', 'control character in the reason phrase');
  }
  const fields = new FieldReader(false, limits, minor === 1);
  fields.read(buf, start, s, eol + 2, s.length);
  const chunked = fields.framing(minor);
  return {
    status,
    reason,
    minor,
    headers: fields.headers,
    contentLength: fields.contentLength,
    chunked,
    connection: fields.connection,
    keepAlive: persistent(minor, fields.connection),
    wire: fields.hopByHop !== undefined && namesOnlyOptions(fields.connection) ? { buffer: buf, start, end: end + 4, hopByHop: fields.hopByHop } : undefined,
  };
}

/**
 * Where the head in `buf[from, len)` ends: index of the CRLFCRLF, or -1 when
 * incomplete. Throws when the bytes so far already break a limit or use bare
 * LF line ends (which would otherwise wait for a CRLFCRLF that never comes).
 */
export function findHeadEnd(buf: Buffer, from: number, scanFrom: number, limits: HeadLimits, isRequest: boolean): number {
  const at = buf.indexOf(CRLFCRLF, Math.max(from, scanFrom));
  if (at !== -1) return at;
  const have = buf.length - from;
  if (isRequest) {
    const eol = buf.indexOf(0x0a, from);
    if (eol === -1 && have > limits.maxRequestLineBytes) throw new MeshError('uri-too-long', `request line longer than ${limits.maxRequestLineBytes} bytes`);
  }
  if (have > limits.maxHeaderBytes) {
    throw new MeshError(isRequest ? 'headers-too-large' : 'upstream-protocol-error', `head larger than ${limits.maxHeaderBytes} bytes`);
  }
  // Everything after `from` is head here: "\n\n" can only be a bare-LF line end.
  if (buf.indexOf('\n\n', from) !== -1) {
    throw new MeshError(isRequest ? 'malformed-request' : 'upstream-protocol-error', 'bare LF line endings are not accepted');
  }
  return -1;
}

/** Reads a trailer section (field lines, no start line) with the same rules as headers. */
export function parseTrailers(buf: Buffer, start: number, end: number, limits: HeadLimits, isRequest: boolean): HeaderList {
  const s = buf.toString('latin1', start, end);
  const fields = new FieldReader(isRequest, limits);
  fields.read(buf, start, s, 0, s.length);
  return fields.headers;
}
