// Endpoint choice for one request: round robin, least request (power of two
// choices on requests in flight), peak-EWMA (Linkerd's: power of two choices
// on latency × load, where latency jumps to any slower sample and decays
// back), and consistent hashing on a ring of virtual nodes.
//
// In:  the endpoints eligible for this request (healthy ones of the version
//      a filter chose), per-endpoint load and latency, a hash key.
// Out: one EndpointState. Nothing here does I/O.
import { performance } from 'node:perf_hooks';
import type { LoadBalancer } from '../../protocol/traffic.ts';
import type { Endpoint } from '../../protocol/wire.ts';

/** Load and health of one endpoint, kept across endpoint-set updates (by instance). */
export class EndpointState {
  endpoint: Endpoint;
  /** Requests in flight to this endpoint. */
  active = 0;
  /** Peak-EWMA latency estimate, ms (starts at Linkerd's default RTT). */
  ewmaMs = 30;
  private ewmaAt = performance.now();
  consecutive5xx = 0;
  consecutiveGatewayErrors = 0;
  /** performance.now() until which the endpoint is ejected; 0 = admitted. */
  ejectedUntil = 0;
  /** How many times it was ejected (the next ejection lasts that many base periods). */
  ejections = 0;

  constructor(endpoint: Endpoint) {
    this.endpoint = endpoint;
  }

  get ejected(): boolean {
    return this.ejectedUntil !== 0;
  }

  /** Peak-EWMA update: a slower sample is taken at once, a faster one decays in over `decayMs`. */
  observeLatency(ms: number, decayMs: number): void {
    const now = performance.now();
    if (ms > this.ewmaMs) this.ewmaMs = ms;
    else {
      const w = Math.exp(-(now - this.ewmaAt) / decayMs);
      this.ewmaMs = this.ewmaMs * w + ms * (1 - w);
    }
    this.ewmaAt = now;
  }

  /** Linkerd's cost: latency estimate scaled by the requests already waiting on it. */
  cost(): number {
    return this.ewmaMs * (this.active + 1);
  }
}

/** FNV-1a, 32 bits: a fast, well-spread hash for ring positions and keys. */
export function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  // Final avalanche (murmur3 fmix32) so near-identical keys land far apart.
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

const VNODES = 160;

/** A ring of virtual nodes; a key maps to the first node clockwise whose endpoint is eligible. */
export class HashRing {
  private readonly points: Uint32Array;
  private readonly owners: EndpointState[];

  constructor(endpoints: readonly EndpointState[]) {
    const entries: Array<[number, EndpointState]> = [];
    for (const e of endpoints) for (let i = 0; i < VNODES; i++) entries.push([hash32(`${e.endpoint.instance}#${i}`), e]);
    entries.sort((a, b) => a[0] - b[0]);
    this.points = Uint32Array.from(entries.map((x) => x[0]));
    this.owners = entries.map((x) => x[1]);
  }

  pick(key: string, eligible: (e: EndpointState) => boolean): EndpointState | undefined {
    const n = this.points.length;
    if (n === 0) return undefined;
    const h = hash32(key);
    let lo = 0;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.points[mid]! < h) lo = mid + 1;
      else hi = mid;
    }
    for (let k = 0; k < n; k++) {
      const owner = this.owners[(lo + k) % n]!;
      if (eligible(owner)) return owner;
    }
    return undefined;
  }
}

/** Picks among `candidates` (non-empty) by the service's algorithm. */
export class Balancer {
  private readonly lb: LoadBalancer;
  private rr = 0;
  private ring: HashRing | undefined;
  private ringOf: readonly EndpointState[] | undefined;

  constructor(lb: LoadBalancer | undefined) {
    this.lb = lb ?? { kind: 'round-robin' };
  }

  get kind(): LoadBalancer['kind'] {
    return this.lb.kind;
  }

  /** `all` is the whole endpoint set (the ring is built over it once); `candidates` those eligible now. */
  pick(all: readonly EndpointState[], candidates: readonly EndpointState[], hashKey: string | undefined): EndpointState {
    const lb = this.lb;
    if (candidates.length === 1) return candidates[0]!;
    switch (lb.kind) {
      case 'least-request':
        return p2c(candidates, (e) => e.active);
      case 'peak-ewma':
        return p2c(candidates, (e) => e.cost());
      case 'consistent-hash': {
        if (hashKey === undefined) return candidates[Math.floor(Math.random() * candidates.length)]!;
        if (this.ringOf !== all) {
          this.ring = new HashRing(all);
          this.ringOf = all;
        }
        const set = new Set(candidates);
        return this.ring!.pick(hashKey, (e) => set.has(e)) ?? candidates[0]!;
      }
      default:
        return candidates[this.rr++ % candidates.length]!;
    }
  }

  /** Only peak-EWMA needs latency samples. */
  observe(e: EndpointState, latencyMs: number): void {
    if (this.lb.kind === 'peak-ewma') e.observeLatency(latencyMs, this.lb.decayMs);
  }
}

/** Power of two choices: two distinct random candidates, the cheaper one wins. */
function p2c(candidates: readonly EndpointState[], cost: (e: EndpointState) => number): EndpointState {
  const n = candidates.length;
  const i = Math.floor(Math.random() * n);
  let j = Math.floor(Math.random() * (n - 1));
  if (j >= i) j++;
  const a = candidates[i]!;
  const b = candidates[j]!;
  return cost(b) < cost(a) ? b : a;
}
