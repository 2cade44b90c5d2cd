// The proxy-wasm host through a real listener: the probe fixture filter
// (raw v0.2.1 ABI, AssemblyScript 0.28) exercises header maps, properties,
// local responses, pause/tick/continue, shared data CAS, metrics, logging,
// traps under both failure policies, and refused loads.
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChainError, FilterChain } from '../../runtime/chain.ts';
import type { StandaloneProxy } from '../../runtime/standalone.ts';
import { createHostEnvironment } from '../../runtime/wasm/environment.ts';
import { Registry } from 'prom-client';
import type { FailurePolicy } from '../../protocol/bundle.ts';
import { buildFixture } from './build-fixtures.ts';
import { collectLog, request, startEchoApp, startStandalone, type EchoApp } from './helpers.ts';

let probe: Uint8Array;
let app: EchoApp;
const started: StandaloneProxy[] = [];

async function proxyWith(filters: Array<{ name: string; configuration?: string; failurePolicy?: FailurePolicy }>, logs = collectLog()) {
  const running = await startStandalone(app.port, filters.map((f) => ({
    name: f.name,
    service: '*',
    rootId: f.name,
    configuration: f.configuration ?? f.name,
    failurePolicy: f.failurePolicy ?? 'closed',
    wasm: probe,
  })), logs);
  started.push(running.proxy);
  return running;
}

beforeAll(async () => {
  probe = await buildFixture('probe');
  app = await startEchoApp('app');
});

afterAll(async () => {
  for (const p of started) await p.stop();
  await app.close();
});

