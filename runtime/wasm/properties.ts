// Answers proxy_get_property: values set by filters first, then the facts of
// the stream and the plugin. Encodings follow Envoy's attributes: strings as
// UTF-8, ports and listener_direction as int64 little-endian.
//
// In:  a dotted property path, the current stream (undefined in the root
//      context) and the filter's identity.
// Out: the encoded value, or undefined (the host answers NotFound).
import {
  DESTINATION_ADDRESS,
  DESTINATION_SERVICE,
  LISTENER_DIRECTION,
  PEER_URI_SAN,
  SOURCE_ADDRESS,
  SOURCE_PRINCIPAL,
} from '../../protocol/properties.ts';
import type { HttpStream } from './stream.ts';
import { getHeader } from './stream.ts';

const encoder = new TextEncoder();

function int64(value: number): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigInt64(0, BigInt(value), true);
  return out;
}

function text(value: string | undefined): Uint8Array | undefined {
  return value === undefined ? undefined : encoder.encode(value);
}

export function propertyValue(
  path: string,
  stream: HttpStream | undefined,
  plugin: { name: string; rootId: string },
): Uint8Array | undefined {
  if (path === 'plugin_name') return text(plugin.name);
  if (path === 'plugin_root_id') return text(plugin.rootId);
  if (!stream) return undefined;
  const set = stream.setProperties.get(path);
  if (set) return set;
  const f = stream.facts;
  const h = stream.requestHeaders;
  switch (path) {
    case LISTENER_DIRECTION:
      return int64(f.direction);
    case SOURCE_PRINCIPAL:
      return f.sourcePrincipal ? text(f.sourcePrincipal) : undefined;
    case SOURCE_ADDRESS:
      return text(`${f.sourceAddress}:${f.sourcePort}`);
    case 'source.port':
      return int64(f.sourcePort);
    case DESTINATION_ADDRESS:
      return text(`${f.destinationAddress}:${f.destinationPort}`);
    case 'destination.port':
      return int64(f.destinationPort);
    case DESTINATION_SERVICE:
      return f.destinationService ? text(f.destinationService) : undefined;
    case PEER_URI_SAN:
      return f.peerUriSan ? text(f.peerUriSan) : undefined;
    case 'request.path':
      return text(getHeader(h, ':path'));
    case 'request.url_path': {
      const p = getHeader(h, ':path');
      return p === undefined ? undefined : text(p.split('?')[0]);
    }
    case 'request.method':
      return text(getHeader(h, ':method'));
    case 'request.host':
      return text(getHeader(h, ':authority'));
    case 'request.scheme':
      return text(f.scheme);
    case 'request.protocol':
      return text(f.protocol);
    case 'request.id':
      return text(getHeader(h, 'x-request-id') ?? f.requestId);
    default:
      return undefined;
  }
}
