// The HTTP proxy port of explicit mode (VMs, laptops: HTTP_PROXY=...):
// `CONNECT host:port` opens a TCP tunnel — to a mesh service over mTLS, or,
// only when egress is allowed, to an address outside the mesh — and every
// other request (absolute-form `GET http://catalog/...`) goes to the HTTP
// codec, routed as outbound HTTP.
//
// In:  sockets the protocol listener classified as HTTP/1 (paused, first
//      bytes unshifted).
// Out: `200 Connection Established` then raw bytes both ways; a refusal with
//      a status and `x-mesh-reason`; or the socket handed to the HTTP codec,
//      which hands it back (`tunnel`) when a later request is a CONNECT.
import { Buffer } from 'node:buffer';
import type { Socket } from 'node:net';
import { MeshError, renderError } from '../errors.ts';
import { readPrefix } from '../net.ts';
import { findHeadEnd, parseRequestHead, type HeadLimits, type RequestHead } from '../http1/parse.ts';
import { statusText } from '../http1/server.ts';
import type { Accepted, ProtocolHandler } from '../listener.ts';
import type { TcpProxy } from '../tcp/proxy.ts';

export interface HttpProxyPortDeps {
  tcp: TcpProxy;
  /** Hands a request that is not CONNECT to the HTTP path (the socket as it came, bytes put back). */
  http(socket: Socket, conn: Accepted): void;
  /** The mesh service a host names, or undefined. */
  service(host: string): string | undefined;
  /** CONNECT to hosts outside the mesh. */
  allowEgress: boolean;
  limits: HeadLimits;
  headersTimeoutMs: number;
  log: (entry: Record<string, unknown>) => void;
}

export interface HttpProxyPort {
  /** The listener handler of the proxy port's HTTP/1 connections. */
  handler: ProtocolHandler;
  /** The codec's tunnel hook: a CONNECT after other requests on a connection this port handed to it. */
  tunnel(socket: Socket): void;
}

export function httpProxyPort(deps: HttpProxyPortDeps): HttpProxyPort {
  // The listener's facts about each connection given to the codec, for a CONNECT it hands back.
  const handedToCodec = new WeakMap<Socket, Accepted>();
  const handler: ProtocolHandler = (socket, conn) => {
    readHead(socket, deps, (err, head, buf, end) => {
      if (err) return refuse(socket, conn, deps, err);
      if (head!.method !== 'CONNECT') {
        // Not a tunnel: the codec parses the request again from the start.
        socket.unshift(buf!);
        handedToCodec.set(socket, conn);
        deps.http(socket, conn);
        return;
      }
      if (end! < buf!.length) socket.unshift(buf!.subarray(end));
      connect(socket, conn, deps, head!);
    });
  };
  const tunnel = (socket: Socket): void => {
    const conn = handedToCodec.get(socket);
    if (conn) handler(socket, conn);
    else socket.destroy();
  };
  return { handler, tunnel };
}

/** Collects the request head (within the codec's limits and header timeout), leaving the socket paused. */
function readHead(socket: Socket, deps: HttpProxyPortDeps, done: (err: MeshError | undefined, head?: RequestHead, buf?: Buffer, end?: number) => void): void {
  socket.on('error', () => {});
  readPrefix(
    socket,
    deps.headersTimeoutMs,
    (buf) => {
      let start = 0;
      while (start + 1 < buf.length && buf[start] === 0x0d && buf[start + 1] === 0x0a) start += 2;
      const at = findHeadEnd(buf, start, 0, deps.limits, true);
      return at === -1 ? undefined : { head: parseRequestHead(buf, start, at, deps.limits), end: at + 4 };
    },
    {
      ended: () => new MeshError('malformed-request', 'connection ended inside the request head'),
      timedOut: () => new MeshError('request-timeout', `request head not complete within ${deps.headersTimeoutMs} ms`),
    },
    (err, found, buf) => done(err as MeshError | undefined, found?.head, buf, found?.end),
  );
}

/** RFC 9110 9.3.6: the target is `host:port` (authority-form); IPv6 in brackets. */
function authority(target: string): { host: string; port: number } | undefined {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._~-]+):(\d{1,5})$/.exec(target);
  if (!m) return undefined;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return undefined;
  return { host: m[1]!.replace(/^\[(.*)\]$/, '$1'), port };
}

function connect(socket: Socket, conn: Accepted, deps: HttpProxyPortDeps, head: RequestHead): void {
  const target = authority(head.target);
  if (!target) return refuse(socket, conn, deps, new MeshError('malformed-request', `CONNECT target "${head.target}" is not host:port`));
  const service = deps.service(target.host);
  const callbacks = {
    onReady: () => socket.write('HTTP/1.1 200 Connection Established\r\n\r\n'),
    onFailed: (reason: string, message: string) => refuse(socket, conn, deps, asMeshError(reason, message), false),
  };
  if (service !== undefined) {
    deps.tcp.toService(socket, conn, service, target.port, callbacks);
  } else if (deps.allowEgress) {
    deps.tcp.toAddress(socket, conn, target, callbacks);
  } else {
    refuse(socket, conn, deps, new MeshError('egress-denied', `${target.host} is not a mesh service and this sidecar does not allow egress`));
  }
}

function asMeshError(reason: string, message: string): MeshError {
  switch (reason) {
    case 'no-certificate':
    case 'unknown-service':
    case 'no-healthy-endpoint':
    case 'upstream-connect-failed':
    case 'circuit-open':
    case 'too-many-connections':
      return new MeshError(reason, message);
    case 'upstream-connect-timeout':
      return new MeshError('upstream-timeout', message);
    case 'upstream-protocol-error':
      return new MeshError('upstream-protocol-error', message);
    default:
      return new MeshError('upstream-connect-failed', message);
  }
}

/** Answers with the error's status and reason, then closes; logs it unless the TCP proxy already did. */
function refuse(socket: Socket, conn: Accepted, deps: HttpProxyPortDeps, err: MeshError, log = true): void {
  if (log) deps.log({ time: new Date().toISOString(), direction: 'outbound', listener: conn.listener, method: 'CONNECT', status: err.status, reason: err.reason, error: err.message, source: socket.remoteAddress });
  if (socket.destroyed) return;
  const r = renderError(err);
  let text = `HTTP/1.1 ${r.status} ${statusText(r.status)}\r\n`;
  for (const [k, v] of r.headers) text += `${k}: ${v}\r\n`;
  text += `content-length: ${r.body.length}\r\nconnection: close\r\n\r\n`;
  socket.end(Buffer.concat([Buffer.from(text, 'latin1'), r.body]));
  // Read (and drop) whatever the client still sends, so its close is seen and the socket freed.
  socket.resume();
}
