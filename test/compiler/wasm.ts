// Typed access to the WebAssembly global for the compiler tests: the
// project's lib (es2024, no DOM) does not declare it.
export interface WasmMemory {
  readonly buffer: ArrayBuffer;
}

export interface WasmInstance {
  readonly exports: Record<string, unknown>;
}

export interface WasmDescriptor {
  module?: string;
  name: string;
  kind: string;
}

export type WasmImports = Record<string, Record<string, unknown>>;

interface WasmApi {
  validate(bytes: Uint8Array): boolean;
  instantiate(bytes: Uint8Array, imports: WasmImports): Promise<{ instance: WasmInstance }>;
  Module: {
    new (bytes: Uint8Array): object;
    imports(module: object): Required<WasmDescriptor>[];
    exports(module: object): WasmDescriptor[];
  };
}

export const Wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;
