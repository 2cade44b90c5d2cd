// Answers proxy_get_property: values set by filters first, then the facts of
// the stream, the plugin and the node, under Envoy's attribute names
// (request.*, response.*, source.*, destination.*, connection.*, upstream.*,
// plugin_*, node.*) plus the mesh's own (protocol/properties.ts). Encodings
// follow Envoy: strings UTF-8; integers, timestamps (ns since epoch) and
// durations (ns) int64 little-endian; booleans one byte; header maps in the
// proxy-wasm pair serialisation.
//
// In:  a dotted property path (the host joins NUL-separated segments with '.'),
//      the current stream (undefined in the root context), plugin and node facts.
// Out: the encoded value, or undefined (the host answers NotFound).
import {
  DESTINATION_ADDRESS,
  DESTINATION_SERVICE,
  LISTENER_DIRECTION,
  PEER_URI_SAN,
  SOURCE_ADDRESS,
  SOURCE_PRINCIPAL,
} from '../../protocol/properties.ts';
import type { NodeFacts } from './environment.ts';
import type { HeaderList, HttpStream } from './stream.ts';
import { getHeader } from './stream.ts';
import { serializePairs } from './pairs.ts';
import { encodeUtf8 } from './text.ts';


/** Small values (directions, ports, counts) repeat on every request: encode each once. Callers never mutate the bytes. */
const int64Cache = new Map<number, Uint8Array>();

function int64(value: number | bigint): Uint8Array {
  const small = typeof value === 'number' && value >= 0 && value < 65536;
  const cached = small ? int64Cache.get(value) : undefined;
  if (cached) return cached;
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigInt64(0, BigInt(value), true);
  if (small) int64Cache.set(value, out);
  return out;
}

function text(value: string | undefined): Uint8Array | undefined {
  return value === undefined || value === '' ? undefined : encodeUtf8(value);
}

function bool(value: boolean | undefined): Uint8Array | undefined {
  return value === undefined ? undefined : new Uint8Array([value ? 1 : 0]);
}

function splitHostPort(addr: string | undefined): { host: string; port: number } | undefined {
  if (!addr) return undefined;
  const i = addr.lastIndexOf(':');
  if (i < 0) return undefined;
  return { host: addr.slice(0, i), port: Number(addr.slice(i + 1)) };
}

function headerSize(list: HeaderList): number {
  let n = 0;
  for (const [k, v] of list) if (!k.startsWith(':')) n += k.length + v.length + 4;
  return n;
}

/** `request.headers` (whole map) or `request.headers.<name>` (one value). */
function mapProperty(path: string, prefix: string, list: HeaderList): Uint8Array | undefined {
  if (path === prefix) return serializePairs(list);
  return text(getHeader(list, path.slice(prefix.length + 1).toLowerCase()));
}

export interface PluginFacts {
  name: string;
  rootId: string;
}

type Resolver = (s: HttpStream) => Uint8Array | undefined;

/**
 * A text attribute whose encoding is remembered for the last value seen:
 * consecutive requests mostly carry the same principal, service, scheme.
 */
function memoText(get: (s: HttpStream) => string | undefined): Resolver {
  let last: string | undefined;
  let bytes: Uint8Array | undefined;
  return (s) => {
    const value = get(s);
    if (value === undefined || value === '') return undefined;
    if (value !== last) {
      last = value;
      bytes = encodeUtf8(value);
    }
    return bytes;
  };
}

