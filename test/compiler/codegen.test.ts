// The compiled module: a valid proxy-wasm v0.2.1 filter, deterministic, and
// deciding as the policy says (driven through compiler/run/host.ts).
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BuildCache, compilePolicies, frontEnd, shutdownCompiler, type SourceFile } from '../../compiler/index.ts';
import { ABI_EXPORTS, emitService, INDEX_THRESHOLD, pathHash } from '../../compiler/codegen/emit.ts';
import { verifyBundle, type Bundle } from '../../protocol/bundle.ts';
import { DecisionHost } from '../../compiler/run/host.ts';
import { Wasm } from './wasm.ts';

const tour: SourceFile = { path: 'tour.meshpolicy', text: readFileSync(new URL('../fixtures/compiler/tour.meshpolicy', import.meta.url), 'utf8') };
const FRONTEND = 'spiffe://mesh.local/ns/default/sa/frontend';

let bundle: Bundle;
let wasm: Uint8Array;

beforeAll(async () => {
  const result = await compilePolicies([tour], { cache: new BuildCache() });
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
    // proxy_on_context_create would do nothing: left out, one Wasm call fewer per request.
    expect(exports).not.toContain('proxy_on_context_create');
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

  it('is byte-identical across builds (no cache involved)', async () => {
    const again = await compilePolicies([tour], { cache: new BuildCache() });
    expect(Buffer.from(again.bundle!.modules.get('catalog.wasm')!).equals(Buffer.from(wasm))).toBe(true);
    expect(Buffer.from(again.bundle!.manifestBytes).equals(Buffer.from(bundle.manifestBytes))).toBe(true);
  });

  it('reports errors instead of a bundle', async () => {
    const result = await compilePolicies([{ path: 'x.meshpolicy', text: 'service a { route r { to v1 0 } }' }]);
    expect(result.bundle).toBeUndefined();
    expect(result.diagnostics.map((d) => d.code)).toEqual(['MP2007']);
  });
});

describe('compiled module decisions (the tour; the corpus covers every construct)', () => {
  it('denies by rule, allows by rule, and denies the rest by default', async () => {
    const host = await DecisionHost.load(wasm);
    const admin = host.decide({ direction: 'inbound', path: '/admin/x', source: FRONTEND });
    expect(admin).toMatchObject({ action: 'local', rule: 'catalog/deny/no-admin', local: { status: 403, body: 'denied by catalog/deny/no-admin\n' } });
    const read = host.decide({ direction: 'inbound', method: 'GET', path: '/items/3?x=1', source: FRONTEND });
    expect(read).toMatchObject({ action: 'continue', rule: 'catalog/allow/frontend-reads' });
    for (const [method, path] of [['POST', '/items'], ['GET', '/itemsX']] as const) {
      expect(host.decide({ direction: 'inbound', method, path, source: FRONTEND }).rule, `${method} ${path}`).toBe('catalog/default-deny');
    }
  });

  it('delays by pausing and resumes from the tick, then stops ticking', async () => {
    const host = await DecisionHost.load(wasm);
    // First random: the 50% delay chance (0 → yes); second: the weighted route.
    host.randoms = [0, 0];
    const slow = host.decide({ direction: 'outbound', path: '/items/slow/1' });
    expect(slow).toMatchObject({ action: 'delayed', delayMs: 250, route: { version: 'v1', id: 'catalog/route/default' } });
    expect(host.tickPeriodMs).toBe(0);
    host.randoms = [0xffff_ffff, 0];
    expect(host.decide({ direction: 'outbound', path: '/items/slow/2' }).action).toBe('continue');
  });

  it('runs all four families in order when the direction is unspecified', async () => {
    const host = await DecisionHost.load(wasm);
    const h = { 'x-chaos': '1' };
    expect(host.decide({ direction: 'unspecified', method: 'GET', path: '/admin', headers: h, source: FRONTEND }).rule).toBe('catalog/deny/no-admin');
    expect(host.decide({ direction: 'unspecified', method: 'GET', path: '/items', headers: h, source: FRONTEND }).rule).toBe('catalog/fault/chaos');
    const routed = host.decide({ direction: 'unspecified', method: 'GET', path: '/items', headers: { 'x-user-group': 'beta' }, source: FRONTEND });
    expect(routed).toMatchObject({ action: 'continue', route: { version: 'v2' } });
  });
});

