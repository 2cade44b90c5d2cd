// Builds the runtime's test filters from source, once per test process:
// AssemblyScript 0.28 fixtures with the in-process asc API, and the
// @solo-io/proxy-runtime SDK filter with the AssemblyScript version that SDK
// needs (0.14, installed as the `asc-legacy` alias), its code unmodified.
//
// In:  fixture sources under test/fixtures/runtime/.
// Out: Wasm bytes.
import asc from 'assemblyscript/asc';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const root = fileURLToPath(new URL('../..', import.meta.url));
const fixtures = join(root, 'test/fixtures/runtime');
const cache = new Map<string, Promise<Uint8Array>>();

/** Compiles test/fixtures/runtime/assembly/<name>.ts with AssemblyScript 0.28. */
export function buildFixture(name: string): Promise<Uint8Array> {
  let p = cache.get(name);
  if (!p) {
    p = compileAs(join(fixtures, 'assembly', `${name}.ts`));
    cache.set(name, p);
  }
  return p;
}

async function compileAs(source: string): Promise<Uint8Array> {
  const dir = await mkdtemp(join(tmpdir(), 'meshc-fixture-'));
  const outFile = join(dir, 'filter.wasm');
  const result = await asc.main([source, '--outFile', outFile, '--optimize', '--runtime', 'incremental'], {});
  if (result.error) throw new Error(`asc failed for ${source}: ${result.error.message}\n${result.stderr.toString()}`);
  return new Uint8Array(await readFile(outFile));
}

/** Builds the SDK example filter (adds response header `hello`) with the SDK's own AssemblyScript. */
export function buildSdkFilter(): Promise<Uint8Array> {
  let p = cache.get('sdk');
  if (!p) {
    p = (async () => {
      const dir = await mkdtemp(join(tmpdir(), 'meshc-sdk-'));
      const outFile = join(dir, 'sdk.wasm');
      await promisify(execFile)(
        process.execPath,
        [join(root, 'node_modules/asc-legacy/bin/asc'), join(fixtures, 'sdk-add-header/assembly/index.ts'), '-b', outFile, '--use', 'abort=abort_proc_exit', '--optimize'],
        { cwd: root },
      );
      return new Uint8Array(await readFile(outFile));
    })();
    cache.set('sdk', p);
  }
  return p;
}
