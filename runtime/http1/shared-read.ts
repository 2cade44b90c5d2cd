// Every HTTP/1.1 socket of the codec, downstream and upstream, plain and TLS,
// reads into one shared buffer (Node's `onread`) instead of getting a new
// Buffer, and a trip through the stream's push and 'data' event, per read.
// The codec copies out what it keeps; the next read reuses the buffer.
//
// Sockets we open take SHARED_READ as net.connect's / tls.connect's `onread`.
// Sockets a server accepted cannot be given `onread`, so adoptSharedRead()
// switches them the same way Node does for `onread` (the socket's own
// read-buffer slots, found by name, and the handle's useUserBuffer). Node is
// pinned (package.json), test/dataplane/shared-read.test.ts checks that the
// switch happens, and where Node lacks those slots the socket simply keeps
// its 'data' events.
//
// A socket whose reader is unset (after an upgrade, or a CONNECT hand-over)
// gets its bytes pushed back into its stream, for whoever took it over.
import { Buffer } from 'node:buffer';
import type { OnReadOpts, Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';

/** Receives a socket's bytes while it reads for the codec. `chunk` is the caller's to keep. */
export interface SocketReader {
  onData(chunk: Buffer): void;
}

const READER = Symbol('http1 reader');
type ReadingSocket = Socket & { [READER]?: SocketReader };

const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

function sharedRead(this: ReadingSocket, nread: number, buf: Uint8Array): boolean {
  // A small copy comes from Buffer's pool: no backing store of its own.
  const copy = Buffer.from(buf.subarray(0, nread));
  const reader = this[READER];
  if (reader) {
    reader.onData(copy);
    return true;
  }
  return this.push(copy);
}

/** `onread` for net.connect and tls.connect. */
export const SHARED_READ: OnReadOpts = { buffer: READ_BUFFER, callback: sharedRead };

/** tls.connect reading into the shared buffer (Node documents `onread` for tls.connect; @types/node lacks it). */
export function tlsConnectShared(options: ConnectionOptions, read: OnReadOpts): TLSSocket {
  const withRead: ConnectionOptions & { onread: OnReadOpts } = { ...options, onread: read };
  return tlsConnect(withRead);
}

/** Where the socket's bytes go from now on; undefined: back into the socket's stream ('data' events). */
export function setReader(socket: Socket, reader: SocketReader | undefined): void {
  (socket as ReadingSocket)[READER] = reader;
}

/** Node's own slots for `onread` (net.Socket's kBuffer and kBufferCb), found once on a socket. */
let slots: { buffer: symbol; callback: symbol } | null | undefined;

function onreadSlots(socket: Socket): { buffer: symbol; callback: symbol } | null {
  if (slots !== undefined) return slots;
  const own = Object.getOwnPropertySymbols(socket);
  const buffer = own.find((s) => s.description === 'kBuffer');
  const callback = own.find((s) => s.description === 'kBufferCb');
  slots = buffer && callback ? { buffer, callback } : null;
  return slots;
}

interface UserBufferHandle {
  useUserBuffer?: (buf: Uint8Array) => void;
}

/**
 * Switches an accepted socket (plain or TLS) to SHARED_READ, as if it had been
 * created with it. Only a socket whose stream holds no bytes is switched:
 * bytes it holds (those protocol detection put back, or read while it was
 * paused) must reach the reader before newer ones, so they come as 'data'
 * events and the caller tries again after them. Returns whether the socket
 * now reads into the shared buffer; where Node lacks the slots it never does,
 * and the socket keeps its 'data' events.
 */
export function adoptSharedRead(socket: Socket): boolean {
  const s = onreadSlots(socket);
  const handle = (socket as unknown as { _handle?: UserBufferHandle })._handle;
  const own = socket as unknown as Record<symbol, unknown>;
  if (!s || !handle || typeof handle.useUserBuffer !== 'function' || own[s.buffer] !== null) return false;
  if (socket.readableLength > 0) return false;
  own[s.buffer] = READ_BUFFER;
  own[s.callback] = sharedRead;
  handle.useUserBuffer(READ_BUFFER);
  return true;
}

/** Whether `socket` reads into the shared buffer (for tests). */
export function readsShared(socket: Socket): boolean {
  const s = onreadSlots(socket);
  return s !== null && (socket as unknown as Record<symbol, unknown>)[s.buffer] === READ_BUFFER;
}
