// Atomic chain swap: bundles applied over and over while a bounded stream of
// requests runs through a sidecar pair; not one request may fail. Bundles
// that fail verification or loading are refused and the old chain serves on.
import { generateKeyPairSync } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildFixture } from './build-fixtures.ts';
import { makeTestBundle, request } from './helpers.ts';
import { startMesh, type TestMesh } from './mesh.ts';

let mesh: TestMesh;
let probe: Uint8Array;

beforeAll(async () => {
  probe = await buildFixture('probe');
  mesh = await startMesh(makeTestBundle([{ name: 'alpha', wasm: probe }]));
});

afterAll(async () => {
  await mesh?.stop();
});

const outbound = () => mesh.web.addresses().outbound.port;

async function seenFilters(): Promise<string[]> {
  const res = await request(outbound(), { headers: { host: 'catalog' } });
  expect(res.status).toBe(200);
  const headers = (JSON.parse(res.body) as { headers: Record<string, string> }).headers;
  return Object.keys(headers).filter((h) => h.startsWith('x-seen-') && headers[h]?.startsWith('yes')).map((h) => h.slice(7)).sort();
}

describe('hot swap of the filter chain', () => {
  it('serves 2,000 requests at concurrency 8 while bundles are swapped, with zero failures', async () => {
    const bundles = [
      makeTestBundle([{ name: 'alpha', wasm: probe }]),
      makeTestBundle([{ name: 'beta', wasm: probe }, { name: 'gamma', wasm: probe }]),
    ];
    const total = 2000;
    const deadline = Date.now() + 10_000;
    let issued = 0;
    let failures = 0;
    let sawBeta = 0;
    let sawAlpha = 0;
    const worker = async () => {
      while (issued < total && Date.now() < deadline) {
        issued++;
        const res = await request(outbound(), { headers: { host: 'catalog' } }).catch(() => undefined);
        if (res?.status !== 200) {
          failures++;
          continue;
        }
        const h = (JSON.parse(res.body) as { headers: Record<string, string> }).headers;
        if (h['x-seen-beta']?.startsWith('yes')) sawBeta++;
        if (h['x-seen-alpha']?.startsWith('yes')) sawAlpha++;
      }
    };
    let swaps = 0;
    let swapping = true;
    const swapper = (async () => {
      while (swapping && swaps < 200) {
        const b = bundles[swaps % 2]!;
        await mesh.web.applyBundle(b);
        await mesh.catalog.applyBundle(b);
        swaps++;
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    await Promise.all(Array.from({ length: 8 }, worker));
    swapping = false;
    await swapper;
    expect(issued).toBeGreaterThan(500);
    expect(failures).toBe(0);
    expect(swaps).toBeGreaterThan(4);
    // Both chains really served traffic.
    expect(sawAlpha).toBeGreaterThan(0);
    expect(sawBeta).toBeGreaterThan(0);
  });

  it('refuses a bundle with a bad digest and keeps serving the old chain', async () => {
    await mesh.web.applyBundle(makeTestBundle([{ name: 'alpha', wasm: probe }]));
    const before = mesh.web.chainVersion();
    const bad = makeTestBundle([{ name: 'delta', wasm: probe }]);
    bad.modules.set('delta.wasm', probe.slice(0, probe.length - 1));
    await expect(mesh.web.applyBundle(bad)).rejects.toMatchObject({ code: 'BUNDLE_DIGEST' });
    expect(mesh.web.chainVersion()).toBe(before);
    expect(await seenFilters()).toContain('alpha');
  });

  it('refuses a bundle whose filter refuses its configuration and keeps serving the old chain', async () => {
    const before = mesh.web.chainVersion();
    const refused = makeTestBundle([{ name: 'ok', wasm: probe }, { name: 'picky', wasm: probe, configuration: 'picky:configure-false' }]);
    await expect(mesh.web.applyBundle(refused)).rejects.toMatchObject({ code: 'FILTER_CONFIGURE' });
    expect(mesh.web.chainVersion()).toBe(before);
    const seen = await seenFilters();
    expect(seen).toContain('alpha');
    expect(seen).not.toContain('ok');
    const metrics = (await request(mesh.web.addresses().admin.port, { path: '/metrics' })).body;
    expect(metrics).toMatch(/meshc_chain_reloads_total\{result="refused"\} [1-9]/);
  });

  it('with trusted keys, accepts only bundles signed by one of them', async () => {
    const trusted = generateKeyPairSync('ed25519');
    const other = generateKeyPairSync('ed25519');
    const { Sidecar } = await import('../../runtime/sidecar.ts');
    const s = new Sidecar({
      node: { instance: 'signed-0', service: 'signed', version: 'v1', namespace: 'default', serviceAccount: 'signed' },
      inbound: { host: '127.0.0.1', port: 0 },
      outbound: { host: '127.0.0.1', port: 0 },
      admin: { host: '127.0.0.1', port: 0 },
      app: { host: '127.0.0.1', port: 1 },
      trustedKeys: [trusted.publicKey.export({ type: 'spki', format: 'pem' }).toString()],
      log: () => {},
    });
    await s.start();
    try {
      await expect(s.applyBundle(makeTestBundle([{ name: 'alpha', wasm: probe }]))).rejects.toMatchObject({ code: 'BUNDLE_UNSIGNED' });
      await expect(s.applyBundle(makeTestBundle([{ name: 'alpha', wasm: probe }], other.privateKey))).rejects.toMatchObject({ code: 'BUNDLE_SIGNATURE' });
      expect(s.chainVersion()).toBeUndefined();
      await s.applyBundle(makeTestBundle([{ name: 'alpha', wasm: probe }], trusted.privateKey));
      expect(s.chainVersion()).toMatch(/^[0-9a-f]{16}$/);
    } finally {
      await s.stop();
    }
  });
});
