// The contract between generated code and the library: a Policy subclass per
// compiled service, and the order in which its rule families run for a
// request, by listener direction.
// In: a Request. Out: Continue, or Pause (answered locally, or delayed).
import { ACTION_CONTINUE, ACTION_PAUSE, DIRECTION_INBOUND, DIRECTION_OUTBOUND, DIRECTION_UNSPECIFIED, PROPERTY_LISTENER_DIRECTION } from "./constants";
import { getPropertyInt64, nowNanoseconds, utf8 } from "./hostcalls";
import { schedule } from "./delays";
import { Request } from "./request";

export abstract class Policy {
  /**
   * Enforced authorization: the id of the rule that denies the request, or
   * null when it is allowed (the allowing rule, if any, is noted on r).
   * Also evaluates dry-run rules and audits, which only log and count.
   */
  abstract authorize(r: Request): string | null;
  /**
   * The same rules at connection time (opaque TCP): the id of the rule that
   * denies the connection, or null. Generated only for services with
   * authorization rules; the host calls it only where it is exported.
   */
  authorizeConnection(r: Request): string | null {
    return null;
  }
  /** Takes rate-limit tokens; returns false when a 429 was sent. */
  abstract limitRate(r: Request): bool;
  /** Applies matching faults (delays accumulate on r); returns false when an abort was sent. */
  abstract injectFaults(r: Request): bool;
  /**
   * The first matching route in precedence order: sets mesh.route.version and
   * mesh.route.id and changes request headers, or answers locally (redirect,
   * direct response; returns false). Response header changes are kept for
   * responseHeaders by route index.
   */
  abstract route(r: Request): bool;
  /** Applies route `routeIndex`'s response header changes. */
  abstract responseHeaders(routeIndex: i32): void;
}

let installed: Policy | null = null;
/** The request view, reused by every decision (callbacks never nest, and nothing keeps it past one). */
let reusable: Request | null = null;

const KEY_DIRECTION = utf8(PROPERTY_LISTENER_DIRECTION);

/** Routes whose response headers must change, by context id (set in route, used once). */
const responseRoutes = new Map<u32, i32>();

/** Called once by the generated module's top-level code. */
export function installPolicy(policy: Policy): void {
  installed = policy;
}

export function keepResponseRoute(contextId: u32, routeIndex: i32): void {
  responseRoutes.set(contextId, routeIndex);
}

export function forgetContext(contextId: u32): void {
  if (responseRoutes.has(contextId)) responseRoutes.delete(contextId);
}

/**
 * Runs the installed policy for one request. Inbound: authorization, rate
 * limits. Outbound: faults, routes. Unspecified: all four in that order.
 */
export function decide(contextId: u32): i32 {
  const policy = installed;
  if (policy === null) return ACTION_CONTINUE;
  const direction = getPropertyInt64(KEY_DIRECTION, DIRECTION_UNSPECIFIED);
  const r = requestFor(contextId);
  const action = run(policy, r, direction);
  r.publishTrace();
  return action;
}

/** The one request view, reset for this context (a decision allocates nothing). */
function requestFor(contextId: u32): Request {
  let r = reusable;
  if (r === null) {
    r = new Request(contextId);
    reusable = r;
  } else {
    r.reset(contextId);
  }
  return r;
}

function run(policy: Policy, r: Request, direction: i64): i32 {
  if (direction != DIRECTION_OUTBOUND) {
    const deniedBy = policy.authorize(r);
    if (changetype<usize>(deniedBy) != 0) {
      r.deny(deniedBy);
      return ACTION_PAUSE;
    }
    if (!policy.limitRate(r)) return ACTION_PAUSE;
  }
  if (direction != DIRECTION_INBOUND) {
    if (!policy.injectFaults(r)) return ACTION_PAUSE;
    if (!policy.route(r)) return ACTION_PAUSE;
    if (r.delayMs > 0) {
      schedule(r.contextId, nowNanoseconds() + <i64>(r.delayMs * 1e6));
      return ACTION_PAUSE;
    }
  }
  return ACTION_CONTINUE;
}

/**
 * Runs the installed policy's connection authorization (opaque TCP; inbound
 * and standalone only: authorization is server side). A denied connection
 * is closed with the deciding rule in property mesh.connection.rule.
 */
export function decideConnection(contextId: u32): i32 {
  const policy = installed;
  if (policy === null) return ACTION_CONTINUE;
  if (getPropertyInt64(KEY_DIRECTION, DIRECTION_UNSPECIFIED) == DIRECTION_OUTBOUND) return ACTION_CONTINUE;
  const r = requestFor(contextId);
  const deniedBy = policy.authorizeConnection(r);
  r.publishTrace();
  if (changetype<usize>(deniedBy) != 0) {
    r.closeConnection(changetype<string>(deniedBy));
    return ACTION_PAUSE;
  }
  return ACTION_CONTINUE;
}

export function onResponseHeaders(contextId: u32): i32 {
  const policy = installed;
  if (policy === null || !responseRoutes.has(contextId)) return ACTION_CONTINUE;
  const routeIndex = responseRoutes.get(contextId);
  responseRoutes.delete(contextId);
  policy.responseHeaders(routeIndex);
  return ACTION_CONTINUE;
}
