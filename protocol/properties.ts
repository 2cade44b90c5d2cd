// The mesh's extension points on the proxy-wasm ABI: property paths the host
// answers and the filter may set, and the headers on local responses.
// Names follow Envoy's attribute vocabulary where Envoy has one.

/** Envoy's `listener_direction`: int64 little-endian. */
export const LISTENER_DIRECTION = 'listener_direction';
export const Direction = { Unspecified: 0, Inbound: 1, Outbound: 2 } as const;

/** Peer SPIFFE ID on inbound (from the mTLS peer certificate); the sidecar's own ID on outbound. */
export const SOURCE_PRINCIPAL = 'source.principal';
export const SOURCE_ADDRESS = 'source.address';
export const DESTINATION_ADDRESS = 'destination.address';
/** The mesh service the request is for. */
export const DESTINATION_SERVICE = 'destination.service';
/** Envoy's peer-certificate URI SAN attribute (same value as source.principal on inbound). */
export const PEER_URI_SAN = 'connection.uri_san_peer_certificate';

/** Set by a filter on outbound: the version (subset) of the destination to route this request to. */
export const ROUTE_VERSION = 'mesh.route.version';
/** Set by a filter on outbound beside the version: the rule id of the matched route (selects its traffic policy). */
export const ROUTE_ID = 'mesh.route.id';
/**
 * Set by a compiled filter at the end of request headers when any rule applied:
 * the ids of the rules that applied (the allowing rule, audits, rate limits that
 * took a token, faults, the route), comma-separated, in order. Only when the host
 * opts in through TRACE: building the list costs about a third of a decision.
 */
export const RULES = 'mesh.rules';
/**
 * Set by a compiled filter before it closes an opaque TCP connection
 * (proxy_close_stream, downstream): the id of the rule that denied it. The
 * host logs it and counts the denial (runtime/wasm/network.ts).
 */
export const CONNECTION_RULE = 'mesh.connection.rule';
/** Answered by the host, read by compiled filters at configure time: non-empty and not "0" asks them to publish RULES. */
export const TRACE = 'mesh.trace';
/** Read by filters: `mesh.jwt.claims.<claim>` is a verified JWT claim of the request (string), supplied by the host. */
export const JWT_CLAIMS_PREFIX = 'mesh.jwt.claims.';

/** On a filter's local response: the id of the rule that decided. */
export const RULE_HEADER = 'x-mesh-rule';
/** On a response the sidecar itself generated: a stable reason code. */
export const REASON_HEADER = 'x-mesh-reason';
/**
 * Hop header between sidecars (never seen by apps): the request reached the
 * client sidecar as HTTP/2 (value `h2`) and travels sidecar to sidecar as
 * HTTP/1.1; the server sidecar speaks HTTP/2 to its app for it.
 */
export const ORIG_PROTO_HEADER = 'x-mesh-orig-proto';
