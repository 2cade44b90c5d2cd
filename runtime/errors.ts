// Responses the sidecar generates itself. Every failure on the data path is a
// MeshError carrying a stable reason code; one function at the edge turns it
// into the HTTP response (status, `x-mesh-reason`, short text body).
//
// In:  a MeshError (or any thrown value, treated as internal-error).
// Out: the response (status, headers, body) the codec writes.
import { Buffer } from 'node:buffer';
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
  'upstream-protocol-error': { status: 502, flag: 'UPE' },
  'circuit-open': { status: 503, flag: 'UO' },
  'filter-failed': { status: 503, flag: 'FF' },
  'filter-closed-stream': { status: 503, flag: 'FC' },
  'shutting-down': { status: 503, flag: 'SD' },
  // Explicit mode: CONNECT to a host outside the mesh on a sidecar that does not allow egress.
  'egress-denied': { status: 403, flag: 'NR' },
  // The downstream request itself is at fault (the HTTP/1.1 codec refuses it, then closes).
  'malformed-request': { status: 400, flag: 'DPE' },
  'ambiguous-framing': { status: 400, flag: 'DPE' },
  'bad-chunk': { status: 400, flag: 'DPE' },
  'headers-too-large': { status: 431, flag: 'DPE' },
  'uri-too-long': { status: 414, flag: 'DPE' },
  'version-not-supported': { status: 505, flag: 'DPE' },
  'unsupported-transfer-coding': { status: 501, flag: 'DPE' },
  'unsupported-expectation': { status: 417, flag: 'DPE' },
  'method-not-allowed': { status: 405, flag: 'DPE' },
  'request-timeout': { status: 408, flag: 'DT' },
  // A client that stopped reading a response (its head already sent: the connection is closed, nothing answered).
  'stream-idle-timeout': { status: 408, flag: 'SI' },
  'too-many-connections': { status: 503, flag: 'OM' },
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

export interface ErrorResponse {
  status: number;
  /** Lowercase names; the codec adds framing (content-length) and connection headers. */
  headers: Array<[string, string]>;
  body: Buffer;
}

/** The one place a MeshError becomes a response: status, `x-mesh-reason`, extra headers, a short text body. */
export function renderError(error: MeshError): ErrorResponse {
  const headers: Array<[string, string]> = [];
  for (const [k, v] of Object.entries(error.headers)) headers.push([k, v]);
  headers.push([REASON_HEADER, error.reason], ['content-type', 'text/plain; charset=utf-8']);
  return { status: error.status, headers, body: Buffer.from(`${error.reason}: ${error.message}\n`) };
}
