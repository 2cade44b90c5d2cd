// The proxy-wasm v0.2.1 exports every compiled policy module re-exports.
// In: host callbacks. Out: filter actions; request and response headers and
// new TCP connections go to the installed Policy (filters/policy.ts), ticks
// resume delayed requests.
// Compiles the abort handler into the module (asc --use abort=filters/abort/meshAbort).
import "./abort";
import { cancel, resumeDue } from "./delays";
import { allocateForHost, nowNanoseconds } from "./hostcalls";
import { decide, decideConnection, forgetContext, onResponseHeaders } from "./policy";
import { configureTrace } from "./request";

export function proxy_abi_version_0_2_1(): void {}

/** Host-owned buffers handed to the filter; released by filters/hostcalls.ts after copying. */
export function proxy_on_memory_allocate(size: usize): usize {
  return allocateForHost(size);
}

export function proxy_on_vm_start(rootContextId: u32, vmConfigurationSize: u32): u32 {
  return 1;
}

export function proxy_on_configure(rootContextId: u32, pluginConfigurationSize: u32): u32 {
  configureTrace();
  return 1;
}

export function proxy_on_tick(rootContextId: u32): void {
  resumeDue(nowNanoseconds());
}

export function proxy_on_request_headers(contextId: u32, numHeaders: u32, endOfStream: u32): i32 {
  return decide(contextId);
}

/**
 * Exported only by modules of services with authorization rules
 * (compiler/codegen/emit.ts): an inbound opaque TCP connection. Pause after
 * proxy_close_stream(downstream) when denied, as a network filter that stops.
 */
export function proxy_on_new_connection(contextId: u32): i32 {
  return decideConnection(contextId);
}

/** Exported only by modules whose routes change response headers (see compiler/codegen/emit.ts). */
export function proxy_on_response_headers(contextId: u32, numHeaders: u32, endOfStream: u32): i32 {
  return onResponseHeaders(contextId);
}

/** proxy_on_done and proxy_on_delete are exported only by modules that keep per-request state (compiler/codegen/emit.ts). */
export function proxy_on_done(contextId: u32): u32 {
  cancel(contextId);
  forgetContext(contextId);
  return 1;
}

export function proxy_on_delete(contextId: u32): void {
  cancel(contextId);
  forgetContext(contextId);
}
