// The downstream side of the HTTP/1.1 codec: takes over accepted sockets
// (plain or TLS), parses requests strictly one at a time, hands each to the
// proxy as a ServerExchange, and writes its response with correct framing.
//
// In:  sockets from a net/tls server, limits and timeouts, hooks.
// Out: hooks.request(exchange) per request; codec-level refusals (400, 408,
//      414, 431, 501, 505, 503 too-many-connections) answered here through
//      renderError and reported with hooks.refused for the log and metrics.
//
// Pipelining: bytes after a request are kept (up to a bound, then the socket
// pauses) and parsed only once the response is complete, so responses always
// leave in request order. Timeouts are checked by one sweep per server rather
// than a timer per request, which keeps them off the hot path.
import { Buffer } from 'node:buffer';
import { performance } from 'node:perf_hooks';
import type { Socket } from 'node:net';
import { MeshError, renderError } from '../errors.ts';
import type { HeaderList } from '../wasm/stream.ts';
import { ChunkedDecoder, LengthDecoder, lastChunk, writeChunk, type BodyDecoder, type BodySink } from './body.ts';
import { findHeadEnd, parseRequestHead, type HeadLimits, type RequestHead } from './parse.ts';
import { adoptSharedRead, setReader } from './shared-read.ts';
import { holdForBatch } from './write-batch.ts';

export interface ServerOptions {
  limits: HeadLimits;
  /** A request head must be complete this long after its first byte (or after connect). Slowloris guard. */
  headersTimeoutMs: number;
  /** Keep-alive idle, and inactivity while a request body is being received. */
  idleTimeoutMs: number;
  /** Connections beyond this get one 503 too-many-connections and are closed. */
  maxConnections: number;
}

export const DEFAULT_SERVER_OPTIONS: Omit<ServerOptions, 'limits'> = { headersTimeoutMs: 10_000, idleTimeoutMs: 60_000, maxConnections: 10_000 };

export interface ServerHooks {
  request(exchange: ServerExchange): void;
  /** The codec refused a request (or a connection) and answered it itself; for the log and metrics. */
  refused(conn: ServerConnection, error: MeshError, status: number): void;
  /**
   * Listeners that tunnel (the HTTP proxy port): a CONNECT that follows other
   * requests on the connection takes the socket out of the codec, paused, with
   * the request's bytes put back. Without this hook CONNECT is a request like
   * any other (the proxy refuses it).
   */
  tunnel?(socket: Socket): void;
}

/** Bytes of pipelined requests kept while a response is pending, before the socket pauses. */
const PIPELINE_BUFFER = 64 * 1024;
/** Unread request body bytes held before the socket pauses (the proxy has not caught up). */
const BODY_BUFFER = 256 * 1024;

const HEAD = 0;
const BODY = 1;
const WAIT = 2;
const CLOSED = 3;
const UPGRADED = 4;

export class Http1Server {
  readonly options: ServerOptions;
  private readonly hooks: ServerHooks;
  readonly connections = new Set<ServerConnection>();
  private sweeper: NodeJS.Timeout | undefined;
  draining = false;

  constructor(options: ServerOptions, hooks: ServerHooks) {
    this.options = options;
    this.hooks = hooks;
  }

  /** Takes over a connected socket; the socket must have been created with allowHalfOpen. */
  accept(socket: Socket, info: ConnectionInfo = {}): ServerConnection {
    const conn = new ServerConnection(this, this.hooks, socket, info);
    if (this.connections.size >= this.options.maxConnections) conn.overLimit = true;
    this.connections.add(conn);
    if (!this.sweeper) {
      const tick = Math.max(20, Math.min(1000, Math.floor(Math.min(this.options.headersTimeoutMs, this.options.idleTimeoutMs) / 4)));
      this.sweeper = setInterval(() => this.sweep(), tick);
      this.sweeper.unref();
    }
    return conn;
  }

  /** Stop keep-alive: idle connections close now, busy ones right after their current response. */
  drain(): void {
    this.draining = true;
    for (const c of this.connections) c.closeIfIdle();
  }

  /** Number of requests being served right now. */
  busy(): number {
    let n = 0;
    for (const c of this.connections) if (c.exchange) n++;
    return n;
  }

