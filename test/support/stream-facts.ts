// The facts an inbound sidecar gives its filters for one request from `source`
// to service `api` on 127.0.0.1:8080, for tests and benchmarks that drive a
// FilterVm directly.
import { Direction } from '../../protocol/properties.ts';
import type { StreamFacts } from '../../runtime/wasm/stream.ts';

export function inboundFacts(source: string, requestId: string): StreamFacts {
  return {
    direction: Direction.Inbound,
    sourcePrincipal: source,
    sourceAddress: '127.0.0.1',
    sourcePort: 40000,
    destinationAddress: '127.0.0.1',
    destinationPort: 8080,
    destinationService: 'api',
    peerUriSan: source,
    requestId,
    scheme: 'https',
    protocol: 'HTTP/1.1',
  };
}
