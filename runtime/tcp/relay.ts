// One opaque TCP connection relayed between a downstream socket and an
// upstream one: bytes both ways with backpressure, half-close passed on, a
// connect timeout, an idle timeout, metrics and one access-log line. Where a
// filter reads the bytes (proxy-wasm data callbacks), each chunk passes
// through it on the way; else the sockets are piped.
//
// In:  the accepted downstream socket (paused, allowHalfOpen), a function
//      that opens the upstream socket (allowHalfOpen), labels for the log.
// Out: the relay; when both sides are closed, one log line (bytes each way,
//      duration, how it ended) and the TCP metrics of the connection.
import { Buffer } from 'node:buffer';
import { performance } from 'node:perf_hooks';
import net, { type Socket } from 'node:net';
import type { SidecarMetrics, TcpLabels } from '../metrics.ts';
import type { DataOutcome, DataSide } from '../wasm/network.ts';

export interface RelayOptions {
  /** Longest wait for the upstream to connect (TLS handshake included). */
  connectTimeoutMs: number;
  /** A connection with no bytes either way for this long is closed. */
  idleTimeoutMs: number;
  /** Opens the upstream; its `readyEvent` says it is usable ('connect' or 'secureConnect'). */
  connect(): { socket: Socket; readyEvent: 'connect' | 'secureConnect'; check?: (socket: Socket) => string | undefined };
  /** Bytes written to the upstream before the downstream's (a transport header). */
  preamble?: Buffer;
  /** The downstream already ended (during protocol detection) after sending these bytes: they go up, then the end. */
  replay?: Buffer;
  metrics: SidecarMetrics;
  labels: TcpLabels;
  log: (entry: Record<string, unknown>) => void;
  /** Extra access-log fields: listener, destination, upstream address, ... */
  fields: Record<string, unknown>;
  /** Called once the upstream is ready (e.g. to answer `200` to a CONNECT); the downstream flows after. */
  onReady?: () => void;
  /** Called when the upstream failed before it was ready, instead of resetting the downstream (e.g. to answer 502 to a CONNECT). */
  onFailed?: (reason: string, message: string) => void;
  /** The filters' data callbacks (runtime/wasm/network.ts ConnectionSession.data): every chunk passes through them. */
  inspect?: (side: DataSide, chunk: Buffer, endOfStream: boolean) => DataOutcome;
}

const EMPTY = Buffer.alloc(0);

export const DEFAULT_TCP_CONNECT_TIMEOUT_MS = 10_000;
/** Envoy's TCP proxy idle timeout default (1 h). */
export const DEFAULT_TCP_IDLE_TIMEOUT_MS = 3_600_000;

