// The compiled module: a valid proxy-wasm v0.2.1 filter, deterministic, and
// deciding as the policy says (driven through a scripted host, see fake-host.ts).
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compilePolicies, shutdownCompiler, type SourceFile } from '../../compiler/index.ts';
import { ABI_EXPORTS } from '../../compiler/codegen/emit.ts';
import { verifyBundle, type Bundle } from '../../protocol/bundle.ts';
import { FakeHost } from './fake-host.ts';
import { Wasm } from './wasm.ts';

const tour: SourceFile = { path: 'tour.meshpolicy', text: readFileSync(new URL('../fixtures/compiler/tour.meshpolicy', import.meta.url), 'utf8') };
const INBOUND = 1;
const OUTBOUND = 2;
const FRONTEND = 'spiffe://mesh.local/ns/default/sa/frontend';

let bundle: Bundle;
let wasm: Uint8Array;

beforeAll(async () => {
  const result = await compilePolicies([tour]);
  expect(result.diagnostics).toEqual([]);
  bundle = result.bundle!;
  wasm = bundle.modules.get('catalog.wasm')!;
});

afterAll(async () => {
  await shutdownCompiler();
});

describe('compiled module shape', () => {
  it('is a valid proxy-wasm v0.2.1 module importing only env and wasi_snapshot_preview1', () => {
    expect(Wasm.validate(wasm)).toBe(true);
    const module = new Wasm.Module(wasm);
    const exports = Wasm.Module.exports(module).map((e) => e.name);
    for (const name of [...ABI_EXPORTS, 'memory']) expect(exports).toContain(name);
    // Header-only policies leave body callbacks out, so bodies stream untouched.
    expect(exports).not.toContain('proxy_on_response_body');
    const imports = Wasm.Module.imports(module);
    for (const i of imports) expect(['env', 'wasi_snapshot_preview1']).toContain(i.module);
    const names = imports.map((i) => i.name);
    expect(names).not.toContain('abort');
    expect(names).not.toContain('trace');
    expect(names).not.toContain('seed');
    for (const i of imports) if (i.module === 'env') expect(i.name).toMatch(/^proxy_/);
  });

  it('writes a manifest that verifies, one filter per service sorted by name', async () => {
    const result = await compilePolicies([
      tour,
      { path: 'b.meshpolicy', text: 'service aardvark { deny all { when path prefix "/" } }' },
    ]);
    const b = result.bundle!;
    verifyBundle(b);
    expect(b.manifest.filters.map((f) => [f.name, f.file, f.service, f.rootId, f.failurePolicy])).toEqual([
      ['aardvark', 'aardvark.wasm', 'aardvark', 'meshc', 'closed'],
      ['catalog', 'catalog.wasm', 'catalog', 'meshc', 'closed'],
    ]);
    const catalog = b.manifest.filters[1]!;
    expect(catalog.source.path).toBe('tour.meshpolicy');
    expect(Object.keys(catalog.rules)).toContain('catalog/default-deny');
    expect(catalog.rules['catalog/deny/no-admin']).toMatchObject({ file: 'tour.meshpolicy', line: 30, col: 3 });
  });

  it('is byte-identical across builds', async () => {
    const again = await compilePolicies([tour]);
    expect(Buffer.from(again.bundle!.modules.get('catalog.wasm')!).equals(Buffer.from(wasm))).toBe(true);
    expect(Buffer.from(again.bundle!.manifestBytes).equals(Buffer.from(bundle.manifestBytes))).toBe(true);
  });

  it('reports errors instead of a bundle', async () => {
    const result = await compilePolicies([{ path: 'x.meshpolicy', text: 'service a { route r { to v1 0 } }' }]);
    expect(result.bundle).toBeUndefined();
    expect(result.diagnostics.map((d) => d.code)).toEqual(['MP2007']);
  });
});

describe('compiled module decisions (inbound: authorization, rate limits)', () => {
  it('denies by rule, allows by rule, and denies the rest by default', async () => {
    const host = await FakeHost.load(wasm);
    const admin = host.request({ direction: INBOUND, path: '/admin/x', source: FRONTEND });
    expect(admin.action).toBe(1);
    expect(admin.local).toMatchObject({ status: 403, details: 'catalog/deny/no-admin', body: 'denied by catalog/deny/no-admin\n' });
    expect(admin.local!.headers['x-mesh-rule']).toBe('catalog/deny/no-admin');
    host.finish(admin.contextId);

    const read = host.request({ direction: INBOUND, method: 'GET', path: '/items/3?x=1', source: FRONTEND });
    expect(read).toMatchObject({ action: 0 });
    expect(read.local).toBeUndefined();
    host.finish(read.contextId);

    for (const [method, path] of [['POST', '/items'], ['GET', '/itemsX']] as const) {
      const r = host.request({ direction: INBOUND, method, path, source: FRONTEND });
      expect(r.local?.headers['x-mesh-rule'], `${method} ${path}`).toBe('catalog/default-deny');
      host.finish(r.contextId);
    }
  });

  it('matches SPIFFE globs within one segment', async () => {
    const host = await FakeHost.load(wasm);
    const ok = host.request({ direction: INBOUND, path: '/other', source: 'spiffe://mesh.local/ns/prod/sa/catalog' });
    expect(ok.local).toBeUndefined();
    const deep = host.request({ direction: INBOUND, path: '/other', source: 'spiffe://mesh.local/ns/a/b/sa/catalog' });
    expect(deep.local?.status).toBe(403);
  });

  it('rate-limits per source with a token bucket and retry-after', async () => {
    const host = await FakeHost.load(wasm);
    const ask = (source: string) => {
      const r = host.request({ direction: INBOUND, method: 'GET', path: '/items', source });
      host.finish(r.contextId);
      return r;
    };
    for (let i = 0; i < 20; i++) expect(ask(FRONTEND).local, `request ${i}`).toBeUndefined();
    const limited = ask(FRONTEND);
    expect(limited.local).toMatchObject({ status: 429, details: 'catalog/rate_limit/per-source' });
    expect(limited.local!.headers['retry-after']).toBe('1');
    // Another source has its own bucket.
    expect(ask('spiffe://mesh.local/ns/x/sa/catalog').local).toBeUndefined();
    // 100/s refills 5 tokens in 50 ms.
    host.nowNs += 50_000_000n;
    for (let i = 0; i < 5; i++) expect(ask(FRONTEND).local).toBeUndefined();
    expect(ask(FRONTEND).local?.status).toBe(429);
  });

  it('does not route or inject faults on inbound', async () => {
    const host = await FakeHost.load(wasm);
    const r = host.request({ direction: INBOUND, path: '/items', source: FRONTEND, headers: { 'x-chaos': '1', 'x-user-group': 'beta' } });
    expect(r).toMatchObject({ action: 0 });
    expect(r.routeVersion).toBeUndefined();
  });
});

