import { describe, expect, it } from 'vitest';
import { makeBundle, verifyBundle, sha256Hex, PROXY_WASM_ABI, BundleError, toWire, fromWire, type BundleManifest } from '../../protocol/bundle.ts';
import { generateKeyPairSync } from 'node:crypto';

describe('bundle signing', () => {
  const module = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]);
  const manifest: BundleManifest = {
    format: 1,
    abiVersion: PROXY_WASM_ABI,
    compiler: { name: 'meshc', version: 'test' },
    filters: [
      { name: 'a', file: 'a.wasm', sha256: sha256Hex(module), size: module.length, service: 'a', rootId: 'meshc', configuration: '', failurePolicy: 'closed', source: { path: 'a.meshpolicy', sha256: 'x' }, rules: {} },
    ],
  };
  const keys = generateKeyPairSync('ed25519');
  const trusted = [keys.publicKey.export({ type: 'spki', format: 'pem' }).toString()];

  it('accepts a signed bundle and survives the wire form', () => {
    const bundle = fromWire(toWire(makeBundle(manifest, new Map([['a.wasm', module]]), keys.privateKey)));
    expect(() => verifyBundle(bundle, { trustedKeys: trusted })).not.toThrow();
  });

  it('refuses a tampered module with a reason', () => {
    const bundle = makeBundle(manifest, new Map([['a.wasm', new Uint8Array([...module, 0])]]), keys.privateKey);
    expect(() => verifyBundle(bundle, { trustedKeys: trusted })).toThrowError(/sha256/);
  });

  it('refuses an unsigned or foreign-signed bundle when keys are configured', () => {
    const other = generateKeyPairSync('ed25519');
    const unsigned = makeBundle(manifest, new Map([['a.wasm', module]]));
    const foreign = makeBundle(manifest, new Map([['a.wasm', module]]), other.privateKey);
    expect(() => verifyBundle(unsigned, { trustedKeys: trusted })).toThrow(BundleError);
    expect(() => verifyBundle(foreign, { trustedKeys: trusted })).toThrowError(/does not verify/);
  });
});
