// The upstream side of HTTP/2: one pooled session to an endpoint (the local
// app, for requests that arrived as HTTP/2: gRPC servers need it), every try
// a stream on it, and the response presented to the proxy as an HTTP/1.1-
// style head plus body and trailers.
//
// In:  the outgoing header list (pseudo-headers first) and framing, a handler.
// Out: handler.response(head) / data / end(trailers), or handler.failed once
//      with upstream-connect-failed, upstream-reset or upstream-protocol-error.
//
// An app that turns out not to speak HTTP/2 (the connection works but the
// session dies before the server's SETTINGS arrive: it answered the preface
// as HTTP/1.1) is remembered, and this try and every later one go to the
// HTTP/1.1 fallback pool instead: an application needs no annotation.
import http2, { type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders } from 'node:http2';
import type { Socket } from 'node:net';
import { MeshError } from '../errors.ts';
import type { ResponseHead } from '../http1/parse.ts';
import type { OutgoingFraming, Upstream, UpstreamCall, UpstreamHandler } from '../http-proxy.ts';
import type { HeaderList } from '../wasm/stream.ts';
import { isGrpc } from './grpc.ts';
import { headerObject } from './server.ts';

export interface H2PoolOptions {
  /** Opens the transport (net.connect to the app). */
  connect(): Socket;
  /** Where tries go when the upstream does not speak HTTP/2. */
  fallback: Upstream;
  /** The session closes after this long without streams. */
  idleTimeoutMs: number;
}

const { NGHTTP2_CANCEL, NGHTTP2_NO_ERROR, NGHTTP2_REFUSED_STREAM } = http2.constants;

export class H2Pool implements Upstream {
  private readonly options: H2PoolOptions;
  private session: ClientHttp2Session | undefined;
  /** The session's SETTINGS arrived: streams can be opened at once. */
  private ready = false;
  /** Tries waiting for the first session to be ready. */
  private waiting: H2Call[] = [];
  /** Learnt: the upstream answers HTTP/1.1 only. */
  h1Only = false;

  constructor(options: H2PoolOptions) {
    this.options = options;
  }

  request(head: string, framing: OutgoingFraming, handler: UpstreamHandler): UpstreamCall {
    if (this.h1Only) return this.options.fallback.request(head, framing, handler);
    const call = new H2Call(this, head, framing, handler);
    const session = this.session ?? this.open();
    if (this.ready) call.start(session);
    else this.waiting.push(call);
    return call;
  }

  private open(): ClientHttp2Session {
    let connected = false;
    const session = http2.connect('http://upstream', {
      createConnection: () => {
        const socket = this.options.connect();
        socket.setNoDelay(true);
        socket.once('connect', () => (connected = true));
        return socket;
      },
      // The app's own limit applies once its SETTINGS arrive; until then one stream is what we open anyway.
      peerMaxConcurrentStreams: 100,
    });
    this.session = session;
    this.ready = false;
    session.setTimeout(this.options.idleTimeoutMs, () => session.close());
    session.once('remoteSettings', () => {
      if (this.session !== session) return;
      this.ready = true;
      const w = this.waiting;
      this.waiting = [];
      for (const c of w) c.start(session);
    });
    session.on('error', (err: Error) => (session as { lastError?: Error }).lastError ??= err);
    session.once('goaway', () => this.forget(session));
    session.once('close', () => {
      const wasReady = this.ready && this.session === session;
      this.forget(session);
      if (wasReady) return;
      const w = this.waiting;
      this.waiting = [];
      const err = (session as { lastError?: Error }).lastError;
      if (connected) {
        // Connected, then the session died before any SETTINGS: an HTTP/1.1 server read our preface.
        this.h1Only = true;
        for (const c of w) c.fallBack(this.options.fallback);
        return;
      }
      for (const c of w) c.fail(new MeshError('upstream-connect-failed', `cannot reach the upstream: ${err?.message ?? 'connection closed while connecting'}`));
    });
    return session;
  }