/** Per-stream attributes with a fixed name. */
const STREAM: Record<string, Resolver> = {
  [LISTENER_DIRECTION]: (s) => int64(s.facts.direction),
  [SOURCE_PRINCIPAL]: memoText((s) => s.facts.sourcePrincipal),
  [SOURCE_ADDRESS]: memoText((s) => `${s.facts.sourceAddress}:${s.facts.sourcePort}`),
  'source.port': (s) => int64(s.facts.sourcePort),
  [DESTINATION_ADDRESS]: memoText((s) => `${s.facts.destinationAddress}:${s.facts.destinationPort}`),
  'destination.port': (s) => int64(s.facts.destinationPort),
  [DESTINATION_SERVICE]: memoText((s) => s.facts.destinationService),
  cluster_name: memoText((s) => s.facts.destinationService),
  [PEER_URI_SAN]: memoText((s) => s.facts.peerUriSan),
  'connection.uri_san_local_certificate': memoText((s) => s.facts.localUriSan),
  'connection.mtls': (s) => bool(s.facts.mtls ?? (s.facts.peerUriSan !== '' ? true : undefined)),
  'connection.id': (s) => (s.facts.connectionId === undefined ? undefined : int64(s.facts.connectionId)),
  'connection.tls_version': memoText((s) => s.facts.tlsVersion),
  'connection.requested_server_name': memoText((s) => s.facts.requestedServerName),
  'request.path': memoText((s) => getHeader(s.requestHeaders, ':path')),
  'request.url_path': memoText((s) => getHeader(s.requestHeaders, ':path')?.split('?')[0]),
  'request.query': (s) => {
    const p = getHeader(s.requestHeaders, ':path') ?? '';
    const q = p.indexOf('?');
    return q < 0 ? undefined : encodeUtf8(p.slice(q + 1));
  },
  'request.method': memoText((s) => getHeader(s.requestHeaders, ':method')),
  'request.host': memoText((s) => getHeader(s.requestHeaders, ':authority')),
  'request.scheme': memoText((s) => s.facts.scheme),
  'request.protocol': memoText((s) => s.facts.protocol),
  'request.id': memoText((s) => getHeader(s.requestHeaders, 'x-request-id') ?? s.facts.requestId),
  'request.referer': memoText((s) => getHeader(s.requestHeaders, 'referer')),
  'request.useragent': memoText((s) => getHeader(s.requestHeaders, 'user-agent')),
  'request.time': (s) => int64(BigInt(s.startedAt) * 1_000_000n),
  'request.duration': (s) => int64(BigInt(Date.now() - s.startedAt) * 1_000_000n),
  'request.size': (s) => int64(s.requestBodySize),
  'request.total_size': (s) => int64(s.requestBodySize + headerSize(s.requestHeaders)),
  'response.code': (s) => {
    const code = getHeader(s.responseHeaders, ':status');
    return code === undefined ? undefined : int64(Number(code));
  },
  'response.code_details': (s) => text(s.localResponse?.details),
  'response.grpc_status': (s) => {
    const g = getHeader(s.responseTrailers, 'grpc-status') ?? getHeader(s.responseHeaders, 'grpc-status');
    return g === undefined ? undefined : int64(Number(g));
  },
  'response.size': (s) => int64(s.responseBodySize),
  'response.total_size': (s) => int64(s.responseBodySize + headerSize(s.responseHeaders)),
  'upstream.address': (s) => text(s.upstreamAddress),
  'upstream.port': (s) => {
    const hp = splitHostPort(s.upstreamAddress);
    return hp ? int64(hp.port) : undefined;
  },
};

const MAPS: Array<[string, (s: HttpStream) => HeaderList]> = [
  ['request.headers', (s) => s.requestHeaders],
  ['request.trailers', (s) => s.requestTrailers],
  ['response.headers', (s) => s.responseHeaders],
  ['response.trailers', (s) => s.responseTrailers],
];

/** The fixed names answered, for the docs test. */
export const PROPERTY_NAMES = [...Object.keys(STREAM), ...MAPS.map(([p]) => p), 'plugin_name', 'plugin_root_id', 'plugin_vm_id', 'node.id', 'node.cluster', 'node.metadata.NAMESPACE'];

/** How to answer one property path, worked out once per path (the host caches it per filter name buffer). */
export type PropertyResolver = (stream: HttpStream | undefined, plugin: PluginFacts, node: NodeFacts) => Uint8Array | undefined;

export function propertyResolver(path: string): PropertyResolver {
  switch (path) {
    case 'plugin_name':
    case 'plugin_vm_id':
      return (_s, plugin) => text(plugin.name);
    case 'plugin_root_id':
      return (_s, plugin) => text(plugin.rootId);
    case 'node.id':
      return (_s, _p, node) => text(node.id);
    case 'node.cluster':
      return (_s, _p, node) => text(node.cluster);
    case 'node.metadata.NAMESPACE':
      return (_s, _p, node) => text(node.namespace);
  }
  let fixed: Resolver | undefined = Object.hasOwn(STREAM, path) ? STREAM[path] : undefined;
  if (!fixed) {
    for (const [prefix, list] of MAPS) {
      if (path === prefix || path.startsWith(prefix + '.')) {
        fixed = (s) => mapProperty(path, prefix, list(s));
        break;
      }
    }
  }
  // Values set by filters come first, then the stream's own.
  return (stream) => {
    if (!stream) return undefined;
    if (stream.hasSetProperties) {
      const set = stream.setProperties.get(path);
      if (set) return set;
    }
    return fixed ? fixed(stream) : undefined;
  };
}

export function propertyValue(path: string, stream: HttpStream | undefined, plugin: PluginFacts, node: NodeFacts): Uint8Array | undefined {
  return propertyResolver(path)(stream, plugin, node);
}