  /** Resolves once every connection has closed, or after `ms` (then the rest are destroyed). */
  async closeAll(ms: number): Promise<void> {
    const deadline = performance.now() + ms;
    while (this.connections.size > 0 && performance.now() < deadline) {
      for (const c of this.connections) c.closeIfIdle();
      await new Promise((r) => setTimeout(r, 10));
    }
    this.destroyAll();
  }

  destroyAll(): void {
    for (const c of this.connections) c.socket.destroy();
    this.stopSweeper();
  }

  forget(conn: ServerConnection): void {
    this.connections.delete(conn);
    if (this.connections.size === 0) this.stopSweeper();
  }

  private stopSweeper(): void {
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
  }

  private sweep(): void {
    const now = performance.now();
    for (const c of this.connections) {
      if (c.deadline !== 0 && now > c.deadline) c.expire();
      if (c.writeStallDeadline !== 0 && now > c.writeStallDeadline) c.writeStalled();
    }
  }
}

/** What the listener knows about a connection beyond the socket (e.g. the mTLS peer, the original destination). */
export interface ConnectionInfo {
  /** URI SAN of the peer certificate (inbound mTLS). */
  peer?: string;
  /** Original destination of an intercepted connection. */
  originalDst?: { address: string; port: number };
}

export class ServerConnection {
  readonly socket: Socket;
  readonly info: ConnectionInfo;
  private readonly server: Http1Server;
  private readonly hooks: ServerHooks;
  private state = HEAD;
  private pending: Buffer | undefined;
  private scanFrom = 0;
  exchange: ServerExchange | undefined;
  /** performance.now() deadline, 0 = none. */
  deadline: number;
  private deadlineIsIdle = false;
  /** performance.now() by which a full socket buffer must have drained (the client reads), 0 = not waiting. */
  writeStallDeadline = 0;
  overLimit = false;
  private clientEnded = false;
  private paused = false;
  /** The socket reads into the shared buffer (shared-read.ts). */
  private sharedRead: boolean;
  requests = 0;

  constructor(server: Http1Server, hooks: ServerHooks, socket: Socket, info: ConnectionInfo) {
    this.server = server;
    this.hooks = hooks;
    this.socket = socket;
    this.info = info;
    this.deadline = performance.now() + server.options.headersTimeoutMs;
    socket.setNoDelay(true);
    // Reads arrive through the shared read buffer once the socket holds no earlier bytes (those
    // protocol detection put back come first, as 'data' events), or as 'data' where adoption is not possible.
    setReader(socket, this);
    this.sharedRead = adoptSharedRead(socket);
    socket.on('data', (chunk: Buffer) => {
      this.onData(chunk);
      if (!this.sharedRead && this.state !== UPGRADED && this.state !== CLOSED) this.sharedRead = adoptSharedRead(socket);
    });
    socket.on('end', () => this.onEnd());
    socket.on('error', () => {});
    socket.on('close', () => this.onClose());
  }

  /** Bytes from the client (through the shared read buffer's callback or 'data'). */
  onData(chunk: Buffer): void {
    switch (this.state) {
      case HEAD:
        if (this.pending === undefined) {
          this.pending = chunk;
          this.scanFrom = 0;
          if (this.deadlineIsIdle) {
            // First byte of a new request: the header timeout starts now.
            this.deadline = performance.now() + this.server.options.headersTimeoutMs;
            this.deadlineIsIdle = false;
          }
        } else {
          this.scanFrom = Math.max(0, this.pending.length - 3);
          this.pending = Buffer.concat([this.pending, chunk]);
        }
        this.parse();
        return;
      case BODY:
        this.deadline = performance.now() + this.server.options.idleTimeoutMs;
        this.feedBody(chunk, 0);
        return;
      case WAIT:
        this.pending = this.pending === undefined ? chunk : Buffer.concat([this.pending, chunk]);
        if (this.pending.length > PIPELINE_BUFFER) this.pause();
        return;
      default:
        return;
    }
  }

