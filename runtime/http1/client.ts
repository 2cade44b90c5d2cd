// The upstream side of the HTTP/1.1 codec: a pool of keep-alive connections
// to one endpoint (plain TCP to the local app, mTLS to another sidecar) and
// the exchanges that run on them, one at a time per connection.
//
// In:  a serialised request head, the body framing, a ResponseHandler.
// Out: handler.response(head) for the final response (interim 1xx skipped,
//      101 handed over for upgrades), the body through handler.data/end, or
//      handler.failed(MeshError) once: upstream-connect-failed,
//      upstream-identity-mismatch, upstream-reset, upstream-protocol-error.
//
// A request without a body that meets a pooled connection the upstream had
// just closed is sent again on a fresh connection (the race every keep-alive
// client has); anything else that fails is reported, never replayed here.
import { Buffer } from 'node:buffer';
import { performance } from 'node:perf_hooks';
import type { OnReadOpts, Socket } from 'node:net';
import { SHARED_READ, setReader } from './shared-read.ts';
import { MeshError } from '../errors.ts';
import { holdForBatch } from './write-batch.ts';
import type { HeaderList } from '../wasm/stream.ts';
import { ChunkedDecoder, CloseDecoder, LengthDecoder, lastChunk, writeChunk, type BodyDecoder, type BodySink } from './body.ts';
import { findHeadEnd, parseResponseHead, type HeadLimits, type ResponseHead } from './parse.ts';

export interface PoolOptions {
  /**
   * Opens a connection (net.connect or tls.connect) with `read` as its
   * `onread` (SHARED_READ); the pool waits for connect / secureConnect.
   */
  connect(read: OnReadOpts): Socket;
  secure: boolean;
  limits: HeadLimits;
  /** Idle pooled connections close after this long. */
  idleTimeoutMs: number;
  /** Idle connections kept at most. */
  maxIdle: number;
  /** Circuit breaking shared by the pools of one service's endpoints. */
  budget?: ConnectionBudget;
}

/**
 * Connection limits across the pools of one service: beyond maxConnections a
 * request waits for a connection (a pending request); beyond maxPending it
 * fails at once with circuit-open.
 */
export interface ConnectionBudget {
  open: number;
  maxConnections: number;
  pending: number;
  maxPending: number;
  waiters: UpstreamExchange[];
}

export interface ResponseHandler extends BodySink {
  /** The final response head. */
  response(head: ResponseHead, exchange: UpstreamExchange): void;
  /** The exchange failed; called at most once and never after end(). */
  failed(err: MeshError): void;
}

export interface RequestFraming {
  method: string;
  /** Body length, 0 for none, -1 for chunked. */
  length: number;
  /** The request asks to upgrade: a 101 hands the socket over. */
  upgrade: boolean;
}

const pools = new Set<UpstreamPool>();
let sweeper: NodeJS.Timeout | undefined;

function sweepIdle(): void {
  const now = performance.now();
  for (const p of pools) p.closeIdleBefore(now);
}

export class UpstreamPool {
  readonly options: PoolOptions;
  private readonly idle: UpstreamConnection[] = [];
  /** Connections open (idle or busy). */
  open = 0;
  private retired = false;

  constructor(options: PoolOptions) {
    this.options = options;
  }

  /** Starts one request. The head is the request line and fields, ending with the empty line. */
  request(head: string, framing: RequestFraming, handler: ResponseHandler): UpstreamExchange {
    const ex = new UpstreamExchange(this, head, framing, handler);
    this.assign(ex, false);
    return ex;
  }

  /** Puts an exchange on an idle connection, or a new one. */
  assign(ex: UpstreamExchange, fresh: boolean): void {
    let conn: UpstreamConnection | undefined;
    while (!fresh && this.idle.length > 0) {
      const c = this.idle.pop()!;
      if (c.usable()) {
        conn = c;
        break;
      }
      c.close();
    }
    if (!conn) {
      const b = this.options.budget;
      if (b && b.open >= b.maxConnections) {
        if (b.pending >= b.maxPending) {
          const err = new MeshError('circuit-open', `${b.open} connections and ${b.pending} pending requests: the service's limits are reached`);
          queueMicrotask(() => ex.fail(err));
          return;
        }
        b.pending++;
        ex.waiting = true;
        b.waiters.push(ex);
        return;
      }
      conn = new UpstreamConnection(this, this.options.connect(SHARED_READ));
    }
    conn.start(ex);
  }