describe('rule index', () => {
  const emitted = (text: string): string => emitService(frontEnd([{ path: 'l.meshpolicy', text }]).ir!.services[0]!);

  it('indexes families of INDEX_THRESHOLD rules or more by the exact source identity they require', () => {
    const allows = Array.from({ length: INDEX_THRESHOLD }, (_, i) => `allow a${i} { from "spiffe://t/ns/n/sa/s${i}" }`).join(' ');
    expect(emitted('service s { allow a { from "spiffe://t/ns/n/sa/s" } }')).toContain('const ALLOW_ENFORCED = new RuleIndex(null, null, null, null, ALLOW_ENFORCED_ALWAYS);');
    const source = emitted(`service l { ${allows} allow open { when header "x" present } }`);
    expect(source).toContain('const ALLOW_ENFORCED_SOURCE_INDEX = buildIndex(ALLOW_ENFORCED_SOURCE_KEYS, ALLOW_ENFORCED_SOURCE_ENDS, ALLOW_ENFORCED_SOURCE_RULES);');
    expect(source).toContain('const ALLOW_ENFORCED = new RuleIndex(ALLOW_ENFORCED_SOURCE_INDEX, null, null, null, ALLOW_ENFORCED_ALWAYS);');
    // Every keyed rule under its identity; the header rule is tested for everyone.
    expect(source).toContain(`const ALLOW_ENFORCED_ALWAYS: StaticArray<i32> = [${INDEX_THRESHOLD}];`);
  });

  it('keys a rule without an identity by path, else host, else method, and leaves the rest unkeyed', () => {
    const policy = `service l {
      allow p0 { when method == GET and path prefix "/b" }
      allow p1 { when path == "/a" or path prefix "/a/" }
      allow h0 { when host in ["x.example", "y.example"] and method == GET }
      allow m0 { when method in [PUT, POST] }
      allow s0 { from "spiffe://t/ns/n/sa/s" when path prefix "/b" }
      allow r0 { when path prefix "/b" or header "x" present }
      allow r1 { when not path prefix "/c" }
      allow r2 { when path matches "/d/*" }
    }`;
    const source = emitted(policy);
    // Sorted keys ("^" prefix, "=" exact), their FNV-1a hashes as filters/rules.ts computes them, runs in rule order.
    expect(source).toContain('const ALLOW_ENFORCED_PATH_KEYS: StaticArray<string> = ["/a", "/a/", "/b"];');
    expect(source).toContain('const ALLOW_ENFORCED_PATH_EXACT: StaticArray<bool> = [true, false, false];');
    expect(source).toContain(`const ALLOW_ENFORCED_PATH_HASHES: StaticArray<u32> = [${pathHash('/a')}, ${pathHash('/a/')}, ${pathHash('/b')}];`);
    expect(source).toContain('const ALLOW_ENFORCED_PATH_RULES: StaticArray<i32> = [1, 1, 0];');
    expect(source).toContain('const ALLOW_ENFORCED_HOST_KEYS: StaticArray<string> = ["x.example", "y.example"];');
    expect(source).toContain('const ALLOW_ENFORCED_METHOD_KEYS: StaticArray<string> = ["POST", "PUT"];');
    expect(source).toContain('const ALLOW_ENFORCED_SOURCE_KEYS: StaticArray<string> = ["spiffe://t/ns/n/sa/s"];');
    expect(source).toContain('const ALLOW_ENFORCED_ALWAYS: StaticArray<i32> = [5, 6, 7];');
    // The same IR gives the same source.
    expect(emitted(policy)).toBe(source);
  });

  it('hashes path keys with FNV-1a over UTF-16 code units (the corpus relies on this collision)', () => {
    expect(pathHash('/c3rnw')).toBe(pathHash('/ckpba'));
    expect(pathHash('')).toBe(2166136261);
    expect(pathHash('/a')).not.toBe(pathHash('/b'));
  });
});

describe('context callbacks', () => {
  const exportsOf = (text: string): string => {
    const source = emitService(frontEnd([{ path: 'c.meshpolicy', text }]).ir!.services[0]!);
    return source.split('\n').find((l) => l.startsWith('export {'))!;
  };

  it('exports proxy_on_done/proxy_on_delete only when a request can leave state behind', () => {
    const plain = exportsOf('service c { allow a { from "spiffe://t/ns/n/sa/s" } fault f { abort 503 percent 1 } }');
    expect(plain).not.toContain('proxy_on_done');
    expect(plain).not.toContain('proxy_on_delete');
    expect(plain).not.toContain('proxy_on_context_create');
    // A delayed request is cancelled when its stream ends early.
    const delayed = exportsOf('service c { fault f { delay 10ms percent 50 } }');
    expect(delayed).toContain('proxy_on_done');
    expect(delayed).toContain('proxy_on_delete');
    // Response-header changes are kept per context until the response comes.
    const rewrites = exportsOf('service c { route r { to v1 response_header set "cache-control" "no-store" } }');
    expect(rewrites).toContain('proxy_on_response_headers');
    expect(rewrites).toContain('proxy_on_delete');
  });
});

describe('compiled module resources', () => {
  it('keeps rate-limit memory bounded by evicting the oldest keys', async () => {
    const result = await compilePolicies([
      { path: 'k.meshpolicy', text: 'service k { rate_limit per-key { key header "x-api-key" rate 1/h burst 1 } }' },
    ]);
    const host = await DecisionHost.load(result.bundle!.modules.get('k.wasm')!);
    const sizes: number[] = [];
    for (let i = 0; i < 40_000; i++) {
      const r = host.decide({ direction: 'inbound', headers: { 'x-api-key': `key-${i}` } });
      expect(r.local).toBeUndefined();
      if (i % 5000 === 4999) sizes.push(host.memoryBytes());
    }
    // Past the 10,000-key cap the memory stops growing: the collector's high-water
    // mark settles within twice the cap (when exactly depends on the garbage per
    // request), and from 25,000 keys to 40,000 not one page is added.
    expect(sizes[sizes.length - 1]).toBe(sizes[4]);
    expect(sizes[sizes.length - 1]).toBeLessThanOrEqual(8 * 1024 * 1024);
    // The first key was evicted (fresh bucket); a recent one is still limited.
    expect(host.decide({ direction: 'inbound', headers: { 'x-api-key': 'key-0' } }).local).toBeUndefined();
    expect(host.decide({ direction: 'inbound', headers: { 'x-api-key': 'key-39999' } }).local?.status).toBe(429);
  });

  it('compiles again after the worker was shut down', async () => {
    await shutdownCompiler();
    const result = await compilePolicies([{ path: 'a.meshpolicy', text: 'service a { deny d { } }' }]);
    expect(Wasm.validate(result.bundle!.modules.get('a.wasm')!)).toBe(true);
  });
});
