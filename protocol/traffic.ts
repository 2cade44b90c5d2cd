// Traffic policy: what the router does with a request after the filters have
// decided where it goes. The compiler writes it into the bundle manifest (per
// service, and per route by rule id); the sidecar's router honours it. Data,
// not code: nothing here runs per request.
//
// How a request meets it: on outbound, a compiled filter that matched a route
// sets `mesh.route.version` (the subset) and `mesh.route.id` (the route's rule
// id). The router merges `routes[id]` over `defaults` for that request.

export interface RetryPolicy {
  /** Attempts after the first one. */
  attempts: number;
  /** Envoy-style conditions: "5xx", "gateway-error", "reset", "connect-failure", "retriable-status-codes". */
  retryOn: string[];
  /** With "retriable-status-codes". */
  retriableStatusCodes?: number[];
  perTryTimeoutMs?: number;
  /** Exponential backoff with full jitter: base, doubled each attempt, capped. */
  backoffBaseMs: number;
  backoffMaxMs: number;
}

export interface RetryBudget {
  /** Retries may add at most this percentage of the active requests (Linkerd/Envoy budget). */
  percent: number;
  /** Retries always allowed per second regardless of the ratio. */
  minRetriesPerSecond: number;
}

export type LoadBalancer =
  | { kind: 'round-robin' }
  | { kind: 'least-request' }
  /** Peak-EWMA of latency, as Linkerd does. */
  | { kind: 'peak-ewma'; decayMs: number }
  | { kind: 'consistent-hash'; hashOn: { header: string } | { cookie: string } | { source: true } };

export interface ConnectionLimits {
  maxConnections?: number;
  maxPendingRequests?: number;
  maxRequests?: number;
}

export interface OutlierDetection {
  consecutive5xx?: number;
  consecutiveGatewayErrors?: number;
  intervalMs: number;
  baseEjectionMs: number;
  maxEjectionPercent: number;
}

export interface RouteTraffic {
  timeoutMs?: number;
  retries?: RetryPolicy;
  /** Copy this percentage of matching requests to the version named (responses ignored). */
  mirror?: { version: string; percent: number };
}

export interface ServiceTraffic {
  /** Applies to every request for the service unless a route overrides it. */
  defaults: RouteTraffic;
  /** By route rule id (e.g. "catalog/route/beta"). */
  routes: Record<string, RouteTraffic>;
  loadBalancer?: LoadBalancer;
  retryBudget?: RetryBudget;
  connectionLimits?: ConnectionLimits;
  outlierDetection?: OutlierDetection;
}