  /** A connection of this pool went away: a request waiting on the service's budget may open one now. */
  connectionClosed(): void {
    this.open--;
    const b = this.options.budget;
    if (!b) return;
    b.open--;
    const next = b.waiters.shift();
    if (next) {
      b.pending--;
      next.waiting = false;
      next.pool.assign(next, false);
    }
  }

  release(conn: UpstreamConnection): void {
    const b = this.options.budget;
    if (b && b.pending > 0 && !this.retired) {
      const i = b.waiters.findIndex((w) => w.pool === this);
      if (i !== -1) {
        const next = b.waiters.splice(i, 1)[0]!;
        b.pending--;
        next.waiting = false;
        conn.start(next);
        return;
      }
    }
    if (this.retired || this.idle.length >= this.options.maxIdle) {
      conn.close();
      return;
    }
    conn.idleSince = performance.now();
    this.idle.push(conn);
    if (!pools.has(this)) {
      pools.add(this);
      if (!sweeper) {
        sweeper = setInterval(sweepIdle, 1000);
        sweeper.unref();
      }
    }
  }

  forget(conn: UpstreamConnection): void {
    const i = this.idle.indexOf(conn);
    if (i !== -1) this.idle.splice(i, 1);
  }

  closeIdleBefore(now: number): void {
    const limit = now - this.options.idleTimeoutMs;
    for (let i = this.idle.length - 1; i >= 0; i--) {
      const c = this.idle[i]!;
      if (c.idleSince < limit) {
        this.idle.splice(i, 1);
        c.close();
      }
    }
    if (this.idle.length === 0) pools.delete(this);
  }

  /** No new connections are kept: idle ones close now, busy ones after their exchange (certificate rotation). */
  retire(): void {
    this.retired = true;
    for (const c of this.idle.splice(0)) c.close();
    pools.delete(this);
  }

  /** Closes everything now. */
  destroy(): void {
    this.retire();
  }

  idleCount(): number {
    return this.idle.length;
  }
}

const CONNECTING = 0;
const READY = 1;
const AWAIT_HEAD = 2;
const RESPONSE_BODY = 3;
const CLOSED = 4;

export class UpstreamConnection {
  readonly socket: Socket;
  private readonly pool: UpstreamPool;
  private state = CONNECTING;
  private connected = false;
  private ex: UpstreamExchange | undefined;
  private pending: Buffer | undefined;
  private scanFrom = 0;
  private decoder: BodyDecoder | undefined;
  private keepAlive = true;
  private error: Error | undefined;
  idleSince = 0;
  uses = 0;

