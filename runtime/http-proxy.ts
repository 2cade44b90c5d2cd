// The HTTP request path: one downstream exchange (an HTTP/1.1 request from
// runtime/http1/server or an HTTP/2 stream from runtime/http2/server) through
// the filter chain (FilterRun), routed by the listener's role, sent on an
// upstream (an HTTP/1.1 pool from runtime/http1/client or an HTTP/2 session
// pool from runtime/http2/client), and answered with exactly one response,
// access-log line and metric record.
//
// In:  a ListenerRole (outbound, inbound or standalone: facts, chain,
//      routing) and a DownstreamExchange.
// Out: the proxied (or locally answered, or errored) response.
//
// One ProxyRequest object per request holds all of its state; callbacks are
// its methods, so the hot path allocates no closures. Bodies stream unless a
// filter exports a body callback.
import { Buffer } from 'node:buffer';
import { performance } from 'node:perf_hooks';
import { ORIG_PROTO_HEADER, RULE_HEADER, RULES } from '../protocol/properties.ts';
import type { ChainFilter, FilterChain } from './chain.ts';
import { MeshError, REASONS, renderError, toMeshError } from './errors.ts';
import { logTime } from './log.ts';
import type { AccessLogEntry } from './access-log.ts';
import { FilterRun, type StepOutcome } from './filter-run.ts';
import { GRPC_STATUS, grpcLocalResponse, isGrpc } from './http2/grpc.ts';
import type { SidecarMetrics } from './metrics.ts';
import { newRequestId, traceHop, type TraceHop } from './trace.ts';
import type { Socket } from 'node:net';
import type { BodySink } from './http1/body.ts';
import type { RequestFraming } from './http1/client.ts';
import type { RetryPolicy } from '../protocol/traffic.ts';
import { backoffMs, retriable, type TryOutcome } from './traffic/retry.ts';
import { Deadlines, Expiring } from './traffic/deadlines.ts';
import { HOP_BY_HOP as CODEC_HOP_BY_HOP, keptHeadBytes, type RequestHead, type ResponseHead } from './http1/parse.ts';
import { afterBatch, type AfterBatch } from './http1/write-batch.ts';
import type { ConnectionInfo, ExchangeListener } from './http1/server.ts';
import { HttpStream, getHeader, type HeaderList, type LocalResponse, type StreamFacts } from './wasm/stream.ts';

/**
 * The downstream side of one request, whatever the protocol: the request head
 * (an HTTP/2 stream presents its pseudo-headers as an HTTP/1.1-style head),
 * its body on demand, and the one response. HTTP/1.1: ServerExchange;
 * HTTP/2: H2Exchange.
 */
export interface DownstreamExchange {
  readonly head: RequestHead;
  readonly conn: { readonly socket: Socket; readonly info: ConnectionInfo };
  /** 'HTTP/2' for HTTP/2 streams; absent for HTTP/1.x (head.minor tells). */
  readonly protocol?: string;
  listener: ExchangeListener | undefined;
  readonly headersSent: boolean;
  readonly bodyEnded: boolean;
  status: number;
  readonly bytesSent: number;
  keepAlive: boolean;
  readBody(sink: BodySink): void;
  pauseBody(): void;
  resumeBody(): void;
  writeContinue(): void;
  /** `length`: body length, -1 unknown; headers carry no framing or connection fields. */
  writeHead(status: number, headers: HeaderList, length: number): void;
  /** An upstream head forwarded as received (HTTP/1.1 only); false when it must be rebuilt with writeHead. */
  writeHeadBytes?(status: number, head: Buffer, length: number): boolean;
  /** False: wait for onDrain. */
  write(chunk: Buffer): boolean;
  respond(status: number, headers: HeaderList, body: Buffer): void;
  finishResponse(trailers: HeaderList | undefined): void;
  onDrain(cb: () => void): void;
  destroy(): void;
  fail(err: MeshError): void;
  /** After a 101 (HTTP/1.1 only). */
  detach(): { socket: Socket; head: Buffer };
}

/** How the request goes out: the H1 framing facts and the final header list (pseudo-headers first) for HTTP/2 upstreams. */
export interface OutgoingFraming extends RequestFraming {
  headers: HeaderList;
}

/**
 * Where tries are sent: HTTP/1.1 pools take the serialised head, HTTP/2
 * session pools the header list in `framing`.
 */
export interface Upstream {
  request(head: string, framing: OutgoingFraming, handler: UpstreamHandler): UpstreamCall;
}

/** One try on an upstream, as the proxy drives it. */
export interface UpstreamCall {
  /** Request body bytes; false: wait for onDrain. */
  write(data: Buffer): boolean;
  finish(trailers: HeaderList | undefined): void;
  onDrain(cb: () => void): void;
  pauseResponse(): void;
  resumeResponse(): void;
  abort(): void;
  /** After a 101 (HTTP/1.1 only). */
  detach(): { socket: Socket; head: Buffer };
}

/** What an upstream reports back: the final response head, its body and trailers (BodySink), or one failure. */
export interface UpstreamHandler extends BodySink {
  response(head: ResponseHead, call: UpstreamCall): void;
  failed(err: MeshError): void;
}

