// Typed access to the WebAssembly global. The project's tsconfig targets
// lib es2024 without DOM, which is where TypeScript declares WebAssembly, so
// the runtime declares the small part it uses here (module scoped, so it
// cannot clash with another part's declarations).
//
// In:  nothing. Out: `Wasm` (the global, typed) and its types;
//      tierUpEarly(), V8's tiering budget for a proxy process.
import { setFlagsFromString } from 'node:v8';

export interface WasmModule {
  readonly __brand: 'WebAssembly.Module';
}

export interface WasmMemory {
  readonly buffer: ArrayBuffer;
}

export interface WasmInstance {
  readonly exports: Record<string, unknown>;
}

export interface WasmImportDescriptor {
  module: string;
  name: string;
  kind: 'function' | 'table' | 'memory' | 'global' | 'tag';
}

export interface WasmExportDescriptor {
  name: string;
  kind: 'function' | 'table' | 'memory' | 'global' | 'tag';
}

export type WasmImports = Record<string, Record<string, unknown>>;

interface WasmApi {
  validate(bytes: Uint8Array): boolean;
  compile(bytes: Uint8Array): Promise<WasmModule>;
  instantiate(module: WasmModule, imports: WasmImports): Promise<WasmInstance>;
  Module: {
    imports(module: WasmModule): WasmImportDescriptor[];
    exports(module: WasmModule): WasmExportDescriptor[];
  };
}

export const Wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

/**
 * V8 runs Wasm functions with its baseline compiler (Liftoff) until each has
 * executed about 13 MB of code, then with TurboFan. A policy callback runs a
 * few hundred bytes, so at 1,000 requests/s a filter stayed on Liftoff for
 * half a minute and the chain cost tens of µs a request instead of ~5 (perf,
 * one hop; docs/runtime.md, Performance).
 * A budget 65× smaller tiers a filter up after a few hundred requests; the
 * flag is process-wide and read when a module is compiled, so a proxy
 * process sets it before it loads filters.
 */
export function tierUpEarly(): void {
  setFlagsFromString('--wasm-tiering-budget=200000');
}