  constructor(pool: UpstreamPool, socket: Socket) {
    this.pool = pool;
    this.socket = socket;
    pool.open++;
    if (pool.options.budget) pool.options.budget.open++;
    socket.setNoDelay(true);
    socket.once(pool.options.secure ? 'secureConnect' : 'connect', () => {
      this.connected = true;
      if (this.state === CONNECTING) this.state = this.ex ? AWAIT_HEAD : READY;
    });
    // Where SHARED_READ's callback delivers the bytes; a socket opened without it delivers 'data' events instead.
    setReader(socket, this);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err: Error) => (this.error ??= err));
    socket.on('end', () => this.onEnd());
    socket.on('close', () => this.onClose());
  }

  usable(): boolean {
    return this.state === READY && !this.socket.destroyed && this.socket.writable;
  }

  start(ex: UpstreamExchange): void {
    this.ex = ex;
    ex.conn = this;
    ex.reused = this.uses > 0;
    this.uses++;
    this.keepAlive = true;
    if (this.state === READY) this.state = AWAIT_HEAD;
    ex.sendHead();
  }

  /** Bytes from the upstream (through SHARED_READ's callback or 'data'). */
  onData(chunk: Buffer): void {
    const ex = this.ex;
    if (!ex || (this.state !== AWAIT_HEAD && this.state !== RESPONSE_BODY)) {
      // Bytes nobody asked for: the stream is out of step.
      this.close();
      return;
    }
    ex.gotBytes = true;
    if (this.state === RESPONSE_BODY) {
      this.feed(chunk, 0);
      return;
    }
    if (this.pending === undefined) {
      this.pending = chunk;
      this.scanFrom = 0;
    } else {
      this.scanFrom = Math.max(0, this.pending.length - 3);
      this.pending = Buffer.concat([this.pending, chunk]);
    }
    this.parseHead();
  }

  private parseHead(): void {
    const ex = this.ex!;
    const limits = this.pool.options.limits;
    while (this.pending !== undefined && this.state === AWAIT_HEAD) {
      const buf = this.pending;
      let end: number;
      let head: ResponseHead;
      try {
        end = findHeadEnd(buf, 0, this.scanFrom, limits, false);
        if (end === -1) return;
        head = parseResponseHead(buf, 0, end, limits);
      } catch (err) {
        this.fail(err as MeshError);
        return;
      }
      const rest = end + 4 < buf.length ? buf.subarray(end + 4) : undefined;
      this.pending = rest;
      this.scanFrom = 0;
      if (head.status === 101) {
        if (!ex.framing.upgrade) {
          this.fail(new MeshError('upstream-protocol-error', 'upstream switched protocols without being asked'));
          return;
        }
        this.state = CLOSED;
        ex.upgradeHead = rest ?? Buffer.alloc(0);
        this.pending = undefined;
        ex.deliverHead(head);
        return;
      }
      if (head.status < 200) continue; // interim responses (100, 103) are not relayed
      this.keepAlive = head.keepAlive;
      const method = ex.framing.method;
      if (method === 'HEAD' || head.status === 204 || head.status === 304) this.decoder = undefined;
      else if (head.chunked) this.decoder = new ChunkedDecoder(limits, false);
      else if (head.contentLength >= 0) this.decoder = new LengthDecoder(head.contentLength, false);
      else {
        this.decoder = new CloseDecoder();
        this.keepAlive = false;
      }
      this.state = RESPONSE_BODY;
      ex.deliverHead(head);
      if (this.ex !== ex || this.state !== RESPONSE_BODY) return; // aborted from the handler
      if (!this.decoder || (this.decoder instanceof LengthDecoder && head.contentLength === 0)) {
        this.pending = undefined;
        this.complete(undefined);
        return;
      }
      this.pending = undefined;
      if (rest) this.feed(rest, 0);
    }
  }

  private feed(buf: Buffer, pos: number): void {
    const ex = this.ex!;
    let used: number;
    try {
      used = this.decoder!.feed(buf, pos, ex);
    } catch (err) {
      this.fail(err as MeshError);
      return;
    }
    if (this.decoder?.done && this.ex === ex) {
      if (used < buf.length) this.keepAlive = false; // bytes after the response: out of step
      this.finishExchange();
    }
  }

  private complete(trailers: HeaderList | undefined): void {
    this.ex!.end(trailers);
    this.finishExchange();
  }

  /** The response is complete: the connection goes back to the pool first, then the handler hears of the end (so its next request can reuse it). */
  private finishExchange(): void {
    const ex = this.ex!;
    ex.responseDone = true;
    this.decoder = undefined;
    if (!ex.requestDone) {
      // The upstream answered before the request body was sent: the connection cannot be reused.
      this.keepAlive = false;
    }
    this.ex = undefined;
    ex.conn = undefined;
    if (this.keepAlive && this.state === RESPONSE_BODY && !this.socket.destroyed) {
      this.state = READY;
      // The exchange may have paused reading for backpressure; an idle connection must notice a close.
      if (this.socket.isPaused()) this.socket.resume();
      this.pool.release(this);
    } else {
      this.close();
    }
    ex.deliverEnd();
  }

  private fail(err: MeshError): void {
    const ex = this.ex;
    this.ex = undefined;
    this.close();
    if (ex) {
      ex.conn = undefined;
      ex.fail(err);
    }
  }

  private onEnd(): void {
    if (this.state === RESPONSE_BODY && this.decoder && this.ex) {
      try {
        this.decoder.eof(this.ex);
        this.finishExchange();
        return;
      } catch (err) {
        this.fail(err as MeshError);
        return;
      }
    }
    this.socket.destroy();
  }

  private onClose(): void {
    const wasConnected = this.connected;
    const state = this.state;
    this.state = CLOSED;
    this.pool.forget(this);
    this.pool.connectionClosed();
    const ex = this.ex;
    this.ex = undefined;
    if (!ex) return;
    ex.conn = undefined;
    const err = this.error as (NodeJS.ErrnoException & { code?: string }) | undefined;
    if (!wasConnected) {
      if (err?.code === 'MESH_IDENTITY_MISMATCH') ex.fail(new MeshError('upstream-identity-mismatch', err.message));
      else ex.fail(new MeshError('upstream-connect-failed', `cannot reach the upstream: ${err?.message ?? 'connection closed while connecting'}`));
      return;
    }
    if (state === AWAIT_HEAD && !ex.gotBytes && ex.reused && ex.framing.length === 0 && !ex.aborted) {
      // A pooled connection the upstream had closed: send the request again on a new one.
      this.pool.assign(ex, true);
      return;
    }
    ex.fail(new MeshError('upstream-reset', `the upstream closed the connection ${state === RESPONSE_BODY ? 'inside the response' : 'before responding'}${err ? `: ${err.message}` : ''}`));
  }

  close(): void {
    if (this.state !== CLOSED) this.state = CLOSED;
    this.socket.destroy();
  }

  /** Gives up the socket for an upgraded (101) exchange. */
  detach(): Socket {
    this.state = CLOSED;
    this.ex = undefined;
    this.pool.connectionClosed();
    setReader(this.socket, undefined);
    this.socket.removeAllListeners('data');
    this.socket.removeAllListeners('end');
    this.socket.removeAllListeners('close');
    return this.socket;
  }
}