  /** Parses heads from `pending` while the connection is free to start a request. */
  private parse(): void {
    while (this.state === HEAD && this.pending !== undefined) {
      const buf = this.pending;
      let start = 0;
      // RFC 9112 2.2: ignore empty lines before a request line.
      while (start + 1 < buf.length && buf[start] === 0x0d && buf[start + 1] === 0x0a) start += 2;
      let end: number;
      let head: RequestHead;
      try {
        end = findHeadEnd(buf, start, this.scanFrom, this.server.options.limits, true);
        if (end === -1) return;
        head = parseRequestHead(buf, start, end, this.server.options.limits);
      } catch (err) {
        this.refuse(err as MeshError);
        return;
      }
      if (head.method === 'CONNECT' && this.hooks.tunnel) {
        this.handOver(buf.subarray(start));
        return;
      }
      let pos = end + 4;
      this.pending = undefined;
      this.scanFrom = 0;
      this.requests++;
      const ex = new ServerExchange(this, head);
      this.exchange = ex;
      if (this.overLimit) {
        this.refuse(new MeshError('too-many-connections', `this listener serves at most ${this.server.options.maxConnections} connections`));
        return;
      }
      if (head.chunked) ex.decoder = new ChunkedDecoder(this.server.options.limits, true);
      else if (head.contentLength > 0) ex.decoder = new LengthDecoder(head.contentLength, true);
      if (ex.decoder) {
        this.state = BODY;
        this.deadline = performance.now() + this.server.options.idleTimeoutMs;
      } else {
        this.state = WAIT;
        this.deadline = 0;
        ex.bodyEnded = true;
      }
      this.hooks.request(ex);
      if (this.state === BODY && pos < buf.length) {
        this.feedBody(buf, pos);
        pos = buf.length;
      } else if (pos < buf.length && this.state !== CLOSED && this.state !== UPGRADED) {
        // Pipelined bytes (or bytes after an upgrade request): kept until the response is done.
        this.pending = buf.subarray(pos);
        if (this.state === WAIT && this.pending.length > PIPELINE_BUFFER) this.pause();
      } else if (pos < buf.length && this.state === UPGRADED && ex) {
        ex.upgradeHead = buf.subarray(pos);
      }
    }
  }

  private feedBody(buf: Buffer, pos: number): void {
    const ex = this.exchange!;
    let used: number;
    try {
      used = ex.decoder!.feed(buf, pos, ex);
    } catch (err) {
      this.refuse(err as MeshError);
      return;
    }
    if (ex.decoder!.done) {
      if (this.state === BODY) {
        this.state = WAIT;
        this.deadline = 0;
      }
      if (used < buf.length && this.state === WAIT) {
        this.pending = buf.subarray(used);
        if (this.pending.length > PIPELINE_BUFFER) this.pause();
      }
    } else if (ex.buffered > BODY_BUFFER) {
      this.pause();
    }
  }

  pause(): void {
    if (!this.paused) {
      this.paused = true;
      this.socket.pause();
    }
  }

  resume(): void {
    if (this.paused) {
      this.paused = false;
      this.socket.resume();
    }
  }

  /** The codec answers (400/408/414/431/…) and closes: the rest of the stream cannot be trusted. */
  refuse(err: MeshError): void {
    const ex = this.exchange;
    if (ex?.headersSent) {
      this.socket.destroy();
      return;
    }
    const r = renderError(err);
    // A request the proxy already has is logged by the proxy; otherwise the codec reports it.
    if (ex?.listener) ex.abort(err, r.status);
    else this.hooks.refused(this, err, r.status);
    let head = `HTTP/1.1 ${r.status} ${statusText(r.status)}\r\n`;
    for (const [k, v] of r.headers) head += `${k}: ${v}\r\n`;
    head += `content-length: ${r.body.length}\r\nconnection: close\r\n\r\n`;
    this.state = CLOSED;
    this.exchange = undefined;
    this.pending = undefined;
    this.deadline = 0;
    this.socket.cork();
    this.socket.write(head, 'latin1');
    this.socket.end(r.body);
    this.socket.uncork();
    // A peer that keeps sending is cut off shortly after the answer went out.
    setTimeout(() => this.socket.destroy(), 1_000).unref();
  }

