// The proxy-wasm v0.2.1 exports every compiled policy module re-exports.
// In: host callbacks. Out: filter actions; request and response headers and
// new TCP connections go to the installed Policy (filters/policy.ts), ticks
// resume delayed requests.
//
// Memory: modules are built with AssemblyScript's `minimal` runtime, whose
// collector runs only when called and scans globals, not the stack. So it is
// called here, at the end of an outermost callback, when nothing managed is
// live on the stack: every COLLECT_EVERY outermost callbacks. Not in
// proxy_on_memory_allocate, which the host calls while a callback runs (depth
// counts such nesting). The incremental runtime, which collects on its own
// from inside any allocation, cost the hop policy's request callback ~18%
// (docs/runtime.md, eighth round).
// Compiles the abort handler into the module (asc --use abort=filters/abort/meshAbort).
import "./abort";
import { cancel, resumeDue } from "./delays";
import { allocateForHost, nowNanoseconds } from "./hostcalls";
import { decide, decideConnection, forgetContext, onResponseHeaders } from "./policy";
import { configureTrace } from "./request";

export function proxy_abi_version_0_2_1(): void {}

/** Callbacks in progress: more than one only if the host starts a callback while another runs; only the outermost may collect. */
let depth = 0;
let sinceCollect = 0;
/** Outermost callbacks between collections: each request's garbage is a few hundred bytes. */
const COLLECT_EVERY = 64;

function enter(): void {
  depth++;
}

/** Collects when the outermost callback ends, every COLLECT_EVERY of them. (A trap skips this; the host never calls a trapped instance again.) */
function leave(): void {
  if (--depth == 0 && ++sinceCollect >= COLLECT_EVERY) {
    sinceCollect = 0;
    __collect();
  }
}

/** Host-owned buffers handed to the filter; released by filters/hostcalls.ts after copying. */
export function proxy_on_memory_allocate(size: usize): usize {
  return allocateForHost(size);
}

export function proxy_on_vm_start(rootContextId: u32, vmConfigurationSize: u32): u32 {
  return 1;
}

export function proxy_on_configure(rootContextId: u32, pluginConfigurationSize: u32): u32 {
  enter();
  configureTrace();
  leave();
  return 1;
}

export function proxy_on_tick(rootContextId: u32): void {
  enter();
  resumeDue(nowNanoseconds());
  leave();
}

export function proxy_on_request_headers(contextId: u32, numHeaders: u32, endOfStream: u32): i32 {
  enter();
  const action = decide(contextId);
  leave();
  return action;
}

/**
 * Exported only by modules of services with authorization rules
 * (compiler/codegen/emit.ts): an inbound opaque TCP connection. Pause after
 * proxy_close_stream(downstream) when denied, as a network filter that stops.
 */
export function proxy_on_new_connection(contextId: u32): i32 {
  enter();
  const action = decideConnection(contextId);
  leave();
  return action;
}

/** Exported only by modules whose routes change response headers (see compiler/codegen/emit.ts). */
export function proxy_on_response_headers(contextId: u32, numHeaders: u32, endOfStream: u32): i32 {
  enter();
  const action = onResponseHeaders(contextId);
  leave();
  return action;
}

/** proxy_on_done and proxy_on_delete are exported only by modules that keep per-request state (compiler/codegen/emit.ts). */
export function proxy_on_done(contextId: u32): u32 {
  enter();
  cancel(contextId);
  forgetContext(contextId);
  leave();
  return 1;
}

export function proxy_on_delete(contextId: u32): void {
  enter();
  cancel(contextId);
  forgetContext(contextId);
  leave();
}