/** Starts relaying `down`; returns at once. Connections being relayed are kept in `live` until they close. */
export function relay(down: Socket, options: RelayOptions, live?: Set<Socket>): void {
  const started = performance.now();
  const { socket: up, readyEvent, check } = options.connect();
  let ready = false;
  let reason = '';
  let message = '';
  let downClosed = false;
  let upClosed = false;
  live?.add(down);
  options.metrics.countConnection(down, options.labels);

  const fail = (r: string, m: string): void => {
    if (!reason) {
      reason = r;
      message = m;
    }
  };
  const connectTimer = setTimeout(() => {
    fail('upstream-connect-timeout', `no connection to the upstream within ${options.connectTimeoutMs} ms`);
    up.destroy();
  }, options.connectTimeoutMs);

  up.once(readyEvent, () => {
    clearTimeout(connectTimer);
    const refused = check?.(up);
    if (refused) {
      fail('upstream-protocol-error', refused);
      up.destroy();
      return;
    }
    ready = true;
    if (options.preamble && options.preamble.length > 0) up.write(options.preamble);
    options.onReady?.();
    if (down.destroyed) return;
    if (options.inspect) {
      inspected(options.inspect);
      return;
    }
    // pipe() is the backpressure: each side pauses while the other's write buffer is full,
    // and passes the end of its stream on as a half-close (both sockets are allowHalfOpen).
    up.pipe(down);
    if (options.replay) {
      up.end(options.replay);
      return;
    }
    down.pipe(up);
    down.resume();
  });
  /**
   * The relay through the filters' data callbacks: what pipe() does (pause
   * the reader while the writer's buffer is full, pass the end on as a
   * half-close), with each chunk handed to the filters first. A filter that
   * closes the connection resets both sides.
   */
  const inspected = (inspect: NonNullable<RelayOptions['inspect']>): void => {
    const forward = (src: Socket, dst: Socket, side: DataSide, chunk: Buffer, end: boolean): void => {
      if (dst.destroyed) return;
      const out = inspect(side, chunk, end);
      if (out.close) {
        fail(out.close.reason, `${out.close.message} (filter ${out.close.filter})`);
        resetSocket(up);
        resetSocket(down);
        return;
      }
      if (end) dst.end(out.data);
      else if (out.data.length > 0 && !dst.write(out.data)) {
        src.pause();
        dst.once('drain', () => src.resume());
      }
    };
    const flow = (src: Socket, dst: Socket, side: DataSide): void => {
      src.on('data', (chunk: Buffer) => forward(src, dst, side, chunk, false));
      src.once('end', () => forward(src, dst, side, EMPTY, true));
    };
    flow(up, down, 'upstream');
    if (options.replay) {
      forward(down, up, 'downstream', options.replay, true);
      return;
    }
    flow(down, up, 'downstream');
    down.resume();
  };
  up.on('error', (err: NodeJS.ErrnoException) => fail(ready ? 'upstream-reset' : 'upstream-connect-failed', err.code ?? err.message));
  down.on('error', (err: NodeJS.ErrnoException) => fail('downstream-reset', err.code ?? err.message));
  // The idle timer watches the downstream socket: every byte either way is read from or written to it.
  down.setTimeout(options.idleTimeoutMs, () => {
    fail('idle-timeout', `no bytes either way for ${options.idleTimeoutMs} ms`);
    down.destroy();
    up.destroy();
  });

  let logged = false;
  const finished = (): void => {
    // Both close handlers call this, and one side's close can run inside the other's handler.
    if (!downClosed || !upClosed || logged) return;
    logged = true;
    live?.delete(down);
    const entry: Record<string, unknown> = {
      time: new Date().toISOString(),
      protocol: 'tcp',
      ...options.fields,
      bytes_received: down.bytesRead,
      bytes_sent: down.bytesWritten,
      duration_ms: Math.round(performance.now() - started),
    };
    if (reason) {
      entry.reason = reason;
      entry.error = message;
    }
    options.log(entry);
  };
  down.once('close', () => {
    downClosed = true;
    // A client that reset its connection resets the upstream's too, so the far end sees the abort.
    if (!up.destroyed) {
      if (reason === 'downstream-reset') resetSocket(up);
      else up.destroy();
    }
    finished();
  });
  up.once('close', () => {
    clearTimeout(connectTimer);
    upClosed = true;
    if (!ready && options.onFailed && !down.destroyed) {
      options.onFailed(reason || 'upstream-connect-failed', message || 'the upstream closed before it was ready');
    } else if (!down.destroyed) {
      // An upstream that ends cleanly has been ended through pipe(); one that was reset resets the downstream.
      if (reason && reason !== 'downstream-reset') resetSocket(down);
      else if (!down.writableEnded) down.end();
    }
    finished();
  });
}

/**
 * Closes with a TCP RST, so the peer learns the stream was cut rather than
 * ended. A TLS socket's TCP connection is the socket it wraps (`_parent`, the
 * one internal field used here: Node offers no reset on TLS sockets).
 */
export function resetSocket(socket: Socket): void {
  const parent = (socket as { _parent?: unknown })._parent;
  const tcp = parent instanceof net.Socket ? parent : socket;
  try {
    tcp.resetAndDestroy();
  } catch {
    tcp.destroy();
  }
  socket.destroy();
}
