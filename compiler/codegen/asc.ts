// AssemblyScript source → Wasm bytes, with the in-process asc compiler and an
// in-memory file system (the entry file plus the filters/ library read from disk).
// In: one generated entry file. Out: the module bytes. Runs inside the compile
// worker (worker.ts); asc is loaded lazily so importing this file stays cheap.
import { readdirSync, readFileSync } from 'node:fs';

export const ENTRY_FILE = 'main.ts';
const OUTPUT_FILE = 'main.wasm';
const FILTERS_DIR = new URL('../../filters/', import.meta.url);

/**
 * asc flags. -O1: binaryen's optimizer is most of asc's time (about 2/3 of a
 * 100-rule module at -O2, a third of that at -O1), while a decision costs the
 * same at -O1, -O2 and -O3: V8 optimizes the Wasm again when it tiers up,
 * and host calls dominate (bench/decisions.ts; docs/compiler.md has the
 * comparison). The module is as small as at -O2. The minimal runtime: its
 * collector runs only when called, and filters/abi.ts calls it at the end of
 * outermost callbacks (the incremental one, collecting from inside every
 * allocation, cost a decision ~18%); abort
 * routed to the library's handler so the module imports nothing outside
 * env/wasi_snapshot_preview1.
 */
export const ASC_FLAGS = ['--outFile', OUTPUT_FILE, '-O1', '--runtime', 'minimal', '--use', 'abort=filters/abort/meshAbort'];

export class AssemblyScriptError extends Error {
  readonly code = 'MESHC_CODEGEN';
  constructor(message: string) {
    super(message);
    this.name = 'AssemblyScriptError';
  }
}

let libraryFiles: Map<string, string> | undefined;

/** The filters/ library as `filters/<name>.ts` → text, read once. */
function library(): Map<string, string> {
  if (!libraryFiles) {
    libraryFiles = new Map();
    for (const name of readdirSync(FILTERS_DIR).sort()) {
      if (name.endsWith('.ts')) libraryFiles.set(`filters/${name}`, readFileSync(new URL(name, FILTERS_DIR), 'utf8'));
    }
  }
  return libraryFiles;
}

class TextSink {
  text = '';
  write(chunk: Uint8Array | string): void {
    this.text += typeof chunk === 'string' ? chunk : new TextDecoder().decode(chunk);
  }
}

export async function compileAssemblyScript(entrySource: string): Promise<Uint8Array> {
  const { default: asc } = await import('assemblyscript/asc');
  const files = library();
  let output: Uint8Array | undefined;
  const stdout = new TextSink();
  const stderr = new TextSink();
  const result = await asc.main([ENTRY_FILE, ...ASC_FLAGS], {
    readFile: (name) => (name === ENTRY_FILE ? entrySource : (files.get(name.replace(/\\/g, '/')) ?? null)),
    writeFile: (name, contents) => {
      if (name === OUTPUT_FILE && typeof contents !== 'string') output = contents;
    },
    listFiles: () => [],
    stdout,
    stderr,
  });
  if (result.error || !output) {
    throw new AssemblyScriptError(`internal compiler error: asc failed on generated code: ${result.error?.message ?? 'no output'}\n${stderr.text}`);
  }
  return output;
}
