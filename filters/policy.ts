// The contract between generated code and the library: a Policy subclass per
// compiled service, and the order in which its four rule families run for a
// request, by listener direction.
// In: a Request. Out: Continue, or Pause (answered locally, or delayed).
import { ACTION_CONTINUE, ACTION_PAUSE, DIRECTION_INBOUND, DIRECTION_OUTBOUND, DIRECTION_UNSPECIFIED, PROPERTY_LISTENER_DIRECTION } from "./constants";
import { getPropertyInt64, nowNanoseconds } from "./hostcalls";
import { schedule } from "./delays";
import { Request } from "./request";

export abstract class Policy {
  /** Returns the id of the rule that denies the request, or null when it is allowed. */
  abstract authorize(r: Request): string | null;
  /** Takes rate-limit tokens; returns false when a 429 was sent. */
  abstract limitRate(r: Request): bool;
  /** Applies matching faults (delays accumulate on r); returns false when an abort was sent. */
  abstract injectFaults(r: Request): bool;
  /** Sets mesh.route.version from the first matching route, if any. */
  abstract route(r: Request): void;
}

let installed: Policy | null = null;

/** Called once by the generated module's top-level code. */
export function installPolicy(policy: Policy): void {
  installed = policy;
}

/**
 * Runs the installed policy for one request. Inbound: authorization, rate limit.
 * Outbound: faults, routes. Unspecified: all four in that order.
 */
export function decide(contextId: u32): i32 {
  const policy = installed;
  if (policy === null) return ACTION_CONTINUE;
  const direction = getPropertyInt64(PROPERTY_LISTENER_DIRECTION, DIRECTION_UNSPECIFIED);
  const r = new Request(contextId);
  if (direction != DIRECTION_OUTBOUND) {
    const deniedBy = policy.authorize(r);
    if (deniedBy !== null) {
      r.deny(deniedBy);
      return ACTION_PAUSE;
    }
    if (!policy.limitRate(r)) return ACTION_PAUSE;
  }
  if (direction != DIRECTION_INBOUND) {
    if (!policy.injectFaults(r)) return ACTION_PAUSE;
    policy.route(r);
    if (r.delayMs > 0) {
      schedule(contextId, nowNanoseconds() + <i64>(r.delayMs * 1e6));
      return ACTION_PAUSE;
    }
  }
  return ACTION_CONTINUE;
}