  /** The response of the current exchange is complete. */
  responseDone(ex: ServerExchange): void {
    if (this.exchange !== ex) return;
    this.exchange = undefined;
    if (!ex.keepAlive || this.clientEnded || this.server.draining || this.state === BODY) {
      // An unread request body (state BODY) leaves the stream position unknown: close.
      this.state = CLOSED;
      this.deadline = 0;
      this.socket.end();
      return;
    }
    this.state = HEAD;
    this.deadline = performance.now() + this.server.options.idleTimeoutMs;
    this.deadlineIsIdle = true;
    this.resume();
    if (this.pending !== undefined) {
      this.deadline = performance.now() + this.server.options.headersTimeoutMs;
      this.deadlineIsIdle = false;
      this.scanFrom = 0;
      this.parse();
    }
  }

  closeIfIdle(): void {
    if (this.state === HEAD && this.pending === undefined && !this.exchange) {
      this.state = CLOSED;
      this.socket.end();
    }
  }

  /**
   * A response write found the socket's buffer full: the client must take
   * bytes within the idle timeout. One that stops reading is the response
   * side's slowloris; without this only the route timeout (if any) would end it,
   * and blamed on the upstream.
   */
  watchWrite(): void {
    if (this.writeStallDeadline !== 0) return;
    this.writeStallDeadline = performance.now() + this.server.options.idleTimeoutMs;
    this.socket.once('drain', this.drained);
  }

  private readonly drained = (): void => {
    this.writeStallDeadline = 0;
  };

  /** Called by the sweep: the client read nothing for the idle timeout while a response waited. */
  writeStalled(): void {
    this.writeStallDeadline = 0;
    const ex = this.exchange;
    // The head is out: nothing can be answered, only ended. The reason goes to the log first.
    ex?.abort(new MeshError('stream-idle-timeout', `the client read nothing for ${this.server.options.idleTimeoutMs} ms`), ex.status);
    this.socket.destroy();
  }

  /** Called by the sweep when the deadline passed. */
  expire(): void {
    this.deadline = 0;
    if (this.state === HEAD && this.pending === undefined) {
      this.state = CLOSED;
      this.socket.destroy();
      return;
    }
    if (this.state === HEAD || this.state === BODY) {
      this.refuse(new MeshError('request-timeout', this.state === HEAD ? 'request head not received in time' : 'request body stalled'));
    }
  }

  /** Detaches the socket from the codec (after a 101): bytes read past the request head come with it. */
  detach(ex: ServerExchange): { socket: Socket; head: Buffer } {
    const head = ex.upgradeHead ?? this.pending ?? Buffer.alloc(0);
    this.leaveCodec();
    this.resume();
    return { socket: this.socket, head };
  }

  /** Gives the socket to the tunnel hook with `bytes` (a CONNECT and whatever followed it) unread. */
  private handOver(bytes: Buffer): void {
    this.leaveCodec();
    this.socket.pause();
    this.paused = false;
    this.socket.unshift(bytes);
    this.hooks.tunnel!(this.socket);
  }

  /** The codec lets go of the socket: no more parsing, timeouts or draining for it. */
  private leaveCodec(): void {
    this.state = UPGRADED;
    this.deadline = 0;
    this.exchange = undefined;
    this.pending = undefined;
    setReader(this.socket, undefined);
    this.socket.removeAllListeners('data');
    this.socket.removeAllListeners('end');
    this.server.forget(this);
  }

  private onEnd(): void {
    this.clientEnded = true;
    if (this.state === HEAD && !this.exchange) {
      if (this.pending !== undefined && this.pending.length > 0) {
        this.refuse(new MeshError('malformed-request', 'connection closed inside a request head'));
        return;
      }
      this.state = CLOSED;
      this.socket.end();
    } else if (this.state === BODY && this.exchange) {
      try {
        this.exchange.decoder!.eof(this.exchange);
      } catch (err) {
        this.refuse(err as MeshError);
      }
    }
  }

  private onClose(): void {
    this.state = CLOSED;
    this.server.forget(this);
    const ex = this.exchange;
    this.exchange = undefined;
    if (ex && !ex.finished) ex.abort();
  }

  get draining(): boolean {
    return this.server.draining;
  }
}

