// Standalone proxy for trying filters without a mesh: one plaintext listener,
// filters from local .wasm files in the order given, forwarding to a fixed
// upstream URL (or a per-version URL when a filter sets mesh.route.version).
//
// In:  StandaloneOptions (listen address, upstream URLs, filter specs).
// Out: a running proxy with the same data path and admin endpoints as the sidecar.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import { bound, listen, type Address } from './net.ts';
import { Direction, ROUTE_VERSION } from '../protocol/properties.ts';
import { FilterChain, type FilterSpec } from './chain.ts';
import { fixedRoute, handleRequest, newRequestId, type DownstreamExchange, type ListenerRole, type Route, type UpstreamTarget } from './http-proxy.ts';
import type { StreamFacts } from './wasm/stream.ts';
import { UpstreamPool } from './http1/client.ts';
import { tlsConnectShared } from './http1/shared-read.ts';
import { DEFAULT_LIMITS } from './http1/parse.ts';
import { DEFAULT_SERVER_OPTIONS, Http1Server, type ServerOptions } from './http1/server.ts';
import { REASONS } from './errors.ts';
import { SidecarMetrics } from './metrics.ts';
import { jsonLineLog } from './sidecar.ts';
import { accessLogSink } from './access-log.ts';
import { createHostEnvironment } from './wasm/environment.ts';
import { hostPortTarget, nodeHttpDispatcher } from './wasm/http-call.ts';
import { sha256Hex } from '../protocol/bundle.ts';

export interface StandaloneOptions {
  listen: Address;
  upstream: URL;
  /** Version name -> upstream URL, used when a filter sets mesh.route.version. */
  versionUpstreams?: Map<string, URL>;
  filters: FilterSpec[];
  admin?: Address;
  /** destination.service; default: the upstream's host name. */
  service?: string;
  upstreamTimeoutMs?: number;
  /** Codec limits and timeouts of the listener. */
  http?: Partial<ServerOptions>;
  log?: (entry: Record<string, unknown>) => void;
}


/** What a standalone proxy's filters know of a request: no mesh identity, the socket's addresses. */
export function standaloneFacts(ex: DownstreamExchange, service: string): StreamFacts {
  const socket = ex.conn.socket;
  return {
    direction: Direction.Unspecified,
    sourcePrincipal: '',
    sourceAddress: socket.remoteAddress ?? '',
    sourcePort: socket.remotePort ?? 0,
    destinationAddress: socket.localAddress ?? '',
    destinationPort: socket.localPort ?? 0,
    destinationService: service,
    peerUriSan: '',
    requestId: newRequestId(),
    scheme: 'http',
    protocol: ex.head.minor === 1 ? 'HTTP/1.1' : 'HTTP/1.0',
  };
}

/** Routes kept by version name. */
const MAX_KEPT_ROUTES = 64;

export class StandaloneProxy {
  private readonly options: StandaloneOptions;
  private readonly log: (entry: Record<string, unknown>) => void;
  readonly metrics = new SidecarMetrics();
  private chain: FilterChain | undefined;
  private readonly server: net.Server;
  private readonly http: Http1Server;
  private readonly adminServer: http.Server | undefined;
  private readonly upstreams = new Map<string, UpstreamPool>();
  private readonly routes = new Map<string, Route>();