  private forget(session: ClientHttp2Session): void {
    if (this.session === session) {
      this.session = undefined;
      this.ready = false;
    }
  }

  /** Closes the session (GOAWAY; streams in flight finish). */
  destroy(): void {
    this.session?.close();
    this.session = undefined;
  }
}

/** A response head as the HTTP/1.1 codec would have parsed it. */
function responseHead(headers: IncomingHttpHeaders, endStream: boolean): ResponseHead {
  const list: HeaderList = [];
  let status = 502;
  let contentLength = -1;
  for (const k of Object.keys(headers)) {
    const v = headers[k];
    if (k === ':status') {
      status = Number(v);
      continue;
    }
    if (k.charCodeAt(0) === 0x3a || v === undefined) continue;
    if (k === 'content-length') contentLength = Number(v);
    if (Array.isArray(v)) for (const x of v) list.push([k, x]);
    else list.push([k, String(v)]);
  }
  if (endStream) contentLength = 0;
  return { status, reason: '', minor: 1, headers: list, contentLength, chunked: contentLength === -1, connection: undefined, keepAlive: true, wire: undefined };
}

function trailerList(headers: IncomingHttpHeaders): HeaderList {
  const list: HeaderList = [];
  for (const k of Object.keys(headers)) {
    const v = headers[k];
    if (k.charCodeAt(0) === 0x3a || v === undefined) continue;
    if (Array.isArray(v)) for (const x of v) list.push([k, x]);
    else list.push([k, String(v)]);
  }
  return list;
}

/** One try as an HTTP/2 stream: request body and trailers out, response head, body and trailers back. */
class H2Call implements UpstreamCall {
  private readonly pool: H2Pool;
  private readonly head: string;
  private readonly framing: OutgoingFraming;
  private readonly handler: UpstreamHandler;
  private stream: ClientHttp2Stream | undefined;
  /** When the try went to the HTTP/1.1 fallback. */
  private delegate: UpstreamCall | undefined;
  /** Body written before the stream (or the fallback) existed. */
  private queued: Buffer[] = [];
  private ended = false;
  /** Our side of the stream was ended (END_STREAM sent or queued). */
  private streamEnded = false;
  /** Request body bytes sent on the stream. */
  private sent = 0;
  private trailersOut: HeaderList | undefined;
  private trailersIn: HeaderList | undefined;
  private aborted = false;
  private done = false;
  private responded = false;
  private paused = false;

  constructor(pool: H2Pool, head: string, framing: OutgoingFraming, handler: UpstreamHandler) {
    this.pool = pool;
    this.head = head;
    this.framing = framing;
    this.handler = handler;
  }

