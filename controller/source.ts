// Sources of truth for the controller, behind one interface. File mode reads a
// directory: every `*.meshpolicy` file plus `topology.yaml`. (Kubernetes will be
// a second implementation of the same interface.)
//
// In:  a directory. Out: on read(), the current policy sources and parsed
//      topology; on watch(), a bare "something changed" signal (level-based:
//      the reconcile re-reads everything, so no event payload is trusted).
import { watch, type FSWatcher } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseTopology, type TopologyResult } from './topology.ts';
import { CodedError } from '../protocol/errors.ts';

export interface PolicySource {
  path: string;
  text: string;
}

export interface ConfigSnapshot {
  /** Sorted by path, so the same directory always gives the same input. */
  policies: PolicySource[];
  topology: TopologyResult;
}

export interface ConfigSource {
  /** A human description for logs and /status, e.g. "dir:/path/to/examples". */
  readonly description: string;
  read(): Promise<ConfigSnapshot>;
  watch(onChange: () => void): void;
  close(): Promise<void>;
}

/** An error worth retrying later (the state may be mid-write, a disk hiccup). */
export class RetryableError extends CodedError {}

export const TOPOLOGY_FILE = 'topology.yaml';
export const POLICY_EXTENSION = '.meshpolicy';

export class DirectoryConfigSource implements ConfigSource {
  readonly description: string;
  private readonly dir: string;
  private watcher: FSWatcher | undefined;

  constructor(dir: string) {
    this.dir = resolve(dir);
    this.description = `dir:${this.dir}`;
  }

  async read(): Promise<ConfigSnapshot> {
    let names: string[];
    try {
      names = (await readdir(this.dir, { recursive: true })).map(String);
    } catch (err) {
      throw new RetryableError('SOURCE_READ', `cannot list ${this.dir}: ${(err as Error).message}`);
    }
    const policyNames = names.filter((n) => n.endsWith(POLICY_EXTENSION)).sort();
    const policies: PolicySource[] = [];
    for (const name of policyNames) {
      const path = join(this.dir, name);
      try {
        policies.push({ path, text: await readFile(path, 'utf8') });
      } catch (err) {
        // Deleted between readdir and readFile: the next event re-reads the directory.
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw new RetryableError('SOURCE_READ', `cannot read ${path}: ${(err as Error).message}`);
      }
    }
    const topologyPath = join(this.dir, TOPOLOGY_FILE);
    let topology: TopologyResult;
    try {
      topology = parseTopology(await readFile(topologyPath, 'utf8'), topologyPath);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new RetryableError('SOURCE_READ', `cannot read ${topologyPath}: ${(err as Error).message}`);
      topology = { ok: false, errors: [{ code: 'TOPO_MISSING', file: topologyPath, line: 1, col: 1, message: `no ${TOPOLOGY_FILE} in ${this.dir}` }] };
    }
    return { policies, topology };
  }

  watch(onChange: () => void): void {
    if (this.watcher) return;
    this.watcher = watch(this.dir, { recursive: true }, (_event, name) => {
      const file = name === null ? '' : String(name);
      if (file === '' || file.endsWith(POLICY_EXTENSION) || file.endsWith(TOPOLOGY_FILE)) onChange();
    });
  }

  async close(): Promise<void> {
    this.watcher?.close();
    this.watcher = undefined;
  }
}
