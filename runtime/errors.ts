// Responses the sidecar generates itself. Every failure on the data path is a
// MeshError carrying a stable reason code; one function at the edge turns it
// into the HTTP response (status, `x-mesh-reason`, short text body).
//
// In:  a MeshError (or any thrown value, treated as internal-error).
// Out: the response written on a node:http ServerResponse.
import type { ServerResponse } from 'node:http';
import { REASON_HEADER } from '../protocol/properties.ts';

/** Stable reason codes, their status and the Envoy-style response flag used in metrics. */
export const REASONS = {
  'no-certificate': { status: 503, flag: 'NC' },
  'unknown-service': { status: 503, flag: 'NR' },
  'no-healthy-endpoint': { status: 503, flag: 'UH' },
  'upstream-connect-failed': { status: 502, flag: 'UF' },
  'upstream-identity-mismatch': { status: 502, flag: 'UF' },
  'upstream-timeout': { status: 504, flag: 'UT' },
  'upstream-reset': { status: 502, flag: 'UR' },
  'filter-failed': { status: 503, flag: 'FF' },
  'filter-closed-stream': { status: 503, flag: 'FC' },
  'shutting-down': { status: 503, flag: 'SD' },
  'internal-error': { status: 500, flag: 'IE' },
} as const;

export type ReasonCode = keyof typeof REASONS;

export class MeshError extends Error {
  readonly reason: ReasonCode;
  readonly status: number;
  /** Extra response headers, e.g. `x-mesh-filter` naming the filter that failed. */
  readonly headers: Record<string, string>;
  constructor(reason: ReasonCode, message: string, headers: Record<string, string> = {}) {
    super(message);
    this.name = 'MeshError';
    this.reason = reason;
    this.status = REASONS[reason].status;
    this.headers = headers;
  }
}

export function toMeshError(err: unknown): MeshError {
  if (err instanceof MeshError) return err;
  return new MeshError('internal-error', err instanceof Error ? err.message : String(err));
}

/** Writes the error response if the head is not sent yet; otherwise resets the downstream connection. */
export function sendMeshError(res: ServerResponse, error: MeshError): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = `${error.reason}: ${error.message}\n`;
  res.writeHead(error.status, {
    ...error.headers,
    [REASON_HEADER]: error.reason,
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(body),
  });
  res.end(body);
}
