// The golden files: for each test/golden/<name>.meshpolicy, the checked-in
// <name>.errors.txt shows the source with every diagnostic underlined.
// `npm run golden:update` rewrites them (review the diff); golden.test.ts
// compares. A `// topology: a(v1,v2), b(v1)` first line gives the check a topology.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { checkPolicies, type Topology } from '../../compiler/index.ts';
import { renderInSource } from '../../compiler/render.ts';

export const GOLDEN_DIR = new URL('./', import.meta.url);

function topologyOf(text: string): Topology | undefined {
  const m = /^\/\/ topology: (.*)$/m.exec(text.split('\n')[0] ?? '');
  if (!m) return undefined;
  const services: Topology['services'] = {};
  for (const [, name, versions] of m[1]!.matchAll(/([\w-]+)\(([^)]*)\)/g)) services[name!] = { versions: versions!.split(',').map((v) => v.trim()) };
  return { services };
}

export function goldenInputs(): string[] {
  return readdirSync(GOLDEN_DIR).filter((f) => f.endsWith('.meshpolicy')).sort();
}

export function render(name: string): string {
  const text = readFileSync(new URL(name, GOLDEN_DIR), 'utf8');
  const topology = topologyOf(text);
  const diagnostics = checkPolicies([{ path: name, text }], topology ? { topology } : {});
  return renderInSource(name, text, diagnostics);
}

export function expectedFile(name: string): URL {
  return new URL(name.replace(/\.meshpolicy$/, '.errors.txt'), GOLDEN_DIR);
}

if (process.argv[1] && new URL(`file://${process.argv[1]}`).href === import.meta.url) {
  for (const name of goldenInputs()) {
    writeFileSync(expectedFile(name), render(name));
    process.stdout.write(`wrote ${expectedFile(name).pathname}\n`);
  }
}
