// Collects policy sources from the command line.
// In: file and directory paths. Out: SourceFile[] (directories searched
// recursively for *.meshpolicy), deduplicated and sorted by path so that
// builds do not depend on file system order.
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

export interface SourceFile {
  path: string;
  text: string;
}

export const POLICY_EXTENSION = '.meshpolicy';

async function collect(path: string, into: Set<string>): Promise<void> {
  const info = await stat(path);
  if (!info.isDirectory()) {
    into.add(path);
    return;
  }
  for (const entry of await readdir(path, { withFileTypes: true })) {
    const child = join(path, entry.name);
    if (entry.isDirectory()) await collect(child, into);
    else if (entry.name.endsWith(POLICY_EXTENSION)) into.add(child);
  }
}

export async function readPolicySources(paths: string[]): Promise<SourceFile[]> {
  const found = new Set<string>();
  for (const p of paths) await collect(p, found);
  const sorted = [...found].sort();
  return Promise.all(sorted.map(async (path) => ({ path, text: await readFile(path, 'utf8') })));
}
