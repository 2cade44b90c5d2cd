// Standalone proxy for trying filters without a mesh: one plaintext listener,
// filters from local .wasm files in the order given, forwarding to a fixed
// upstream URL (or a per-version URL when a filter sets mesh.route.version).
//
// In:  StandaloneOptions (listen address, upstream URLs, filter specs).
// Out: a running proxy with the same data path and admin endpoints as the sidecar.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import { bound, listen, type Address } from './net.ts';
import { Direction, ROUTE_VERSION } from '../protocol/properties.ts';
import { FilterChain, type FilterSpec } from './chain.ts';
import { handleRequest, newRequestId, type ListenerRole, type UpstreamTarget } from './http-proxy.ts';
import { SidecarMetrics } from './metrics.ts';
import { jsonLineLog } from './sidecar.ts';
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
  log?: (entry: Record<string, unknown>) => void;
}

interface Upstream {
  url: URL;
  agent: http.Agent;
}

export class StandaloneProxy {
  private readonly options: StandaloneOptions;
  private readonly log: (entry: Record<string, unknown>) => void;
  readonly metrics = new SidecarMetrics();
  private chain: FilterChain | undefined;
  private readonly server: http.Server;
  private readonly adminServer: http.Server | undefined;
  private readonly upstreams = new Map<string, Upstream>();

  constructor(options: StandaloneOptions) {
    this.options = options;
    this.log = options.log ?? jsonLineLog;
    const service = options.service ?? options.upstream.hostname;
    const role: ListenerRole = {
      name: 'standalone',
      reporter: 'source',
      facts: (req) => ({
        direction: Direction.Unspecified,
        sourcePrincipal: '',
        sourceAddress: req.socket.remoteAddress ?? '',
        sourcePort: req.socket.remotePort ?? 0,
        destinationAddress: req.socket.localAddress ?? '',
        destinationPort: req.socket.localPort ?? 0,
        destinationService: service,
        peerUriSan: '',
        requestId: newRequestId(),
        scheme: 'http',
        protocol: `HTTP/${req.httpVersion}`,
      }),
      chain: () => this.chain,
      route: (stream) => {
        const wanted = stream.setProperties.get(ROUTE_VERSION);
        const version = wanted ? new TextDecoder().decode(wanted) : '';
        const url = (version && options.versionUpstreams?.get(version)) || options.upstream;
        return this.target(url, version || 'default');
      },
      sourceWorkload: () => '',
      ownVersion: () => '',
    };
    const deps = { metrics: this.metrics, log: this.log, upstreamTimeoutMs: options.upstreamTimeoutMs ?? 15_000, track: () => {} };
    this.server = http.createServer((req, res) => handleRequest(role, deps, req, res));
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
    const servers = [this.server, ...(this.adminServer ? [this.adminServer] : [])];
    const closed = servers.map((s) => new Promise<void>((r) => s.close(() => r())));
    for (const s of servers) s.closeIdleConnections();
    await Promise.race([Promise.all(closed), new Promise((r) => setTimeout(r, 5_000).unref())]);
    for (const s of servers) s.closeAllConnections();
    for (const u of this.upstreams.values()) u.agent.destroy();
    this.chain?.retire();
  }

  private target(url: URL, version: string): UpstreamTarget {
    let u = this.upstreams.get(url.href);
    if (!u) {
      const agent = url.protocol === 'https:' ? new https.Agent({ keepAlive: true }) : new http.Agent({ keepAlive: true });
      u = { url, agent };
      this.upstreams.set(url.href, u);
    }
    const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
    return { protocol: url.protocol === 'https:' ? 'https:' : 'http:', host: url.hostname, port, agent: u.agent, version, endpoint: url.href };
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
