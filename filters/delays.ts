// Paused requests waiting out an injected delay. A request is paused from
// proxy_on_request_headers and resumed from the root context's proxy_on_tick
// (proxy_set_effective_context + proxy_continue_stream). The tick runs only
// while something is pending.
// In: context ids and due times. Out: resumed streams.
import { proxy_continue_stream, proxy_set_effective_context, proxy_set_tick_period_milliseconds } from "./host";
import { STREAM_HTTP_REQUEST } from "./constants";

export const TICK_PERIOD_MS: i32 = 5;

const dueByContext = new Map<u32, i64>();

export function schedule(contextId: u32, dueNs: i64): void {
  if (dueByContext.size == 0) proxy_set_tick_period_milliseconds(TICK_PERIOD_MS);
  dueByContext.set(contextId, dueNs);
}

/** Forgets a context (it ended while paused). */
export function cancel(contextId: u32): void {
  if (!dueByContext.has(contextId)) return;
  dueByContext.delete(contextId);
  if (dueByContext.size == 0) proxy_set_tick_period_milliseconds(0);
}

/** Resumes every request whose delay is over. */
export function resumeDue(nowNs: i64): void {
  const contexts = dueByContext.keys();
  for (let i = 0; i < contexts.length; i++) {
    const id = contexts[i];
    if (dueByContext.get(id) <= nowNs) {
      dueByContext.delete(id);
      proxy_set_effective_context(<i32>id);
      proxy_continue_stream(STREAM_HTTP_REQUEST);
    }
  }
  if (dueByContext.size == 0) proxy_set_tick_period_milliseconds(0);
}
