// Small listener and socket helpers shared by the sidecar and the standalone proxy.
//
// In:  a net/tls/http server and an Address; a socket whose first bytes decide something.
// Out: a bound server, its address; what those first bytes said.
import { Buffer } from 'node:buffer';
import type { AddressInfo, Server, Socket } from 'node:net';

export interface Address {
  host: string;
  /** 0 = ephemeral */
  port: number;
}

export function listen(server: Server, addr: Address): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(addr.port, addr.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** The address a server actually bound (the real port when 0 was asked for). */
export function bound(server: Server): Address {
  const a = server.address() as AddressInfo | null;
  return a ? { host: a.address, port: a.port } : { host: '', port: 0 };
}

export function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

/** What ends a readPrefix without a decision from `examine`. */
export interface PrefixFailures {
  /** The client ended its side before `examine` decided. */
  ended(): unknown;
  /** `timeoutMs` passed first. */
  timedOut(): unknown;
}

/**
 * Reads a paused socket until `examine(bytes so far)` returns a value (or throws), the
 * client ends, or `timeoutMs` passes; then pauses the socket and calls `done` once with
 * the error (undefined on success), the value and every byte read. A socket that
 * closes first gets no call: there is no one left to answer.
 */
export function readPrefix<T>(socket: Socket, timeoutMs: number, examine: (buf: Buffer) => T | undefined, failures: PrefixFailures, done: (err: unknown, value: T | undefined, buf: Buffer) => void): void {
  let buf: Buffer = Buffer.alloc(0);
  let settled = false;
  const finish = (err: unknown, value: T | undefined): void => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    socket.off('data', onData);
    socket.off('end', onEnd);
    socket.pause();
    done(err, value, buf);
  };
  const onData = (chunk: Buffer): void => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    let value: T | undefined;
    try {
      value = examine(buf);
    } catch (err) {
      return finish(err, undefined);
    }
    if (value !== undefined) finish(undefined, value);
  };
  const onEnd = (): void => finish(failures.ended(), undefined);
  const timer = setTimeout(() => finish(failures.timedOut(), undefined), timeoutMs);
  socket.on('data', onData);
  socket.on('end', onEnd);
  socket.once('close', () => {
    settled = true;
    clearTimeout(timer);
  });
  socket.resume();
}