  constructor(options: StandaloneOptions) {
    this.options = options;
    this.log = options.log ?? jsonLineLog;
    const service = options.service ?? options.upstream.hostname;
    const role: ListenerRole = {
      name: 'standalone',
      reporter: 'source',
      facts: (ex) => standaloneFacts(ex, service),
      chain: () => this.chain,
      route: (stream) => this.routeTo(stream.propertyText(ROUTE_VERSION) ?? ''),
      sourceWorkload: () => '',
      ownVersion: () => '',
    };
    const deps = { metrics: this.metrics, log: this.log, accessLog: accessLogSink(options.log), upstreamTimeoutMs: options.upstreamTimeoutMs ?? 15_000, track: () => {} };
    this.http = new Http1Server(
      { limits: DEFAULT_LIMITS, ...DEFAULT_SERVER_OPTIONS, ...options.http },
      {
        request: (ex) => handleRequest(role, deps, ex),
        refused: (conn, err, status) => {
          this.metrics.record({ reporter: 'source', sourceWorkload: '', destinationService: '', destinationVersion: '', status, responseFlags: REASONS[err.reason].flag, durationMs: 0, requestProtocol: 'http', grpcStatus: '' });
          this.log({ time: new Date().toISOString(), direction: 'standalone', status, reason: err.reason, error: err.message, source: conn.socket.remoteAddress });
        },
      },
    );
    this.server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => this.http.accept(socket));
    if (options.admin) this.adminServer = http.createServer((req, res) => this.admin(req, res));
  }

  /** Loads the filters (throws ChainError if one is refused), then listens. */
  async start(): Promise<void> {
    // proxy_http_call: with no mesh to name services, the upstream is host:port.
    const env = createHostEnvironment(this.metrics.registry, this.log, { httpCalls: nodeHttpDispatcher(hostPortTarget) });
    const version = sha256Hex(this.options.filters.map((f) => `${f.name}:${sha256Hex(f.wasm)}:${f.configuration}`).join('\n')).slice(0, 16);
    this.chain = await FilterChain.fromSpecs(this.options.filters, env, version);
    this.metrics.chainReload('applied', version);
    await listen(this.server, this.options.listen);
    if (this.adminServer && this.options.admin) await listen(this.adminServer, this.options.admin);
  }

  addresses(): { listen: Address; admin?: Address } {
    const out: { listen: Address; admin?: Address } = { listen: bound(this.server) };
    if (this.adminServer) out.admin = bound(this.adminServer);
    return out;
  }

  async stop(): Promise<void> {
    const closed = [this.server, ...(this.adminServer ? [this.adminServer] : [])].map((s) => new Promise<void>((r) => s.close(() => r())));
    this.http.drain();
    this.adminServer?.closeIdleConnections();
    const deadline = Date.now() + 5_000;
    while (this.http.busy() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await this.http.closeAll(Math.max(100, Math.min(1_000, deadline - Date.now())));
    this.adminServer?.closeAllConnections();
    await Promise.all(closed);
    for (const u of this.upstreams.values()) u.destroy();
    this.chain?.retire();
  }

  /** The route of requests a filter sent to `version` ('' for none): one fixed route per version, kept (routes hold no per-request state). */
  private routeTo(version: string): Route {
    let route = this.routes.get(version);
    if (!route) {
      const url = (version && this.options.versionUpstreams?.get(version)) || this.options.upstream;
      route = fixedRoute(this.target(url, version || 'default'), this.options.upstreamTimeoutMs ?? 15_000);
      // Versions come from filters: a filter naming ever-new ones gets routes made per request.
      if (this.routes.size < MAX_KEPT_ROUTES) this.routes.set(version, route);
    }
    return route;
  }

  private target(url: URL, version: string): UpstreamTarget {
    let pool = this.upstreams.get(url.href);
    if (!pool) {
      const secure = url.protocol === 'https:';
      const port = Number(url.port || (secure ? 443 : 80));
      const host = url.hostname.replace(/^\[|\]$/g, '');
      pool = new UpstreamPool({
        connect: (read) => (secure ? tlsConnectShared({ host, port, servername: net.isIP(host) ? undefined : host, ALPNProtocols: ['http/1.1'] }, read) : net.connect({ host, port, onread: read })),
        secure,
        limits: DEFAULT_LIMITS,
        idleTimeoutMs: 4_000,
        maxIdle: 256,
      });
      this.upstreams.set(url.href, pool);
    }
    return { pool, version, endpoint: url.href, address: url.host };
  }

  private admin(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/metrics') {
      this.metrics.registry.metrics().then((text) => {
        res.writeHead(200, { 'content-type': this.metrics.registry.contentType });
        res.end(text);
      }, () => res.writeHead(500).end());
    } else if (path === '/ready') {
      res.writeHead(this.chain ? 200 : 503).end(this.chain ? 'ready\n' : 'not ready\n');
    } else {
      res.writeHead(404).end('not found\n');
    }
  }
}
