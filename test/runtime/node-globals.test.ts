// The sidecar's modules take Buffer, process and performance from their
// node: modules, not from the globals. On Node 24 each of those globals is an
// accessor on globalThis, so every read of one is a getter call that the JIT
// cannot fold (~10 ns); on the request path that was ~3% of a hop's user-space
// instructions (docs/runtime.md, sixth round). This check keeps it that way.
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = new URL('../..', import.meta.url).pathname;
const DIRS = ['runtime', 'protocol'];

const GLOBALS = [
  { name: 'Buffer', use: /\bBuffer\.[a-zA-Z]/, module: 'node:buffer' },
  { name: 'performance', use: /\bperformance\.[a-zA-Z]/, module: 'node:perf_hooks' },
  { name: 'process', use: /\bprocess\.[a-zA-Z]/, module: 'node:process' },
];

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await sources(path)));
    else if (entry.name.endsWith('.ts')) out.push(path);
  }
  return out;
}

/** The source without comments and string literals, where a global's name could appear as text. */
function code(text: string): string {
  return text
    .replace(/\/\*[^]*?\*\//g, '')
    .replace(/\/\/[^\n]*/g, '')
    .replace(/'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"|`(?:\\.|[^`\\])*`/g, "''");
}

describe('node globals in the sidecar', () => {
  it('are imported from their modules wherever a module reads them', async () => {
    const offenders: string[] = [];
    for (const dir of DIRS) {
      for (const file of await sources(join(ROOT, dir))) {
        const text = await readFile(file, 'utf8');
        const body = code(text);
        for (const g of GLOBALS) {
          const imported = new RegExp(`^import [^\\n]*\\b${g.name}\\b[^\\n]* from '${g.module}'`, 'm').test(text);
          if (g.use.test(body) && !imported) offenders.push(`${relative(ROOT, file)}: ${g.name} (import it from '${g.module}')`);
        }
      }
    }
    expect(offenders).toEqual([]);
  });

  it('finds a global read without its import', () => {
    // The check itself: a module that uses the global and does not import it is caught.
    expect(GLOBALS[0]!.use.test(code("const b = Buffer.from('x'); // Buffer.alloc"))).toBe(true);
    expect(GLOBALS[1]!.use.test(code("log('performance.now is slow')"))).toBe(false);
  });
});
