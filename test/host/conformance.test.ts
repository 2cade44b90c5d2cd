// Conformance of the proxy-wasm v0.2.1 host, through real requests on a real
// standalone proxy: the raw-ABI fixture (test/fixtures/host/assembly/
// conformance.ts) calls every host function and reports what the host answered
// in request headers the echo app reflects; a filter built with the public
// @solo-io/proxy-runtime SDK, unmodified, runs the same way; a filter that
// exports only `malloc` gets host memory through it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FailurePolicy } from '../../protocol/bundle.ts';
import type { StandaloneProxy } from '../../runtime/standalone.ts';
import { collectLog, request, startEchoApp, startStandalone, type EchoApp } from '../runtime/helpers.ts';
import { hostFixture, sdkFixture } from './fixtures.ts';

let app: EchoApp;
let callee: EchoApp;
const started: StandaloneProxy[] = [];

interface FilterOptions {
  name: string;
  wasm: Uint8Array;
  configuration?: string;
  rootId?: string;
  failurePolicy?: FailurePolicy;
}

async function proxyWith(filters: FilterOptions[], logs = collectLog()) {
  const running = await startStandalone(app.port, filters.map((f) => ({
    name: f.name,
    service: '*',
    rootId: f.rootId ?? f.name,
    configuration: f.configuration ?? `config-of-${f.name}`,
    failurePolicy: f.failurePolicy ?? 'closed',
    wasm: f.wasm,
  })), logs);
  started.push(running.proxy);
  return { port: running.port, admin: running.admin, logs };
}

/** Sends a request with `x-op`; returns the echoed request headers and the response. */
async function run(port: number, ops: string, headers: Record<string, string> = {}, path = '/conformance?q=1') {
  const res = await request(port, { path, headers: { host: 'catalog', 'x-op': ops, ...headers } });
  const echoed = res.status === 200 ? (JSON.parse(res.body.replace(/\+conformance$/, '')) as { headers: Record<string, string>; url: string; body: string }) : undefined;
  return { res, echoed, h: echoed?.headers ?? {} };
}

/** `a=1;b=2` → { a: '1', b: '2' } */
function fields(value: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (value ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0) out[part.slice(0, i)] = part.slice(i + 1);
  }
  return out;
}

function hexText(hex: string | undefined): string {
  return Buffer.from(hex ?? '', 'hex').toString('utf8');
}

function hexInt(hex: string | undefined): bigint {
  return Buffer.from(hex ?? '', 'hex').readBigInt64LE(0);
}

let conformance: Uint8Array;

beforeAll(async () => {
  [conformance] = await Promise.all([hostFixture('conformance'), hostFixture('malloc-only'), sdkFixture('sdk-conformance')]);
  app = await startEchoApp('app');
  callee = await startEchoApp('callout');
});

afterAll(async () => {
  for (const p of started) await p.stop();
  await app?.close();
  await callee?.close();
});

describe('header maps', () => {
  it('get/add/replace/remove/pairs/set-pairs/size on request headers, BadArgument for an unknown map, NotFound for an unavailable one', async () => {
    const { port } = await proxyWith([{ name: 'conf', wasm: conformance }]);
    const { h } = await run(port, 'maps', { 'x-gone': 'bye' });
    const r = fields(h['x-r-maps']);
    expect(r).toMatchObject({ 'size-matches': 'yes', method: 'GET', missing: '1', 'bad-type': '2', 'call-map': '1', remove: '0', set: '0', multi: 'a,b' });
    expect(Number(r.pairs)).toBeGreaterThan(4);
    expect(h['x-set-by-pairs']).toBe('yes');
    expect(h['x-gone']).toBeUndefined();
  });

  it('response headers and body: callbacks in reverse order can add headers and append to the body', async () => {
    const { port } = await proxyWith([{ name: 'conf', wasm: conformance }]);
    const res = await request(port, { headers: { host: 'catalog' } });
    expect(res.status).toBe(200);
    expect(res.headers['x-conformance']).toBe('response');
    expect(res.body.endsWith('+conformance')).toBe(true);
  });
});

