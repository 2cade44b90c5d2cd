// The sidecar: an outbound listener for the local app, an mTLS inbound
// listener for other sidecars, and an admin listener; it holds the current
// filter chain, endpoints and certificate, each swapped atomically by the
// apply* calls the control client (or a test) makes.
//
// In:  SidecarOptions; bundles, endpoints and certificates via apply*.
// Out: proxied traffic, access-log lines, /ready /metrics /stats /config.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import net from 'node:net';
import tls, { type TLSSocket } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { bound, delay, listen, type Address } from './net.ts';
import { jsonLineLog } from './log.ts';
import { accessLogSink } from './access-log.ts';
import { expectSpiffeId, uriSan } from './peer-identity.ts';
import type { Bundle } from '../protocol/bundle.ts';
import { Direction } from '../protocol/properties.ts';
import type { CertificatePayload, Endpoint, EndpointsPayload, NodeInfo } from '../protocol/wire.ts';
import { ChainError, FilterChain } from './chain.ts';
import { MeshError, REASONS } from './errors.ts';
import { fixedRoute, handleRequest, newRequestId, type DownstreamExchange, type ListenerRole, type ProxyDeps, type Route, type UpstreamTarget } from './http-proxy.ts';
import type { ServiceTraffic } from '../protocol/traffic.ts';
import { ServiceRouter } from './traffic/router.ts';
import { OutboundRoute, type TargetMaker } from './traffic/outbound-route.ts';
import type { EndpointState } from './traffic/balancer.ts';
import { UpstreamPool } from './http1/client.ts';
import { tlsConnectShared } from './http1/shared-read.ts';
import { DEFAULT_LIMITS } from './http1/parse.ts';
import { DEFAULT_SERVER_OPTIONS, Http1Server, type ServerHooks, type ServerOptions } from './http1/server.ts';
import { SidecarMetrics, type TcpLabels } from './metrics.ts';
import { meshCallDispatcher } from './mesh-calls.ts';
import { createHostEnvironment, type HostEnvironment } from './wasm/environment.ts';
import { getHeader, type HttpStream, type StreamFacts } from './wasm/stream.ts';
import { ORIG_PROTO_HEADER, ROUTE_ID, ROUTE_VERSION } from '../protocol/properties.ts';
import { H2Pool } from './http2/client.ts';
import { DEFAULT_H2_OPTIONS, Http2Server, refusalCounter, type H2Connection, type H2Refusal, type H2ServerOptions } from './http2/server.ts';
import { DEFAULT_SERVER_FIRST_TIMEOUT_MS, ProtocolListener, type Accepted } from './listener.ts';
import { MeshTcpDialer } from './tcp/mesh.ts';
import { TcpProxy, type TcpOptions } from './tcp/proxy.ts';
import { httpProxyPort } from './explicit/http-proxy-port.ts';
import type { UpstreamPort } from './explicit/upstreams.ts';
import { meshDestination, originalDstHook, permissiveInbound, PlainPools, type Destination, type InterceptionMode } from './interception/transparent.ts';
import { requireAddon } from './interception/original-dst.ts';
import { checkNoLoop } from './interception/loop-check.ts';

/** The destination service of intercepted HTTP to an address outside the mesh (Istio's name for it). */
const PASSTHROUGH = 'PassthroughCluster';

export type { Address };

export interface SidecarOptions {
  node: NodeInfo;
  inbound: Address;
  outbound: Address;
  app: Address;
  admin: Address;
  /** Ed25519 public keys (PEM); when set, bundles must be signed by one. */
  trustedKeys?: string[];
  upstreamTimeoutMs?: number;
  /** Codec limits and timeouts of the inbound and outbound listeners (defaults: runtime/http1). */
  http?: Partial<ServerOptions>;
  /** HTTP/2 stream limits and rapid-reset protection (defaults: runtime/http2/server; header limits and timeouts come from `http`). */
  http2?: Partial<Omit<H2ServerOptions, 'limits'>>;
  /** Default: one JSON line per entry on stdout. */
  log?: (entry: Record<string, unknown>) => void;
  /** Explicit mode: local ports each bound to one mesh service (runtime/explicit/upstreams.ts). */
  upstreams?: UpstreamPort[];
  /** Explicit mode: an HTTP proxy port (absolute-form requests and CONNECT). */
  httpProxy?: Address;
  /** CONNECT (and intercepted traffic) to addresses outside the mesh; default: refused, but allowed in transparent mode (Istio's ALLOW_ANY). */
  allowEgress?: boolean;
  /**
   * 'transparent': connections arrive redirected by the iptables rules of `meshc init`; the listeners
   * read each one's original destination (docs/interception.md). Default 'explicit'.
   */
  interception?: InterceptionMode;
  /**
   * Transparent mode: the inbound port also serves plaintext clients from outside the mesh (Istio's
   * PERMISSIVE). Default false: mTLS only, plaintext connections are logged and closed (STRICT).
   */
  permissiveInbound?: boolean;
  /** Silence before a connection counts as a server-first protocol (opaque TCP), where opaque TCP has a destination; default 100 ms. */
  detectTimeoutMs?: number;
  /** Opaque TCP timeouts and the extra app ports peers may reach. */
  tcp?: TcpOptions;
}

