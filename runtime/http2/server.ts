// The downstream side of HTTP/2: node:http2 server sessions over sockets the
// sidecar hands over (h2c with prior knowledge on the outbound listener, TLS
// with ALPN h2 on the inbound listener), each stream presented to the proxy
// as a DownstreamExchange (H2Exchange) so it takes the same request path as
// an HTTP/1.1 request: filters, routing, retries, metrics, access log.
//
// In:  connected sockets (accept), limits, hooks.
// Out: hooks.request(exchange) per stream; refusals (header limits, rapid
//      reset, streams over the concurrency limit, connection limit) reported
//      through hooks.refused with a stable reason for the log and metrics.
//
// Protection: SETTINGS_MAX_CONCURRENT_STREAMS is advertised and enforced by
// nghttp2 (streams beyond it are refused before they reach us, so they are
// counted afterwards from the stream ids the peer used); header lists above
// the HTTP/1.1 codec's limits get 431 headers-too-large; peer resets of
// streams not yet answered are counted per connection, and above
// `maxResetsPerInterval` in `resetIntervalMs` the connection gets GOAWAY
// ENHANCE_YOUR_CALM (CVE-2023-44487, rapid reset) and is closed.
import { performance } from 'node:perf_hooks';
import http2, { type IncomingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import { Counter, type Registry } from 'prom-client';
import { MeshError, renderError } from '../errors.ts';
import type { BodySink } from '../http1/body.ts';
import type { HeadLimits, RequestHead } from '../http1/parse.ts';
import type { ConnectionInfo, ExchangeListener } from '../http1/server.ts';
import type { DownstreamExchange } from '../http-proxy.ts';
import type { HeaderList } from '../wasm/stream.ts';

export interface H2ServerOptions {
  /** Header count and size limits, the same as HTTP/1.1's (431 above them). */
  limits: HeadLimits;
  /** SETTINGS_MAX_CONCURRENT_STREAMS per connection. */
  maxConcurrentStreams: number;
  /** Peer resets of unanswered streams tolerated per interval before GOAWAY. */
  maxResetsPerInterval: number;
  resetIntervalMs: number;
  /** A connection with no stream activity this long is closed (GOAWAY). */
  idleTimeoutMs: number;
  /** Connections beyond this get GOAWAY at once. */
  maxConnections: number;
}

export const DEFAULT_H2_OPTIONS: Omit<H2ServerOptions, 'limits'> = {
  maxConcurrentStreams: 100,
  maxResetsPerInterval: 200,
  resetIntervalMs: 10_000,
  idleTimeoutMs: 60_000,
  maxConnections: 10_000,
};

/** Why the HTTP/2 layer refused a stream or a connection (log `reason`, metric response flag). */
export type H2Refusal = 'h2-rapid-reset' | 'h2-stream-refused' | 'h2-protocol-error' | 'headers-too-large' | 'too-many-connections';

export interface H2Hooks {
  request(exchange: H2Exchange): void;
  /** A stream or connection the HTTP/2 layer refused; `count` streams at once for h2-stream-refused. */
  refused(conn: H2Connection, reason: H2Refusal, message: string, count: number): void;
}

/** `meshc_http2_refused_total{listener, reason}`: streams and connections the HTTP/2 layer refused. */
export function refusalCounter(registry: Registry): Counter<'listener' | 'reason'> {
  return new Counter({ name: 'meshc_http2_refused_total', help: 'HTTP/2 streams and connections refused by the sidecar, by reason', labelNames: ['listener', 'reason'], registers: [registry] });
}

const { NGHTTP2_CANCEL, NGHTTP2_ENHANCE_YOUR_CALM, NGHTTP2_INTERNAL_ERROR, NGHTTP2_NO_ERROR, NGHTTP2_REFUSED_STREAM } = http2.constants;

export class Http2Server {
  readonly options: H2ServerOptions;
  private readonly hooks: H2Hooks;
  private readonly server: http2.Http2Server;
  readonly connections = new Set<H2Connection>();
  /** ConnectionInfo of the socket being handed to node:http2 (its 'session' event fires synchronously). */
  private handing: { socket: Socket; info: ConnectionInfo } | undefined;
  draining = false;

  constructor(options: H2ServerOptions, hooks: H2Hooks) {
    this.options = options;
    this.hooks = hooks;
    this.server = http2.createServer({
      settings: {
        maxConcurrentStreams: options.maxConcurrentStreams,
        // Hard caps for nghttp2; the listener's own limits (431) sit below them.
        maxHeaderListSize: options.limits.maxHeaderBytes * 2,
        enablePush: false,
      },
      maxHeaderListPairs: options.limits.maxHeaderCount * 2 + 8,
    });
    this.server.on('session', (session: ServerHttp2Session) => {
      const h = this.handing;
      this.handing = undefined;
      if (!h) {
        session.destroy();
        return;
      }
      const conn = new H2Connection(this, this.hooks, session, h.socket, h.info);
      this.connections.add(conn);
      if (this.connections.size > options.maxConnections) conn.refuse('too-many-connections', `this listener serves at most ${options.maxConnections} connections`);
    });
  }

  /** Takes over a connected socket whose first bytes are the HTTP/2 preface (or a TLS socket that chose h2). */
  accept(socket: Socket, info: ConnectionInfo = {}): void {
    if (socket.destroyed) return;
    this.handing = { socket, info };
    this.server.emit('connection', socket);
    this.handing = undefined;
  }

  /** GOAWAY to every connection: streams in flight finish, no new ones start. */
  drain(): void {
    this.draining = true;
    for (const c of this.connections) c.session.close();
  }

  /** Resolves once every connection has closed, or after `ms` (then the rest are destroyed). */
  async closeAll(ms: number): Promise<void> {
    this.drain();
    const deadline = performance.now() + ms;
    while (this.connections.size > 0 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    for (const c of this.connections) c.session.destroy();
  }

  forget(conn: H2Connection): void {
    this.connections.delete(conn);
  }
}

/** One HTTP/2 connection: its session, the socket under it, and its reset accounting. */
export class H2Connection {
  readonly session: ServerHttp2Session;
  readonly socket: Socket;
  readonly info: ConnectionInfo;
  private readonly server: Http2Server;
  private readonly hooks: H2Hooks;
  /** How long a stream may wait for the client to take response bytes (and the session to see a frame). */
  readonly idleTimeoutMs: number;
  /** Streams handed to the proxy (to tell nghttp2's refusals from streams we saw). */
  private streamsSeen = 0;
  private resets = 0;
  private resetWindowStart = 0;
  private refused = false;
  /** The highest stream id the peer used, read while the session is alive (its state is gone at 'close'). */
  private lastStreamId = 0;

  constructor(server: Http2Server, hooks: H2Hooks, session: ServerHttp2Session, socket: Socket, info: ConnectionInfo) {
    this.server = server;
    this.idleTimeoutMs = server.options.idleTimeoutMs;
    this.hooks = hooks;
    this.session = session;
    this.socket = socket;
    this.info = info;
    socket.setNoDelay(true);
    session.setTimeout(server.options.idleTimeoutMs, () => session.close());
    session.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, rawHeaders: string[]) => this.onStream(stream, flags, rawHeaders));
    session.on('error', (err: Error) => {
      this.sampleStreamId();
      this.protocolError(err.message);
    });
    // A client ending the connection sends GOAWAY first: the last moment its stream ids can be read.
    session.on('goaway', () => this.sampleStreamId());
    session.on('close', () => this.onClose());
  }

  private onStream(stream: ServerHttp2Stream, flags: number, raw: string[]): void {
    this.streamsSeen++;
    const limits = this.server.options.limits;
    let bytes = 0;
    for (let i = 0; i < raw.length; i++) bytes += raw[i]!.length + (i % 2 === 0 ? 2 : 0);
    const ex = new H2Exchange(this, stream, raw, (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0);
    if (raw.length / 2 > limits.maxHeaderCount + 4 || bytes > limits.maxHeaderBytes) {
      const err = new MeshError('headers-too-large', `the header list (${raw.length / 2} fields, ${bytes} bytes) exceeds ${limits.maxHeaderCount} fields or ${limits.maxHeaderBytes} bytes`);
      this.hooks.refused(this, 'headers-too-large', err.message, 1);
      ex.fail(err);
      return;
    }
    if (this.server.draining) {
      // A stream that crossed our GOAWAY: the client may retry it elsewhere.
      stream.close(NGHTTP2_REFUSED_STREAM);
      return;
    }
    this.hooks.request(ex);
  }

  private sampleStreamId(): void {
    if (!this.session.destroyed) this.lastStreamId = Math.max(this.lastStreamId, this.session.state.lastProcStreamID ?? 0);
  }

  /** A stream the peer reset before its response was complete (rapid reset accounting). */
  peerReset(): void {
    const now = performance.now();
    const o = this.server.options;
    if (now - this.resetWindowStart > o.resetIntervalMs) {
      this.resetWindowStart = now;
      this.resets = 0;
    }
    if (++this.resets > o.maxResetsPerInterval) this.refuse('h2-rapid-reset', `more than ${o.maxResetsPerInterval} streams reset by the client within ${o.resetIntervalMs} ms`);
  }

  /** GOAWAY with ENHANCE_YOUR_CALM, then close: the connection can no longer be trusted. */
  refuse(reason: H2Refusal, message: string): void {
    if (this.refused) return;
    this.refused = true;
    this.sampleStreamId();
    this.hooks.refused(this, reason, message, 1);
    if (!this.session.destroyed) {
      this.session.goaway(NGHTTP2_ENHANCE_YOUR_CALM);
      // Let the GOAWAY frame leave before the socket goes.
      setTimeout(() => this.session.destroy(), 50).unref();
    }
  }

  private protocolError(message: string): void {
    if (this.refused) return;
    this.refused = true;
    this.hooks.refused(this, 'h2-protocol-error', message, 1);
  }

  private onClose(): void {
    this.server.forget(this);
    // Streams the peer opened that never reached us were refused by nghttp2 (over the concurrency or
    // header limits). Read from nghttp2's last processed stream id when the peer's GOAWAY arrives, so a
    // lower bound; a connection dropped without GOAWAY goes uncounted.
    const last = this.lastStreamId;
    const opened = last > 0 ? (last + 1) / 2 : 0;
    const refused = opened - this.streamsSeen;
    if (refused > 0) this.hooks.refused(this, 'h2-stream-refused', `${refused} streams refused (over ${this.server.options.maxConcurrentStreams} concurrent streams or the header limits)`, refused);
  }

  get draining(): boolean {
    return this.server.draining;
  }
}

/** Fields node:http2 (rightly) refuses in HTTP/2 responses (RFC 9113 8.2.2). */
const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'host', 'http2-settings']);