describe('properties', () => {
  it("answers Envoy's attribute names with Envoy's encodings, NUL-separated paths, and NotFound otherwise", async () => {
    const { port } = await proxyWith([{ name: 'conf', wasm: conformance }]);
    const names = [
      'request.path', 'request.url_path', 'request.query', 'request.method', 'request.host', 'request.scheme', 'request.protocol',
      'request.id', 'request.useragent', 'request.headers.x-custom', 'request.time', 'request.size', 'source.address', 'source.port',
      'destination.port', 'destination.service', 'listener_direction', 'plugin_name', 'plugin_root_id', 'plugin_vm_id', 'no.such.thing',
    ];
    const { h } = await run(port, 'props,set-prop', { 'x-props': names.join(','), 'x-custom': 'custom!', 'user-agent': 'conformance-test' }, '/items/7?color=blue');
    const p = (n: string) => h[`x-r-prop-${n}`];
    expect(hexText(p('request.path'))).toBe('/items/7?color=blue');
    expect(hexText(p('request.url_path'))).toBe('/items/7');
    expect(hexText(p('request.query'))).toBe('color=blue');
    expect(hexText(p('request.method'))).toBe('GET');
    expect(hexText(p('request.host'))).toBe('catalog');
    expect(hexText(p('request.scheme'))).toBe('http');
    expect(hexText(p('request.protocol'))).toBe('HTTP/1.1');
    expect(hexText(p('request.id'))).toMatch(/^[0-9a-f-]{36}$/);
    expect(hexText(p('request.useragent'))).toBe('conformance-test');
    expect(hexText(p('request.headers.x-custom'))).toBe('custom!');
    const nowNs = BigInt(Date.now()) * 1_000_000n;
    expect(nowNs - hexInt(p('request.time'))).toBeGreaterThanOrEqual(0n);
    expect(nowNs - hexInt(p('request.time'))).toBeLessThan(60_000_000_000n);
    expect(hexInt(p('request.size'))).toBe(0n);
    expect(hexText(p('source.address'))).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(Number(hexInt(p('source.port')))).toBe(Number(hexText(p('source.address')).split(':')[1]));
    expect(Number(hexInt(p('destination.port')))).toBe(port);
    expect(hexText(p('destination.service'))).toBe('catalog');
    expect(hexInt(p('listener_direction'))).toBe(0n);
    expect(hexText(p('plugin_name'))).toBe('conf');
    expect(hexText(p('plugin_root_id'))).toBe('conf');
    expect(hexText(p('plugin_vm_id'))).toBe('conf');
    expect(p('no.such.thing')).toBe('NF');
    // Set with a NUL-separated path, read back with a dotted one.
    expect(h['x-r-set-prop']).toBe('0;custom-value');
  });
});

describe('logging, clocks, randomness and the rest of WASI', () => {
  it('serves the spec WASI calls under wasi_snapshot_preview1 and wasi_unstable, and ENOSYS for the rest', async () => {
    const logs = collectLog();
    const { port } = await proxyWith([{ name: 'conf', wasm: conformance }], logs);
    const { h } = await run(port, 'wasi,log');
    expect(fields(h['x-r-wasi'])).toEqual({
      rt: '0', 'rt-sane': 'yes', mono: '0', 'bad-clock': '58', rand: '0', 'rand-nonzero': 'yes', big: '28',
      stdout: '0', stderr: '0', fd3: '8', env: '0/0', args: '0', prestat: '8', 'path-open': '52', 'proxy-time-sane': 'yes',
    });
    expect(fields(h['x-r-log'])).toEqual({ level: '2', ok: '0', 'bad-level': '2' });
    const filterLogs = logs.entries.filter((e) => e.event === 'filter-log' && e.filter === 'conf');
    expect(filterLogs).toContainEqual(expect.objectContaining({ level: 'info', message: 'wasi stdout line' }));
    expect(filterLogs).toContainEqual(expect.objectContaining({ level: 'error', message: 'wasi stderr line' }));
    expect(filterLogs).toContainEqual(expect.objectContaining({ level: 'warn', message: 'conformance log line' }));
  });
});