describe('proxy-wasm host', () => {
  it('lets filters read, add, replace and remove headers, in chain order', async () => {
    const { port } = await proxyWith([{ name: 'first' }, { name: 'second' }]);
    const res = await request(port, { path: '/items?x=1', headers: { host: 'catalog', 'x-replace': 'orig', 'x-remove': 'gone' } });
    expect(res.status).toBe(200);
    const echoed = JSON.parse(res.body) as { url: string; headers: Record<string, string> };
    expect(echoed.url).toBe('/items?x=1');
    expect(echoed.headers['x-seen-first']).toBe('yes');
    expect(echoed.headers['x-seen-second']).toBe('yes');
    expect(echoed.headers['x-replace']).toBe('orig-replaced-by-first-replaced-by-second');
    expect(echoed.headers['x-remove']).toBeUndefined();
    // Response callbacks run in reverse order.
    expect(res.headers['x-chain']).toBe('second,first');
  });

  it('answers properties and NotFound for unknown ones', async () => {
    const { port } = await proxyWith([{ name: 'props' }]);
    const res = await request(port, { method: 'POST', body: 'x', headers: { host: 'catalog' } });
    const h = (JSON.parse(res.body) as { headers: Record<string, string> }).headers;
    expect(h['x-seen-direction']).toBe('0');
    expect(h['x-seen-service']).toBe('catalog');
    expect(h['x-seen-method']).toBe('POST');
    expect(h['x-seen-plugin']).toBe('props');
    expect(h['x-seen-unknown']).toBe('<none>');
    expect(h['x-seen-principal']).toBe('<none>');
  });

  it('sends a local response with the rule header and logs the rule', async () => {
    const logs = collectLog();
    const { port, admin } = await proxyWith([{ name: 'guard' }, { name: 'after' }], logs);
    const res = await request(port, { headers: { host: 'catalog', 'x-test-action': 'local:guard' } });
    expect(res.status).toBe(403);
    expect(res.body).toBe('denied by guard\n');
    expect(res.headers['x-mesh-rule']).toBe('guard.deny');
    expect(app.seen.at(-1)?.headers['x-test-action']).not.toBe('local:guard');
    const access = logs.entries.find((e) => e.rule === 'guard.deny');
    expect(access?.status).toBe(403);
    const metrics = await request(admin, { path: '/metrics' });
    expect(metrics.body).toMatch(/meshc_local_responses_total\{rule="guard.deny"\} 1/);
  });

  it('pauses a request and resumes it from proxy_on_tick via proxy_set_effective_context', async () => {
    const { port } = await proxyWith([{ name: 'pauser' }]);
    const res = await request(port, { headers: { host: 'catalog', 'x-test-action': 'pause' } });
    expect(res.status).toBe(200);
    expect((JSON.parse(res.body) as { headers: Record<string, string> }).headers['x-resumed-by']).toBe('pauser');
  });

  it('keeps shared data consistent with compare-and-swap and exports filter metrics', async () => {
    const { port, admin } = await proxyWith([{ name: 'counter' }]);
    const before = Number((await request(port, { headers: { host: 'catalog' } })).headers['x-count-counter']);
    const results = await Promise.all(Array.from({ length: 20 }, () => request(port, { headers: { host: 'catalog' } })));
    const counts = results.map((r) => Number(r.headers['x-count-counter'])).sort((a, b) => a - b);
    // Every increment landed exactly once: the values are consecutive.
    expect(counts).toEqual(Array.from({ length: 20 }, (_, i) => before + 1 + i));
    expect(Number(results[0]!.headers['x-metric-counter'])).toBeGreaterThanOrEqual(2);
    const metrics = await request(admin, { path: '/metrics' });
    expect(metrics.body).toMatch(/wasmcustom_probe_requests_counter 21/);
  });

  it('routes filter logs to the log', async () => {
    const logs = collectLog();
    const { port } = await proxyWith([{ name: 'talker' }], logs);
    await request(port, { path: '/hello', headers: { host: 'catalog' } });
    expect(logs.entries.some((e) => e.event === 'filter-log' && e.filter === 'talker' && e.message === 'talker saw /hello')).toBe(true);
    expect(logs.entries.some((e) => e.event === 'filter-log' && e.message === 'configured talker')).toBe(true);
  });

  it('fails closed on a trap: 503 naming the filter, and it stays failed until the next bundle', async () => {
    const logs = collectLog();
    const { port, admin } = await proxyWith([{ name: 'fragile' }], logs);
    const res = await request(port, { headers: { host: 'catalog', 'x-test-action': 'trap' } });
    expect(res.status).toBe(503);
    expect(res.headers['x-mesh-reason']).toBe('filter-failed');
    expect(res.headers['x-mesh-filter']).toBe('fragile');
    // Closed means closed: a well-formed request is refused too, and nothing was replaced.
    const later = await request(port, { headers: { host: 'catalog' } });
    expect(later.status).toBe(503);
    expect(later.headers['x-mesh-filter']).toBe('fragile');
    expect(logs.entries.some((e) => e.event === 'filter-vm-replaced')).toBe(false);
    expect(logs.entries.some((e) => e.event === 'filter-trap' && e.filter === 'fragile' && e.cause === 'trap')).toBe(true);
    const metrics = (await request(admin, { path: '/metrics' })).body;
    expect(metrics).toMatch(/meshc_filter_failures_total\{filter="fragile",policy="closed"\} 2/);
    expect(metrics).toMatch(/meshc_filter_traps_total\{filter="fragile",cause="trap"\} 1/);
  });

  it('reloads on a trap: the request that trapped fails, the next one runs on a fresh instance', async () => {
    const logs = collectLog();
    const { port, admin } = await proxyWith([{ name: 'phoenix', failurePolicy: 'reload' }], logs);
    const res = await request(port, { headers: { host: 'catalog', 'x-test-action': 'trap' } });
    expect(res.status).toBe(503);
    expect(res.headers['x-mesh-filter']).toBe('phoenix');
    // No polling: a request arriving while the replacement is built waits for it.
    const next = await request(port, { headers: { host: 'catalog' } });
    expect(next.status).toBe(200);
    expect((JSON.parse(next.body) as { headers: Record<string, string> }).headers['x-seen-phoenix']).toBe('yes');
    expect(logs.entries.some((e) => e.event === 'filter-vm-replaced' && e.filter === 'phoenix')).toBe(true);
    const metrics = (await request(admin, { path: '/metrics' })).body;
    expect(metrics).toMatch(/meshc_filter_instance_reloads_total\{filter="phoenix",result="ok"\} 1/);
    expect(metrics).toMatch(/meshc_filter_failures_total\{filter="phoenix",policy="reload"\} 1/);
  });

  it('fails open on a trap: the filter is bypassed, for that request and later ones, and each bypass is counted', async () => {
    const { port, admin } = await proxyWith([{ name: 'lenient', failurePolicy: 'open' }, { name: 'strict' }]);
    const attempts: Array<Record<string, string>> = [{ host: 'catalog', 'x-test-action': 'trap:lenient' }, { host: 'catalog' }];
    for (const headers of attempts) {
      const res = await request(port, { headers });
      expect(res.status).toBe(200);
      const h = (JSON.parse(res.body) as { headers: Record<string, string> }).headers;
      expect(h['x-seen-lenient']).toBeUndefined();
      expect(h['x-seen-strict']).toBe('yes');
    }
    const metrics = (await request(admin, { path: '/metrics' })).body;
    expect(metrics).toMatch(/meshc_filter_bypassed_total\{filter="lenient"\} 2/);
  });

  it('refuses a module whose proxy_on_configure returns false or traps, and a module without the ABI marker', async () => {
    const env = createHostEnvironment(new Registry(), () => {});
    const spec = { name: 'bad', service: '*', rootId: 'bad', failurePolicy: 'closed' as const, wasm: probe };
    await expect(FilterChain.fromSpecs([{ ...spec, configuration: 'bad:configure-false' }], env, 'v')).rejects.toMatchObject({
      code: 'FILTER_CONFIGURE',
    });
    await expect(FilterChain.fromSpecs([{ ...spec, configuration: 'bad:trap-configure' }], env, 'v')).rejects.toMatchObject({
      code: 'FILTER_LOAD_TRAP',
    });
    // A minimal valid module that is not a proxy-wasm filter.
    const empty = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]);
    const err = await FilterChain.fromSpecs([{ ...spec, configuration: '', wasm: empty }], env, 'v').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ChainError);
    expect((err as ChainError).code).toBe('FILTER_ABI');
    expect((err as ChainError).message).toMatch(/proxy_abi_version_0_2_1/);
  });
});

describe('request bodies', () => {
  it('buffers a chunked body for a filter that pauses until the end, and forwards what it wrote', async () => {
    const { port } = await proxyWith([{ name: 'wrapper', configuration: 'wrapper:wrap-body' }]);
    const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/upload', headers: { host: 'catalog' } }, (r) => {
        const chunks: Buffer[] = [];
        r.on('data', (c: Buffer) => chunks.push(c));
        r.on('end', () => resolve({ status: r.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      });
      req.on('error', reject);
      req.write('first-');
      setTimeout(() => req.end('second'), 20);
    });
    expect(res.status).toBe(200);
    expect((JSON.parse(res.body) as { body: string }).body).toBe('[first-second]');
  });

  it('streams bodies through unchanged when no filter reads them', async () => {
    const { port } = await proxyWith([{ name: 'plain' }]);
    const payload = 'x'.repeat(200_000);
    const res = await request(port, { method: 'PUT', body: payload, headers: { host: 'catalog', 'content-length': String(payload.length) } });
    expect((JSON.parse(res.body) as { body: string }).body).toBe(payload);
  });
});
