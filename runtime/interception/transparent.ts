// Transparent mode of the sidecar: what the listeners learn from a redirected
// connection and where its traffic goes.
//
// In:  accepted sockets of the outbound and inbound listeners (redirected there
//      by the rules of `meshc init`), the current endpoints, the app's address.
// Out: - an accept hook that sets `conn.info.originalDst` (only on connections
//        that really were redirected: one dialed straight to the listener has none);
//      - meshDestination(): the mesh service an original destination is (an
//        endpoint's address, or a service address), and the app port it names;
//      - upstream targets for HTTP: the original destination itself when it is
//        outside the mesh (passthrough, as Istio's PassthroughCluster), and the
//        app on the port a client dialed (inbound);
//      - permissiveInbound(): the inbound port serving mTLS from sidecars and
//        plaintext from clients outside the mesh (Istio's PERMISSIVE mode).
import net from 'node:net';
import type tls from 'node:tls';
import type { EndpointsPayload } from '../../protocol/wire.ts';
import type { UpstreamTarget } from '../http-proxy.ts';
import { UpstreamPool } from '../http1/client.ts';
import { DEFAULT_LIMITS } from '../http1/parse.ts';
import type { AcceptHook } from '../listener.ts';
import { InterceptionError, originalDestination } from './original-dst.ts';

export type InterceptionMode = 'explicit' | 'transparent';

export interface Destination {
  address: string;
  port: number;
}

/** `::ffff:10.0.0.1` and `10.0.0.1` are one address. */
export function plain(address: string): string {
  return address.startsWith('::ffff:') && net.isIPv4(address.slice(7)) ? address.slice(7) : address;
}

/**
 * The destination a redirected connection was sent to, or undefined when it
 * was not redirected (dialed straight to the listener, or untracked).
 * Throws InterceptionError ADDON_UNAVAILABLE (checked once at start) or
 * ORIGINAL_DST_FAILED.
 */
export function redirectedDestination(socket: net.Socket): Destination | undefined {
  let dst;
  try {
    dst = originalDestination(socket);
  } catch (err) {
    if (err instanceof InterceptionError && (err.code === 'NO_ORIGINAL_DST' || err.code === 'NO_FD')) return undefined;
    throw err;
  }
  const address = plain(dst.address);
  if (dst.port === socket.localPort && address === plain(socket.localAddress ?? '')) return undefined;
  return { address, port: dst.port };
}

/** An accept hook for a ProtocolListener: records the original destination; a failure is logged, not fatal. */
export function originalDstHook(log: (entry: Record<string, unknown>) => void): AcceptHook {
  return (socket, conn) => {
    try {
      const dst = redirectedDestination(socket);
      if (dst) conn.info.originalDst = dst;
    } catch (err) {
      log({ time: new Date().toISOString(), event: 'original-dst-failed', listener: conn.listener, code: (err as InterceptionError).code, error: (err as Error).message, source: socket.remoteAddress });
    }
  };
}

/**
 * The mesh service at an original destination: an endpoint's address (port 0
 * when the port dialed is the endpoint's own, i.e. its main port, else the port
 * dialed), or one of a service's addresses (a virtual IP: port 0, the main
 * port, since the payload has no service-port to target-port map). Undefined
 * outside the mesh, and when several services share the address (ambiguous).
 */
export function meshDestination(dst: Destination, endpoints: EndpointsPayload | undefined): { service: string; port: number } | undefined {
  if (!endpoints) return undefined;
  const address = plain(dst.address);
  let found: { service: string; port: number } | undefined;
  for (const [service, set] of Object.entries(endpoints.services)) {
    let port: number | undefined;
    const ep = set.endpoints.find((e) => plain(e.address) === address);
    if (ep) port = ep.port === dst.port ? 0 : dst.port;
    else if (set.addresses?.some((a) => plain(a) === address)) port = 0;
    if (port === undefined) continue;
    if (found && found.service !== service) return undefined;
    found = { service, port };
  }
  return found;
}

/** Pools kept per destination at most; the oldest is retired beyond (it closes once idle). */
const MAX_POOLS = 256;
/** Below the 5 s keep-alive timeout of Node's http server, the most common server here. */
const IDLE_MS = 4_000;

/** Plain HTTP/1.1 connection pools, one per upstream address, for the HTTP passthrough and the inbound app ports. */
export class PlainPools {
  private readonly pools = new Map<string, UpstreamPool>();

  target(host: string, port: number, version: string, endpoint: string): UpstreamTarget {
    const key = `${host}:${port}`;
    let pool = this.pools.get(key);
    if (pool) {
      // Most recently used last, so eviction takes the least recently used.
      this.pools.delete(key);
    } else {
      pool = new UpstreamPool({ connect: (read) => net.connect({ host, port, onread: read }), secure: false, limits: DEFAULT_LIMITS, idleTimeoutMs: IDLE_MS, maxIdle: 64 });
      if (this.pools.size >= MAX_POOLS) {
        const [oldest, old] = this.pools.entries().next().value as [string, UpstreamPool];
        this.pools.delete(oldest);
        old.retire();
      }
    }
    this.pools.set(key, pool);
    return { pool, version, endpoint, address: key };
  }

  destroy(): void {
    for (const p of this.pools.values()) p.destroy();
    this.pools.clear();
  }
}

/**
 * The raw inbound listener of transparent mode. A TLS ClientHello goes to the
 * mTLS server (sidecar-to-sidecar traffic); anything else, or silence for
 * `firstByteTimeoutMs` (a server-first protocol), is a client outside the mesh,
 * served in plaintext: its requests reach the filters with no principal, so
 * `allow from` rules decide whether it gets through (Istio's PERMISSIVE mode).
 */
export function permissiveInbound(secure: tls.Server, plaintext: (socket: net.Socket) => void, firstByteTimeoutMs: number): net.Server {
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    let decided = false;
    const decide = (first: Buffer | undefined): void => {
      decided = true;
      clearTimeout(timer);
      socket.off('data', decide);
      // The sidecar is stopping (it closed this listener first): nothing new is handed on.
      if (!server.listening) {
        socket.destroy();
        return;
      }
      socket.pause();
      if (first) socket.unshift(first);
      // 0x16: a TLS handshake record. The TLS layer takes the unshifted bytes back from the stream.
      if (first?.[0] === 0x16) {
        secure.emit('connection', socket);
        return;
      }
      // Flowing again from the next tick: the plaintext side attaches its readers (or pauses) first.
      socket.resume();
      plaintext(socket);
    };
    const timer = setTimeout(() => decide(undefined), firstByteTimeoutMs);
    socket.on('error', () => socket.destroy());
    socket.once('close', () => clearTimeout(timer));
    socket.once('data', decide);
    // Closed before a byte: nothing to serve.
    socket.once('end', () => decided || socket.destroy());
  });
  return server;
}