describe('compiled module decisions (outbound: faults, routes)', () => {
  it('routes by header first, then by weight', async () => {
    const host = await FakeHost.load(wasm);
    expect(host.request({ direction: OUTBOUND, path: '/', headers: { 'x-user-group': 'beta' } }).routeVersion).toBe('v2');
    host.randoms = [89];
    expect(host.request({ direction: OUTBOUND, path: '/' }).routeVersion).toBe('v1');
    host.randoms = [95];
    expect(host.request({ direction: OUTBOUND, path: '/' }).routeVersion).toBe('v2');
  });

  it('aborts with the fault status and skips authorization', async () => {
    const host = await FakeHost.load(wasm);
    const r = host.request({ direction: OUTBOUND, method: 'GET', path: '/admin', headers: { 'x-chaos': 'yes' } });
    expect(r.local).toMatchObject({ status: 503, details: 'catalog/fault/chaos' });
    const post = host.request({ direction: OUTBOUND, method: 'POST', path: '/admin', headers: { 'x-chaos': 'yes' } });
    expect(post.local).toBeUndefined();
  });

  it('delays by pausing and resumes from the tick, then stops ticking', async () => {
    const host = await FakeHost.load(wasm);
    // First random: the 50% delay chance (0 → yes); second: the weighted route.
    host.randoms = [0, 0];
    const slow = host.request({ direction: OUTBOUND, path: '/items/slow/1' });
    expect(slow.action).toBe(1);
    expect(slow.routeVersion).toBe('v1');
    expect(host.tickPeriodMs).toBeGreaterThan(0);
    host.nowNs += 100_000_000n;
    host.tick();
    expect(host.continued).toEqual([]);
    host.nowNs += 200_000_000n;
    host.tick();
    expect(host.continued).toEqual([slow.contextId]);
    expect(host.tickPeriodMs).toBe(0);
    // Losing the 50% draw: no delay.
    host.randoms = [0xffff_ffff, 0];
    expect(host.request({ direction: OUTBOUND, path: '/items/slow/2' }).action).toBe(0);
  });

  it('runs all four families in order when the direction is unspecified', async () => {
    const host = await FakeHost.load(wasm);
    const denied = host.request({ direction: 0, method: 'GET', path: '/admin', headers: { 'x-chaos': '1' }, source: FRONTEND });
    expect(denied.local?.details).toBe('catalog/deny/no-admin');
    const aborted = host.request({ direction: 0, method: 'GET', path: '/items', headers: { 'x-chaos': '1' }, source: FRONTEND });
    expect(aborted.local?.details).toBe('catalog/fault/chaos');
    const routed = host.request({ direction: 0, method: 'GET', path: '/items', headers: { 'x-user-group': 'beta' }, source: FRONTEND });
    expect(routed).toMatchObject({ action: 0, routeVersion: 'v2' });
  });
});

describe('compiled module resources', () => {
  it('keeps rate-limit memory bounded by evicting the oldest keys', async () => {
    const result = await compilePolicies([
      { path: 'k.meshpolicy', text: 'service k { rate_limit per-key { key header "x-api-key" rate 1/h burst 1 } }' },
    ]);
    const host = await FakeHost.load(result.bundle!.modules.get('k.wasm')!);
    const sizes: number[] = [];
    for (let i = 0; i < 25_000; i++) {
      const r = host.request({ direction: INBOUND, headers: { 'x-api-key': `key-${i}` } });
      expect(r.local).toBeUndefined();
      host.finish(r.contextId);
      if (i % 5000 === 4999) sizes.push(host.memoryBytes());
    }
    // Past the 10,000-key cap the memory stops growing.
    expect(sizes[sizes.length - 1]).toBe(sizes[2]);
    // The first key was evicted (fresh bucket); a recent one is still limited.
    expect(host.request({ direction: INBOUND, headers: { 'x-api-key': 'key-0' } }).local).toBeUndefined();
    expect(host.request({ direction: INBOUND, headers: { 'x-api-key': 'key-24999' } }).local?.status).toBe(429);
  });

  it('compiles again after the worker was shut down', async () => {
    await shutdownCompiler();
    const result = await compilePolicies([{ path: 'a.meshpolicy', text: 'service a { deny d { } }' }]);
    expect(Wasm.validate(result.bundle!.modules.get('a.wasm')!)).toBe(true);
  });
});
