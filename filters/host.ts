// Raw host imports: the proxy-wasm v0.2.1 host functions (module "env") and the
// WASI calls (module "wasi_snapshot_preview1") that compiled policies use.
// In: nothing. Out: declarations only; filters/hostcalls.ts wraps them.
// Pointers and sizes are i32 on wasm32; every function returns a proxy-wasm
// WasmResult (0 = Ok) except the WASI one, which returns a WASI errno.

// @ts-ignore: decorator
@external("env", "proxy_log")
export declare function proxy_log(level: i32, messagePtr: usize, messageSize: usize): i32;

// @ts-ignore: decorator
@external("env", "proxy_get_property")
export declare function proxy_get_property(pathPtr: usize, pathSize: usize, returnValuePtr: usize, returnValueSize: usize): i32;

// @ts-ignore: decorator
@external("env", "proxy_set_property")
export declare function proxy_set_property(pathPtr: usize, pathSize: usize, valuePtr: usize, valueSize: usize): i32;

// @ts-ignore: decorator
@external("env", "proxy_get_header_map_value")
export declare function proxy_get_header_map_value(mapType: i32, keyPtr: usize, keySize: usize, returnValuePtr: usize, returnValueSize: usize): i32;

// @ts-ignore: decorator
@external("env", "proxy_send_local_response")
export declare function proxy_send_local_response(
  statusCode: i32,
  detailsPtr: usize,
  detailsSize: usize,
  bodyPtr: usize,
  bodySize: usize,
  headerPairsPtr: usize,
  headerPairsSize: usize,
  grpcStatus: i32,
): i32;

// @ts-ignore: decorator
@external("env", "proxy_set_tick_period_milliseconds")
export declare function proxy_set_tick_period_milliseconds(periodMs: i32): i32;

// @ts-ignore: decorator
@external("env", "proxy_set_effective_context")
export declare function proxy_set_effective_context(contextId: i32): i32;

// @ts-ignore: decorator
@external("env", "proxy_close_stream")
export declare function proxy_close_stream(streamType: i32): i32;

// @ts-ignore: decorator
@external("env", "proxy_continue_stream")
export declare function proxy_continue_stream(streamType: i32): i32;

// @ts-ignore: decorator
@external("env", "proxy_get_current_time_nanoseconds")
export declare function proxy_get_current_time_nanoseconds(returnTimePtr: usize): i32;

// @ts-ignore: decorator
@external("wasi_snapshot_preview1", "random_get")
export declare function random_get(bufferPtr: usize, bufferSize: usize): i32;

// @ts-ignore: decorator
@external("env", "proxy_add_header_map_value")
export declare function proxy_add_header_map_value(mapType: i32, keyPtr: usize, keySize: usize, valuePtr: usize, valueSize: usize): i32;

// @ts-ignore: decorator
@external("env", "proxy_replace_header_map_value")
export declare function proxy_replace_header_map_value(mapType: i32, keyPtr: usize, keySize: usize, valuePtr: usize, valueSize: usize): i32;

// @ts-ignore: decorator
@external("env", "proxy_remove_header_map_value")
export declare function proxy_remove_header_map_value(mapType: i32, keyPtr: usize, keySize: usize): i32;

// @ts-ignore: decorator
@external("env", "proxy_define_metric")
export declare function proxy_define_metric(metricType: i32, namePtr: usize, nameSize: usize, returnMetricIdPtr: usize): i32;

// @ts-ignore: decorator
@external("env", "proxy_increment_metric")
export declare function proxy_increment_metric(metricId: u32, offset: i64): i32;
