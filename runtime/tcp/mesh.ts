// Opaque TCP between two sidecars: the outbound side opens one mTLS
// connection per TCP connection (ALPN MESH_TCP_ALPN, the peer's SPIFFE ID
// checked, TLS sessions resumed per endpoint) and sends the transport header;
// the inbound side reads that header back.
//
// In:  an endpoint, the sidecar's certificate material and the target port
//      (outbound); an accepted mTLS socket (inbound).
// Out: a connecting TLS socket for relay(); the target port, or an error.
import net from 'node:net';
import tls, { type SecureContext, type TLSSocket } from 'node:tls';
import type { Endpoint } from '../../protocol/wire.ts';
import { readPrefix } from '../net.ts';
import { expectSpiffeId } from '../peer-identity.ts';
import { decodeTransportHeader, encodeTransportHeader, MESH_TCP_ALPN, TRANSPORT_HEADER_BYTES } from '../../protocol/transport.ts';

/** Opens mTLS connections for opaque TCP to other sidecars; one per certificate (replaced on rotation). */
export class MeshTcpDialer {
  private readonly context: SecureContext;
  /** Last TLS session per endpoint, for resumption. */
  private readonly sessions = new Map<string, Buffer>();

  constructor(material: { cert: string; key: string; ca: string }) {
    this.context = tls.createSecureContext({ cert: material.cert, key: material.key, ca: material.ca });
  }

  /**
   * A connecting socket to `ep`'s inbound listener; `port` goes in the
   * transport header (0: the app's main port). Ready on 'secureConnect'; `check`
   * refuses a peer that did not choose opaque TCP.
   */
  dial(ep: Endpoint, port: number): { socket: net.Socket; readyEvent: 'secureConnect'; check: (s: net.Socket) => string | undefined; preamble: Buffer } {
    const key = `${ep.address}:${ep.port}|${ep.spiffeId}`;
    const session = this.sessions.get(key);
    const expected = ep.spiffeId;
    const raw = net.connect({ host: ep.address, port: ep.port, allowHalfOpen: true, noDelay: true });
    const socket = tls.connect({
      socket: raw,
      secureContext: this.context,
      ALPNProtocols: [MESH_TCP_ALPN],
      ...(session ? { session } : {}),
      checkServerIdentity: expectSpiffeId(expected, ep.instance),
    });
    socket.once('session', (s: Buffer) => this.sessions.set(key, s));
    // A TLS socket over a socket we created does not always close that socket when destroyed.
    socket.once('close', () => raw.destroy());
    // TLS half-close: the TLSSocket must not end its write side when the peer ends (pipe passes the FIN on).
    (socket as unknown as { allowHalfOpen: boolean }).allowHalfOpen = true;
    return {
      socket,
      readyEvent: 'secureConnect',
      check: (s) => ((s as TLSSocket).alpnProtocol === MESH_TCP_ALPN ? undefined : `${ep.instance} did not accept opaque TCP (ALPN ${(s as TLSSocket).alpnProtocol || 'none'})`),
      preamble: encodeTransportHeader(port),
    };
  }
}

/**
 * Reads the transport header from an inbound opaque connection (paused, as the
 * listener hands it over); calls back with the port once, or with an error
 * after `timeoutMs`, at a bad header or an early end. Bytes after the header
 * are put back into the socket.
 */
export function readTransportHeader(socket: net.Socket, timeoutMs: number, done: (err: string | undefined, port: number) => void): void {
  readPrefix(
    socket,
    timeoutMs,
    (buf) => {
      if (buf.length < TRANSPORT_HEADER_BYTES) return undefined;
      const port = decodeTransportHeader(buf);
      if (port < 0) throw new Error('bad transport header');
      return port;
    },
    { ended: () => new Error('connection ended before the transport header'), timedOut: () => new Error(`no transport header within ${timeoutMs} ms`) },
    (err, port, buf) => {
      if (err) return done((err as Error).message, -1);
      if (buf.length > TRANSPORT_HEADER_BYTES) socket.unshift(buf.subarray(TRANSPORT_HEADER_BYTES));
      done(undefined, port!);
    },
  );
}
