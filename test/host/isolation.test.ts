// Isolation of filters: an endless loop runs out of fuel, a memory bomb hits
// its cap, both end in the filter's failure policy while the proxy keeps
// serving; a module larger than its cap is refused at load; dry-run filters
// decide without enforcing; trailers reach the trailer callbacks.
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FailurePolicy } from '../../protocol/bundle.ts';
import { FilterChain } from '../../runtime/chain.ts';
import { FilterRun } from '../../runtime/filter-run.ts';
import type { StandaloneProxy } from '../../runtime/standalone.ts';
import { createHostEnvironment } from '../../runtime/wasm/environment.ts';
import type { FilterLimits } from '../../runtime/wasm/limits.ts';
import { HttpStream } from '../../runtime/wasm/stream.ts';
import { collectLog, request, startEchoApp, startStandalone, type EchoApp } from '../runtime/helpers.ts';
import { hostFixture } from './fixtures.ts';

let app: EchoApp;
let conformance: Uint8Array;
const started: StandaloneProxy[] = [];

interface Options {
  name: string;
  failurePolicy?: FailurePolicy;
  dryRun?: boolean;
  limits?: Partial<FilterLimits>;
}

async function proxyWith(filters: Options[], logs = collectLog()) {
  const running = await startStandalone(app.port, filters.map((f) => ({
    name: f.name,
    service: '*',
    rootId: f.name,
    configuration: '',
    failurePolicy: f.failurePolicy ?? 'closed',
    wasm: conformance,
    ...(f.dryRun ? { dryRun: true } : {}),
    ...(f.limits ? { limits: f.limits } : {}),
  })), logs);
  started.push(running.proxy);
  return { port: running.port, admin: running.admin, logs };
}

const metrics = async (admin: number): Promise<string> => (await request(admin, { path: '/metrics' })).body;

beforeAll(async () => {
  conformance = await hostFixture('conformance');
  app = await startEchoApp('app');
});

afterAll(async () => {
  for (const p of started) await p.stop();
  await app?.close();
});

describe('resource limits', () => {
  it('stops an endless loop when its fuel runs out: 503 naming the filter, counted, and the proxy keeps serving', async () => {
    const logs = collectLog();
    const { port, admin } = await proxyWith([{ name: 'spinner', failurePolicy: 'reload', limits: { fuelPerCallback: 2_000_000 } }], logs);
    const res = await request(port, { headers: { host: 'catalog', 'x-op': 'loop' } });
    expect(res.status).toBe(503);
    expect(res.headers['x-mesh-filter']).toBe('spinner');
    expect(logs.entries).toContainEqual(expect.objectContaining({ event: 'filter-trap', filter: 'spinner', cause: 'fuel' }));
    expect(await metrics(admin)).toMatch(/meshc_filter_traps_total\{filter="spinner",cause="fuel"\} 1/);
    // Reload policy: the next request runs on a fresh instance.
    expect((await request(port, { headers: { host: 'catalog' } })).status).toBe(200);
  });

  it('the default fuel also ends an endless loop, and fail-open lets the request through without the filter', async () => {
    const { port, admin } = await proxyWith([{ name: 'spinner', failurePolicy: 'open' }]);
    const res = await request(port, { headers: { host: 'catalog', 'x-op': 'loop' } });
    expect(res.status).toBe(200);
    const text = await metrics(admin);
    expect(text).toMatch(/meshc_filter_traps_total\{filter="spinner",cause="fuel"\} 1/);
    expect(text).toMatch(/meshc_filter_bypassed_total\{filter="spinner"\} 1/);
  });

  it('ends a memory bomb at the memory cap, not in an out-of-memory sidecar', async () => {
    const logs = collectLog();
    const { port, admin } = await proxyWith([{ name: 'bomb', failurePolicy: 'reload', limits: { memoryMaxBytes: 16 * 1024 * 1024 } }], logs);
    const res = await request(port, { headers: { host: 'catalog', 'x-op': 'bomb' } });
    expect(res.status).toBe(503);
    expect(res.headers['x-mesh-filter']).toBe('bomb');
    expect(logs.entries).toContainEqual(expect.objectContaining({ event: 'filter-trap', filter: 'bomb', cause: 'memory' }));
    expect(await metrics(admin)).toMatch(/meshc_filter_traps_total\{filter="bomb",cause="memory"\} 1/);
    expect((await request(port, { headers: { host: 'catalog' } })).status).toBe(200);
    // One live instance: the bombed one was released when its successor took over.
    expect(await metrics(admin)).toMatch(/^meshc_filter_instances 1$/m);
  });

  it('refuses at load a module whose initial memory is over its cap', async () => {
    const env = createHostEnvironment(new Registry(), () => {});
    const spec = { name: 'big', service: '*', rootId: 'big', configuration: '', failurePolicy: 'closed' as const, wasm: conformance, limits: { memoryMaxBytes: 0 } };
    await expect(FilterChain.fromSpecs([spec], env, 'v')).rejects.toMatchObject({ code: 'FILTER_MEMORY' });
  });
});