interface TlsMaterial {
  spiffeId: string;
  cert: string;
  key: string;
  ca: string;
  notAfter: string;
}

const STOP_DEADLINE_MS = 10_000;

export { jsonLineLog };


export class Sidecar {
  private readonly options: SidecarOptions;
  private readonly log: (entry: Record<string, unknown>) => void;
  readonly metrics = new SidecarMetrics();
  private readonly env: HostEnvironment;
  private chain: FilterChain | undefined;
  private endpoints: EndpointsPayload | undefined;
  private tls: TlsMaterial | undefined;
  /** Pooled mTLS connections per upstream endpoint; replaced wholesale when the certificate changes. */
  private pools = new Map<string, UpstreamPool>();
  private readonly appPool: UpstreamPool;
  /** HTTP/2 to the app, for requests that arrived as HTTP/2 (falls back to appPool for HTTP/1.1-only apps). */
  private readonly appH2Pool: H2Pool;
  /** Outbound routers by destination service. */
  private readonly routers = new Map<string, ServiceRouter>();
  /** Traffic policy by destination service, from the current bundle. */
  private traffic = new Map<string, ServiceTraffic>();
  private readonly upstreamTimeoutMs: number;
  private readonly outboundServer: net.Server;
  private readonly inboundServer: tls.Server;
  private readonly adminServer: http.Server;
  private readonly outboundHttp: Http1Server;
  private readonly inboundHttp: Http1Server;
  private readonly outboundH2: Http2Server;
  private readonly inboundH2: Http2Server;
  /** Protocol detection of the outbound and inbound listeners; other parts register handlers and accept hooks here. */
  readonly outboundListener: ProtocolListener;
  readonly inboundListener: ProtocolListener;
  readonly tcpProxy: TcpProxy;
  private dialer: MeshTcpDialer | undefined;
  /** Explicit mode: per-upstream ports and the HTTP proxy port, with their HTTP codecs. */
  private readonly explicitServers: Array<{ server: net.Server; listen: Address; name: string }> = [];
  private readonly explicitHttp: Http1Server[] = [];
  private readonly explicitH2: Http2Server[] = [];
  /** Raw TCP connections of the inbound listener (the TLS layer sits on top). */
  private readonly handshaking = new Set<net.Socket>();
  /** Transparent mode: the raw inbound listener in front of the TLS server (runtime/interception). */
  private readonly inboundRaw: net.Server | undefined;
  /** Transparent mode: HTTP to original destinations outside the mesh, and to app ports other than the main one. */
  private readonly plainPools = new PlainPools();
  /** Requests that go to their original destination outside the mesh (set by the outbound facts). */
  private readonly passthrough = new WeakMap<StreamFacts, Destination>();
  /** Intercepted requests to an endpoint's address on another port than the endpoint's: that port, dialed on the chosen endpoint's address. */
  private readonly targetPort = new WeakMap<StreamFacts, number>();
  private readonly allowEgress: boolean;
  private inFlight = 0;
  private idleWaiters: Array<() => void> = [];
  private stopping = false;

