// The outbound router of one destination service: its endpoints with their
// load and health, the traffic policy from the bundle (protocol/traffic.ts),
// and the decisions made per request — which endpoint (load balancing over
// the endpoints not ejected), whether a request is admitted (circuit
// breaking), what a route's timeouts and retries are, whether a retry fits
// the budget, and which endpoints outlier detection ejects and readmits.
//
// In:  the service's endpoints (from the controller) and ServiceTraffic
//      (from the bundle manifest); per try, its outcome.
// Out: EndpointStates to send to, MeshErrors (no-healthy-endpoint,
//      circuit-open), log events endpoint-ejected / endpoint-readmitted.
import { performance } from 'node:perf_hooks';
import type { RouteTraffic, ServiceTraffic } from '../../protocol/traffic.ts';
import type { Endpoint } from '../../protocol/wire.ts';
import { MeshError } from '../errors.ts';
import type { ConnectionBudget } from '../http1/client.ts';
import { Balancer, EndpointState } from './balancer.ts';
import { RetryBudgetMeter, type TryOutcome } from './retry.ts';

/** Envoy's cap on one ejection. */
const MAX_EJECTION_MS = 300_000;

export class ServiceRouter {
  readonly service: string;
  private traffic: ServiceTraffic | undefined;
  private states: EndpointState[] = [];
  private balancer: Balancer;
  private budget: RetryBudgetMeter | undefined;
  private sweeper: NodeJS.Timeout | undefined;
  private readonly log: (entry: Record<string, unknown>) => void;
  /** Requests in flight to this service (for maxRequests). */
  active = 0;
  /** Shared by the connection pools of this service's endpoints (maxConnections, maxPendingRequests). */
  readonly connections: ConnectionBudget = { open: 0, maxConnections: Infinity, pending: 0, maxPending: Infinity, waiters: [] };

  constructor(service: string, log: (entry: Record<string, unknown>) => void) {
    this.service = service;
    this.log = log;
    this.balancer = new Balancer(undefined);
  }

  /** New endpoints and/or policy; endpoint state (load, ejections) is kept by instance. */
  update(endpoints: readonly Endpoint[], traffic: ServiceTraffic | undefined): void {
    const old = new Map(this.states.map((s) => [s.endpoint.instance, s]));
    this.states = endpoints.map((ep) => {
      const s = old.get(ep.instance);
      if (!s) return new EndpointState(ep);
      s.endpoint = ep;
      return s;
    });
    if (traffic !== this.traffic) {
      this.traffic = traffic;
      this.balancer = new Balancer(traffic?.loadBalancer);
      this.budget = traffic?.retryBudget ? new RetryBudgetMeter(traffic.retryBudget) : undefined;
      const limits = traffic?.connectionLimits;
      this.connections.maxConnections = limits?.maxConnections ?? Infinity;
      this.connections.maxPending = limits?.maxPendingRequests ?? Infinity;
      if (this.sweeper) clearInterval(this.sweeper);
      this.sweeper = undefined;
      const od = traffic?.outlierDetection;
      if (od) {
        this.sweeper = setInterval(() => this.readmit(), Math.max(10, od.intervalMs));
        this.sweeper.unref();
      }
    }
  }

  /** The route's policy merged over the service defaults. */
  policy(routeId: string | undefined): RouteTraffic {
    const t = this.traffic;
    if (!t) return {};
    const r = routeId !== undefined ? t.routes[routeId] : undefined;
    return r ? { ...t.defaults, ...r } : t.defaults;
  }

  get hashOn(): { header: string } | { cookie: string } | { source: true } | undefined {
    const lb = this.traffic?.loadBalancer;
    return lb?.kind === 'consistent-hash' ? lb.hashOn : undefined;
  }

  /** Circuit breaking on requests in flight; every admitted request must call leave(). */
  admit(): void {
    const max = this.traffic?.connectionLimits?.maxRequests;
    if (max !== undefined && this.active >= max) {
      throw new MeshError('circuit-open', `service ${this.service} has ${this.active} requests in flight (limit ${max})`);
    }
    this.active++;
    this.budget?.request();
  }

  leave(): void {
    this.active--;
  }

