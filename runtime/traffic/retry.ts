// Retry decisions: which outcomes are retriable under a policy's `retryOn`
// (Envoy's vocabulary), the backoff before the next try (exponential with
// full jitter), and the retry budget that keeps retries a bounded fraction
// of the load (Linkerd's: over a 10 s window, retries may not exceed
// percent × requests + minRetriesPerSecond × 10).
//
// In:  a try's outcome (status, or the MeshError reason), the policy.
// Out: yes/no and a delay. Pure apart from the budget's counters.
import { performance } from 'node:perf_hooks';
import type { RetryBudget, RetryPolicy } from '../../protocol/traffic.ts';

/** How one try ended, as far as retrying is concerned. */
export type TryOutcome =
  | { kind: 'response'; status: number }
  | { kind: 'connect-failure' }
  | { kind: 'reset' }
  | { kind: 'timeout' };

export function retriable(policy: RetryPolicy, outcome: TryOutcome): boolean {
  for (const cond of policy.retryOn) {
    switch (cond) {
      case '5xx':
        if (outcome.kind !== 'response' || outcome.status >= 500) return true;
        break;
      case 'gateway-error':
        if (outcome.kind !== 'response' || outcome.status === 502 || outcome.status === 503 || outcome.status === 504) return true;
        break;
      case 'reset':
        if (outcome.kind === 'reset' || outcome.kind === 'timeout') return true;
        break;
      case 'connect-failure':
        if (outcome.kind === 'connect-failure') return true;
        break;
      case 'retriable-status-codes':
        if (outcome.kind === 'response' && policy.retriableStatusCodes?.includes(outcome.status)) return true;
        break;
    }
  }
  return false;
}

/** Delay before retry number `retry` (1-based): uniform in [0, min(max, base × 2^(retry-1))]. */
export function backoffMs(policy: RetryPolicy, retry: number): number {
  const ceiling = Math.min(policy.backoffMaxMs, policy.backoffBaseMs * 2 ** (retry - 1));
  return Math.random() * ceiling;
}

const WINDOW_S = 10;

/** Requests and retries over the last 10 seconds, in one-second buckets. */
export class RetryBudgetMeter {
  private readonly budget: RetryBudget;
  private readonly requests = new Float64Array(WINDOW_S);
  private readonly retries = new Float64Array(WINDOW_S);
  private second = Math.floor(performance.now() / 1000);

  constructor(budget: RetryBudget) {
    this.budget = budget;
  }

  private roll(): number {
    const now = Math.floor(performance.now() / 1000);
    if (now !== this.second) {
      const gap = Math.min(WINDOW_S, now - this.second);
      for (let k = 1; k <= gap; k++) {
        const i = (this.second + k) % WINDOW_S;
        this.requests[i] = 0;
        this.retries[i] = 0;
      }
      this.second = now;
    }
    return now % WINDOW_S;
  }

  /** A first try started. */
  request(): void {
    this.requests[this.roll()]!++;
  }

  /** Takes a retry from the budget if there is room; false means the retry must not happen. */
  tryRetry(): boolean {
    const i = this.roll();
    let req = 0;
    let ret = 0;
    for (let k = 0; k < WINDOW_S; k++) {
      req += this.requests[k]!;
      ret += this.retries[k]!;
    }
    const allowed = (this.budget.percent / 100) * req + this.budget.minRetriesPerSecond * WINDOW_S;
    if (ret + 1 > allowed) return false;
    this.retries[i]!++;
    return true;
  }
}