  constructor(options: SidecarOptions) {
    this.options = options;
    this.log = options.log ?? jsonLineLog;
    this.env = createHostEnvironment(this.metrics.registry, this.log, {
      // proxy_http_call: the upstream a filter names is a mesh service, reached over the outbound pools.
      httpCalls: meshCallDispatcher({
        knows: (service) => this.endpoints !== undefined && Object.hasOwn(this.endpoints.services, service),
        pool: (service) => {
          const material = this.tls;
          if (!material) throw new MeshError('no-certificate', 'this sidecar has no certificate yet');
          const router = this.routerFor(service);
          return this.poolFor(router.pick(undefined, undefined, undefined).endpoint, material, router);
        },
      }),
      // node.* properties and the mesh_identity foreign function.
      node: {
        id: options.node.instance,
        cluster: options.node.service,
        namespace: options.node.namespace,
        identity: () => this.tls?.spiffeId ?? '',
      },
    });
    this.upstreamTimeoutMs = options.upstreamTimeoutMs ?? 15_000;
    this.allowEgress = options.allowEgress ?? options.interception === 'transparent';
    const deps: ProxyDeps = {
      metrics: this.metrics,
      log: this.log,
      accessLog: accessLogSink(options.log),
      upstreamTimeoutMs: this.upstreamTimeoutMs,
      track: (delta) => this.track(delta),
    };
    // Before the roles: the inbound role's fixed route holds the app pools.
    this.appPool = new UpstreamPool({
      connect: (read) => net.connect({ host: options.app.host, port: options.app.port, onread: read }),
      secure: false,
      limits: DEFAULT_LIMITS,
      // Below the 5 s keep-alive timeout of Node's http server, the most common app server here.
      idleTimeoutMs: 4_000,
      maxIdle: 256,
    });
    this.appH2Pool = new H2Pool({
      connect: () => net.connect({ host: options.app.host, port: options.app.port }),
      fallback: this.appPool,
      idleTimeoutMs: 4_000,
    });
    const outbound = this.outboundRole();
    const inbound = this.inboundRole();
    const httpOptions: ServerOptions = { limits: DEFAULT_LIMITS, ...DEFAULT_SERVER_OPTIONS, ...options.http };
    const refused = (role: ListenerRole) => (conn: { socket: net.Socket }, err: MeshError, status: number) => {
      this.metrics.record({ reporter: role.reporter, sourceWorkload: '', destinationService: '', destinationVersion: '', status, responseFlags: REASONS[err.reason].flag, durationMs: 0, requestProtocol: 'http', grpcStatus: '' });
      this.log({ time: new Date().toISOString(), direction: role.name, status, reason: err.reason, error: err.message, source: conn.socket.remoteAddress });
    };
    this.outboundHttp = new Http1Server(httpOptions, { request: (ex) => handleRequest(outbound, deps, ex), refused: refused(outbound) });
    this.inboundHttp = new Http1Server(httpOptions, { request: (ex) => handleRequest(inbound, deps, ex), refused: refused(inbound) });
    const h2Options: H2ServerOptions = {
      limits: httpOptions.limits,
      ...DEFAULT_H2_OPTIONS,
      idleTimeoutMs: httpOptions.idleTimeoutMs,
      maxConnections: httpOptions.maxConnections,
      ...options.http2,
    };
    const h2Refusals = refusalCounter(this.metrics.registry);
    const h2Refused = (role: ListenerRole) => (conn: H2Connection, reason: H2Refusal, message: string, count: number) => {
      h2Refusals.inc({ listener: role.name, reason }, count);
      this.log({ time: new Date().toISOString(), direction: role.name, protocol: 'HTTP/2', reason, error: message, streams: count > 1 ? count : undefined, source: conn.socket.remoteAddress });
    };
    this.outboundH2 = new Http2Server(h2Options, { request: (ex) => handleRequest(outbound, deps, ex), refused: h2Refused(outbound) });
    this.inboundH2 = new Http2Server(h2Options, { request: (ex) => handleRequest(inbound, deps, ex), refused: h2Refused(inbound) });
    // Outbound: one app connection may carry requests for any service, so its destination is unknown.
    const outboundTcp: TcpLabels = { reporter: 'source', source_workload: options.node.service, destination_service: 'unknown' };
    const detectMs = options.detectTimeoutMs ?? DEFAULT_SERVER_FIRST_TIMEOUT_MS;
    this.tcpProxy = new TcpProxy(
      {
        metrics: this.metrics,
        log: this.log,
        service: options.node.service,
        app: options.app,
        router: (service) => {
          if (!this.endpoints || !Object.hasOwn(this.endpoints.services, service)) throw new MeshError('unknown-service', `no mesh service named ${service}`);
          return this.routerFor(service);
        },
        dialer: () => {
          if (!this.tls) throw new MeshError('no-certificate', 'this sidecar has no certificate yet');
          return (this.dialer ??= new MeshTcpDialer(this.tls));
        },
        chain: () => this.chain,
      },
      options.tcp,
    );
    // Opaque TCP on the outbound listener needs a destination: only an intercepted connection
    // (transparent mode) has one, so only then does silence mean a server-first protocol.
    // A client that never speaks is given up on as the codec gives up on a head: after headersTimeoutMs.
    const maxWaitMs = httpOptions.headersTimeoutMs;
    this.outboundListener = new ProtocolListener({ name: 'outbound', log: this.log, maxWaitMs, serverFirstTimeoutMs: (c) => (c.info.originalDst ? detectMs : undefined) })
      .handle('http1', (socket, conn) => {
        this.metrics.countConnection(socket, outboundTcp);
        this.outboundHttp.accept(socket, conn.info);
        socket.resume();
      })
      .handle('h2', (socket, conn) => {
        this.metrics.countConnection(socket, outboundTcp);
        this.outboundH2.accept(socket, conn.info);
      })
      .handle('opaque', (socket, conn) => this.opaqueOutbound(socket, conn));
    this.outboundServer = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => this.outboundListener.accept(socket));
    this.inboundListener = new ProtocolListener({ name: 'inbound', log: this.log, maxWaitMs })
      .handle('http1', (socket, conn) => {
        const peer = conn.info.peer ?? '';
        // Counted once the handshake named the peer; bytes are the plaintext ones, as Istio counts them.
        this.metrics.countConnection(socket, { reporter: 'destination', source_workload: workloadOf(peer) || 'unknown', destination_service: options.node.service });
        this.inboundHttp.accept(socket, conn.info);
        socket.resume();
      })
      .handle('h2', (socket, conn) => {
        const peer = conn.info.peer ?? '';
        this.metrics.countConnection(socket, { reporter: 'destination', source_workload: workloadOf(peer) || 'unknown', destination_service: options.node.service });
        this.inboundH2.accept(socket, conn.info);
      })
      .handle('opaque', (socket, conn) => this.tcpProxy.fromPeer(socket, conn));
    // No certificate until applyCertificate: the TLS handshake fails, so nothing is served in plaintext.
    this.inboundServer = tls.createServer(
      // ALPN: the first protocol the client offers that a handler serves (h2, http/1.1, opaque TCP).
      { requestCert: true, rejectUnauthorized: true, allowHalfOpen: true, ALPNCallback: this.inboundListener.selectAlpn, handshakeTimeout: httpOptions.headersTimeoutMs },
      (socket: TLSSocket) => this.inboundListener.accept(socket, { peer: uriSan(socket.getPeerCertificate().subjectaltname) }),
    );
    this.inboundServer.on('tlsClientError', (err) => this.log({ event: 'inbound-tls-error', error: err.message }));
    // A connection whose client gave up inside the handshake (it refused our certificate, say) is
    // not the codec's yet and lingers half-open until handshakeTimeout; stop() closes such ones.
    this.inboundServer.on('connection', (raw: net.Socket) => {
      this.handshaking.add(raw);
      raw.once('close', () => this.handshaking.delete(raw));
    });
    this.adminServer = http.createServer((req, res) => this.admin(req, res));
    this.explicitPorts(httpOptions, deps, refused, outboundTcp, detectMs, (role) => new Http2Server(h2Options, { request: (ex) => handleRequest(role, deps, ex), refused: h2Refused(role) }));
    if (options.interception === 'transparent') {
      const hook = originalDstHook(this.log);
      this.outboundListener.onAccept(hook);
      this.inboundListener.onAccept(hook);
      const plaintext = options.permissiveInbound
        ? (socket: net.Socket) => this.inboundListener.accept(socket)
        : (socket: net.Socket) => {
            // STRICT: nothing reaches the app without a mesh certificate.
            this.log({ time: new Date().toISOString(), event: 'inbound-plaintext-refused', reason: 'mtls-required', source: socket.remoteAddress });
            socket.destroy();
          };
      this.inboundRaw = permissiveInbound(this.inboundServer, plaintext, detectMs);
    }
  }

  /** Explicit mode (runtime/explicit): a listener per upstream port, and the HTTP proxy port. */
  private explicitPorts(
    httpOptions: ServerOptions,
    deps: ProxyDeps,
    refused: (role: ListenerRole) => ServerHooks['refused'],
    outboundTcp: TcpLabels,
    detectMs: number,
    h2For: (role: ListenerRole) => Http2Server,
  ): void {
    const o = this.options;
    const serve = (name: string, listen: Address, role: ListenerRole, configure: (l: ProtocolListener, http: Http1Server) => void, tunnel?: (socket: net.Socket) => void): void => {
      const http = new Http1Server(httpOptions, { request: (ex) => handleRequest(role, deps, ex), refused: refused(role), tunnel });
      this.explicitHttp.push(http);
      const listener = new ProtocolListener({ name, log: this.log, maxWaitMs: httpOptions.headersTimeoutMs, serverFirstTimeoutMs: detectMs });
      listener.handle('http1', (socket, conn) => {
        this.metrics.countConnection(socket, outboundTcp);
        http.accept(socket, conn.info);
        socket.resume();
      });
      configure(listener, http);
      this.explicitServers.push({ server: net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => listener.accept(socket)), listen, name });
    };
    for (const u of o.upstreams ?? []) {
      const role = this.outboundRole(u.service);
      serve(`upstream:${u.service}${u.port ? `:${u.port}` : ''}${u.protocol ? `/${u.protocol}` : ''}`, u.listen, role, (listener) => {
        // HTTP/2 with prior knowledge (gRPC clients): the same service, through the HTTP/2 codec.
        const h2 = h2For(role);
        this.explicitH2.push(h2);
        listener.handle('h2', (socket, conn) => {
          this.metrics.countConnection(socket, outboundTcp);
          h2.accept(socket, conn.info);
        });
        listener.handle('opaque', (socket, conn) => this.tcpProxy.toService(socket, conn, u.service, u.port));
        const declared = u.protocol === 'tcp' ? 'opaque' : u.protocol === 'http' ? 'http1' : undefined;
        if (declared) listener.onAccept((_s, conn) => (conn.protocol = declared));
      });
    }
    if (o.httpProxy) {
      let codec: Http1Server | undefined;
      const port = httpProxyPort({
        tcp: this.tcpProxy,
        http: (socket, conn) => {
          this.metrics.countConnection(socket, outboundTcp);
          codec!.accept(socket, conn.info);
          socket.resume();
        },
        service: (host) => this.serviceNamed(host),
        allowEgress: this.allowEgress,
        limits: httpOptions.limits,
        headersTimeoutMs: httpOptions.headersTimeoutMs,
        log: this.log,
      });
      serve(
        'http-proxy',
        o.httpProxy,
        this.outboundRole(undefined, true),
        (listener, http) => {
          codec = http;
          listener.handle('http1', port.handler);
        },
        port.tunnel,
      );
    }
  }

  /** Opaque TCP from the app on the outbound listener: to the original destination of an intercepted connection. */
  private opaqueOutbound(socket: net.Socket, conn: Accepted): void {
    const dst = conn.info.originalDst;
    if (!dst) {
      this.tcpProxy.refuse(socket, conn, 'no-destination', 'opaque TCP on the outbound listener needs an intercepted connection (transparent mode) or an upstream port (explicit mode)');
      return;
    }
    // An endpoint's (or service's) address names its service; the port is then the app port behind that endpoint's sidecar.
    const mesh = meshDestination(dst, this.endpoints);
    if (mesh) return this.tcpProxy.toService(socket, conn, mesh.service, mesh.port);
    if (this.allowEgress) this.tcpProxy.toAddress(socket, conn, { host: dst.address, port: dst.port });
    else this.tcpProxy.refuse(socket, conn, 'egress-denied', `${dst.address}:${dst.port} is not a mesh endpoint and this sidecar does not allow egress`);
  }

  async start(): Promise<void> {
    const o = this.options;
    // Transparent mode cannot work without SO_ORIGINAL_DST: say so now, not on the first connection.
    if (this.inboundRaw) requireAddon();
    await Promise.all([
      listen(this.outboundServer, o.outbound),
      listen(this.inboundRaw ?? this.inboundServer, o.inbound),
      listen(this.adminServer, o.admin),
      ...this.explicitServers.map((e) => listen(e.server, e.listen)),
    ]);
    if (this.inboundRaw) {
      // A sidecar whose own connections come back to it would loop on every upstream: refuse to run.
      try {
        await checkNoLoop(this.outboundServer);
      } catch (err) {
        await this.stop();
        throw err;
      }
    }
    this.log({ event: 'sidecar-started', instance: o.node.instance, ...this.addresses() });
  }

  addresses(): { inbound: Address; outbound: Address; admin: Address; explicit: Record<string, Address> } {
    const explicit: Record<string, Address> = {};
    for (const e of this.explicitServers) explicit[e.name] = bound(e.server);
    return { inbound: bound(this.inboundRaw ?? this.inboundServer), outbound: bound(this.outboundServer), admin: bound(this.adminServer), explicit };
  }

  /** Builds the new chain beside the current one, then swaps; on error the current chain stays. */
  async applyBundle(bundle: Bundle): Promise<void> {
    let next: FilterChain;
    try {
      next = await FilterChain.fromBundle(bundle, this.env, this.options.trustedKeys ?? []);
    } catch (err) {
      this.metrics.chainReload('refused');
      const code = err instanceof ChainError ? err.code : 'CHAIN_BUILD_FAILED';
      this.log({ event: 'bundle-refused', code, reason: (err as Error).message, keeping: this.chain?.version });
      throw err;
    }
    const previous = this.chain;
    this.chain = next;
    this.traffic = trafficOf(bundle);
    this.updateRouters();
    previous?.retire();
    this.metrics.chainReload('applied', next.version);
    this.log({ event: 'bundle-applied', version: next.version, filters: next.filters.map((f) => f.name) });
  }

  applyEndpoints(payload: EndpointsPayload): void {
    this.endpoints = payload;
    this.updateRouters();
    this.log({ event: 'endpoints-applied', services: Object.keys(payload.services).length });
  }

  /** Swaps the certificate live: new TLS context for inbound, new agents for outbound; in-flight requests are untouched. */
  applyCertificate(cert: CertificatePayload, keyPem: string): void {
    const material: TlsMaterial = { spiffeId: cert.spiffeId, cert: cert.certChainPem, key: keyPem, ca: cert.caBundlePem, notAfter: cert.notAfter };
    // Fails here (and keeps the old certificate) if key and certificate do not match.
    this.inboundServer.setSecureContext({ cert: material.cert, key: material.key, ca: material.ca });
    this.tls = material;
    this.dialer = undefined;
    const old = this.pools;
    this.pools = new Map();
    for (const pool of old.values()) pool.retire();
    this.log({ event: 'certificate-applied', spiffeId: cert.spiffeId, notAfter: cert.notAfter });
  }

  chainVersion(): string | undefined {
    return this.chain?.version;
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const closing = [this.outboundServer, this.inboundRaw ?? this.inboundServer, this.adminServer, ...this.explicitServers.map((e) => e.server)].map(
      (s) => new Promise<void>((resolve) => s.close(() => resolve())),
    );
    this.outboundHttp.drain();
    this.inboundHttp.drain();
    this.outboundH2.drain();
    this.inboundH2.drain();
    for (const h of this.explicitHttp) h.drain();
    for (const h of this.explicitH2) h.drain();
    this.adminServer.closeIdleConnections();
    const deadline = Date.now() + STOP_DEADLINE_MS;
    await Promise.race([this.idle(), delay(STOP_DEADLINE_MS)]);
    // Responses just completed still have bytes to flush: let their connections close on their own first.
    const grace = Math.max(100, Math.min(1_000, deadline - Date.now()));
    await Promise.all([this.outboundHttp.closeAll(grace), this.inboundHttp.closeAll(grace), this.outboundH2.closeAll(grace), this.inboundH2.closeAll(grace), ...this.explicitHttp.map((h) => h.closeAll(grace)), ...this.explicitH2.map((h) => h.closeAll(grace))]);
    for (const raw of this.handshaking) raw.destroy();
    // Opaque TCP has no request boundary to drain at: what is still open is closed now.
    this.tcpProxy.closeAll();
    for (const l of [this.outboundListener, this.inboundListener]) for (const s of l.detecting) s.destroy();
    this.adminServer.closeAllConnections();
    await Promise.all(closing);
    for (const p of this.pools.values()) p.destroy();
    this.appPool.destroy();
    this.appH2Pool.destroy();
    this.plainPools.destroy();
    for (const r of this.routers.values()) r.close();
    this.chain?.retire();
    this.log({ event: 'sidecar-stopped', instance: this.options.node.instance });
  }

  private track(delta: 1 | -1): void {
    this.inFlight += delta;
    if (this.inFlight === 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  private idle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private ready(): boolean {
    return this.chain !== undefined && this.endpoints !== undefined && this.tls !== undefined;
  }

  /**
   * `fixedService`: an upstream port of explicit mode, whose requests all go to that service whatever their Host.
   * `proxyPort`: the HTTP proxy port, where an absolute-form request for a host outside the mesh is egress.
   */
  private outboundRole(fixedService?: string, proxyPort = false): ListenerRole {
    const node = this.options.node;
    return {
      name: 'outbound',
      reporter: 'source',
      facts: (ex) => {
        const tls = this.tls;
        if (!tls) throw new MeshError('no-certificate', 'this sidecar has no certificate yet');
        // An absolute-form target (a request to an HTTP proxy) names the service; its authority wins over Host.
        const absolute = absoluteAuthority(ex.head.target);
        const host = absolute ?? ex.head.host;
        // The proxy port's egress goes the passthrough way, to the authority the request names (allowed or egress-denied).
        const dst = proxyPort && absolute !== undefined && this.serviceNamed(absolute) === undefined ? authorityDestination(absolute) : ex.conn.info.originalDst;
        // Transparent mode: Host first, then the original destination (a mesh address, or else passthrough).
        const service = fixedService ?? this.serviceNamed(host) ?? (dst ? this.interceptedService(dst) : this.serviceFromHost(host));
        const facts = this.facts(ex, Direction.Outbound, tls.spiffeId, service, '', 'http');
        if (dst && !fixedService) {
          if (!Object.hasOwn(this.endpoints?.services ?? {}, service)) this.passthrough.set(facts, dst);
          else {
            // An app port of the service other than its endpoints' own (Istio's model: one port per app port, each captured by the peer's rules).
            const mesh = meshDestination(dst, this.endpoints);
            if (mesh && mesh.service === service && mesh.port !== 0) this.targetPort.set(facts, mesh.port);
          }
        }
        return facts;
      },
      chain: () => this.chain,
      route: (stream) => {
        const dst = this.passthrough.get(stream.facts);
        if (!dst) return this.routeOutbound(stream);
        const where = `${dst.address}:${dst.port}`;
        return fixedRoute(this.plainPools.target(dst.address, dst.port, '', `passthrough ${where}`), this.upstreamTimeoutMs);
      },
      sourceWorkload: () => node.service,
      ownVersion: () => node.version,
    };
  }

  private inboundRole(): ListenerRole {
    const node = this.options.node;
    const app = this.options.app;
    const appEndpoint = `app ${app.host}:${app.port}`;
    const appH1: UpstreamTarget = { pool: this.appPool, version: node.version, endpoint: appEndpoint, address: `${app.host}:${app.port}` };
    const appH2: UpstreamTarget = { ...appH1, pool: this.appH2Pool };
    return {
      name: 'inbound',
      reporter: 'destination',
      facts: (ex) => {
        const peer = ex.conn.info.peer ?? '';
        const facts = this.facts(ex, Direction.Inbound, peer, node.service, peer, 'https');
        // destination.port is the app port the request is for (as on opaque TCP and in Istio): the
        // port an intercepted client dialed, else the app's own, never the sidecar's listener.
        if (!ex.conn.info.originalDst) facts.destinationPort = app.port;
        // A request the client sidecar received as HTTP/2 is HTTP/2 to the filters and to the app.
        if (getHeader(ex.head.headers, ORIG_PROTO_HEADER) === 'h2') facts.protocol = 'HTTP/2';
        return facts;
      },
      chain: () => this.chain,
      route: (stream) => {
        // Transparent mode: the app port the client dialed (redirected to us), when it is not the main one.
        const port = stream.facts.destinationPort;
        if (this.inboundRaw && port !== app.port && port !== bound(this.inboundRaw).port) {
          return fixedRoute(this.plainPools.target(app.host, port, node.version, `app ${app.host}:${port}`), this.upstreamTimeoutMs);
        }
        return fixedRoute(stream.facts.protocol === 'HTTP/2' ? appH2 : appH1, this.upstreamTimeoutMs);
      },
      sourceWorkload: (stream) => workloadOf(stream.facts.sourcePrincipal),
      ownVersion: () => node.version,
    };
  }

  private facts(ex: DownstreamExchange, direction: number, principal: string, service: string, peer: string, scheme: string): StreamFacts {
    const sock = ex.conn.socket;
    // An intercepted connection's destination is where it was going, not the listener (as Envoy's original_dst).
    const dst = ex.conn.info.originalDst;
    return {
      direction,
      sourcePrincipal: principal,
      sourceAddress: sock.remoteAddress ?? '',
      sourcePort: sock.remotePort ?? 0,
      destinationAddress: dst ? dst.address : (sock.localAddress ?? ''),
      destinationPort: dst ? dst.port : (sock.localPort ?? 0),
      destinationService: service,
      peerUriSan: peer,
      requestId: newRequestId(),
      scheme,
      protocol: ex.protocol ?? (ex.head.minor === 1 ? 'HTTP/1.1' : 'HTTP/1.0'),
    };
  }

  /** `Host: catalog`, `catalog:8080` or `catalog.ns.svc...` names the service `catalog`. */
  private serviceFromHost(host: string): string {
    const service = this.serviceNamed(host);
    if (service === undefined) throw new MeshError('unknown-service', `no mesh service named by Host "${host}"`);
    return service;
  }

  /**
   * The service of an intercepted request Host did not name: the mesh service at its original
   * destination, or PASSTHROUGH where egress is allowed. One name for every destination outside
   * the mesh (as Istio's PassthroughCluster) keeps the metrics' label sets bounded; the access
   * log's `endpoint` has the address.
   */
  private interceptedService(dst: Destination): string {
    const mesh = meshDestination(dst, this.endpoints);
    if (mesh) return mesh.service;
    if (!this.allowEgress) throw new MeshError('egress-denied', `${dst.address}:${dst.port} is not a mesh address and this sidecar does not allow egress`);
    return PASSTHROUGH;
  }

  /** The mesh service a host name (with or without port) names, or undefined. */
  private serviceNamed(host: string): string | undefined {
    const services = this.endpoints?.services ?? {};
    const name = host.replace(/:\d+$/, '').toLowerCase();
    if (Object.hasOwn(services, name)) return name;
    const first = name.split('.')[0] ?? '';
    if (Object.hasOwn(services, first)) return first;
    return undefined;
  }

  /** The outbound route: the service's router picks endpoints per try under the bundle's traffic policy. */
  private routeOutbound(stream: HttpStream): Route {
    const service = stream.facts.destinationService;
    const material = this.tls;
    if (!material) throw new MeshError('no-certificate', 'this sidecar has no certificate yet');
    const router = this.routerFor(service);
    const version = stream.propertyText(ROUTE_VERSION);
    const policy = router.policy(stream.propertyText(ROUTE_ID));
    const hashKey = hashKeyOf(router.hashOn, stream);
    // Fails fast (no-healthy-endpoint) before the request is admitted and counted.
    router.requireEndpoints(version);
    router.admit();
    return new OutboundRoute(router, policy, this.upstreamTimeoutMs, version, hashKey, this.targetPort.get(stream.facts), this.outboundTargets);
  }

  /**
   * An endpoint's target on its own port, made once: valid while the endpoint and the pools
   * (replaced on certificate rotation) are the ones it was made with.
   */
  private readonly endpointTargets = new WeakMap<EndpointState, { endpoint: Endpoint; pools: Map<string, UpstreamPool>; target: UpstreamTarget }>();

  /** Where an outbound try to an endpoint goes: its mTLS pool (port overridden for intercepted requests to another app port). */
  private readonly outboundTargets: TargetMaker = {
    targetOf: (s, port, router) => {
      const material = this.tls;
      if (!material) throw new MeshError('no-certificate', 'this sidecar has no certificate yet');
      if (port === undefined) {
        const kept = this.endpointTargets.get(s);
        if (kept !== undefined && kept.endpoint === s.endpoint && kept.pools === this.pools) return kept.target;
      }
      const ep = port === undefined ? s.endpoint : { ...s.endpoint, port };
      const target = { pool: this.poolFor(ep, material, router), version: ep.version, endpoint: ep.instance, address: `${ep.address}:${ep.port}` };
      if (port === undefined) this.endpointTargets.set(s, { endpoint: s.endpoint, pools: this.pools, target });
      return target;
    },
  };

  private routerFor(service: string): ServiceRouter {
    let router = this.routers.get(service);
    if (!router) {
      router = new ServiceRouter(service, this.log);
      router.update(this.endpoints?.services[service]?.endpoints ?? [], this.traffic.get(service));
      this.routers.set(service, router);
    }
    return router;
  }

  /** Endpoints or policy changed: every router takes the new ones (endpoint health is kept by instance). */
  private updateRouters(): void {
    for (const [service, router] of this.routers) router.update(this.endpoints?.services[service]?.endpoints ?? [], this.traffic.get(service));
  }

  private poolFor(ep: Endpoint, material: TlsMaterial, router: ServiceRouter): UpstreamPool {
    const key = `${ep.address}:${ep.port}|${ep.spiffeId}`;
    let pool = this.pools.get(key);
    if (!pool) {
      const expected = ep.spiffeId;
      const secureContext = tls.createSecureContext({ cert: material.cert, key: material.key, ca: material.ca });
      let session: Buffer | undefined;
      pool = new UpstreamPool({
        connect: (read) => {
          const socket = tlsConnectShared(
            {
              host: ep.address,
              port: ep.port,
              secureContext,
              ALPNProtocols: ['http/1.1'],
              ...(session ? { session } : {}),
              checkServerIdentity: expectSpiffeId(expected, ep.instance),
            },
            read,
          );
          // TLS session resumption makes reconnects to the same sidecar cheap.
          socket.once('session', (s: Buffer) => (session = s));
          return socket;
        },
        secure: true,
        limits: DEFAULT_LIMITS,
        // Below the inbound listener's idle timeout, so the client side closes first.
        idleTimeoutMs: Math.max(1_000, (this.options.http?.idleTimeoutMs ?? DEFAULT_SERVER_OPTIONS.idleTimeoutMs) - 5_000),
        maxIdle: 256,
        budget: router.connections,
      });
      this.pools.set(key, pool);
    }
    return pool;
  }

  private admin(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0];
    const json = (status: number, body: unknown): void => {
      const text = JSON.stringify(body, null, 2) + '\n';
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(text);
    };
    if (path === '/ready') {
      const ok = this.ready() && !this.stopping;
      res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' });
      res.end(ok ? 'ready\n' : `not ready: ${this.missing().join(', ')}\n`);
    } else if (path === '/metrics') {
      this.metrics.registry.metrics().then(
        (text) => {
          res.writeHead(200, { 'content-type': this.metrics.registry.contentType });
          res.end(text);
        },
        (err: unknown) => json(500, { error: (err as Error).message }),
      );
    } else if (path === '/stats') {
      this.metrics.registry.getMetricsAsJSON().then(
        (metrics) => json(200, { instance: this.options.node.instance, chainVersion: this.chain?.version ?? null, metrics }),
        (err: unknown) => json(500, { error: (err as Error).message }),
      );
    } else if (path === '/config') {
      json(200, {
        node: this.options.node,
        chainVersion: this.chain?.version ?? null,
        filters: this.chain?.filters.map((f) => ({ name: f.name, service: f.service, failurePolicy: f.failurePolicy })) ?? [],
        endpoints: this.endpoints ?? null,
        certificate: this.tls ? { spiffeId: this.tls.spiffeId, notAfter: certExpiry(this.tls.cert) ?? this.tls.notAfter } : null,
      });
    } else {
      json(404, { error: 'not found', endpoints: ['/ready', '/metrics', '/stats', '/config'] });
    }
  }

  private missing(): string[] {
    const out: string[] = [];
    if (!this.chain) out.push('filter chain');
    if (!this.endpoints) out.push('endpoints');
    if (!this.tls) out.push('certificate');
    if (this.stopping) out.push('stopping');
    return out;
  }
}