describe('shared state', () => {
  it('shared data with compare-and-swap; shared queues with resolve, enqueue, dequeue and proxy_on_queue_ready', async () => {
    const { port } = await proxyWith([{ name: 'conf', wasm: conformance }]);
    const { h } = await run(port, 'shared,queue');
    expect(fields(h['x-r-shared'])).toEqual({ set: '0', get: 'one', 'stale-cas': '8', 'fresh-cas': '0', after: 'two', missing: '1' });
    expect(fields(h['x-r-queue'])).toMatchObject({ resolved: '0', same: 'yes', 'other-vm': '1', enqueue: '0', dequeued: 'queued-item', empty: '7', missing: '1' });
    // The enqueue notified the registering VM (asynchronously): the next request sees it.
    const again = await run(port, 'queue');
    expect(Number(fields(again.h['x-r-queue'])['ready-so-far'])).toBeGreaterThanOrEqual(1);
  });

  it('metrics: counters, gauges and histograms, exported to Prometheus', async () => {
    const { port, admin } = await proxyWith([{ name: 'conf', wasm: conformance }]);
    const { h } = await run(port, 'metrics');
    expect(fields(h['x-r-metrics'])).toEqual({ counter: '3', gauge: '40', 'histogram-get': '2', 'bad-type': '2', 'counter-dec': '2', missing: '1' });
    const text = (await request(admin, { path: '/metrics' })).body;
    expect(text).toMatch(/^wasmcustom_conformance_counter 3$/m);
    expect(text).toMatch(/^wasmcustom_conformance_gauge 40$/m);
    expect(text).toMatch(/^wasmcustom_conformance_histogram_count 1$/m);
  });
});