/** Where one try of a request goes. */
export interface UpstreamTarget {
  pool: Upstream;
  /** The version (subset) of the destination, for logs and metrics. */
  version: string;
  /** Instance name or URL, for the access log. */
  endpoint: string;
  /** `ip:port` of the upstream, for the upstream.address property. */
  address?: string;
}

/**
 * How a request is routed once the filters ran: the endpoint for each try,
 * the timeouts and retry policy, what to tell the balancer and outlier
 * detection about each try, and where to mirror a copy.
 */
export interface Route {
  /** The whole request, every try included. */
  timeoutMs: number;
  perTryTimeoutMs: number | undefined;
  retry: RetryPolicy | undefined;
  /** The target of the next try (load is counted from here); throws MeshError (no-healthy-endpoint, circuit-open). */
  next(): UpstreamTarget;
  /** How a try ended (for outlier detection and latency-aware balancing). */
  report(target: UpstreamTarget, outcome: TryOutcome, latencyMs: number): void;
  /** The try no longer loads its endpoint. Called once per next(). */
  release(target: UpstreamTarget): void;
  /** Takes one retry from the budget; false when the budget is spent. */
  retryAllowed(): boolean;
  /** Where a copy of this request goes (mirroring), decided once per request. */
  mirror(): UpstreamTarget | undefined;
  /** The request is over (every admitted request calls it once). */
  done(): void;
}

/** A route to one fixed upstream, without retries (inbound to the app, standalone). */
export function fixedRoute(target: UpstreamTarget, timeoutMs: number): Route {
  return new FixedRoute(target, timeoutMs);
}

/** One object per request, its methods on the prototype (no closures per request). */
class FixedRoute implements Route {
  readonly timeoutMs: number;
  readonly perTryTimeoutMs = undefined;
  readonly retry = undefined;
  private readonly target: UpstreamTarget;
  constructor(target: UpstreamTarget, timeoutMs: number) {
    this.target = target;
    this.timeoutMs = timeoutMs;
  }
  next(): UpstreamTarget {
    return this.target;
  }
  report(): void {}
  release(): void {}
  retryAllowed(): boolean {
    return false;
  }
  mirror(): undefined {
    return undefined;
  }
  done(): void {}
}

/** What differs between listeners: who the peer is, which chain, where requests go. */
export interface ListenerRole {
  readonly name: 'inbound' | 'outbound' | 'standalone';
  readonly reporter: 'source' | 'destination';
  /** Connection and mesh facts for a new request; throws MeshError to refuse it (e.g. no-certificate, unknown-service). */
  facts(exchange: DownstreamExchange): StreamFacts;
  chain(): FilterChain | undefined;
  /** Routes the request after the request filters ran (they may have set mesh.route.version and mesh.route.id); throws MeshError. */
  route(stream: HttpStream): Route;
  sourceWorkload(stream: HttpStream): string;
  /** Version label for metrics when no upstream was chosen. */
  ownVersion(): string;
}

export interface ProxyDeps {
  metrics: SidecarMetrics;
  log: (entry: Record<string, unknown>) => void;
  /** One line per request (runtime/access-log.ts). */
  accessLog: (entry: AccessLogEntry) => void;
  upstreamTimeoutMs: number;
  /** Called when a request starts and ends (graceful stop waits for zero). */
  track(delta: 1 | -1): void;
}

// Never forwarded: the codec's hop-by-hop fields and the sidecars' own hop header.
const HOP_BY_HOP = new Set([...CODEC_HOP_BY_HOP, ORIG_PROTO_HEADER]);
/** Added to HTTP/1.1 tries of requests that arrived as HTTP/2 (sidecar to sidecar). */
const ORIG_PROTO_H2 = ORIG_PROTO_HEADER + ': h2\r\n';
/** Not copied from the header list to the wire: the codec writes framing itself, Host comes from :authority. */
const NOT_SERIALISED = new Set(['content-length', 'transfer-encoding', 'expect', 'host']);

function isHopByHop(name: string, connection: string[] | undefined): boolean {
  return HOP_BY_HOP.has(name) || (connection !== undefined && connection.includes(name));
}

/** Appends to `list` the fields of `head` a proxy forwards: all but hop-by-hop ones and `skip` ('' for none). */
function appendForwarded(list: HeaderList, head: { headers: HeaderList; connection: string[] | undefined }, skip: string): HeaderList {
  const h = head.headers;
  for (let i = 0; i < h.length; i++) {
    const e = h[i]!;
    const k = e[0];
    if (k === skip || isHopByHop(k, head.connection)) continue;
    list.push(e);
  }
  return list;
}