export interface ExchangeListener {
  /**
   * The exchange ended before the proxy completed the response: the downstream
   * went away (no error), or the codec refused the rest of the request and
   * answered `status` itself.
   */
  aborted(error: MeshError | undefined, status: number): void;
}

/**
 * One request and its response. As a BodySink it receives the request body
 * from the decoder; it buffers it until the proxy calls readBody.
 */
export class ServerExchange implements BodySink {
  readonly conn: ServerConnection;
  readonly head: RequestHead;
  decoder: BodyDecoder | undefined;
  bodyEnded = false;
  trailers: HeaderList | undefined;
  private queue: Buffer[] | undefined;
  buffered = 0;
  private sink: BodySink | undefined;
  listener: ExchangeListener | undefined;
  headersSent = false;
  finished = false;
  status = 0;
  bytesSent = 0;
  keepAlive: boolean;
  private chunked = false;
  private noBody = false;
  upgradeHead: Buffer | undefined;

  constructor(conn: ServerConnection, head: RequestHead) {
    this.conn = conn;
    this.head = head;
    this.keepAlive = head.keepAlive;
  }

  // BodySink, called by the decoder.
  data(chunk: Buffer): void {
    if (this.sink) {
      this.sink.data(chunk);
      return;
    }
    (this.queue ??= []).push(chunk);
    this.buffered += chunk.length;
  }

  end(trailers: HeaderList | undefined): void {
    this.bodyEnded = true;
    this.trailers = trailers;
    if (this.sink) this.sink.end(trailers);
  }

  /** Delivers the request body (what is buffered at once, the rest as it arrives). */
  readBody(sink: BodySink): void {
    this.sink = sink;
    const q = this.queue;
    this.queue = undefined;
    this.buffered = 0;
    if (q) for (const c of q) sink.data(c);
    if (this.bodyEnded) sink.end(this.trailers);
    else this.conn.resume();
  }

  /** Backpressure from the proxy: stop / restart reading the request body. */
  pauseBody(): void {
    this.conn.pause();
  }

  resumeBody(): void {
    this.conn.resume();
  }

  /** `100 Continue` for a request that asked for it, once the proxy decided to read the body. */
  writeContinue(): void {
    if (!this.headersSent) this.conn.socket.write('HTTP/1.1 100 Continue\r\n\r\n', 'latin1');
  }

  /**
   * Writes the response head. `length` is the body length, or -1 when unknown
   * (chunked for HTTP/1.1, close-delimited for HTTP/1.0). `headers` must not
   * contain framing or connection fields; the codec adds them.
   */
  writeHead(status: number, headers: HeaderList, length: number, reason?: string): void {
    if (this.headersSent) throw new Error('response head already sent');
    this.headersSent = true;
    this.status = status;
    const h = this.head;
    this.noBody = h.method === 'HEAD' || status === 204 || status === 304 || (status >= 100 && status < 200);
    if (this.conn.draining) this.keepAlive = false;
    // Head and the first body bytes (usually read together from the upstream) leave in one
    // writev, with the other responses of this batch (write-batch.ts).
    holdForBatch(this.conn.socket);
    let s = `HTTP/1.1 ${status} ${reason ?? statusText(status)}\r\n`;
    for (let i = 0; i < headers.length; i++) {
      const e = headers[i]!;
      s += e[0] + ': ' + e[1] + '\r\n';
    }
    if (status === 204 || status === 304 || (status >= 100 && status < 200)) {
      // No framing fields at all.
    } else if (length >= 0) {
      s += 'content-length: ' + length + '\r\n';
    } else if (h.minor === 1) {
      if (!this.noBody) {
        s += 'transfer-encoding: chunked\r\n';
        this.chunked = true;
      }
    } else if (!this.noBody) {
      this.keepAlive = false;
    }
    if (status === 101) {
      // The caller supplies Connection: upgrade and Upgrade; the socket leaves the codec next.
    } else if (!this.keepAlive) s += 'connection: close\r\n';
    else if (h.minor === 0) s += 'connection: keep-alive\r\n';
    this.conn.socket.write(s + '\r\n', 'latin1');
  }