/** One request on the pool: the head goes out at once, the body as the proxy writes it. */
export class UpstreamExchange implements BodySink {
  readonly pool: UpstreamPool;
  /** Queued on the service's connection budget. */
  waiting = false;
  private readonly head: string;
  readonly framing: RequestFraming;
  private readonly handler: ResponseHandler;
  conn: UpstreamConnection | undefined;
  reused = false;
  gotBytes = false;
  requestDone: boolean;
  responseDone = false;
  aborted = false;
  private failed = false;
  upgradeHead: Buffer | undefined;
  private trailers: HeaderList | undefined;
  private queued: Buffer[] | undefined;
  private finishQueued = false;
  private queuedTrailers: HeaderList | undefined;

  constructor(pool: UpstreamPool, head: string, framing: RequestFraming, handler: ResponseHandler) {
    this.pool = pool;
    this.head = head;
    this.framing = framing;
    this.handler = handler;
    this.requestDone = framing.length === 0;
  }

  sendHead(): void {
    const socket = this.conn!.socket;
    // Head and body bytes leave in one writev, with the other requests of this batch (write-batch.ts).
    holdForBatch(socket);
    socket.write(this.head, 'latin1');
    // Body bytes written while the request waited for a connection.
    const q = this.queued;
    this.queued = undefined;
    if (q) for (const d of q) this.write(d);
    if (this.finishQueued) {
      this.finishQueued = false;
      this.requestDone = false;
      this.finish(this.queuedTrailers);
    }
  }

  /** Request body bytes (framed chunked when the length is unknown). False: wait for onDrain. */
  write(data: Buffer): boolean {
    const c = this.conn;
    if (this.aborted) return true;
    if (!c) {
      (this.queued ??= []).push(data);
      return true;
    }
    if (this.framing.length === -1) return writeChunk(c.socket, data);
    return data.length === 0 ? true : c.socket.write(data);
  }

  /** Ends the request body. */
  finish(trailers: HeaderList | undefined): void {
    if (this.requestDone) return;
    this.requestDone = true;
    const c = this.conn;
    if (!c && !this.aborted) {
      this.finishQueued = true;
      this.queuedTrailers = trailers;
      return;
    }
    if (c && !this.aborted && this.framing.length === -1) c.socket.write(lastChunk(trailers), 'latin1');
  }

  onDrain(cb: () => void): void {
    if (this.conn) this.conn.socket.once('drain', cb);
    else cb();
  }

  deliverHead(head: ResponseHead): void {
    if (!this.aborted) this.handler.response(head, this);
  }

  // BodySink for the response decoder.
  data(chunk: Buffer): void {
    if (!this.aborted) this.handler.data(chunk);
  }

  /** The decoder reached the end; the connection delivers it once it has been released. */
  end(trailers: HeaderList | undefined): void {
    this.responseDone = true;
    this.trailers = trailers;
  }

  deliverEnd(): void {
    if (!this.aborted) this.handler.end(this.trailers);
  }

  fail(err: MeshError): void {
    if (this.failed || this.aborted || this.responseDone) return;
    this.failed = true;
    this.handler.failed(err);
  }

  /** Backpressure from the downstream: stop reading the response for a while. */
  pauseResponse(): void {
    this.conn?.socket.pause();
  }

  resumeResponse(): void {
    this.conn?.socket.resume();
  }

  /** The proxy gave up on this exchange (timeout, downstream gone): the connection is closed, not reused. */
  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    const b = this.pool.options.budget;
    if (this.waiting && b) {
      this.waiting = false;
      b.pending--;
      b.waiters.splice(b.waiters.indexOf(this), 1);
    }
    const c = this.conn;
    this.conn = undefined;
    c?.close();
  }

  /** After a 101: the raw upstream socket and bytes already read past the head. */
  detach(): { socket: Socket; head: Buffer } {
    const c = this.conn!;
    this.conn = undefined;
    this.responseDone = true;
    return { socket: c.detach(), head: this.upgradeHead ?? Buffer.alloc(0) };
  }
}