/** `host[:port]` of an absolute-form request as a destination (port 80 when absent; IPv6 without brackets). */
function authorityDestination(authority: string): Destination {
  const m = /^(\[[^\]]*\]|[^:]*)(?::(\d{1,5}))?$/.exec(authority);
  const host = (m?.[1] ?? authority).replace(/^\[(.*)\]$/, '$1');
  return { address: host, port: m?.[2] ? Number(m[2]) : 80 };
}

/** The authority of an absolute-form request target (`http://catalog:8080/x` → `catalog:8080`), else undefined. */
function absoluteAuthority(target: string): string | undefined {
  if (target.charCodeAt(0) === 0x2f) return undefined;
  return /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/([^/?#]*)/.exec(target)?.[1];
}

/** `spiffe://td/ns/default/sa/catalog` → `catalog` (the workload label in metrics). */
function workloadOf(principal: string): string {
  const m = /\/sa\/([^/]+)$/.exec(principal);
  return m?.[1] ?? '';
}

function certExpiry(pem: string): string | undefined {
  try {
    return new Date(new X509Certificate(pem).validTo).toISOString();
  } catch {
    return undefined;
  }
}

/** The consistent-hash key of a request: a header, a cookie, or the source address. */
function hashKeyOf(on: ServiceRouter['hashOn'], stream: HttpStream): string | undefined {
  if (!on) return undefined;
  if ('header' in on) return getHeader(stream.requestHeaders, on.header.toLowerCase());
  if ('cookie' in on) {
    const cookies = getHeader(stream.requestHeaders, 'cookie');
    if (!cookies) return undefined;
    for (const part of cookies.split(/[;,]\s*/)) {
      const eq = part.indexOf('=');
      if (eq > 0 && part.slice(0, eq).trim() === on.cookie) return part.slice(eq + 1).trim();
    }
    return undefined;
  }
  return stream.facts.sourceAddress;
}

/** Traffic policy per destination service, from the filters of a bundle that carry one. */
function trafficOf(bundle: Bundle): Map<string, ServiceTraffic> {
  const out = new Map<string, ServiceTraffic>();
  for (const f of bundle.manifest.filters) if (f.traffic && f.service !== '*') out.set(f.service, f.traffic);
  return out;
}
