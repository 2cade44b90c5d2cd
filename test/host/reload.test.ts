// Signed bundles and hot reload through a running sidecar pair: tampered
// bundles (signature, digests, ABI version, unsigned) are refused with the
// reason logged and counted while the last good chain keeps serving; 100
// reloads under a steady bounded load fail no request; retired chains release
// their instances and are garbage collected.
import { generateKeyPairSync } from 'node:crypto';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeBundle, type Bundle, type BundleManifest } from '../../protocol/bundle.ts';
import { FilterChain } from '../../runtime/chain.ts';
import { createHostEnvironment } from '../../runtime/wasm/environment.ts';
import { buildFixture } from '../runtime/build-fixtures.ts';
import { makeTestBundle, request } from '../runtime/helpers.ts';
import { startMesh, type TestMesh } from '../runtime/mesh.ts';

const trusted = generateKeyPairSync('ed25519');
const stranger = generateKeyPairSync('ed25519');
let probe: Uint8Array;
let mesh: TestMesh;

const outbound = () => mesh.web.addresses().outbound.port;
const metricsOf = async (port: number) => (await request(port, { path: '/metrics' })).body;

/** The x-seen-* filters that handled a request from web to catalog. */
async function seenFilters(): Promise<string[]> {
  const res = await request(outbound(), { headers: { host: 'catalog' } });
  expect(res.status).toBe(200);
  const headers = (JSON.parse(res.body) as { headers: Record<string, string> }).headers;
  return Object.keys(headers).filter((h) => h.startsWith('x-seen-') && headers[h]?.startsWith('yes')).map((h) => h.slice(7)).sort();
}

/** A bundle whose manifest is edited, then signed (or not) as given. */
function resigned(edit: (m: BundleManifest) => BundleManifest, sign = true): Bundle {
  const base = makeTestBundle([{ name: 'alpha', wasm: probe }]);
  return makeBundle(edit(structuredClone(base.manifest)), base.modules, sign ? trusted.privateKey : undefined);
}

beforeAll(async () => {
  probe = await buildFixture('probe');
  const pem = trusted.publicKey.export({ type: 'spki', format: 'pem' }).toString();
  mesh = await startMesh(makeTestBundle([{ name: 'alpha', wasm: probe }], trusted.privateKey), { trustedKeys: [pem] });
});

afterAll(async () => {
  await mesh?.stop();
});

describe('signed bundles', () => {
  it('refuses tampered bundles with the reason logged and counted, and keeps serving the last good chain', async () => {
    const good = mesh.web.chainVersion();
    const tamperedSignature = makeTestBundle([{ name: 'alpha', wasm: probe }], trusted.privateKey);
    const sig = Buffer.from(tamperedSignature.signature!, 'base64');
    sig[0]! ^= 0xff;
    tamperedSignature.signature = sig.toString('base64');
    const tamperedModule = makeTestBundle([{ name: 'delta', wasm: probe }], trusted.privateKey);
    const evil = probe.slice();
    evil[evil.length - 1]! ^= 1;
    tamperedModule.modules.set('delta.wasm', evil);
    const editedAfterSigning = makeTestBundle([{ name: 'alpha', wasm: probe }], trusted.privateKey);
    editedAfterSigning.manifestBytes = new TextEncoder().encode(new TextDecoder().decode(editedAfterSigning.manifestBytes).replace('"closed"', '"open"'));
    const cases: Array<[string, Bundle, string]> = [
      ['unsigned', makeTestBundle([{ name: 'alpha', wasm: probe }]), 'BUNDLE_UNSIGNED'],
      ['signed by an untrusted key', makeTestBundle([{ name: 'alpha', wasm: probe }], stranger.privateKey), 'BUNDLE_SIGNATURE'],
      ['signature bytes flipped', tamperedSignature, 'BUNDLE_SIGNATURE'],
      ['manifest edited after signing', editedAfterSigning, 'BUNDLE_SIGNATURE'],
      ['module bytes changed', tamperedModule, 'BUNDLE_DIGEST'],
      ['ABI version changed (and re-signed)', resigned((m) => ({ ...m, abiVersion: 'proxy_abi_version_0_1_0' as BundleManifest['abiVersion'] })), 'BUNDLE_ABI'],
    ];
    for (const [label, bundle, code] of cases) {
      await expect(mesh.web.applyBundle(bundle), label).rejects.toMatchObject({ code });
      expect(mesh.web.chainVersion(), label).toBe(good);
      const refused = mesh.webLogs.entries.filter((e) => e.event === 'bundle-refused').at(-1);
      expect(refused, label).toMatchObject({ code, keeping: good });
      expect(String(refused?.reason).length, label).toBeGreaterThan(10);
    }
    const text = await metricsOf(mesh.web.addresses().admin.port);
    expect(text).toMatch(/meshc_bundle_refusals_total\{code="BUNDLE_UNSIGNED"\} 1/);
    expect(text).toMatch(/meshc_bundle_refusals_total\{code="BUNDLE_SIGNATURE"\} 3/);
    expect(text).toMatch(/meshc_bundle_refusals_total\{code="BUNDLE_DIGEST"\} 1/);
    expect(text).toMatch(/meshc_bundle_refusals_total\{code="BUNDLE_ABI"\} 1/);
    expect(await seenFilters()).toEqual(['alpha']);
  });
});