/** Request headers as a proxy-wasm map: pseudo-headers first (as Envoy presents them), no hop-by-hop fields. */
export function requestHeaderList(head: RequestHead, scheme: string): HeaderList {
  let path = head.target;
  let authority = head.host;
  if (path.charCodeAt(0) !== 0x2f && path !== '*') {
    // absolute-form (RFC 9112 3.2.2): the target's authority wins over Host.
    const m = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/([^/?#]*)([^#]*)/.exec(path);
    if (m) {
      authority = m[1]!;
      path = m[2] || '/';
    }
  }
  const list: HeaderList = [
    [':method', head.method],
    [':path', path],
    [':authority', authority],
    [':scheme', scheme],
  ];
  // Host travels as :authority.
  return appendForwarded(list, head, 'host');
}

/**
 * The received head's bytes less its hop-by-hop field lines, for writeHeadBytes
 * (parse.ts keptHeadBytes). Undefined when the head cannot be forwarded as received.
 */
function forwardedHeadBytes(head: ResponseHead): Buffer | undefined {
  const wire = head.wire;
  if (wire === undefined || head.chunked || head.contentLength < 0) return undefined;
  // The sidecars' own hop header is not one the codec drops: rebuild instead.
  const h = head.headers;
  for (let i = 0; i < h.length; i++) if (h[i]![0] === ORIG_PROTO_HEADER) return undefined;
  return keptHeadBytes(wire);
}

/** Response fields to forward as they came, for when no filter sees the response: no hop-by-hop or framing fields. */
function forwardedResponseFields(head: ResponseHead): HeaderList {
  // The codec frames the body itself (transfer-encoding is hop-by-hop).
  return appendForwarded([], head, 'content-length');
}

function responseHeaderList(head: ResponseHead): HeaderList {
  return appendForwarded([[':status', String(head.status)]], head, '');
}

/** The request head for the upstream, with framing fields for the body as it will be sent. */
function serialiseRequest(list: HeaderList, length: number, upgrade: string, extra = ''): string {
  let method = 'GET';
  let path = '/';
  let authority = '';
  let fields = '';
  for (let i = 0; i < list.length; i++) {
    const e = list[i]!;
    const k = e[0];
    if (k.charCodeAt(0) === 0x3a) {
      if (k === ':method') method = e[1];
      else if (k === ':path') path = e[1];
      else if (k === ':authority') authority = e[1];
      continue;
    }
    if (NOT_SERIALISED.has(k)) continue;
    fields += k + ': ' + e[1] + '\r\n';
  }
  let s = method + ' ' + path + ' HTTP/1.1\r\nhost: ' + authority + '\r\n' + fields + extra;
  if (length > 0) s += 'content-length: ' + length + '\r\n';
  else if (length === -1) s += 'transfer-encoding: chunked\r\n';
  if (upgrade) s += 'connection: upgrade\r\nupgrade: ' + upgrade + '\r\n';
  return s + '\r\n';
}

/** Response fields for the downstream: no pseudo-headers, no framing (the codec adds it). */
function outgoingResponseHeaders(list: HeaderList): HeaderList {
  const out: HeaderList = [];
  for (let i = 0; i < list.length; i++) {
    const e = list[i]!;
    const k = e[0];
    if (k.charCodeAt(0) === 0x3a || k === 'content-length' || k === 'transfer-encoding') continue;
    out.push(e);
  }
  return out;
}

/** Which optional callbacks any filter of a chain's per-service list exports. */
interface ChainExports {
  requestBody: boolean;
  responseHeaders: boolean;
  responseBody: boolean;
  /** A callback that runs once the response head is in, where a filter can read it (response callbacks, on_done, on_log, on_delete). */
  seesResponse: boolean;
}

// Keyed by the chain's (stable) per-service filter list; a reloaded chain brings new lists.
const exportsCache = new WeakMap<readonly ChainFilter[], ChainExports>();

function chainExports(chain: FilterChain, service: string): ChainExports {
  const filters = chain.filtersFor(service);
  let e = exportsCache.get(filters);
  if (!e) {
    const any = (callback: string) => filters.some((f) => f.vm.hasExport(callback));
    const responseHeaders = any('proxy_on_response_headers');
    const responseBody = any('proxy_on_response_body');
    e = {
      requestBody: any('proxy_on_request_body'),
      responseHeaders,
      responseBody,
      seesResponse: responseHeaders || responseBody || ['proxy_on_response_trailers', 'proxy_on_done', 'proxy_on_log', 'proxy_on_delete'].some(any),
    };
    exportsCache.set(filters, e);
  }
  return e;
}

const EMPTY = Buffer.alloc(0);

/** Whole-request timeouts of every request in this process. */
const deadlines = new Deadlines();

/** Handles one request end to end. Never throws; every failure becomes a response. */
export function handleRequest(role: ListenerRole, deps: ProxyDeps, ex: DownstreamExchange): void {
  new ProxyRequest(role, deps, ex).start();
}

class ProxyRequest extends Expiring implements ExchangeListener, UpstreamHandler, AfterBatch {
  private readonly role: ListenerRole;
  private readonly deps: ProxyDeps;
  private readonly ex: DownstreamExchange;
  private readonly started = performance.now();
  /** From the request's start until its response was complete (set by finish). */
  private durationMs = 0;
  private chain: FilterChain | undefined;
  private run: FilterRun | undefined;
  private stream: HttpStream | undefined;
  private route: Route | undefined;
  private target: UpstreamTarget | undefined;
  private upstream: UpstreamCall | undefined;
  /** The request as sent upstream, for every try. */
  private wire = '';
  private framing: OutgoingFraming | undefined;
  private tries = 0;
  private tryOpen = false;
  private tryStarted = 0;
  private tryTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  /** Request body chunks kept for a retry or the mirror, up to MAX_REPLAY_BYTES. */
  private bodyCopy: Buffer[] | undefined;
  /** A mirror waiting for the request body to end. */
  private mirror: UpstreamTarget | undefined;
  private bodyCopyBytes = 0;
  private replayable = true;
  private requestEnded = false;
  private reason = '';
  private rule: string | undefined;
  private filter: string | undefined;
  private error: string | undefined;
  private done = false;
  /** The request has a body to read. */
  private bodyExpected: boolean;
  /** Request / response body chunks go through filter body callbacks. */
  private filterRequestBody = false;
  private filterResponseBody = false;
  /** Response body pieces that arrived before the response head was written, or while a filter works. */
  private responseQueue: Buffer[] | undefined;
  private responseEnded = false;
  private responseTrailers: HeaderList | undefined;
  private headWritten = false;
  /** Response body bytes queued while the response filters run; past a bound the upstream is paused. */
  private queuedBytes = 0;
  private responsePaused = false;
  private pumping = false;
  private budgetSpent = false;
  private trace: TraceHop | undefined;
  /** grpc-status of a gRPC local response this proxy made (for the access log). */
  private grpcStatus: string | undefined;
  /** The upstream's response head, when it went out without a header map (no filter sees responses). */
  private responseHead: ResponseHead | undefined;

  constructor(role: ListenerRole, deps: ProxyDeps, ex: DownstreamExchange) {
    super();
    this.role = role;
    this.deps = deps;
    this.ex = ex;
    ex.listener = this;
    const h = ex.head;
    this.bodyExpected = h.chunked || h.contentLength > 0;
  }

  start(): void {
    this.deps.track(1);
    try {
      const head = this.ex.head;
      if (head.expect !== '' && head.expect !== '100-continue') {
        throw new MeshError('unsupported-expectation', `Expect "${head.expect}" is not supported`);
      }
      if (head.method === 'CONNECT') throw new MeshError('method-not-allowed', 'CONNECT is only served on the HTTP proxy port');
      const facts = this.role.facts(this.ex);
      const stream = new HttpStream(facts, requestHeaderList(head, facts.scheme));
      this.stream = stream;
      if (getHeader(stream.requestHeaders, 'x-request-id') === undefined) stream.requestHeaders.push(['x-request-id', facts.requestId]);
      // Before the filters, so they see (and a local response logs) this hop's span.
      this.trace = traceHop(stream.requestHeaders);
      const chain = this.role.chain();
      if (chain && chain.filtersFor(facts.destinationService).length > 0) {
        this.chain = chain;
        chain.acquire();
        this.run = new FilterRun(chain, facts.destinationService, stream, this);
        const out = this.run.requestHeaders(!this.bodyExpected);
        if (out instanceof Promise) {
          out.then(
            (o) => this.afterRequestHeaders(o),
            (err: unknown) => this.fail(err),
          );
          return;
        }
        if (this.ended(out)) return;
      }
      this.forward();
    } catch (err) {
      this.fail(err);
    }
  }

  /** FilterRunHooks */
  onFilterFailure(filter: string, policy: string, error: string): void {
    this.deps.metrics.filterFailure(filter, policy);
    this.deps.log({ event: 'filter-failure', filter, policy, error });
  }

  private afterRequestHeaders(out: StepOutcome): void {
    if (this.done || this.ended(out)) return;
    try {
      this.forward();
    } catch (err) {
      this.fail(err);
    }
  }

  private forward(): void {
    const stream = this.stream!;
    const route = this.role.route(stream);
    this.route = route;
    const head = this.ex.head;
    let length = 0;
    if (this.bodyExpected) {
      this.filterRequestBody = this.run !== undefined && this.chain !== undefined && chainExports(this.chain, stream.facts.destinationService).requestBody;
      // Filters may change the body's length: send it chunked instead of trusting the original length.
      length = head.chunked || this.filterRequestBody ? -1 : head.contentLength;
    }
    const upgrade = head.upgrade;
    this.wire = serialiseRequest(stream.requestHeaders, length, upgrade, this.ex.protocol === 'HTTP/2' ? ORIG_PROTO_H2 : '');
    this.framing = { method: getHeader(stream.requestHeaders, ':method') ?? head.method, length, upgrade: upgrade !== '', headers: stream.requestHeaders };
    deadlines.add(this, route.timeoutMs);
    if (route.retry && this.bodyExpected) this.bodyCopy = [];
    this.startTry();
    if (this.done) return;
    if (upgrade === '') {
      const m = route.mirror();
      if (m && !this.bodyExpected) this.mirrorTo(m, EMPTY);
      else if (m) {
        // The copy goes out once the body is complete, from the bytes kept for retries.
        this.mirror = m;
        this.bodyCopy ??= [];
      }
    }
    if (this.bodyExpected) {
      if (head.expect === '100-continue') this.ex.writeContinue();
      this.ex.readBody(this.filterRequestBody ? new FilteredRequestBody(this) : new RequestBody(this));
    }
  }

  // --- request body ---

  /** Unfiltered request body chunk: straight to the upstream, with backpressure. */
  requestData(chunk: Buffer): void {
    if (this.done) return;
    this.keepForRetry(chunk);
    const up = this.upstream;
    if (!up) return;
    if (!up.write(chunk)) {
      this.ex.pauseBody();
      up.onDrain(() => this.ex.resumeBody());
    }
  }

  setRequestTrailers(trailers: HeaderList | undefined): void {
    if (trailers && this.stream) this.stream.requestTrailers = trailers;
  }

  requestEnd(trailers: HeaderList | undefined): void {
    this.requestEnded = true;
    if (trailers && trailers.length > 0 && this.run) {
      // Filters see (and may change) the trailers before they are forwarded.
      this.run.requestTrailers(trailers).then(
        (out) => {
          if (this.done || this.ended(out)) return;
          this.upstream?.finish(this.stream!.requestTrailers);
          this.mirrorBody();
        },
        (err: unknown) => this.fail(err),
      );
      return;
    }
    if (trailers && this.stream) this.stream.requestTrailers = trailers;
    this.upstream?.finish(trailers);
    this.mirrorBody();
  }

  private keepForRetry(chunk: Buffer): void {
    if (!this.bodyCopy) return;
    this.bodyCopyBytes += chunk.length;
    if (this.bodyCopyBytes > MAX_REPLAY_BYTES) {
      this.bodyCopy = undefined;
      this.replayable = false;
    } else {
      this.bodyCopy.push(chunk);
    }
  }

  async filterRequestChunk(chunk: Buffer, end: boolean): Promise<boolean> {
    const { outcome, data } = await this.run!.requestBody(chunk, end);
    if (this.done || this.ended(outcome)) return false;
    if (data.length) this.keepForRetry(data);
    if (end && this.stream!.requestTrailers.length > 0) {
      const t = await this.run!.requestTrailers(this.stream!.requestTrailers);
      if (this.done || this.ended(t)) return false;
    }
    if (end) {
      this.requestEnded = true;
      this.mirrorBody();
    }
    const up = this.upstream;
    if (!up) return true;
    if (data.length && !up.write(data)) await new Promise<void>((r) => up.onDrain(r));
    if (end) up.finish(this.stream!.requestTrailers.length ? this.stream!.requestTrailers : undefined);
    return true;
  }

  // --- ResponseHandler (upstream side) ---

  response(head: ResponseHead, up: UpstreamCall): void {
    if (this.done) return;
    this.clearTryTimer();
    const outcome: TryOutcome = { kind: 'response', status: head.status };
    this.route!.report(this.target!, outcome, performance.now() - this.tryStarted);
    if (head.status !== 101 && this.shouldRetry(outcome)) {
      up.abort();
      this.releaseTry();
      this.retryLater();
      return;
    }
    const stream = this.stream!;
    if (head.status === 101) {
      this.tunnel(head, up);
      return;
    }
    const length = head.contentLength;
    const exported = this.run ? chainExports(this.chain!, stream.facts.destinationService) : undefined;
    if (!exported?.seesResponse) {
      // No filter can see the response: it goes out as it came (less hop-by-hop fields), with no header map built.
      this.responseHead = head;
      const bytes = this.ex.writeHeadBytes ? forwardedHeadBytes(head) : undefined;
      if (bytes !== undefined && this.ex.writeHeadBytes!(head.status, bytes, length)) this.responseHeadWritten();
      else this.writeResponseHead(head.status, forwardedResponseFields(head), length);
      return;
    }
    stream.responseHeaders = responseHeaderList(head);
    const noBody = this.ex.head.method === 'HEAD' || head.status === 204 || head.status === 304 || head.contentLength === 0;
    this.filterResponseBody = !noBody && exported.responseBody;
    if (!exported.responseHeaders) {
      // No filter looks at response headers: no async step, the head goes out now.
      this.writeFilteredResponseHead(this.filterResponseBody ? -1 : length);
      return;
    }
    // Body bytes arriving meanwhile are queued (data()); the socket is paused only past a bound.
    this.run!.responseHeaders(noBody).then(
      (out) => {
        if (this.done || this.ended(out)) return;
        this.writeFilteredResponseHead(this.filterResponseBody ? -1 : length);
        if (this.responsePaused) {
          this.responsePaused = false;
          up.resumeResponse();
        }
        this.pump();
      },
      (err: unknown) => this.fail(err),
    );
  }

  /** The response head as the filters left it in the stream's header map. */
  private writeFilteredResponseHead(length: number): void {
    const list = this.stream!.responseHeaders;
    this.writeResponseHead(Number(getHeader(list, ':status') ?? 502), outgoingResponseHeaders(list), length);
  }

  private writeResponseHead(status: number, fields: HeaderList, length: number): void {
    this.ex.writeHead(status, fields, length);
    this.responseHeadWritten();
  }

  private responseHeadWritten(): void {
    this.headWritten = true;
    if (this.deadlineList && this.stream!.facts.protocol === 'HTTP/2' && isGrpc(this.ex.head.headers)) {
      // A gRPC stream lasts as long as its client wants (its deadline travels as grpc-timeout and
      // the server enforces it): the request timeout bounds the wait for the response head only.
      deadlines.remove(this);
    }
  }

  data(chunk: Buffer): void {
    if (this.done) return;
    if (this.headWritten && !this.filterResponseBody && this.responseQueue === undefined) {
      if (!this.ex.write(chunk)) {
        const up = this.upstream!;
        up.pauseResponse();
        this.ex.onDrain(() => up.resumeResponse());
      }
      return;
    }
    (this.responseQueue ??= []).push(chunk);
    if (this.headWritten) {
      this.pump();
      return;
    }
    this.queuedBytes += chunk.length;
    if (this.queuedBytes > RESPONSE_QUEUE_BYTES && !this.responsePaused) {
      this.responsePaused = true;
      this.upstream?.pauseResponse();
    }
  }

  end(trailers: HeaderList | undefined): void {
    if (this.done) return;
    this.responseEnded = true;
    this.responseTrailers = trailers;
    if (this.headWritten && !this.filterResponseBody && this.responseQueue === undefined) {
      this.endResponse(trailers);
      return;
    }
    if (this.headWritten) this.pump();
  }

  /** Response trailers pass the filters (reverse order) before the last chunk goes out. */
  private endResponse(trailers: HeaderList | undefined): void {
    if (trailers && trailers.length > 0 && this.run) {
      this.run.responseTrailers(trailers).then(
        (out) => {
          if (this.done || this.ended(out)) return;
          this.ex.finishResponse(this.stream!.responseTrailers);
          this.finish();
        },
        (err: unknown) => this.fail(err),
      );
      return;
    }
    this.ex.finishResponse(trailers);
    this.finish();
  }

  failed(err: MeshError): void {
    if (this.done) return;
    this.clearTryTimer();
    const outcome = outcomeOf(err);
    if (outcome && !this.headWritten) {
      this.route!.report(this.target!, outcome, performance.now() - this.tryStarted);
      this.releaseTry();
      if (this.shouldRetry(outcome)) {
        this.retryLater();
        return;
      }
    }
    this.fail(err);
  }

  // --- tries ---

  private startTry(): void {
    const route = this.route!;
    this.tries++;
    const target = route.next();
    this.target = target;
    this.stream!.upstreamAddress = target.address;
    this.tryOpen = true;
    this.tryStarted = performance.now();
    const up = target.pool.request(this.wire, this.framing!, this);
    this.upstream = up;
    if (route.perTryTimeoutMs !== undefined) this.tryTimer = setTimeout(onTryTimeout, route.perTryTimeoutMs, this);
    if (this.tries > 1 && this.bodyCopy) {
      for (const c of this.bodyCopy) up.write(c);
      if (this.requestEnded) up.finish(this.stream!.requestTrailers.length ? this.stream!.requestTrailers : undefined);
    }
  }

  private shouldRetry(outcome: TryOutcome): boolean {
    const route = this.route!;
    const policy = route.retry;
    if (!policy || this.tries > policy.attempts || this.headWritten || this.ex.headersSent) return false;
    if (this.bodyExpected && !this.replayable) return false;
    if (!retriable(policy, outcome)) return false;
    if (!route.retryAllowed()) {
      this.budgetSpent = true;
      return false;
    }
    return true;
  }

  private retryLater(): void {
    this.upstream = undefined;
    this.retryTimer = setTimeout(onRetry, backoffMs(this.route!.retry!, this.tries), this);
  }

  retryNow(): void {
    this.retryTimer = undefined;
    if (this.done) return;
    if (this.bodyExpected && !this.replayable) {
      this.fail(new MeshError('upstream-reset', 'the request body grew too large to send again'));
      return;
    }
    try {
      this.startTry();
    } catch (err) {
      this.fail(err);
    }
  }

  tryTimedOut(): void {
    this.tryTimer = undefined;
    if (this.done) return;
    const outcome: TryOutcome = { kind: 'timeout' };
    this.upstream?.abort();
    this.route!.report(this.target!, outcome, performance.now() - this.tryStarted);
    this.releaseTry();
    if (this.shouldRetry(outcome)) {
      this.retryLater();
      return;
    }
    this.fail(new MeshError('upstream-timeout', `no response from ${this.target?.endpoint ?? 'the upstream'} within the per-try timeout of ${this.route!.perTryTimeoutMs} ms`));
  }

  private releaseTry(): void {
    if (this.tryOpen) {
      this.tryOpen = false;
      this.route!.release(this.target!);
    }
  }

  private clearTryTimer(): void {
    if (this.tryTimer) {
      clearTimeout(this.tryTimer);
      this.tryTimer = undefined;
    }
  }

  /** A copy of the request for the mirror (Host `<authority>-shadow`, as Envoy's shadowing); its answer is ignored. */
  private mirrorTo(t: UpstreamTarget, body: Buffer): void {
    const list = this.stream!.requestHeaders.map((e): [string, string] => (e[0] === ':authority' ? [':authority', `${e[1]}-shadow`] : e));
    const call = t.pool.request(serialiseRequest(list, body.length, ''), { method: this.framing!.method, length: body.length, upgrade: false, headers: list }, DISCARD);
    if (body.length > 0) call.write(body);
  }

  /** The body is complete: the mirror gets its copy, unless the body outgrew what is kept (MAX_REPLAY_BYTES). */
  private mirrorBody(): void {
    const m = this.mirror;
    if (!m) return;
    this.mirror = undefined;
    if (this.bodyCopy) this.mirrorTo(m, Buffer.concat(this.bodyCopy));
  }

  /** Writes queued response body pieces in order, through the filters when they want the body. */
  private pump(): void {
    if (this.pumping || this.done) return;
    if (!this.filterResponseBody) {
      const q = this.responseQueue;
      this.responseQueue = undefined;
      if (q) for (const c of q) this.ex.write(c);
      if (this.responseEnded) this.endResponse(this.responseTrailers);
      return;
    }
    this.pumping = true;
    this.pumpFiltered().then(
      () => (this.pumping = false),
      (err: unknown) => {
        this.pumping = false;
        this.fail(err);
      },
    );
  }

  private async pumpFiltered(): Promise<void> {
    const run = this.run!;
    for (;;) {
      const q = this.responseQueue;
      if (q && q.length > 0) {
        const chunk = q.shift()!;
        const { outcome, data } = await run.responseBody(chunk, false);
        if (this.done || this.ended(outcome)) return;
        if (data.length && !this.ex.write(data)) await new Promise<void>((r) => this.ex.onDrain(r));
        continue;
      }
      if (!this.responseEnded) return;
      const { outcome, data } = await run.responseBody(EMPTY, true);
      if (this.done || this.ended(outcome)) return;
      this.ex.write(data);
      this.endResponse(this.responseTrailers);
      return;
    }
  }

  /** 101 Switching Protocols: relay the head, then both sockets carry raw bytes until either side closes. */
  private tunnel(head: ResponseHead, up: UpstreamCall): void {
    this.clearTimer();
    const headers = outgoingResponseHeaders(responseHeaderList(head));
    headers.push(['connection', 'upgrade'], ['upgrade', head.headers.find(([k]) => k === 'upgrade')?.[1] ?? this.ex.head.upgrade]);
    this.ex.writeHead(101, headers, -1);
    this.headWritten = true;
    const down = this.ex.detach();
    const upstream = up.detach();
    if (upstream.head.length) down.socket.write(upstream.head);
    if (down.head.length) upstream.socket.write(down.head);
    down.socket.pipe(upstream.socket);
    upstream.socket.pipe(down.socket);
    let closed = false;
    const close = (): void => {
      if (closed) return;
      closed = true;
      down.socket.destroy();
      upstream.socket.destroy();
      this.finish();
    };
    for (const s of [down.socket, upstream.socket]) {
      s.on('error', close);
      s.on('close', close);
    }
  }

  // --- endings ---

  /** ExchangeListener: the downstream went away, or the codec refused the rest of the request. */
  aborted(error: MeshError | undefined, status: number): void {
    if (this.done) return;
    if (error) {
      this.reason = error.reason;
      this.ex.status = status;
    } else if (!this.reason) {
      this.reason = 'downstream-reset';
    }
    this.upstream?.abort();
    this.finish();
  }

  /** Expiring: the whole-request timeout. */
  expired(): void {
    if (this.done) return;
    this.upstream?.abort();
    this.fail(new MeshError('upstream-timeout', `no response from ${this.target?.endpoint ?? 'the upstream'} within ${this.route?.timeoutMs ?? this.deps.upstreamTimeoutMs} ms`));
  }

  /** Non-continue outcomes end the request here; returns true when it did. */
  private ended(out: StepOutcome): boolean {
    if (out.kind === 'continue') return false;
    if (out.kind === 'local-response') this.answerLocally(out.response, out.filter);
    else if (out.kind === 'close') {
      this.reason = 'filter-closed-stream';
      this.filter = out.filter;
      this.upstream?.abort();
      this.ex.destroy();
      this.finish();
    } else {
      this.filter = out.filter;
      this.fail(new MeshError('filter-failed', `filter ${out.filter} failed`, { 'x-mesh-filter': out.filter }));
    }
    return true;
  }

  private answerLocally(r: LocalResponse, filter: string): void {
    const rule = getHeader(r.headers, RULE_HEADER) ?? (r.details || '');
    this.rule = rule;
    this.filter = filter;
    this.deps.metrics.localResponse(rule);
    this.upstream?.abort();
    if (this.ex.headersSent) {
      this.ex.destroy();
      this.finish();
      return;
    }
    const headers: HeaderList = [];
    for (const e of r.headers) {
      const k = e[0];
      if (k.charCodeAt(0) === 0x3a || HOP_BY_HOP.has(k) || k === 'content-length') continue;
      headers.push(e);
    }
    // An unread request body would be taken for the next request: close after answering.
    if (!this.ex.bodyEnded) this.ex.keepAlive = false;
    if (isGrpc(this.ex.head.headers)) {
      const g = grpcLocalResponse(r.status, headers, r.body);
      this.grpcStatus = getHeader(g.headers, 'grpc-status');
      this.ex.respond(g.status, g.headers, EMPTY);
    } else {
      this.ex.respond(r.status, headers, Buffer.from(r.body));
    }
    this.finish();
  }

  /** Every failure becomes a response through the one renderer (runtime/errors.ts). */
  fail(err: unknown): void {
    if (this.done) return;
    const e = toMeshError(err);
    this.reason = e.reason;
    if (e.reason === 'internal-error') this.error = e.message;
    this.upstream?.abort();
    if (!this.ex.headersSent && isGrpc(this.ex.head.headers)) {
      // gRPC clients read grpc-status, not the HTTP status: mesh failures are UNAVAILABLE.
      const r = renderError(e);
      const g = grpcLocalResponse(r.status, r.headers, r.body, GRPC_STATUS.UNAVAILABLE);
      this.grpcStatus = String(GRPC_STATUS.UNAVAILABLE);
      if (!this.ex.bodyEnded) this.ex.keepAlive = false;
      this.ex.respond(g.status, g.headers, EMPTY);
    } else {
      this.ex.fail(e);
    }
    this.finish();
  }

  private clearTimer(): void {
    deadlines.remove(this);
    this.clearTryTimer();
    if (this.retryTimer) {
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    }
  }

  private finish(): void {
    if (this.done) return;
    this.done = true;
    this.clearTimer();
    if (this.route) {
      this.releaseTry();
      this.route.done();
    }
    this.durationMs = performance.now() - this.started;
    // The filters' last callbacks, the metric and the log entry wait until the response has left.
    afterBatch(this);
  }

  /** The end of a finished request that no peer waits for (write-batch.ts). */
  afterBatch(): void {
    this.run?.finish();
    this.chain?.release();
    const ex = this.ex;
    const status = ex.status;
    const durationMs = this.durationMs;
    const stream = this.stream;
    const service = stream?.facts.destinationService ?? '';
    const role = this.role;
    const reason = this.reason;
    const grpc = isGrpc(ex.head.headers);
    // Envoy's %GRPC_STATUS%: the mesh's own gRPC answer, the trailers, or a trailers-only head.
    const grpcStatus = grpc
      ? (this.grpcStatus ??
        (this.responseTrailers
          ? getHeader(this.responseTrailers, 'grpc-status')
          : this.responseHead
            ? getHeader(this.responseHead.headers, 'grpc-status')
            : stream && stream.responseHeaders.length > 1
              ? getHeader(stream.responseHeaders, 'grpc-status')
              : undefined))
      : undefined;
    this.deps.metrics.record({
      reporter: role.reporter,
      sourceWorkload: stream ? role.sourceWorkload(stream) : '',
      destinationService: service,
      destinationVersion: this.target?.version ?? (role.name === 'inbound' ? role.ownVersion() : ''),
      status,
      responseFlags: reason ? (REASONS[reason as keyof typeof REASONS]?.flag ?? '-') : '-',
      durationMs,
      requestProtocol: grpc ? 'grpc' : 'http',
      grpcStatus: grpcStatus ?? '',
    });
    const head = ex.head;
    const trace = this.trace;
    const rules = stream?.propertyText(RULES);
    this.deps.accessLog({
      time: logTime(),
      direction: role.name,
      method: head.method,
      path: head.target,
      authority: head.host,
      destination_service: service,
      version: this.target?.version,
      endpoint: this.target?.endpoint,
      status,
      duration_ms: Math.round(durationMs * 100) / 100,
      bytes_sent: ex.bytesSent,
      rule: this.rule,
      rules,
      filter: this.filter,
      reason: reason || undefined,
      error: this.error,
      attempts: this.tries > 1 ? this.tries : undefined,
      retry_budget_spent: this.budgetSpent || undefined,
      // HTTP/2 requests (absent for HTTP/1.x), and the gRPC status of gRPC requests.
      protocol: stream?.facts.protocol === 'HTTP/2' ? 'HTTP/2' : undefined,
      grpc_status: grpcStatus,
      trace_id: trace?.traceId,
      span_id: trace?.spanId,
      parent_span_id: trace?.parentSpanId,
    });
    this.deps.track(-1);
  }
}

function onTryTimeout(p: ProxyRequest): void {
  p.tryTimedOut();
}

function onRetry(p: ProxyRequest): void {
  p.retryNow();
}

/** Which retry/outlier outcome a failed try was; undefined for failures that say nothing about the endpoint. */
function outcomeOf(err: MeshError): TryOutcome | undefined {
  switch (err.reason) {
    case 'upstream-connect-failed':
    case 'upstream-identity-mismatch':
      return { kind: 'connect-failure' };
    case 'upstream-reset':
    case 'upstream-protocol-error':
      return { kind: 'reset' };
    default:
      return undefined;
  }
}

/** Mirrored requests: the response is read to the end (so the connection is reused) and dropped. */
const DISCARD: UpstreamHandler = { response: () => {}, data: () => {}, end: () => {}, failed: () => {} };

/** Response body bytes held while the response-header filters decide, before the upstream is paused. */
const RESPONSE_QUEUE_BYTES = 64 * 1024;

/** Request bodies up to this size are kept so a retry can send them again. */
const MAX_REPLAY_BYTES = 64 * 1024;

/** Request body straight through. */
class RequestBody implements BodySink {
  private readonly p: ProxyRequest;
  constructor(p: ProxyRequest) {
    this.p = p;
  }
  data(chunk: Buffer): void {
    this.p.requestData(chunk);
  }
  end(trailers: HeaderList | undefined): void {
    this.p.requestEnd(trailers);
  }
}

/** Request body through the filters' body callbacks, one chunk at a time, in order. */
class FilteredRequestBody implements BodySink {
  private readonly p: ProxyRequest;
  private tail: Promise<boolean> = Promise.resolve(true);
  constructor(p: ProxyRequest) {
    this.p = p;
  }
  data(chunk: Buffer): void {
    this.tail = this.tail.then((ok) => (ok ? this.p.filterRequestChunk(chunk, false) : false)).catch((err: unknown) => this.failed(err));
  }
  end(trailers: HeaderList | undefined): void {
    this.p.setRequestTrailers(trailers);
    this.tail = this.tail.then((ok) => (ok ? this.p.filterRequestChunk(EMPTY, true) : false)).catch((err: unknown) => this.failed(err));
  }
  private failed(err: unknown): boolean {
    this.p.fail(err);
    return false;
  }
}

export { newRequestId };