/** A header list as node:http2 wants it: repeated names as arrays, connection-specific fields dropped. */
export function headerObject(list: HeaderList, into: Record<string, string | string[]>): Record<string, string | string[]> {
  for (let i = 0; i < list.length; i++) {
    const e = list[i]!;
    const k = e[0];
    if (CONNECTION_SPECIFIC.has(k)) continue;
    const prev = into[k];
    if (prev === undefined) into[k] = e[1];
    else if (typeof prev === 'string') into[k] = [prev, e[1]];
    else prev.push(e[1]);
  }
  return into;
}

/** node:http2's raw [name, value, …] list as a HeaderList without pseudo-headers. */
function fieldsOf(raw: string[]): HeaderList {
  const out: HeaderList = [];
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i]!;
    if (k.charCodeAt(0) !== 0x3a) out.push([k, raw[i + 1]!]);
  }
  return out;
}

function rawValue(raw: string[], name: string): string | undefined {
  for (let i = 0; i < raw.length; i += 2) if (raw[i] === name) return raw[i + 1];
  return undefined;
}

/**
 * One HTTP/2 stream as the proxy sees a request: the pseudo-headers make an
 * HTTP/1.1-style head (:path → target, :authority → host), the body arrives
 * with its trailers, and the response goes out as HEADERS / DATA / trailers.
 */