describe('buffers, foreign functions and unimplemented calls', () => {
  it('answers buffer reads by type and availability, foreign functions by name, and Unimplemented for gRPC and TCP', async () => {
    const { port } = await proxyWith([{ name: 'conf', wasm: conformance, configuration: 'the-plugin-config' }]);
    const { h } = await run(port, 'buffers,foreign,misc');
    expect(fields(h['x-r-buffers'])).toEqual({
      'plugin-config': 'the-plugin-config', len: '17', 'vm-config': '0', 'body-outside': '1', 'bad-type': '2', overflow: '2', 'set-config': '2', 'call-body': '1',
    });
    // Standalone has no mesh identity: mesh_identity is NotFound there (sidecar-node.test.ts covers the value in a connected sidecar).
    expect(fields(h['x-r-foreign'])).toEqual({ 'round-trip': 'yes', smaller: 'yes', identity: 'NF', unknown: '1', garbage: 'err' });
    expect(fields(h['x-r-misc'])).toEqual({ status: '1', 'tcp-continue': '12', 'bad-stream': '2', 'grpc-call': '12', 'bad-context': '2', 'done-not-pending': '1' });
  });

  it('falls back to malloc when proxy_on_memory_allocate is absent', async () => {
    const { port } = await proxyWith([{ name: 'mallocker', wasm: await hostFixture('malloc-only') }]);
    const { h } = await run(port, '', {}, '/via-malloc');
    expect(h['x-malloc-path']).toMatch(/^\/via-malloc \(malloc calls: [1-9]\d*\)$/);
  });

  it('defers on_log/on_delete when proxy_on_done returns false, until proxy_done', async () => {
    const logs = collectLog();
    const { port } = await proxyWith([{ name: 'conf', wasm: conformance }], logs);
    await run(port, 'done-later');
    const deadline = Date.now() + 5_000;
    while (!logs.entries.some((e) => e.event === 'filter-log' && String(e.message).startsWith('on_log ')) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(logs.entries.some((e) => e.event === 'filter-log' && String(e.message).startsWith('on_log '))).toBe(true);
  });
});

describe('local responses and stream control', () => {
  it('sends a local response through the response callbacks of the filters that saw the request', async () => {
    const { port, admin } = await proxyWith([{ name: 'conf', wasm: conformance }]);
    const res = await request(port, { headers: { host: 'catalog', 'x-op': 'local' } });
    expect(res.status).toBe(418);
    expect(res.headers['x-local']).toBe('yes');
    expect(res.headers['x-mesh-rule']).toBe('conformance.teapot');
    // The filter's own response callbacks ran over its local response.
    expect(res.headers['x-conformance']).toBe('response');
    expect(res.body).toBe('short and stout\n+conformance');
    expect((await request(admin, { path: '/metrics' })).body).toMatch(/meshc_local_responses_total\{rule="conformance.teapot"\} 1/);
  });

  it('adds grpc-status to a local response, and answers a gRPC request with HTTP 200 trailers-only', async () => {
    const { port } = await proxyWith([{ name: 'conf', wasm: conformance }]);
    const plain = await request(port, { headers: { host: 'catalog', 'x-op': 'local-grpc' } });
    expect(plain.status).toBe(403);
    expect(plain.headers['grpc-status']).toBe('7');
    expect(plain.headers['grpc-message']).toBe('grpc-denied');
    const grpc = await request(port, { method: 'POST', headers: { host: 'catalog', 'x-op': 'local-grpc', 'content-type': 'application/grpc' } });
    expect(grpc.status).toBe(200);
    expect(grpc.headers['grpc-status']).toBe('7');
    expect(grpc.headers['content-type']).toBe('application/grpc');
  });

  it('proxy_close_stream resets the downstream connection', async () => {
    const { port } = await proxyWith([{ name: 'conf', wasm: conformance }]);
    const err = await request(port, { headers: { host: 'catalog', 'x-op': 'close' }, agent: false }).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(err).toBeInstanceOf(Error);
  });
});

describe('proxy_http_call', () => {
  it('calls host:port, pauses the request, and resumes it from proxy_on_http_call_response with headers, body and status', async () => {
    const { port } = await proxyWith([{ name: 'conf', wasm: conformance }]);
    const { h } = await run(port, 'callout', { 'x-callout': `127.0.0.1:${callee.port}` });
    const r = fields(h['x-r-callout']);
    expect(r).toMatchObject({ root: '1', status: '200', app: 'callout', code: '200', trailers: '0' });
    expect(Number(r.headers)).toBeGreaterThan(1);
    expect(Number(r['body-len'])).toBeGreaterThan(10);
    const seen = callee.seen.find((s) => s.url.startsWith('/callout?ctx='));
    expect(seen).toMatchObject({ method: 'POST', body: 'ping' });
    expect(seen?.headers['x-from']).toBe('conformance');
    expect(seen?.headers.host).toBe('callout.test');
  });

  it('reports a failed call with zero headers, and refuses an unknown upstream with BadArgument', async () => {
    const { port } = await proxyWith([{ name: 'conf', wasm: conformance }]);
    const failed = await run(port, 'callout', { 'x-callout': '127.0.0.1:1' });
    expect(fields(failed.h['x-r-callout'])).toEqual({ root: '1', headers: '0' });
    const unknown = await run(port, 'callout', { 'x-callout': 'not a host port' });
    expect(unknown.h['x-r-callout']).toBe('refused=2');
  });
});

describe('a filter built with the public @solo-io/proxy-runtime SDK', () => {
  it('runs unmodified: properties, metrics, queue notifications, logs, headers both ways', async () => {
    const logs = collectLog();
    const { port, admin } = await proxyWith([{ name: 'sdk', rootId: 'sdk_conformance', wasm: await sdkFixture('sdk-conformance'), configuration: 'sdk-config' }], logs);
    const first = await request(port, { path: '/sdk/one', headers: { host: 'catalog' } });
    expect(first.status).toBe(200);
    expect(first.headers['x-sdk']).toBe('yes');
    const h1 = (JSON.parse(first.body) as { headers: Record<string, string> }).headers;
    expect(h1['x-sdk-path']).toBe('/sdk/one');
    const second = await request(port, { path: '/sdk/two', headers: { host: 'catalog' } });
    expect(Number((JSON.parse(second.body) as { headers: Record<string, string> }).headers['x-sdk-queue-ready'])).toBeGreaterThanOrEqual(1);
    expect((await request(admin, { path: '/metrics' })).body).toMatch(/^wasmcustom_sdk_requests 2$/m);
    expect(logs.entries).toContainEqual(expect.objectContaining({ event: 'filter-log', filter: 'sdk', message: 'sdk configured with sdk-config' }));
    expect(logs.entries).toContainEqual(expect.objectContaining({ event: 'filter-log', filter: 'sdk', message: 'sdk saw /sdk/two' }));
  });

  it('sends local responses with a gRPC status, and makes HTTP calls', async () => {
    const { port } = await proxyWith([{ name: 'sdk', rootId: 'sdk_conformance', wasm: await sdkFixture('sdk-conformance') }]);
    const denied = await request(port, { headers: { host: 'catalog', 'x-sdk-deny': '1' } });
    expect(denied.status).toBe(401);
    expect(denied.body).toBe('denied by the sdk filter\n');
    expect(denied.headers['x-mesh-rule']).toBe('sdk.deny');
    expect(denied.headers['grpc-status']).toBe('16');
    const called = await request(port, { headers: { host: 'catalog', 'x-sdk-callout': `127.0.0.1:${callee.port}` } });
    expect(called.status).toBe(200);
    expect((JSON.parse(called.body) as { headers: Record<string, string> }).headers['x-sdk-callout-status']).toBe('status 200');
    expect(callee.seen.some((s) => s.url === '/sdk-callout')).toBe(true);
  });
});
