// gRPC facts the proxy needs: whether a request is gRPC, and how a response
// the mesh makes itself (a filter's deny, a rate limit, a mesh error) is
// rendered so a gRPC client reads a status instead of an HTTP error.
//
// In:  request headers; a local response (status, headers) or a MeshError.
// Out: a "trailers-only" gRPC response: HTTP 200, content-type
//      application/grpc, grpc-status and grpc-message in the headers, no body.
//
// Status codes follow Envoy (Http::Utility::httpToGrpcStatus, the mapping of
// the gRPC spec's http-grpc-status-mapping): 403 → PERMISSION_DENIED (7),
// 429 → UNAVAILABLE (14, Envoy's local and global rate limit default),
// 401 → UNAUTHENTICATED (16). Failures of the mesh itself (MeshError) are
// UNAVAILABLE (14), so clients retry them as they retry a lost connection.
import { Buffer } from 'node:buffer';
import type { HeaderList } from '../wasm/stream.ts';

export const GRPC_STATUS = {
  OK: 0,
  UNKNOWN: 2,
  INTERNAL: 13,
  PERMISSION_DENIED: 7,
  UNIMPLEMENTED: 12,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

/** `application/grpc`, `application/grpc+proto`, `application/grpc; …` (not grpc-web, which is plain HTTP). */
export function isGrpc(headers: HeaderList): boolean {
  for (let i = 0; i < headers.length; i++) {
    const e = headers[i]!;
    if (e[0] !== 'content-type') continue;
    const v = e[1];
    return v.startsWith('application/grpc') && (v.length === 16 || v[16] === '+' || v[16] === ';');
  }
  return false;
}

/** The gRPC status a client would infer from an HTTP status (as Envoy maps it). */
export function grpcStatusForHttp(status: number): number {
  switch (status) {
    case 400:
      return GRPC_STATUS.INTERNAL;
    case 401:
      return GRPC_STATUS.UNAUTHENTICATED;
    case 403:
      return GRPC_STATUS.PERMISSION_DENIED;
    case 404:
      return GRPC_STATUS.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return GRPC_STATUS.UNAVAILABLE;
    default:
      return GRPC_STATUS.UNKNOWN;
  }
}

/** grpc-message is percent-encoded (gRPC over HTTP/2 spec): everything outside printable ASCII, and '%'. */
export function encodeGrpcMessage(text: string): string {
  let out = '';
  for (const b of Buffer.from(text, 'utf8')) {
    out += b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : '%' + b.toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

/**
 * A local response as a trailers-only gRPC response. `grpcStatus` is the
 * code to send (a filter may have set grpc-status itself; it is kept); the
 * body text becomes grpc-message.
 */
export function grpcLocalResponse(status: number, headers: HeaderList, body: Buffer | Uint8Array, grpcStatus?: number): { status: number; headers: HeaderList } {
  const out: HeaderList = [['content-type', 'application/grpc']];
  let code: string | undefined;
  let message: string | undefined;
  for (const e of headers) {
    const k = e[0];
    if (k === 'grpc-status') code = e[1];
    else if (k === 'grpc-message') message = e[1];
    else if (k !== 'content-type' && k !== 'content-length') out.push(e);
  }
  code ??= String(grpcStatus ?? grpcStatusForHttp(status));
  message ??= encodeGrpcMessage(Buffer.from(body).toString('utf8').trim() || `HTTP ${status}`);
  out.push(['grpc-status', code], ['grpc-message', message]);
  return { status: 200, headers: out };
}