export class H2Exchange implements DownstreamExchange {
  readonly conn: H2Connection;
  readonly stream: ServerHttp2Stream;
  readonly head: RequestHead;
  readonly protocol = 'HTTP/2';
  listener: ExchangeListener | undefined;
  headersSent = false;
  bodyEnded: boolean;
  status = 0;
  bytesSent = 0;
  /** Meaningless for a stream (the connection outlives it); kept for the interface. */
  keepAlive = true;
  private finished = false;
  /** Our side of the stream ended: with the HEADERS frame (no body), or with the last bytes of a known length. */
  private ended = false;
  /** The response body's length, -1 when unknown. */
  private length = -1;
  private trailersOut: HeaderList | undefined;
  private trailersIn: HeaderList | undefined;
  private resetByUs = false;
  /** Armed while a write waits for the client (its flow-control window, the socket) to take bytes. */
  private writeStall: NodeJS.Timeout | undefined;

  constructor(conn: H2Connection, stream: ServerHttp2Stream, raw: string[], endStream: boolean) {
    this.conn = conn;
    this.stream = stream;
    const headers = fieldsOf(raw);
    const cl = rawValue(raw, 'content-length');
    const contentLength = endStream ? 0 : cl !== undefined && /^\d{1,15}$/.test(cl) ? Number(cl) : -1;
    const expect = (rawValue(raw, 'expect') ?? '').toLowerCase();
    this.head = {
      method: rawValue(raw, ':method') ?? 'GET',
      target: rawValue(raw, ':path') ?? '/',
      host: rawValue(raw, ':authority') ?? rawValue(raw, 'host') ?? '',
      minor: 1,
      headers,
      contentLength,
      chunked: contentLength === -1,
      connection: undefined,
      keepAlive: true,
      upgrade: '',
      expect,
    };
    this.bodyEnded = endStream;
    stream.on('error', () => {});
    stream.on('trailers', (t: IncomingHttpHeaders, _flags: number, rawT: string[]) => (this.trailersIn = fieldsOf(rawT)));
    stream.once('close', () => this.onClose());
  }

