// proxy-wasm v0.2.1 ABI constants: status codes, map/buffer/stream types,
// filter actions and log levels, as numbered by the spec
// (proxy-wasm/spec abi-versions/v0.2.1). Pure data, no behaviour.

export const ABI_MARKER = 'proxy_abi_version_0_2_1';
/**
 * v0.2.0 uses the same host function signatures and callbacks for HTTP
 * filters (v0.2.1 only added calls); SDKs still in use (e.g.
 * @solo-io/proxy-runtime 0.1.x) export this marker, so it is accepted too.
 */
export const ABI_MARKER_COMPATIBLE = 'proxy_abi_version_0_2_0';

export const WasmResult = {
  Ok: 0,
  NotFound: 1,
  BadArgument: 2,
  SerializationFailure: 3,
  ParseFailure: 4,
  InvalidMemoryAccess: 6,
  Empty: 7,
  CasMismatch: 8,
  InternalFailure: 10,
  Unimplemented: 12,
} as const;

export const MapType = {
  RequestHeaders: 0,
  RequestTrailers: 1,
  ResponseHeaders: 2,
  ResponseTrailers: 3,
  GrpcInitialMetadata: 4,
  GrpcTrailingMetadata: 5,
  HttpCallResponseHeaders: 6,
  HttpCallResponseTrailers: 7,
} as const;

export const BufferType = {
  RequestBody: 0,
  ResponseBody: 1,
  DownstreamData: 2,
  UpstreamData: 3,
  HttpCallResponseBody: 4,
  GrpcReceiveBuffer: 5,
  VmConfiguration: 6,
  PluginConfiguration: 7,
  CallData: 8,
} as const;

export const StreamType = { Request: 0, Response: 1, Downstream: 2, Upstream: 3 } as const;

export const Action = { Continue: 0, Pause: 1 } as const;

export const LogLevel = { Trace: 0, Debug: 1, Info: 2, Warn: 3, Error: 4, Critical: 5 } as const;
export const LOG_LEVEL_NAMES = ['trace', 'debug', 'info', 'warn', 'error', 'critical'] as const;

export const MetricType = { Counter: 0, Gauge: 1, Histogram: 2 } as const;

/** WASI errno values the host returns. */
export const Errno = { Success: 0, Badf: 8, Fault: 21, Inval: 28, Nosys: 52, Notsup: 58, Spipe: 70 } as const;

/** WASI clock ids the host answers (others: NOTSUP). */
export const ClockId = { Realtime: 0, Monotonic: 1 } as const;
