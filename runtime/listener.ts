// Protocol detection for every sidecar listener: each accepted socket is
// classified from its first bytes (or its TLS ALPN) and handed, with those
// bytes put back, to the handler registered for its protocol.
//
// In:  accepted sockets (plain or TLS), accept hooks (e.g. original-destination
//      lookup) and protocol handlers registered by the sidecar's parts.
// Out: one handler call per socket: (socket, Accepted), the socket paused with
//      the bytes read during detection unshifted, so the handler reads them
//      again; the handler resumes the socket when it is ready to read. (A client
//      that ended during detection: the bytes are in conn.head, conn.ended set.)
//
// Classes: an HTTP/1.x request line; the HTTP/2 connection preface
// (`PRI * HTTP/2.0`); a TLS ClientHello (0x16 0x03); anything else is opaque.
// A server-speaks-first protocol (MySQL, SMTP) sends nothing: when a listener
// has a server-first timeout, silence until then means opaque TCP. A port
// declared as TCP (an accept hook or the listener setting `conn.protocol`)
// skips detection and that delay.
import { Buffer } from 'node:buffer';
import { performance } from 'node:perf_hooks';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { ConnectionInfo } from './http1/server.ts';
import { MESH_TCP_ALPN } from '../protocol/transport.ts';

export type Protocol = 'http1' | 'h2' | 'tls' | 'opaque';

/** How the protocol was decided. */
export type DetectedBy = 'bytes' | 'alpn' | 'declared' | 'server-first' | 'timeout' | 'end';

/** What the listener learnt about a connection; accept hooks may fill `info` and declare `protocol`. */
export interface Accepted {
  /** The listener's name (outbound, inbound, upstream:catalog, ...), for logs. */
  readonly listener: string;
  info: ConnectionInfo;
  /** Set by an accept hook (a port declared as TCP, say) to skip detection. */
  protocol: Protocol | undefined;
  by: DetectedBy;
  /** Bytes read while detecting; already unshifted into the socket, unless `ended`. */
  head: Buffer;
  /**
   * The client closed its side before the class was clear (only ever for opaque): its
   * 'end' has been emitted, so `head` could not be put back. The handler sends `head`
   * on itself and treats the client's stream as ended.
   */
  ended: boolean;
  /** The ALPN protocol the TLS handshake chose, if any. */
  alpn: string | undefined;
  /** Silence that means a server-first protocol (ms), or undefined: wait for the client. Hooks may change it. */
  serverFirstTimeoutMs: number | undefined;
}

/** Takes over a classified socket; it arrives paused, so the handler calls `socket.resume()` once it listens. */
export type ProtocolHandler = (socket: Socket, conn: Accepted) => void;
/** Runs at accept, before detection, in registration order; may set `info` fields, `protocol`, `serverFirstTimeoutMs`. */
export type AcceptHook = (socket: Socket, conn: Accepted) => void;

export interface ListenerOptions {
  name: string;
  /**
   * Silence (ms) after which a connection is treated as a server-first (opaque) one; undefined: never.
   * A function decides per connection, after the accept hooks (e.g. only where opaque TCP has a destination).
   */
  serverFirstTimeoutMs?: number | ((conn: Accepted) => number | undefined);
  /** Longest wait (ms) for bytes that decide the class; then what has arrived decides, or the socket closes if nothing has. */
  maxWaitMs?: number;
  /** Most bytes read before deciding. */
  maxBytes?: number;
  log?: (entry: Record<string, unknown>) => void;
}

/** Istio's protocol detection timeout when detection is on. */
export const DEFAULT_SERVER_FIRST_TIMEOUT_MS = 100;
const DEFAULT_MAX_WAIT_MS = 10_000;
/** An HTTP/1.1 request line up to the codec's own limit (8 KiB) still fits. */
const DEFAULT_MAX_BYTES = 8 * 1024 + 64;

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const HTTP_SLASH = Buffer.from('HTTP/', 'latin1');

/** Where an unhandled protocol goes instead (HTTP/2 to the HTTP/1 codec refuses it with 505; TLS passes as opaque). */
const FALLBACK: Record<Protocol, Protocol | undefined> = { h2: 'http1', tls: 'opaque', http1: undefined, opaque: undefined };

const ALPN_PROTOCOL: Record<string, Protocol> = { h2: 'h2', 'http/1.1': 'http1', 'http/1.0': 'http1', [MESH_TCP_ALPN]: 'opaque' };

// RFC 9110 tchar
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~") TCHAR[c.charCodeAt(0)] = 1;
for (let c = 0x30; c <= 0x39; c++) TCHAR[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) TCHAR[c] = 1;
for (let c = 0x61; c <= 0x7a; c++) TCHAR[c] = 1;
const MAX_METHOD = 32;

/**
 * The class of a connection from its first bytes, or undefined when more bytes
 * are needed to tell. With `final` (no more bytes will come, or no more wait),
 * a prefix that never became a whole request line or preface is opaque.
 */