  readBody(sink: BodySink): void {
    const stream = this.stream;
    if (this.bodyEnded) {
      sink.end(undefined);
      return;
    }
    stream.on('data', (chunk: Buffer) => sink.data(chunk));
    stream.once('end', () => {
      this.bodyEnded = true;
      sink.end(this.trailersIn);
    });
  }

  pauseBody(): void {
    this.stream.pause();
  }

  resumeBody(): void {
    this.stream.resume();
  }

  writeContinue(): void {
    if (!this.headersSent && !this.stream.destroyed) this.stream.additionalHeaders({ ':status': 100 });
  }

  writeHead(status: number, headers: HeaderList, length: number): void {
    if (this.headersSent) throw new Error('response head already sent');
    this.headersSent = true;
    this.status = status;
    this.length = length;
    const out = headerObject(headers, { ':status': String(status) });
    const noBody = length === 0 || this.head.method === 'HEAD' || status === 204 || status === 304;
    if (length >= 0 && status !== 204 && status !== 304) out['content-length'] = String(length);
    if (this.stream.destroyed || this.stream.closed) return;
    if (noBody) {
      // HEADERS with END_STREAM: for gRPC this is a "trailers-only" response (grpc-status in the head).
      this.ended = true;
      this.stream.respond(out, { endStream: true });
    } else if (length > 0) {
      // A known length: no trailers can follow (as with HTTP/1.1 content-length framing).
      this.stream.respond(out);
    } else {
      // Unknown length (a streamed or gRPC response): trailers may follow; an empty set ends with an empty DATA frame.
      this.stream.respond(out, { waitForTrailers: true });
      this.stream.once('wantTrailers', () => {
        const t = this.trailersOut;
        this.stream.sendTrailers(t && t.length > 0 ? headerObject(t, {}) : {});
      });
    }
  }

  write(chunk: Buffer): boolean {
    if (this.ended || chunk.length === 0 || this.stream.destroyed) return true;
    this.bytesSent += chunk.length;
    if (this.bytesSent === this.length) {
      // The last bytes of a known length: DATA with END_STREAM in one frame (the usual small response).
      this.ended = true;
      this.stream.end(chunk);
      return true;
    }
    const ok = this.stream.write(chunk);
    if (!ok) this.watchWrite();
    return ok;
  }

  /**
   * As on HTTP/1.1: a client that takes none of a waiting response for the
   * idle timeout loses the stream (RST_STREAM CANCEL), not the connection.
   */
  private watchWrite(): void {
    if (this.writeStall) return;
    this.writeStall = setTimeout(() => this.writeStalled(), this.conn.idleTimeoutMs);
    this.writeStall.unref();
    this.stream.once('drain', this.drained);
  }

  private readonly drained = (): void => {
    clearTimeout(this.writeStall);
    this.writeStall = undefined;
  };

  private writeStalled(): void {
    this.writeStall = undefined;
    if (this.finished) return;
    this.finished = true;
    this.resetByUs = true;
    this.listener?.aborted(new MeshError('stream-idle-timeout', `the client read nothing for ${this.conn.idleTimeoutMs} ms`), this.status);
    if (!this.stream.destroyed) this.stream.close(NGHTTP2_CANCEL);
  }

  respond(status: number, headers: HeaderList, body: Buffer): void {
    this.writeHead(status, headers, body.length);
    this.write(body);
    this.finishResponse(undefined);
  }

  finishResponse(trailers: HeaderList | undefined): void {
    if (this.finished) return;
    this.finished = true;
    if (this.ended || this.stream.destroyed) return;
    this.trailersOut = trailers;
    this.stream.end();
  }

  onDrain(cb: () => void): void {
    this.stream.once('drain', cb);
  }

  /** RST_STREAM this stream only; the connection and its other streams go on. */
  destroy(): void {
    this.finished = true;
    this.resetByUs = true;
    if (!this.stream.destroyed) this.stream.close(NGHTTP2_INTERNAL_ERROR);
  }

  fail(err: MeshError): void {
    if (this.headersSent) {
      this.destroy();
      return;
    }
    const r = renderError(err);
    this.respond(r.status, r.headers, r.body);
  }

  detach(): { socket: Socket; head: Buffer } {
    throw new MeshError('method-not-allowed', 'HTTP/2 streams cannot switch protocols');
  }

  private onClose(): void {
    clearTimeout(this.writeStall);
    if (this.finished) return;
    // Completed cleanly before the proxy called finishResponse (it is on its way).
    if (this.ended && this.stream.rstCode === NGHTTP2_NO_ERROR) return;
    this.finished = true;
    // Closed before our response was complete, not by our own reset, on a live connection: the peer reset it.
    if (!this.resetByUs && this.stream.rstCode !== NGHTTP2_NO_ERROR && !this.conn.session.destroyed) this.conn.peerReset();
    this.listener?.aborted(undefined, 0);
  }
}
