// Where an opaque TCP connection goes, for each way it can arrive at a
// sidecar: to a mesh service (outbound: one mTLS connection to an endpoint's
// inbound sidecar, the target port in the transport header), to a non-mesh
// address (egress, only when allowed), or to the local app (inbound).
//
// In:  accepted, classified sockets and what they are for; the sidecar's
//      endpoint picking and certificate (TcpSidecar).
// Out: relays (runtime/tcp/relay.ts), each with its metrics and log line;
//      a refusal closes the connection and logs the reason. Inbound, the
//      filter chain's network callbacks decide first (runtime/wasm/network.ts):
//      a connection the destination's authorization denies is reset before
//      the app is dialed, logged with reason rbac-denied and the rule, and
//      counted with response_flags UAEX.
import { performance } from 'node:perf_hooks';
import net, { type Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { Direction } from '../../protocol/properties.ts';
import type { Endpoint } from '../../protocol/wire.ts';
import type { FilterChain } from '../chain.ts';
import { MeshError, REASONS } from '../errors.ts';
import type { Accepted } from '../listener.ts';
import type { SidecarMetrics, TcpLabels } from '../metrics.ts';
import type { Address } from '../net.ts';
import type { EndpointState } from '../traffic/balancer.ts';
import type { ServiceRouter } from '../traffic/router.ts';
import { openConnection, PeerType, type ConnectionVerdict, type DataSide } from '../wasm/network.ts';
import type { StreamFacts } from '../wasm/stream.ts';
import { MeshTcpDialer, readTransportHeader } from './mesh.ts';
import { DEFAULT_TCP_CONNECT_TIMEOUT_MS, DEFAULT_TCP_IDLE_TIMEOUT_MS, relay, resetSocket, type RelayOptions } from './relay.ts';

export interface TcpOptions {
  connectTimeoutMs?: number;
  idleTimeoutMs?: number;
  /** Longest wait for the transport header on an inbound opaque connection. */
  headerTimeoutMs?: number;
  /** Ports of the app, besides its main one, that peers may reach as opaque TCP. */
  appPorts?: number[];
  /** Most opaque TCP connections relayed at once by this sidecar (both directions together); default 10,000. */
  maxConnections?: number;
}

/** What the TCP proxy needs from the sidecar. */
export interface TcpSidecar {
  metrics: SidecarMetrics;
  log: (entry: Record<string, unknown>) => void;
  /** This sidecar's service (metrics labels). */
  service: string;
  app: Address;
  /** The router of a mesh service; throws MeshError('unknown-service'). */
  router(service: string): ServiceRouter;
  /** The dialer of the current certificate; throws MeshError('no-certificate'). */
  dialer(): MeshTcpDialer;
  /** The current filter chain (undefined before the first bundle): it authorizes inbound connections. */
  chain(): FilterChain | undefined;
}

/** Hooks of a caller that answers before the bytes flow (the HTTP proxy port's CONNECT). */
export interface TcpCallbacks {
  onReady?: () => void;
  onFailed?: (reason: string, message: string) => void;
}

export class TcpProxy {
  private readonly sidecar: TcpSidecar;
  private readonly connectTimeoutMs: number;
  private readonly idleTimeoutMs: number;
  private readonly headerTimeoutMs: number;
  private readonly appPorts: Set<number>;
  private readonly maxConnections: number;
  /** Downstream sockets being relayed (stop() closes them). */
  readonly live = new Set<Socket>();

  constructor(sidecar: TcpSidecar, options: TcpOptions = {}) {
    this.sidecar = sidecar;
    this.connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_TCP_CONNECT_TIMEOUT_MS;
    this.idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_TCP_IDLE_TIMEOUT_MS;
    this.headerTimeoutMs = options.headerTimeoutMs ?? 10_000;
    this.appPorts = new Set(options.appPorts ?? []);
    this.maxConnections = options.maxConnections ?? 10_000;
  }

  /** Refuses the connection when the relay limit is reached (true: refused). */
  private full(down: Socket, conn: Accepted, cb: TcpCallbacks): boolean {
    if (this.live.size < this.maxConnections) return false;
    this.refuse(down, conn, 'too-many-connections', `this sidecar relays at most ${this.maxConnections} TCP connections`, {}, cb);
    return true;
  }

  /** Outbound: to `service` over mTLS; `port` names the app port at the destination (0: its main port). */
  toService(down: Socket, conn: Accepted, service: string, port: number, cb: TcpCallbacks = {}): void {
    if (this.full(down, conn, cb)) return;
    let state: EndpointState;
    let router: ServiceRouter;
    let dialer: MeshTcpDialer;
    try {
      router = this.sidecar.router(service);
      dialer = this.sidecar.dialer();
      state = router.pick(undefined, undefined, undefined);
    } catch (err) {
      const e = err instanceof MeshError ? err : new MeshError('internal-error', (err as Error).message);
      this.refuse(down, conn, e.reason, e.message, { destination_service: service }, cb);
      return;
    }
    const ep: Endpoint = state.endpoint;
    state.active++;
    const started = performance.now();
    let outcome: 'ok' | 'connect-failure' = 'connect-failure';
    const dial = dialer.dial(ep, port);
    const fields: Record<string, unknown> = { direction: 'outbound', listener: conn.listener, destination_service: service, version: ep.version, endpoint: ep.instance, upstream: `${ep.address}:${ep.port}`, target_port: port || undefined };
    this.start(down, conn, {
      connect: () => dial,
      preamble: dial.preamble,
      labels: { reporter: 'source', source_workload: this.sidecar.service, destination_service: service },
      fields,
      onReady: () => {
        outcome = 'ok';
        fields.tls_resumed = (dial.socket as TLSSocket).isSessionReused();
        router.report(state, { kind: 'response', status: 200 }, performance.now() - started);
        cb.onReady?.();
      },
      onFailed: cb.onFailed,
      onClose: () => {
        state.active--;
        if (outcome !== 'ok') router.report(state, { kind: 'connect-failure' }, performance.now() - started);
      },
    });
  }

  /** Outbound to a non-mesh address (egress): plain TCP. The caller decided it is allowed. */
  toAddress(down: Socket, conn: Accepted, target: Address, cb: TcpCallbacks = {}): void {
    if (this.full(down, conn, cb)) return;
    const where = `${target.host}:${target.port}`;
    this.start(down, conn, {
      connect: () => ({ socket: net.connect({ host: target.host, port: target.port, allowHalfOpen: true, noDelay: true }), readyEvent: 'connect' }),
      labels: { reporter: 'source', source_workload: this.sidecar.service, destination_service: where },
      fields: { direction: 'outbound', listener: conn.listener, destination_service: where, upstream: where, egress: true },
      onReady: cb.onReady,
      onFailed: cb.onFailed,
    });
  }

  /** Inbound: an mTLS connection that carries opaque TCP, to the app port its transport header names. */
  fromPeer(down: Socket, conn: Accepted): void {
    if (this.full(down, conn, {})) return;
    const peer = conn.info.peer ?? '';
    const source = workloadOf(peer) || 'unknown';
    // `intercepted`: the port the client dialed, which the pod's own rules redirected here (transparent mode): the app serves it.
    const toApp = (port: number, intercepted = false): void => {
      const app = this.sidecar.app;
      const target = port === 0 ? app.port : port;
      if (!intercepted && target !== app.port && !this.appPorts.has(target)) {
        this.refuse(down, conn, 'port-not-served', `the app does not serve port ${target} to the mesh`, { source_principal: peer, target_port: target });
        return;
      }
      const labels: TcpLabels = { reporter: 'destination', source_workload: source, destination_service: this.sidecar.service };
      const fields = { direction: 'inbound', listener: conn.listener, source_principal: peer, destination_service: this.sidecar.service, upstream: `${app.host}:${target}` };
      this.authorize(down, conn, target, (verdict) => {
        if (verdict.kind !== 'allow') return this.denied(down, verdict, labels, fields);
        const session = verdict.session;
        down.once('close', () => session.end(PeerType.Unknown));
        this.start(down, conn, {
          connect: () => ({ socket: net.connect({ host: app.host, port: target, allowHalfOpen: true, noDelay: true }), readyEvent: 'connect' }),
          labels,
          fields,
          ...(session.inspectsData ? { inspect: (side: DataSide, chunk: Buffer, end: boolean) => session.data(side, chunk, end) } : {}),
        });
      });
    };
    // With the mesh's ALPN the peer sends the transport header first; without it (a client that
    // is no sidecar, or bytes detected as opaque) the stream goes to the app port the client
    // dialed if the connection was intercepted, else to the app's main port.
    if (conn.by !== 'alpn') {
      const dialed = conn.info.originalDst?.port;
      toApp(dialed ?? 0, dialed !== undefined);
      return;
    }
    readTransportHeader(down, this.headerTimeoutMs, (err, port) => {
      if (err) this.refuse(down, conn, 'bad-transport-header', err, { source_principal: peer });
      else toApp(port);
    });
  }

  /**
   * Asks the chain whether the destination's policy admits this inbound
   * connection (its facts: the peer's identity, address, the app port it
   * is for). A connection that closed meanwhile is ended without a relay.
   */
  private authorize(down: Socket, conn: Accepted, port: number, then: (verdict: ConnectionVerdict) => void): void {
    const peer = conn.info.peer ?? '';
    const facts: StreamFacts = {
      direction: Direction.Inbound,
      sourcePrincipal: peer,
      sourceAddress: down.remoteAddress ?? '',
      sourcePort: down.remotePort ?? 0,
      destinationAddress: conn.info.originalDst?.address ?? down.localAddress ?? '',
      destinationPort: port,
      destinationService: this.sidecar.service,
      peerUriSan: peer,
      requestId: '',
      scheme: '',
      protocol: '',
      mtls: conn.by === 'alpn',
    };
    const hooks = {
      onFilterFailure: (filter: string, policy: string, error: string) => {
        this.sidecar.metrics.filterFailure(filter, policy);
        this.sidecar.log({ event: 'filter-failure', protocol: 'tcp', filter, policy, error });
      },
    };
    // A client that resets while a filter decides (a paused filter may take seconds) must not
    // leave an unhandled 'error': the socket is destroyed, and the verdict is dropped below.
    const ignore = (): void => {};
    down.on('error', ignore);
    openConnection(this.sidecar.chain(), this.sidecar.service, facts, hooks).then(
      (verdict) => {
        down.off('error', ignore);
        if (down.destroyed && verdict.kind === 'allow') verdict.session.end(PeerType.Remote);
        else if (!down.destroyed) then(verdict);
      },
      (err: unknown) => {
        down.off('error', ignore);
        this.refuse(down, conn, 'internal-error', (err as Error).message, { source_principal: peer });
      },
    );
  }

  /**
   * A connection the filters refused: reset (the client learns it was cut,
   * not ended), one log line with the reason and the deciding rule (Envoy's
   * connection termination details), counted with Envoy's UAEX response flag.
   */
  private denied(down: Socket, verdict: Exclude<ConnectionVerdict, { kind: 'allow' }>, labels: TcpLabels, fields: Record<string, unknown>): void {
    const flagged: TcpLabels = { ...labels, response_flags: verdict.kind === 'deny' ? 'UAEX' : REASONS['filter-failed'].flag };
    this.sidecar.metrics.tcpOpened(flagged);
    this.sidecar.metrics.tcpClosed(flagged, 0, 0);
    const extra =
      verdict.kind === 'deny'
        ? { rule: verdict.rule || undefined, filter: verdict.filter, termination_details: `rbac_access_denied_matched_policy[${verdict.rule || 'none'}]` }
        : { filter: verdict.filter };
    const reason = verdict.kind === 'deny' ? 'rbac-denied' : 'filter-failed';
    const message = verdict.kind === 'deny' ? `denied by ${verdict.rule || verdict.filter}` : verdict.error;
    this.sidecar.log({ time: new Date().toISOString(), protocol: 'tcp', ...fields, ...extra, reason, error: message, source: down.remoteAddress });
    resetSocket(down);
  }

  /** Closes every relayed connection (the sidecar is stopping). */
  closeAll(): void {
    for (const s of this.live) s.destroy();
  }

  private start(down: Socket, conn: Accepted, o: Omit<RelayOptions, 'metrics' | 'log' | 'connectTimeoutMs' | 'idleTimeoutMs' | 'replay'> & { onClose?: () => void }): void {
    if (o.onClose) down.once('close', o.onClose);
    relay(down, { ...o, ...(conn.ended ? { replay: conn.head } : {}), metrics: this.sidecar.metrics, log: this.sidecar.log, connectTimeoutMs: this.connectTimeoutMs, idleTimeoutMs: this.idleTimeoutMs }, this.live);
  }

  /** A connection that cannot be relayed: one log line, then the caller's answer or a close. */
  refuse(down: Socket, conn: Accepted, reason: string, message: string, fields: Record<string, unknown> = {}, cb: TcpCallbacks = {}): void {
    this.sidecar.log({ time: new Date().toISOString(), protocol: 'tcp', direction: conn.listener === 'inbound' ? 'inbound' : 'outbound', listener: conn.listener, ...fields, reason, error: message, source: down.remoteAddress });
    if (cb.onFailed) cb.onFailed(reason, message);
    else down.destroy();
  }
}

/** `spiffe://td/ns/default/sa/catalog` → `catalog`. */
function workloadOf(principal: string): string {
  const m = /\/sa\/([^/]+)$/.exec(principal);
  return m?.[1] ?? '';
}
