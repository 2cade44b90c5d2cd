// Numeric constants of the proxy-wasm v0.2.1 ABI and the mesh property names
// (the AssemblyScript mirror of protocol/properties.ts). In: nothing. Out: constants.

// WasmResult
export const RESULT_OK: i32 = 0;

// LogLevel
export const LOG_DEBUG: i32 = 1;
export const LOG_INFO: i32 = 2;
export const LOG_WARN: i32 = 3;
export const LOG_ERROR: i32 = 4;

// MapType
export const MAP_HTTP_REQUEST_HEADERS: i32 = 0;
export const MAP_HTTP_RESPONSE_HEADERS: i32 = 2;

// MetricType
export const METRIC_COUNTER: i32 = 0;

// StreamType
export const STREAM_HTTP_REQUEST: i32 = 0;
export const STREAM_DOWNSTREAM: i32 = 2;

// FilterHeadersStatus / FilterDataStatus / FilterTrailersStatus
export const ACTION_CONTINUE: i32 = 0;
export const ACTION_PAUSE: i32 = 1;

// Envoy's listener_direction values (int64 little-endian property).
export const DIRECTION_UNSPECIFIED: i64 = 0;
export const DIRECTION_INBOUND: i64 = 1;
export const DIRECTION_OUTBOUND: i64 = 2;

// Property paths (see protocol/properties.ts).
export const PROPERTY_LISTENER_DIRECTION = "listener_direction";
export const PROPERTY_SOURCE_PRINCIPAL = "source.principal";
export const PROPERTY_SOURCE_ADDRESS = "source.address";
export const PROPERTY_DESTINATION_PORT = "destination.port";
export const PROPERTY_REQUEST_SCHEME = "request.scheme";
export const PROPERTY_JWT_CLAIMS_PREFIX = "mesh.jwt.claims.";
export const PROPERTY_ROUTE_VERSION = "mesh.route.version";
export const PROPERTY_ROUTE_ID = "mesh.route.id";
export const PROPERTY_RULES = "mesh.rules";
// Set by a filter before it closes an opaque TCP connection: the deciding rule id.
export const PROPERTY_CONNECTION_RULE = "mesh.connection.rule";
// Read once at proxy_on_configure: a host that consumes mesh.rules answers it (non-empty, not "0").
export const PROPERTY_TRACE = "mesh.trace";

// Header on every local response a filter sends: the deciding rule id.
export const RULE_HEADER = "x-mesh-rule";