  /** Throws no-healthy-endpoint when the service has no endpoint of `version` (any version when undefined). */
  requireEndpoints(version: string | undefined): void {
    if (!this.states.some((s) => version === undefined || s.endpoint.version === version)) {
      throw new MeshError('no-healthy-endpoint', `service ${this.service} has no endpoint` + (version ? ` of version ${version}` : ''));
    }
  }

  /**
   * An endpoint of `version` (any when undefined) that is not ejected,
   * preferring ones not tried yet for this request. If every endpoint of the
   * version is ejected, all of them are used (Envoy's panic routing).
   */
  pick(version: string | undefined, hashKey: string | undefined, tried: ReadonlySet<EndpointState> | undefined): EndpointState {
    const all = this.states;
    let inVersion: EndpointState[] = [];
    let healthy: EndpointState[] = [];
    for (const s of all) {
      if (version !== undefined && s.endpoint.version !== version) continue;
      inVersion.push(s);
      if (!s.ejected) healthy.push(s);
    }
    if (inVersion.length === 0) {
      throw new MeshError('no-healthy-endpoint', `service ${this.service} has no endpoint` + (version ? ` of version ${version}` : ''));
    }
    if (healthy.length === 0) healthy = inVersion;
    if (tried && tried.size > 0) {
      const fresh = healthy.filter((s) => !tried.has(s));
      if (fresh.length > 0) healthy = fresh;
    }
    inVersion = version === undefined ? all : inVersion;
    return this.balancer.pick(inVersion, healthy, hashKey);
  }

  /** A try ended: latency for peak-EWMA, consecutive errors for outlier detection. */
  report(s: EndpointState, outcome: TryOutcome, latencyMs: number): void {
    if (outcome.kind === 'response') this.balancer.observe(s, latencyMs);
    const od = this.traffic?.outlierDetection;
    if (!od) return;
    const gateway = outcome.kind !== 'response' || outcome.status === 502 || outcome.status === 503 || outcome.status === 504;
    const err5xx = gateway || (outcome.kind === 'response' && outcome.status >= 500);
    s.consecutive5xx = err5xx ? s.consecutive5xx + 1 : 0;
    s.consecutiveGatewayErrors = gateway ? s.consecutiveGatewayErrors + 1 : 0;
    if (s.ejected) return;
    const by5xx = od.consecutive5xx !== undefined && s.consecutive5xx >= od.consecutive5xx;
    const byGateway = od.consecutiveGatewayErrors !== undefined && s.consecutiveGatewayErrors >= od.consecutiveGatewayErrors;
    if (by5xx || byGateway) this.eject(s, by5xx ? 'consecutive-5xx' : 'consecutive-gateway-errors', od.baseEjectionMs, od.maxEjectionPercent);
  }

  private eject(s: EndpointState, cause: string, baseMs: number, maxPercent: number): void {
    const ejected = this.states.filter((x) => x.ejected).length;
    if ((ejected + 1) * 100 > maxPercent * this.states.length) {
      this.log({ event: 'endpoint-ejection-skipped', service: this.service, endpoint: s.endpoint.instance, cause, ejected, maxEjectionPercent: maxPercent });
      return;
    }
    s.ejections++;
    const ms = Math.min(MAX_EJECTION_MS, baseMs * s.ejections);
    s.ejectedUntil = performance.now() + ms;
    s.consecutive5xx = 0;
    s.consecutiveGatewayErrors = 0;
    this.log({ event: 'endpoint-ejected', service: this.service, endpoint: s.endpoint.instance, cause, for_ms: ms, ejections: s.ejections });
  }

  /** Runs every outlier-detection interval: endpoints whose ejection ran out are admitted again. */
  private readmit(): void {
    const now = performance.now();
    for (const s of this.states) {
      if (s.ejected && now >= s.ejectedUntil) {
        s.ejectedUntil = 0;
        this.log({ event: 'endpoint-readmitted', service: this.service, endpoint: s.endpoint.instance });
      }
    }
  }

  /** Takes a retry from the budget (always allowed without a budget). */
  retryAllowed(): boolean {
    return this.budget ? this.budget.tryRetry() : true;
  }

  /** Endpoint states, for /config and tests. */
  snapshot(): Array<{ instance: string; active: number; ejected: boolean; ewmaMs: number }> {
    return this.states.map((s) => ({ instance: s.endpoint.instance, active: s.active, ejected: s.ejected, ewmaMs: Math.round(s.ewmaMs * 100) / 100 }));
  }

  close(): void {
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
  }
}