  /**
   * Writes an upstream's response head as it was received: `bytes` run
   * from the status line to the empty line that ends it, less the fields a
   * proxy drops (framing fields stay). The codec adds only
   * `connection: close` when this connection will close. Returns false,
   * writing nothing, where the head must be rebuilt instead: an HTTP/1.0
   * client, a response without a body, or one whose length is not in
   * `length` (the codec would frame it).
   */
  writeHeadBytes(status: number, bytes: Buffer, length: number): boolean {
    if (this.headersSent || this.head.minor !== 1 || length < 0 || this.head.method === 'HEAD' || status < 200 || status === 204 || status === 304) return false;
    this.headersSent = true;
    this.status = status;
    if (this.conn.draining) this.keepAlive = false;
    const socket = this.conn.socket;
    holdForBatch(socket);
    if (this.keepAlive) {
      socket.write(bytes);
    } else {
      // In place of the empty line: this connection's own Connection field, then the empty line.
      socket.write(bytes.subarray(0, bytes.length - 2));
      socket.write('connection: close\r\n\r\n', 'latin1');
    }
    return true;
  }

  /** Body bytes; returns false when the socket's buffer is full (wait for drain()). */
  write(chunk: Buffer): boolean {
    if (this.noBody || chunk.length === 0) return true;
    this.bytesSent += chunk.length;
    const ok = this.chunked ? writeChunk(this.conn.socket, chunk) : this.conn.socket.write(chunk);
    if (!ok) this.conn.watchWrite();
    return ok;
  }

  /** Head and whole body in one go (one writev), for local responses and small bodies. */
  respond(status: number, headers: HeaderList, body: Buffer): void {
    const socket = this.conn.socket;
    socket.cork();
    this.writeHead(status, headers, body.length);
    this.write(body);
    this.finishResponse(undefined);
    socket.uncork();
  }

  /** Ends the response (the last chunk and trailers when chunked). */
  finishResponse(trailers: HeaderList | undefined): void {
    if (this.finished) return;
    this.finished = true;
    if (this.chunked) this.conn.socket.write(lastChunk(trailers), 'latin1');
    this.conn.responseDone(this);
  }

  /** Waits for the socket to take more data. */
  onDrain(cb: () => void): void {
    this.conn.socket.once('drain', cb);
  }

  /** Resets the downstream connection (a response can no longer be delivered correctly). */
  destroy(): void {
    this.finished = true;
    this.conn.socket.destroy();
  }

  /** Answers with a MeshError through the one renderer; resets when the head is already out. */
  fail(err: MeshError): void {
    if (this.headersSent) {
      this.destroy();
      return;
    }
    const r = renderError(err);
    // The rest of an unread request body would be parsed as the next request: close instead.
    if (!this.bodyEnded) this.keepAlive = false;
    this.respond(r.status, r.headers, r.body);
  }

  /** Takes the raw socket after a 101 response was written. */
  detach(): { socket: Socket; head: Buffer } {
    this.finished = true;
    return this.conn.detach(this);
  }

  abort(error?: MeshError, status = 0): void {
    if (this.finished) return;
    this.finished = true;
    this.listener?.aborted(error, status);
  }
}

const STATUS_TEXT: Record<number, string> = {
  100: 'Continue', 101: 'Switching Protocols', 200: 'OK', 201: 'Created', 202: 'Accepted', 204: 'No Content',
  206: 'Partial Content', 301: 'Moved Permanently', 302: 'Found', 303: 'See Other', 304: 'Not Modified',
  307: 'Temporary Redirect', 308: 'Permanent Redirect', 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden',
  404: 'Not Found', 405: 'Method Not Allowed', 408: 'Request Timeout', 409: 'Conflict', 411: 'Length Required',
  413: 'Content Too Large', 414: 'URI Too Long', 417: 'Expectation Failed', 429: 'Too Many Requests',
  431: 'Request Header Fields Too Large', 500: 'Internal Server Error', 501: 'Not Implemented', 502: 'Bad Gateway',
  503: 'Service Unavailable', 504: 'Gateway Timeout', 505: 'HTTP Version Not Supported',
};

export function statusText(status: number): string {
  return STATUS_TEXT[status] ?? '';
}
