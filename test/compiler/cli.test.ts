// `meshc check` and `meshc build` through the real CLI entry (bin/meshc).
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readBundle, verifyBundle } from '../../protocol/bundle.ts';

const ROOT = new URL('../../', import.meta.url).pathname;
const NODE_BIN = join(ROOT, 'node_modules/.bin');

function meshc(...args: string[]) {
  const r = spawnSync('node', [join(ROOT, 'bin/meshc'), ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, PATH: `${NODE_BIN}:${process.env.PATH ?? ''}` },
    timeout: 60_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('meshc check', () => {
  it('reports every error with position and code, exit 1', () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshc-check-'));
    const file = join(dir, 'errors.meshpolicy');
    writeFileSync(
      file,
      [
        'service catalog {', //                       1
        '  route r { to v1 90, v2 }', //              2: MP2019 at v2 (col 23)
        '  fault f { abort 700 percent 150 }', //     3: MP2009 col 19, MP2008 col 31
        '  rout x { to v1 }', //                      4: MP2003 col 3
        '  deny d { when method == GETT }', //        5: MP2015 col 27
        '}',
      ].join('\n'),
    );
    const r = meshc('check', dir);
    expect(r.status).toBe(1);
    const lines = r.stderr.split('\n').filter((l) => l.includes(': error '));
    expect(lines).toEqual([
      `${file}:2:23: error MP2019: target v2 needs a weight when a route splits across several versions`,
      `${file}:3:19: error MP2009: status 700 must be a whole number from 200 to 599`,
      `${file}:3:31: error MP2008: percent 150 must be between 0 and 100`,
      `${file}:4:3: error MP2003: unknown rule kind rout (expected route, fault, allow, deny, audit, rate_limit or traffic)`,
      `${file}:5:27: error MP2015: unknown HTTP method GETT`,
    ]);
    expect(r.stderr).toContain('hint: did you mean route?');
  });

  it('exits 0 on a valid file and checks versions against a topology', () => {
    const fixture = join(ROOT, 'test/fixtures/compiler/tour.meshpolicy');
    expect(meshc('check', fixture).status).toBe(0);
    const dir = mkdtempSync(join(tmpdir(), 'meshc-topo-'));
    const topology = join(dir, 'topology.yaml');
    writeFileSync(topology, 'services:\n  catalog:\n    instances:\n      - { version: v1 }\n      - { version: v3 }\n');
    const r = meshc('check', fixture, '--topology', topology);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/tour\.meshpolicy:6:8: error MP2014: service catalog has no version v2 in the topology/);
  });
});

describe('meshc build', () => {
  it('writes a signed bundle that verifies with the public key', () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshc-build-'));
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const keyFile = join(dir, 'key.pem');
    writeFileSync(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }));
    const out = join(dir, 'bundle');
    const r = meshc('build', join(ROOT, 'test/fixtures/compiler/tour.meshpolicy'), '-o', out, '--sign-key', keyFile);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('catalog.wasm');
    return readBundle(out).then((bundle) => {
      verifyBundle(bundle, { trustedKeys: [publicKey.export({ type: 'spki', format: 'pem' }).toString()] });
      expect(bundle.manifest.filters.map((f) => f.name)).toEqual(['catalog']);
      expect(JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')).compiler.name).toBe('meshc');
    });
  });

  it('writes nothing and exits 1 on errors', () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshc-build-bad-'));
    writeFileSync(join(dir, 'bad.meshpolicy'), 'service a { route r { to v1 0 } }');
    const r = meshc('build', dir, '-o', join(dir, 'out'));
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('bad.meshpolicy:1:29: error MP2007');
    expect(() => readFileSync(join(dir, 'out', 'manifest.json'))).toThrow();
  });
});