  start(session: ClientHttp2Session): void {
    if (this.aborted) return;
    const f = this.framing;
    // :scheme of the hop to the app is http; content-length only when the body goes as it came.
    const out = headerObject(
      f.headers.filter((e) => e[0] !== ':scheme' && !(e[0] === 'content-length' && f.length < 0)),
      {},
    );
    out[':scheme'] = 'http';
    if (f.length > 0) out['content-length'] = String(f.length);
    // gRPC servers expect te: trailers (RFC 9113 8.2.2 allows exactly this value).
    if (isGrpc(f.headers)) out.te = 'trailers';
    let stream: ClientHttp2Stream;
    try {
      // Trailers can follow only a body of unknown length (as with HTTP/1.1 chunked framing).
      stream = session.request(out, { endStream: f.length === 0, waitForTrailers: f.length < 0 });
    } catch (err) {
      this.fail(new MeshError('upstream-protocol-error', `cannot send the request over HTTP/2: ${(err as Error).message}`));
      return;
    }
    this.stream = stream;
    stream.on('response', (headers: IncomingHttpHeaders, flags: number) => this.onResponse(headers, (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0));
    stream.on('trailers', (headers: IncomingHttpHeaders) => (this.trailersIn = trailerList(headers)));
    stream.on('data', (chunk: Buffer) => {
      if (!this.aborted) this.handler.data(chunk);
    });
    stream.once('end', () => this.onEnd());
    if (f.length < 0) {
      stream.once('wantTrailers', () => {
        const t = this.trailersOut;
        stream.sendTrailers(t && t.length > 0 ? headerObject(t, {}) : {});
      });
    }
    stream.on('error', () => {});
    stream.once('close', () => this.onClose());
    if (this.paused) stream.pause();
    const q = this.queued;
    this.queued = [];
    for (const c of q) this.send(stream, c);
    if (this.ended && !this.streamEnded && f.length !== 0) {
      this.streamEnded = true;
      stream.end();
    }
  }

  /** The upstream speaks HTTP/1.1 only: the try goes there, with what the proxy already wrote. */
  fallBack(fallback: Upstream): void {
    if (this.aborted) return;
    const d = fallback.request(this.head, this.framing, this.handler);
    this.delegate = d;
    for (const c of this.queued) d.write(c);
    this.queued = [];
    if (this.ended) d.finish(this.trailersOut);
  }

  fail(err: MeshError): void {
    if (this.done || this.aborted) return;
    this.done = true;
    this.handler.failed(err);
  }

  private onResponse(headers: IncomingHttpHeaders, endStream: boolean): void {
    if (this.aborted || this.responded) return;
    this.responded = true;
    this.handler.response(responseHead(headers, endStream), this);
  }

  private onEnd(): void {
    if (this.done || this.aborted) return;
    if (!this.responded) return; // close reports it
    this.done = true;
    this.handler.end(this.trailersIn);
  }

  private onClose(): void {
    if (this.done || this.aborted) return;
    const code = this.stream?.rstCode ?? NGHTTP2_NO_ERROR;
    if (this.responded && code === NGHTTP2_NO_ERROR) {
      // 'end' comes after 'close' when the body was never read; treat a clean close as the end.
      this.done = true;
      this.handler.end(this.trailersIn);
      return;
    }
    const why = code === NGHTTP2_REFUSED_STREAM ? 'refused the stream' : `reset the stream (HTTP/2 error ${code})`;
    this.fail(new MeshError('upstream-reset', `the upstream ${why} ${this.responded ? 'inside the response' : 'before responding'}`));
  }

  write(data: Buffer): boolean {
    if (this.delegate) return this.delegate.write(data);
    if (this.aborted || data.length === 0) return true;
    if (!this.stream) {
      this.queued.push(data);
      return true;
    }
    return this.send(this.stream, data);
  }

  /** The last bytes of a known length go out as DATA with END_STREAM in one frame. */
  private send(stream: ClientHttp2Stream, data: Buffer): boolean {
    if (this.streamEnded) return true;
    this.sent += data.length;
    if (this.sent === this.framing.length) {
      this.streamEnded = true;
      stream.end(data);
      return true;
    }
    return stream.write(data);
  }

  finish(trailers: HeaderList | undefined): void {
    if (this.delegate) {
      this.delegate.finish(trailers);
      return;
    }
    if (this.ended) return;
    this.ended = true;
    this.trailersOut = trailers;
    if (this.stream && !this.aborted && this.framing.length !== 0 && !this.streamEnded) {
      this.streamEnded = true;
      this.stream.end();
    }
  }

  onDrain(cb: () => void): void {
    if (this.delegate) this.delegate.onDrain(cb);
    else if (this.stream) this.stream.once('drain', cb);
    else cb();
  }

  pauseResponse(): void {
    if (this.delegate) this.delegate.pauseResponse();
    this.paused = true;
    this.stream?.pause();
  }

  resumeResponse(): void {
    if (this.delegate) this.delegate.resumeResponse();
    this.paused = false;
    this.stream?.resume();
  }

  abort(): void {
    if (this.delegate) {
      this.delegate.abort();
      return;
    }
    if (this.aborted) return;
    this.aborted = true;
    if (this.stream && !this.stream.closed) this.stream.close(NGHTTP2_CANCEL);
  }

  detach(): { socket: Socket; head: Buffer } {
    throw new MeshError('upstream-protocol-error', 'HTTP/2 streams cannot switch protocols');
  }
}
