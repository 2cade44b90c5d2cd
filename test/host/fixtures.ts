// Builds the host conformance fixtures once per test process: our raw-ABI
// AssemblyScript filters (AssemblyScript 0.28, in process) and the filter
// written with the public @solo-io/proxy-runtime SDK (AssemblyScript 0.14,
// the `asc-legacy` alias, SDK code unmodified).
//
// In:  sources under test/fixtures/host/. Out: Wasm bytes.
import asc from 'assemblyscript/asc';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const root = fileURLToPath(new URL('../..', import.meta.url));
const fixtures = join(root, 'test/fixtures/host');
const cache = new Map<string, Promise<Uint8Array>>();

function once(key: string, build: () => Promise<Uint8Array>): Promise<Uint8Array> {
  let p = cache.get(key);
  if (!p) {
    p = build();
    cache.set(key, p);
  }
  return p;
}

/** test/fixtures/host/assembly/<name>.ts, compiled with AssemblyScript 0.28. */
export function hostFixture(name: string): Promise<Uint8Array> {
  return once(name, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'meshc-host-'));
    const outFile = join(dir, `${name}.wasm`);
    const source = join(fixtures, 'assembly', `${name}.ts`);
    const result = await asc.main([source, '--outFile', outFile, '--optimize', '--runtime', 'incremental'], {});
    if (result.error) throw new Error(`asc failed for ${source}: ${result.error.message}\n${result.stderr.toString()}`);
    return new Uint8Array(await readFile(outFile));
  });
}

/** test/fixtures/host/<dir>/assembly/index.ts, an SDK filter, compiled with the SDK's AssemblyScript 0.14. */
export function sdkFixture(dir: string): Promise<Uint8Array> {
  return once(`sdk:${dir}`, async () => {
    const out = join(await mkdtemp(join(tmpdir(), 'meshc-host-sdk-')), 'sdk.wasm');
    await promisify(execFile)(
      process.execPath,
      [join(root, 'node_modules/asc-legacy/bin/asc'), join(fixtures, dir, 'assembly/index.ts'), '-b', out, '--use', 'abort=abort_proc_exit', '--optimize'],
      { cwd: root },
    );
    return new Uint8Array(await readFile(out));
  });
}
