// bench/policies/hop.meshpolicy, compiled once per benchmark process: as a
// bundle directory (sidecar pairs), a .wasm file (`meshc proxy --filter`), or
// the module's bytes (in-process benchmarks).
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { compilePolicies, shutdownCompiler } from '../../compiler/index.ts';
import { writeBundle, type Bundle } from '../../protocol/bundle.ts';

let compiled: Promise<Bundle> | undefined;

function hopBundle(): Promise<Bundle> {
  compiled ??= (async () => {
    const path = new URL('../policies/hop.meshpolicy', import.meta.url).pathname;
    const result = await compilePolicies([{ path, text: await readFile(path, 'utf8') }]);
    await shutdownCompiler();
    if (!result.bundle) throw new Error(`bench policy does not compile: ${JSON.stringify(result.diagnostics)}`);
    return result.bundle;
  })();
  return compiled;
}

/** The compiled module of the policy's one service. */
export async function hopFilterBytes(): Promise<Uint8Array> {
  const bundle = await hopBundle();
  const filter = bundle.manifest.filters[0];
  const bytes = filter && bundle.modules.get(filter.file);
  if (!bytes) throw new Error('bench bundle has no module');
  return bytes;
}

/** Writes the module to `dir`; returns the file's path. */
export async function writeHopFilter(dir: string): Promise<string> {
  const file = join(dir, 'hop.wasm');
  await writeFile(file, await hopFilterBytes());
  return file;
}

/** Writes the bundle into `dir`/bundle; returns its path. */
export async function writeHopBundle(dir: string): Promise<string> {
  const out = join(dir, 'bundle');
  await writeBundle(out, await hopBundle());
  return out;
}
