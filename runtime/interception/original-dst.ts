// The original destination of an intercepted TCP connection: where the app (or
// a remote client) sent it before the iptables REDIRECT rules of `meshc init`
// turned it to a sidecar listener. Node does not expose SO_ORIGINAL_DST, so
// this reads it through the native addon (native/original_dst.c), and it is
// the one place that touches Node's internal `socket._handle.fd`.
//
// In:  an accepted net.Socket (plain TCP; a TLS socket's underlying one).
// Out: { address, port, family } or an InterceptionError with a stable code:
//      ADDON_UNAVAILABLE (not built / not loadable), NO_FD (the socket has no
//      kernel descriptor), NO_ORIGINAL_DST (the kernel has no conntrack entry:
//      the connection was not tracked, so it cannot have been redirected),
//      ORIGINAL_DST_FAILED (any other getsockopt error); INTERCEPTION_LOOP is
//      the start-up check's (runtime/interception/loop-check.ts).
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type net from 'node:net';

export interface OriginalDestination {
  address: string;
  port: number;
  family: 4 | 6;
}

export type InterceptionErrorCode = 'ADDON_UNAVAILABLE' | 'NO_FD' | 'NO_ORIGINAL_DST' | 'ORIGINAL_DST_FAILED' | 'INTERCEPTION_LOOP';

export class InterceptionError extends Error {
  readonly code: InterceptionErrorCode;
  constructor(code: InterceptionErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'InterceptionError';
    this.code = code;
  }
}

export interface Addon {
  originalDestination(fd: number): OriginalDestination;
}

export const ADDON_PATH = fileURLToPath(new URL('../../native/build/Release/original_dst.node', import.meta.url));

let addon: Addon | InterceptionError | undefined;

/** Loads an addon file; ADDON_UNAVAILABLE (saying how to build it) when it is missing or does not load. */
export function loadAddon(path: string): Addon {
  try {
    return createRequire(import.meta.url)(path) as Addon;
  } catch (err) {
    throw new InterceptionError(
      'ADDON_UNAVAILABLE',
      `the SO_ORIGINAL_DST addon is not available (${(err as Error).message.split('\n')[0]}); build it with \`npm run build:native\` (needs g++, make, python3)`,
      { cause: err },
    );
  }
}

/** The addon at ADDON_PATH, loaded once; a load error is kept and rethrown on every use. */
function load(): Addon {
  if (addon === undefined) {
    try {
      addon = loadAddon(ADDON_PATH);
    } catch (err) {
      addon = err as InterceptionError;
    }
  }
  if (addon instanceof InterceptionError) throw addon;
  return addon;
}

/** Throws ADDON_UNAVAILABLE now rather than on the first connection (a sidecar checks at start). */
export function requireAddon(): void {
  load();
}

/** The kernel descriptor behind a Node socket: `_handle.fd` of its TCP wrap, an internal of Node. */
function descriptorOf(socket: net.Socket): number {
  const handle = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle;
  const fd = handle?.fd;
  if (typeof fd !== 'number' || fd < 0) {
    throw new InterceptionError('NO_FD', 'the socket has no kernel file descriptor (closed, or not a TCP socket)');
  }
  return fd;
}

export function originalDestination(socket: net.Socket): OriginalDestination {
  const native = load();
  const fd = descriptorOf(socket);
  try {
    return native.originalDestination(fd);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ENOENT') {
      throw new InterceptionError('NO_ORIGINAL_DST', `no original destination for ${socket.remoteAddress}:${socket.remotePort} (the connection is not tracked by netfilter)`, { cause: err });
    }
    throw new InterceptionError('ORIGINAL_DST_FAILED', (err as Error).message, { cause: err });
  }
}