export function classify(buf: Buffer, final = false): Protocol | undefined {
  const n = buf.length;
  if (n === 0) return undefined;
  const more = final ? 'opaque' : undefined;
  // HTTP/2 preface, before the HTTP/1 test: its first line is also a valid request line.
  if (buf[0] === 0x50 && isPrefacePrefix(buf)) return n >= PREFACE.length ? 'h2' : more;
  if (buf[0] === 0x16) {
    if (n === 1) return more;
    return buf[1] === 0x03 ? 'tls' : 'opaque';
  }
  return classifyRequestLine(buf, more);
}

/** The buffer starts the HTTP/2 preface (or holds all of it). A byte loop: cheaper than Buffer#compare's native call for 24 bytes. */
function isPrefacePrefix(buf: Buffer): boolean {
  const p = Math.min(buf.length, PREFACE.length);
  for (let i = 0; i < p; i++) if (buf[i] !== PREFACE[i]) return false;
  return true;
}

/** `token SP target SP HTTP/d.d CRLF` (leading empty lines allowed, RFC 9112 2.2). */
function classifyRequestLine(buf: Buffer, more: Protocol | undefined): Protocol | undefined {
  const n = buf.length;
  let i = 0;
  while (i < n && (buf[i] === 0x0d || buf[i] === 0x0a)) {
    if (buf[i] === 0x0a || i + 1 >= n || buf[i + 1] === 0x0a) i++;
    else return 'opaque';
  }
  if (i >= n) return more;
  const methodStart = i;
  while (i < n && TCHAR[buf[i]!] === 1) i++;
  if (i - methodStart > MAX_METHOD) return 'opaque';
  if (i >= n) return more;
  if (buf[i] !== 0x20 || i === methodStart) return 'opaque';
  const targetStart = ++i;
  while (i < n && buf[i]! > 0x20 && buf[i] !== 0x7f) i++;
  if (i >= n) return more;
  if (buf[i] !== 0x20 || i === targetStart) return 'opaque';
  i++;
  // HTTP-version = "HTTP/" DIGIT "." DIGIT, then the line ends.
  for (let k = 0; k < HTTP_SLASH.length; k++, i++) {
    if (i >= n) return more;
    if (buf[i] !== HTTP_SLASH[k]) return 'opaque';
  }
  const shape = [1, 0x2e, 1];
  for (const want of shape) {
    if (i >= n) return more;
    const c = buf[i++]!;
    if (want === 1 ? c < 0x30 || c > 0x39 : c !== want) return 'opaque';
  }
  if (i >= n) return more;
  if (buf[i] === 0x0a) return 'http1';
  if (buf[i] !== 0x0d) return 'opaque';
  if (++i >= n) return more;
  return buf[i] === 0x0a ? 'http1' : 'opaque';
}

export class ProtocolListener {
  readonly name: string;
  private readonly handlers = new Map<Protocol, ProtocolHandler>();
  private readonly hooks: AcceptHook[] = [];
  private readonly serverFirstTimeoutMs: ListenerOptions['serverFirstTimeoutMs'];
  private readonly maxWaitMs: number;
  private readonly maxBytes: number;
  private readonly log: ((entry: Record<string, unknown>) => void) | undefined;
  /** Sockets still being classified (stop() closes them). */
  readonly detecting = new Set<Socket>();

  constructor(options: ListenerOptions) {
    this.name = options.name;
    this.serverFirstTimeoutMs = options.serverFirstTimeoutMs;
    this.maxWaitMs = options.maxWaitMs ?? DEFAULT_MAX_WAIT_MS;
    this.maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
    this.log = options.log;
  }

  /** Registers (or replaces) the handler of one protocol. */
  handle(protocol: Protocol, handler: ProtocolHandler): this {
    this.handlers.set(protocol, handler);
    return this;
  }

  /** Adds a hook run on every accepted socket before detection. */
  onAccept(hook: AcceptHook): this {
    this.hooks.push(hook);
    return this;
  }

  /**
   * For a TLS server's ALPNCallback: the first protocol the client offers that
   * has a handler here (HTTP/1.1 is always served: it is the codec's fallback).
   */
  selectAlpn = ({ protocols }: { protocols: string[] }): string | undefined => {
    for (const p of protocols) {
      const proto = ALPN_PROTOCOL[p];
      if (proto === 'http1' || (proto !== undefined && this.handlers.has(proto))) return p;
    }
    return undefined;
  };

  /** Classifies one accepted socket (plain, or TLS after its handshake) and hands it on. */
  accept(socket: Socket, info: ConnectionInfo = {}): void {
    const conn: Accepted = {
      listener: this.name,
      info,
      protocol: undefined,
      by: 'declared',
      head: EMPTY,
      ended: false,
      alpn: undefined,
      serverFirstTimeoutMs: typeof this.serverFirstTimeoutMs === 'number' ? this.serverFirstTimeoutMs : undefined,
    };
    for (const hook of this.hooks) hook(socket, conn);
    if (typeof this.serverFirstTimeoutMs === 'function') conn.serverFirstTimeoutMs ??= this.serverFirstTimeoutMs(conn);
    if (socket.destroyed) return;
    if (conn.protocol === undefined) {
      const alpn = (socket as TLSSocket).alpnProtocol;
      if (typeof alpn === 'string' && ALPN_PROTOCOL[alpn] !== undefined) {
        conn.alpn = alpn;
        conn.protocol = ALPN_PROTOCOL[alpn];
        conn.by = 'alpn';
      }
    }
    if (conn.protocol !== undefined) {
      socket.pause();
      this.dispatch(socket, conn);
      return;
    }
    new Detection(this, socket, conn).start();
  }

