// The wire between two sidecars for opaque TCP: what the outbound sidecar
// says on its mTLS connection before the application's bytes.
//
// In:  a target port (outbound side) or the first bytes of an mTLS stream
//      (inbound side).
// Out: the 4-byte transport header, or the port it names.
//
// One mTLS connection carries one TCP connection. The client offers ALPN
// MESH_TCP_ALPN; once the handshake chose it, the client writes the header
// below and then the raw stream. The inbound sidecar connects to its app on
// the named port (port 0: the app's main port) if it serves that port.
// Why ALPN and a header, not ALPN alone: ALPN says "raw TCP, not HTTP" in the
// handshake, before any byte; the header carries what ALPN cannot (the port),
// as Linkerd's opaque transport header does.

import { Buffer } from 'node:buffer';
/** ALPN protocol id of sidecar-to-sidecar opaque TCP. */
export const MESH_TCP_ALPN = 'meshc-tcp/1';

/** 'M' 'T' then the target port as a big-endian uint16. */
export const TRANSPORT_HEADER_BYTES = 4;
const MAGIC_0 = 0x4d;
const MAGIC_1 = 0x54;

export function encodeTransportHeader(port: number): Buffer {
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RangeError(`transport header: port ${port} is out of range`);
  const b = Buffer.allocUnsafe(TRANSPORT_HEADER_BYTES);
  b[0] = MAGIC_0;
  b[1] = MAGIC_1;
  b.writeUInt16BE(port, 2);
  return b;
}

/** The port a header names, or -1 when the bytes are not a transport header. `buf` holds at least TRANSPORT_HEADER_BYTES. */
export function decodeTransportHeader(buf: Buffer): number {
  if (buf.length < TRANSPORT_HEADER_BYTES || buf[0] !== MAGIC_0 || buf[1] !== MAGIC_1) return -1;
  return buf.readUInt16BE(2);
}
