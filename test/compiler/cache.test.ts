// The build cache: an unchanged rebuild is served from it (memory or disk)
// byte for byte; changing one service recompiles only that service's module;
// a signature is made fresh for every call.
import { generateKeyPairSync, verify } from 'node:crypto';
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BuildCache, compilePolicies, shutdownCompiler } from '../../compiler/index.ts';

afterAll(async () => {
  await shutdownCompiler();
});

function entries(dir: string, level: string): number {
  try {
    return readdirSync(join(dir, level), { recursive: true }).filter((n) => String(n).length > 40).length;
  } catch {
    return 0;
  }
}

const a = { path: 'a.meshpolicy', text: 'service a { deny d { when path prefix "/a" } }\n' };
const b = { path: 'b.meshpolicy', text: 'service b { deny d { when path prefix "/b" } }\n' };

describe('build cache', () => {
  it('serves an unchanged rebuild from disk, identical, and recompiles only the changed service', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshc-cache-test-'));
    const first = await compilePolicies([a, b], { cache: new BuildCache(dir) });
    expect(entries(dir, 'builds')).toBe(1);
    expect(entries(dir, 'modules')).toBe(2);
    // A new process would start with an empty memory: a fresh BuildCache on the same directory.
    const again = await compilePolicies([a, b], { cache: new BuildCache(dir) });
    expect(Buffer.from(again.bundle!.manifestBytes).equals(Buffer.from(first.bundle!.manifestBytes))).toBe(true);
    expect(Buffer.from(again.bundle!.modules.get('a.wasm')!).equals(Buffer.from(first.bundle!.modules.get('a.wasm')!))).toBe(true);
    const changed = await compilePolicies([a, { ...b, text: b.text.replace('"/b"', '"/bb"') }], { cache: new BuildCache(dir) });
    expect(entries(dir, 'builds')).toBe(2);
    // Only b's module is new; a's came from the module cache.
    expect(entries(dir, 'modules')).toBe(3);
    expect(changed.bundle!.manifest.filters[0]!.sha256).toBe(first.bundle!.manifest.filters[0]!.sha256);
    expect(changed.bundle!.manifest.filters[1]!.sha256).not.toBe(first.bundle!.manifest.filters[1]!.sha256);
  });

  it('keeps diagnostics and signs each cached build with the key given', async () => {
    const cache = new BuildCache();
    const warned = { path: 'w.meshpolicy', text: 'service w { }\n' };
    const first = await compilePolicies([warned], { cache });
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const signed = await compilePolicies([warned], { cache, signKey: privateKey });
    expect(signed.diagnostics).toEqual(first.diagnostics);
    expect(signed.diagnostics.map((d) => d.code)).toEqual(['MP2021']);
    expect(verify(null, signed.bundle!.manifestBytes, publicKey, Buffer.from(signed.bundle!.signature!, 'base64'))).toBe(true);
    expect(first.bundle!.signature).toBeUndefined();
  });
});