  /** Called by Detection once the class is known. */
  dispatch(socket: Socket, conn: Accepted): void {
    let protocol: Protocol | undefined = conn.protocol;
    while (protocol !== undefined && !this.handlers.has(protocol)) protocol = FALLBACK[protocol];
    const handler = protocol === undefined ? undefined : this.handlers.get(protocol);
    if (!handler) {
      this.log?.({ time: new Date().toISOString(), event: 'connection-refused', listener: this.name, protocol: conn.protocol, reason: 'unsupported-protocol', source: socket.remoteAddress });
      socket.destroy();
      return;
    }
    handler(socket, conn);
  }

  /** The limits Detection reads. */
  limits(): { maxWaitMs: number; maxBytes: number } {
    return { maxWaitMs: this.maxWaitMs, maxBytes: this.maxBytes };
  }

  /** Logs a socket closed during detection. */
  closed(socket: Socket, reason: string): void {
    this.log?.({ time: new Date().toISOString(), event: 'connection-refused', listener: this.name, reason, source: socket.remoteAddress });
  }
}

const EMPTY = Buffer.alloc(0);

/** The reads of one socket until its class is known. */
class Detection {
  private readonly listener: ProtocolListener;
  private readonly socket: Socket;
  private readonly conn: Accepted;
  private head: Buffer = EMPTY;
  private timer: NodeJS.Timeout | undefined;
  private readonly deadline: number;
  private readonly onData = (chunk: Buffer): void => this.data(chunk);
  private readonly onEnd = (): void => this.end();
  private readonly onClose = (): void => this.gone();
  private readonly onError = (): void => {};

  constructor(listener: ProtocolListener, socket: Socket, conn: Accepted) {
    this.listener = listener;
    this.socket = socket;
    this.conn = conn;
    this.deadline = performance.now() + listener.limits().maxWaitMs;
  }

  start(): void {
    const s = this.socket;
    this.listener.detecting.add(s);
    s.on('data', this.onData);
    s.on('end', this.onEnd);
    s.on('close', this.onClose);
    s.on('error', this.onError);
    const first = this.conn.serverFirstTimeoutMs;
    this.arm(first !== undefined ? Math.min(first, this.listener.limits().maxWaitMs) : this.listener.limits().maxWaitMs);
  }

  private arm(ms: number): void {
    this.timer = setTimeout(() => this.expire(), Math.max(0, ms));
  }

  private data(chunk: Buffer): void {
    const first = this.head.length === 0;
    this.head = first ? chunk : Buffer.concat([this.head, chunk]);
    if (first && this.conn.serverFirstTimeoutMs !== undefined) {
      // The client spoke: from now on only the overall wait applies.
      clearTimeout(this.timer);
      this.arm(this.deadline - performance.now());
    }
    let proto = classify(this.head);
    // Still a request-line prefix at the cap: an over-long request line, which the codec answers (414).
    if (proto === undefined && this.head.length >= this.listener.limits().maxBytes) proto = 'http1';
    if (proto !== undefined) this.finish(proto, 'bytes');
  }

  private end(): void {
    // The client closed its side before the class was clear: what it sent decides.
    const proto = classify(this.head, true);
    if (proto === undefined) {
      // Connected and closed without a byte: a TCP health check, say. Not worth a log line.
      this.stop();
      this.socket.destroy();
      return;
    }
    this.finish(proto, 'end');
  }

  private expire(): void {
    if (this.head.length === 0) {
      if (this.conn.serverFirstTimeoutMs !== undefined) {
        this.finish('opaque', 'server-first');
      } else {
        this.stop();
        this.listener.closed(this.socket, 'detect-timeout');
        this.socket.destroy();
      }
      return;
    }
    this.finish(classify(this.head, true) ?? 'opaque', 'timeout');
  }

  private gone(): void {
    this.stop();
  }

  private stop(): void {
    clearTimeout(this.timer);
    const s = this.socket;
    s.off('data', this.onData);
    s.off('end', this.onEnd);
    s.off('close', this.onClose);
    s.off('error', this.onError);
    this.listener.detecting.delete(s);
  }

  private finish(protocol: Protocol, by: DetectedBy): void {
    this.stop();
    const s = this.socket;
    s.pause();
    this.conn.protocol = protocol;
    this.conn.by = by;
    this.conn.head = this.head;
    // After 'end' a stream takes nothing back: the handler is told instead (conn.ended).
    if (s.readableEnded) this.conn.ended = true;
    else if (this.head.length > 0) s.unshift(this.head);
    this.listener.dispatch(s, this.conn);
  }
}
