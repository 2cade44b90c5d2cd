// One outbound request's route through a ServiceRouter: picks an endpoint per
// try (avoiding endpoints already tried), reports each try's outcome for
// outlier detection and balancing, counts the endpoint's load from next() to
// release(), decides mirroring once, and leaves the circuit breaker at done().
//
// In:  the service's router (the request already admitted), the route's
//      traffic policy, the version and hash key the request filters chose,
//      and a TargetMaker that turns an endpoint into an UpstreamTarget.
// Out: a Route for runtime/http-proxy.ts.
//
// One object per request with its methods on the prototype: the first try's
// endpoint is kept in fields, and the Set and Map of tried endpoints exist only
// once a request retries (most requests make one try).
import type { RetryPolicy, RouteTraffic } from '../../protocol/traffic.ts';
import type { Route, UpstreamTarget } from '../http-proxy.ts';
import type { EndpointState } from './balancer.ts';
import type { TryOutcome } from './retry.ts';
import type { ServiceRouter } from './router.ts';

/** Turns an endpoint of `router` into where a try goes (`port` overrides the endpoint's port). */
export interface TargetMaker {
  targetOf(state: EndpointState, port: number | undefined, router: ServiceRouter): UpstreamTarget;
}

export class OutboundRoute implements Route {
  readonly timeoutMs: number;
  readonly perTryTimeoutMs: number | undefined;
  readonly retry: RetryPolicy | undefined;
  private readonly router: ServiceRouter;
  private readonly policy: RouteTraffic;
  private readonly version: string | undefined;
  private readonly hashKey: string | undefined;
  private readonly port: number | undefined;
  private readonly targets: TargetMaker;
  private firstTarget: UpstreamTarget | undefined;
  private firstState: EndpointState | undefined;
  /** Tries after the first: their endpoints, and every endpoint tried so far. */
  private later: Map<UpstreamTarget, EndpointState> | undefined;
  private tried: Set<EndpointState> | undefined;

  constructor(
    router: ServiceRouter,
    policy: RouteTraffic,
    defaultTimeoutMs: number,
    version: string | undefined,
    hashKey: string | undefined,
    port: number | undefined,
    targets: TargetMaker,
  ) {
    this.router = router;
    this.policy = policy;
    this.timeoutMs = policy.timeoutMs ?? defaultTimeoutMs;
    this.perTryTimeoutMs = policy.retries?.perTryTimeoutMs;
    this.retry = policy.retries;
    this.version = version;
    this.hashKey = hashKey;
    this.port = port;
    this.targets = targets;
  }

  next(): UpstreamTarget {
    const first = this.firstState;
    if (first !== undefined && this.tried === undefined) this.tried = new Set([first]);
    const s = this.router.pick(this.version, this.hashKey, this.tried);
    s.active++;
    const t = this.targets.targetOf(s, this.port, this.router);
    if (first === undefined) {
      this.firstState = s;
      this.firstTarget = t;
    } else {
      this.tried!.add(s);
      (this.later ??= new Map()).set(t, s);
    }
    return t;
  }

  report(t: UpstreamTarget, outcome: TryOutcome, latencyMs: number): void {
    const s = this.stateOf(t);
    if (s) this.router.report(s, outcome, latencyMs);
  }

  release(t: UpstreamTarget): void {
    const s = this.stateOf(t);
    if (s) s.active--;
  }

  retryAllowed(): boolean {
    return this.router.retryAllowed();
  }

  mirror(): UpstreamTarget | undefined {
    const m = this.policy.mirror;
    if (!m || Math.random() * 100 >= m.percent) return undefined;
    try {
      return this.targets.targetOf(this.router.pick(m.version, undefined, undefined), this.port, this.router);
    } catch {
      return undefined;
    }
  }

  done(): void {
    this.router.leave();
  }

  private stateOf(t: UpstreamTarget): EndpointState | undefined {
    return t === this.firstTarget ? this.firstState : this.later?.get(t);
  }
}
