// Foreign functions a filter can call with proxy_call_foreign_function: the
// spec's extension point for host features outside the ABI. Names follow
// Envoy where Envoy has the function (`compress`, `uncompress`); the mesh adds
// `mesh_identity`.
//
// In:  the function name, the argument bytes, and what the sidecar knows of itself.
// Out: result bytes, or a WasmResult status (NotFound for an unknown name).
import { deflateSync, inflateSync } from 'node:zlib';
import { WasmResult } from './abi.ts';

export interface ForeignContext {
  /** The sidecar's own SPIFFE ID ('' when it has none, e.g. standalone). */
  identity(): string;
}

type ForeignFunction = (args: Uint8Array, ctx: ForeignContext) => Uint8Array | number;

/** Inflated output is capped so a small "zip bomb" argument cannot exhaust the sidecar. */
const MAX_UNCOMPRESSED = 16 * 1024 * 1024;

const FUNCTIONS: Record<string, ForeignFunction> = {
  /** No arguments; returns the sidecar's SPIFFE ID, the identity its outbound requests carry. */
  mesh_identity: (_args, ctx) => {
    const id = ctx.identity();
    return id ? new TextEncoder().encode(id) : WasmResult.NotFound;
  },
  /** zlib-compresses the arguments (Envoy's `compress`). */
  compress: (args) => new Uint8Array(deflateSync(args)),
  /** Inflates zlib data (Envoy's `uncompress`); malformed or oversized input → SerializationFailure. */
  uncompress: (args) => {
    try {
      return new Uint8Array(inflateSync(args, { maxOutputLength: MAX_UNCOMPRESSED }));
    } catch {
      return WasmResult.SerializationFailure;
    }
  },
};

export const FOREIGN_FUNCTION_NAMES = Object.keys(FUNCTIONS);

export function callForeignFunction(name: string, args: Uint8Array, ctx: ForeignContext): Uint8Array | number {
  const fn = Object.hasOwn(FUNCTIONS, name) ? FUNCTIONS[name] : undefined;
  return fn ? fn(args, ctx) : WasmResult.NotFound;
}