describe('dry-run', () => {
  it('logs and counts a local response with its rule instead of sending it', async () => {
    const logs = collectLog();
    const { port, admin } = await proxyWith([{ name: 'shadow', dryRun: true }], logs);
    const res = await request(port, { headers: { host: 'catalog', 'x-op': 'local' } });
    expect(res.status).toBe(200);
    expect((JSON.parse(res.body.replace(/\+conformance$/, '')) as { app: string }).app).toBe('app');
    expect(logs.entries).toContainEqual(
      expect.objectContaining({ event: 'dry-run', filter: 'shadow', decision: 'local-response', rule: 'conformance.teapot', status: 418 }),
    );
    const text = await metrics(admin);
    expect(text).toMatch(/meshc_dry_run_decisions_total\{filter="shadow",rule="conformance.teapot"\} 1/);
    expect(text).not.toMatch(/meshc_local_responses_total\{rule="conformance.teapot"\}/);
  });

  it('never lets a dry-run filter fail a request, whatever its failure policy', async () => {
    const { port, admin } = await proxyWith([{ name: 'shadow', dryRun: true, failurePolicy: 'closed', limits: { fuelPerCallback: 1_000_000 } }]);
    expect((await request(port, { headers: { host: 'catalog', 'x-op': 'loop' } })).status).toBe(200);
    expect(await metrics(admin)).toMatch(/meshc_filter_bypassed_total\{filter="shadow"\} 1/);
  });
});

describe('trailers', () => {
  it('gives request trailers to proxy_on_request_trailers and response trailers to proxy_on_response_trailers, which may change them', async () => {
    const env = createHostEnvironment(new Registry(), () => {});
    const chain = await FilterChain.fromSpecs(
      [{ name: 'conf', service: '*', rootId: 'conf', configuration: '', failurePolicy: 'closed', wasm: conformance }],
      env,
      'v',
    );
    const facts = {
      direction: 0, sourcePrincipal: '', sourceAddress: '127.0.0.1', sourcePort: 1, destinationAddress: '127.0.0.1', destinationPort: 2,
      destinationService: 'svc', peerUriSan: '', requestId: 'r', scheme: 'http', protocol: 'HTTP/1.1',
    };
    const stream = new HttpStream(facts, [[':method', 'POST'], [':path', '/t'], [':authority', 'svc'], [':scheme', 'http']]);
    chain.acquire();
    const run = new FilterRun(chain, 'svc', stream, { onFilterFailure: () => {} });
    expect((await run.requestHeaders(false)).kind).toBe('continue');
    expect((await run.requestTrailers([['grpc-timeout', '1S'], ['x-client', 'a']])).kind).toBe('continue');
    expect(stream.requestTrailers).toEqual([['grpc-timeout', '1S'], ['x-client', 'a'], ['x-trailer-seen', '2']]);
    stream.responseHeaders = [[':status', '200']];
    expect((await run.responseHeaders(false)).kind).toBe('continue');
    expect((await run.responseTrailers([['grpc-status', '0']])).kind).toBe('continue');
    expect(stream.responseTrailers).toEqual([['grpc-status', '0'], ['x-response-trailer-seen', '1']]);
    run.finish();
    chain.release();
    chain.retire();
    expect(env.host.liveInstances).toBe(0);
  });
});