describe('hot reload', () => {
  it('100 reloads during a steady load: zero failed requests, both chains served, old instances released', async () => {
    const bundles = [
      makeTestBundle([{ name: 'alpha', wasm: probe }], trusted.privateKey),
      makeTestBundle([{ name: 'beta', wasm: probe }, { name: 'gamma', wasm: probe, configuration: 'gamma' }], trusted.privateKey),
    ];
    let loading = true;
    let issued = 0;
    let completed = 0;
    let failures = 0;
    const seen = { alpha: 0, beta: 0 };
    const deadline = Date.now() + 60_000;
    const worker = async () => {
      while (loading && issued < 20_000 && Date.now() < deadline) {
        issued++;
        const res = await request(outbound(), { headers: { host: 'catalog' } }).catch(() => undefined);
        completed++;
        if (res?.status !== 200) {
          failures++;
          continue;
        }
        const h = (JSON.parse(res.body) as { headers: Record<string, string> }).headers;
        if (h['x-seen-alpha']?.startsWith('yes')) seen.alpha++;
        if (h['x-seen-beta']?.startsWith('yes')) seen.beta++;
      }
    };
    const workers = Array.from({ length: 6 }, worker);
    let reloads = 0;
    while (reloads < 100 && Date.now() < deadline) {
      const b = bundles[reloads % 2]!;
      await mesh.web.applyBundle(b);
      await mesh.catalog.applyBundle(b);
      reloads++;
      // Let traffic through between reloads, so every chain really serves requests.
      const target = completed + 3;
      while (completed < target && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
    }
    loading = false;
    await Promise.all(workers);
    expect(reloads).toBe(100);
    expect(failures).toBe(0);
    expect(completed).toBeGreaterThanOrEqual(300);
    expect(seen.alpha).toBeGreaterThan(0);
    expect(seen.beta).toBeGreaterThan(0);
    // The last bundle (index 1) has two filters; every older instance was released once drained.
    for (const s of [mesh.web, mesh.catalog]) {
      expect(await metricsOf(s.addresses().admin.port)).toMatch(/^meshc_filter_instances 2$/m);
    }
  }, 90_000);

  it('retired chains and their filter instances are garbage collected once drained', async () => {
    v8.setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const env = createHostEnvironment(new Registry(), () => {});
    const refs: Array<WeakRef<FilterChain>> = [];
    // The VMs too: a tick timer or queue notification left registered holds the VM, not the chain.
    const vmRefs: Array<WeakRef<object>> = [];
    let current: FilterChain | undefined;
    for (let i = 0; i < 20; i++) {
      const next = await FilterChain.fromBundle(makeTestBundle([{ name: `f${i % 3}`, wasm: probe }]), env);
      next.acquire();
      current?.retire();
      refs.push(new WeakRef(next));
      vmRefs.push(...next.filters.map((f) => new WeakRef(f.vm)));
      current = next;
      next.release();
    }
    expect(env.host.liveInstances).toBe(1);
    const retiredAlive = () => [...refs.slice(0, -1), ...vmRefs.slice(0, -1)].filter((r) => r.deref() !== undefined);
    for (let i = 0; i < 10 && retiredAlive().length > 0; i++) {
      await new Promise((r) => setTimeout(r, 20));
      gc();
    }
    expect(retiredAlive()).toHaveLength(0);
    expect(refs.at(-1)?.deref()).toBe(current);
    expect(vmRefs.at(-1)?.deref()).toBe(current?.filters[0]?.vm);
    current?.retire();
    expect(env.host.liveInstances).toBe(0);
  });
});
