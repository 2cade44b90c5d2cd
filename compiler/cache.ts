// The build cache: an unchanged rebuild skips the whole compiler, and a
// changed one recompiles only the services whose generated code changed.
// Two levels, both keyed by content digests and the compiler's identity
// (version, the filters/ library, the asc flags), so a new compiler never
// reuses old output:
//   builds:  digest of every source (path + text) and the options → the manifest,
//            modules and diagnostics of that build;
//   modules: digest of a service's generated AssemblyScript → its Wasm.
// In memory for the life of the process (the controller recompiles on every
// edit), and on disk under a directory when one is given (the CLI's
// $MESHC_CACHE_DIR, default ~/.cache/meshc). Entries are written atomically
// (temp file + rename); a corrupt or unreadable entry is a miss.
import { sign, type KeyObject } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { sha256Hex, type Bundle, type BundleManifest } from '../protocol/bundle.ts';
import { ASC_FLAGS } from './codegen/asc.ts';
import { COMPILER_VERSION } from './version.ts';

const FILTERS_DIR = new URL('../filters/', import.meta.url);

let identity: string | undefined;

/** What makes this compiler's output what it is: version, library sources, asc flags. */
export function compilerIdentity(version: string): string {
  if (!identity) {
    const lib = readdirSync(FILTERS_DIR)
      .filter((n) => n.endsWith('.ts'))
      .sort()
      .map((n) => `${n}\n${readFileSync(new URL(n, FILTERS_DIR), 'utf8')}`)
      .join('\n');
    identity = sha256Hex(`${version}\n${ASC_FLAGS.join(' ')}\n${lib}`);
  }
  return identity;
}

export function defaultCacheDir(): string {
  return process.env['MESHC_CACHE_DIR'] ?? join(process.env['XDG_CACHE_HOME'] ?? join(homedir(), '.cache'), 'meshc');
}

/** A cached build: what compilePolicies returns, minus the signature (added per call). */
export interface CachedBuild {
  manifestBytes: Uint8Array;
  modules: Map<string, Uint8Array>;
  diagnostics: unknown[];
}

interface StoredBuild {
  manifest: string;
  modules: Record<string, string>;
  diagnostics: unknown[];
}

/** Most entries kept in memory per level; the oldest are dropped first. */
const MEMORY_ENTRIES = 256;

export class BuildCache {
  readonly dir: string | undefined;
  private readonly builds = new Map<string, CachedBuild>();
  private readonly modules = new Map<string, Uint8Array>();

  constructor(dir?: string) {
    this.dir = dir;
  }

  private path(level: 'builds' | 'modules', key: string): string | undefined {
    return this.dir ? join(this.dir, level, key.slice(0, 2), key) : undefined;
  }

  private remember<V>(map: Map<string, V>, key: string, value: V): void {
    map.delete(key);
    map.set(key, value);
    if (map.size > MEMORY_ENTRIES) map.delete(map.keys().next().value as string);
  }

  private write(path: string | undefined, bytes: Uint8Array | string): void {
    if (!path) return;
    try {
      mkdirSync(join(path, '..'), { recursive: true });
      const tmp = `${path}.${process.pid}.tmp`;
      writeFileSync(tmp, bytes);
      renameSync(tmp, path);
    } catch {
      // A cache that cannot be written only costs time.
    }
  }

  getModule(key: string): Uint8Array | undefined {
    const hit = this.modules.get(key);
    if (hit) return hit;
    const path = this.path('modules', key);
    if (!path) return undefined;
    try {
      const bytes = new Uint8Array(readFileSync(path));
      this.remember(this.modules, key, bytes);
      return bytes;
    } catch {
      return undefined;
    }
  }

  putModule(key: string, wasm: Uint8Array): void {
    this.remember(this.modules, key, wasm);
    this.write(this.path('modules', key), wasm);
  }

  getBuild(key: string): CachedBuild | undefined {
    const hit = this.builds.get(key);
    if (hit) return hit;
    const path = this.path('builds', key);
    if (!path) return undefined;
    try {
      const stored = JSON.parse(readFileSync(path, 'utf8')) as StoredBuild;
      const build: CachedBuild = {
        manifestBytes: new TextEncoder().encode(stored.manifest),
        modules: new Map(Object.entries(stored.modules).map(([k, v]) => [k, new Uint8Array(Buffer.from(v, 'base64'))])),
        diagnostics: stored.diagnostics,
      };
      this.remember(this.builds, key, build);
      return build;
    } catch {
      return undefined;
    }
  }

  putBuild(key: string, build: CachedBuild): void {
    this.remember(this.builds, key, build);
    const stored: StoredBuild = {
      manifest: new TextDecoder().decode(build.manifestBytes),
      modules: Object.fromEntries([...build.modules].map(([k, v]) => [k, Buffer.from(v).toString('base64')])),
      diagnostics: build.diagnostics,
    };
    this.write(this.path('builds', key), JSON.stringify(stored));
  }
}

/** The process-wide in-memory cache compilePolicies uses when given none. */
export const memoryCache = new BuildCache();

/** The key of a whole build: the compiler's identity, every source (path and digest), the topology. */
export function buildKey(files: { path: string; text: string }[], topology: unknown): string {
  const parts = [compilerIdentity(COMPILER_VERSION), JSON.stringify(topology ?? null)];
  for (const f of [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))) parts.push(f.path, sha256Hex(f.text));
  return sha256Hex(parts.join('\n'));
}

/** A finished build from the cache, signed with `signKey` when given, or undefined. */
export function cachedBundle(cache: BuildCache, key: string, signKey?: KeyObject): { bundle: Bundle; diagnostics: unknown[] } | undefined {
  const cached = cache.getBuild(key);
  if (!cached) return undefined;
  const manifest = JSON.parse(new TextDecoder().decode(cached.manifestBytes)) as BundleManifest;
  const bundle: Bundle = { manifest, manifestBytes: cached.manifestBytes, modules: cached.modules };
  if (signKey) bundle.signature = sign(null, cached.manifestBytes, signKey).toString('base64');
  return { bundle, diagnostics: cached.diagnostics };
}
