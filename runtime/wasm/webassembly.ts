// Typed access to the WebAssembly global. The project's tsconfig targets
// lib es2024 without DOM, which is where TypeScript declares WebAssembly, so
// the runtime declares the small part it uses here (module scoped, so it
// cannot clash with another part's declarations).
//
// In:  nothing. Out: `Wasm` (the global, typed) and its types.

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
