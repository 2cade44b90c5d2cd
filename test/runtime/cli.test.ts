// `meshc proxy` standalone mode as a real process: two filters in the order
// given (the probe fixture and an unmodified @solo-io/proxy-runtime SDK
// filter), version routing to a second upstream, seen by curl and node http.
// Also the upstream timeout (504) of the same data path, in process.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { StandaloneProxy } from '../../runtime/standalone.ts';
import { parseProxyArgs } from '../../runtime/proxy-args.ts';
import { buildFixture, buildSdkFilter } from './build-fixtures.ts';
import { collectLog, request, startEchoApp, type EchoApp } from './helpers.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
let app: EchoApp;
let appV2: EchoApp;
let child: ChildProcess | undefined;
let listening: { listen: { port: number }; admin: { port: number }; filters: string[] };
/** Every line the proxy printed on stdout, parsed (a line that is not JSON fails the parse). */
const stdoutEntries: Array<Record<string, unknown>> = [];

/** Starts `meshc proxy` and resolves with its {"event":"listening"} line. */
function startProxy(args: string[]): Promise<typeof listening> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [join(root, 'bin/meshc'), 'proxy', ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    child = proc;
    let stderr = '';
    proc.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => reject(new Error(`meshc proxy did not start: ${stderr}`)), 30_000);
    createInterface({ input: proc.stdout }).on('line', (line) => {
      const entry = JSON.parse(line) as { event?: string };
      stdoutEntries.push(entry);
      if (entry.event === 'listening') {
        clearTimeout(timer);
        resolve(entry as typeof listening);
      }
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`meshc proxy exited with ${code}: ${stderr}`));
    });
  });
}

beforeAll(async () => {
  app = await startEchoApp('default');
  appV2 = await startEchoApp('v2');
  const dir = await mkdtemp(join(tmpdir(), 'meshc-cli-'));
  await writeFile(join(dir, 'probe.wasm'), await buildFixture('probe'));
  await writeFile(join(dir, 'add_header.wasm'), await buildSdkFilter());
  listening = await startProxy([
    '--listen', '127.0.0.1:0',
    '--admin', '127.0.0.1:0',
    '--upstream', `http://127.0.0.1:${app.port}`,
    '--service', 'catalog',
    '--filter', join(dir, 'probe.wasm'), '--filter-name', 'first', '--filter-config', 'first',
    '--filter', join(dir, 'add_header.wasm'), '--filter-root-id', 'add_header', '--filter-config', 'from-cli', '--failure-policy', 'open',
    '--filter', join(dir, 'probe.wasm'), '--filter-name', 'third', '--filter-config', 'third',
    '--version-upstream', `v2=http://127.0.0.1:${appV2.port}`,
  ]);
}, 120_000);

afterAll(async () => {
  if (child && child.exitCode === null) {
    const exited = new Promise((r) => child!.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  }
  await app?.close();
  await appV2?.close();
});

describe('meshc proxy (standalone)', () => {
  it('prints where it listens and runs the filters in the order given', async () => {
    expect(listening.filters).toEqual(['first', 'add_header', 'third']);
    const res = await request(listening.listen.port, { headers: { host: 'catalog' } });
    expect(res.status).toBe(200);
    const h = (JSON.parse(res.body) as { headers: Record<string, string> }).headers;
    expect(h['x-seen-first']).toBe('yes');
    expect(h['x-seen-third']).toBe('yes');
    expect(h['x-seen-direction']).toBe('0');
    // Response callbacks in reverse order.
    expect(res.headers['x-chain']).toBe('third,first');
  });

  it('writes one JSON access-log line per request on stdout (the hand-built line)', async () => {
    const res = await request(listening.listen.port, { path: '/access-log?q="quoted"', headers: { host: 'catalog' } });
    expect(res.status).toBe(200);
    const deadline = Date.now() + 5_000;
    const find = () => stdoutEntries.find((e) => e.path === '/access-log?q="quoted"');
    while (!find() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(find()).toMatchObject({ direction: 'standalone', method: 'GET', authority: 'catalog', destination_service: 'catalog', status: 200 });
    expect(typeof find()!.duration_ms).toBe('number');
    expect(find()!.trace_id).toMatch(/^[0-9a-f]{32}$/);
  });

  it('runs the unmodified SDK filter: curl sees the header it adds', async () => {
    const { stdout } = await promisify(execFile)('curl', ['-s', '-D', '-', '-o', '/dev/null', `http://127.0.0.1:${listening.listen.port}/`]);
    expect(stdout).toMatch(/^hello: from-cli\r$/m);
    expect(stdout).toMatch(/^HTTP\/1.1 200/);
  });

  it('routes to the version upstream a filter picks', async () => {
    const res = await request(listening.listen.port, { headers: { host: 'catalog', 'x-test-action': 'route:v2' } });
    expect(res.headers['x-app']).toBe('v2');
    const other = await request(listening.listen.port, { headers: { host: 'catalog', 'x-test-action': 'route:v7' } });
    expect(other.headers['x-app']).toBe('default');
  });

  it('serves /metrics on the admin listener', async () => {
    const metrics = await request(listening.admin.port, { path: '/metrics' });
    expect(metrics.body).toMatch(/istio_requests_total\{reporter="source",source_workload="unknown",destination_service="catalog"/);
  });

  it('rejects bad arguments with a reason', () => {
    const plain = parseProxyArgs(['--listen', '127.0.0.1:0', '--upstream', 'http://x']);
    expect(plain.mode === 'standalone' && plain.filters).toEqual([]);
    expect(() => parseProxyArgs(['--listen', '127.0.0.1:0'])).toThrow(/--upstream/);
    expect(() => parseProxyArgs(['--filter-config', 'x'])).toThrow(/must follow the --filter/);
    expect(() => parseProxyArgs(['--listen', 'nope', '--upstream', 'http://x', '--filter', 'f.wasm'])).toThrow(/HOST:PORT/);
    const parsed = parseProxyArgs(['--listen', '127.0.0.1:0', '--upstream', 'http://x', '--filter', 'a.wasm', '--failure-policy', 'open', '--filter', 'b.wasm']);
    expect(parsed.mode === 'standalone' && parsed.filters.map((f) => [f.file, f.failurePolicy])).toEqual([['a.wasm', 'open'], ['b.wasm', 'closed']]);
  });
});

describe('upstream timeout', () => {
  it('answers 504 upstream-timeout when the upstream does not answer in time', async () => {
    const sockets = new Set<import('node:net').Socket>();
    const hanging = http.createServer(() => {});
    hanging.on('connection', (s) => sockets.add(s));
    await new Promise<void>((r) => hanging.listen(0, '127.0.0.1', r));
    const port = (hanging.address() as import('node:net').AddressInfo).port;
    const logs = collectLog();
    const proxy = new StandaloneProxy({
      listen: { host: '127.0.0.1', port: 0 },
      upstream: new URL(`http://127.0.0.1:${port}`),
      filters: [{ name: 'p', service: '*', rootId: 'p', configuration: 'p', failurePolicy: 'closed', wasm: await buildFixture('probe') }],
      upstreamTimeoutMs: 300,
      log: logs.log,
    });
    await proxy.start();
    try {
      const res = await request(proxy.addresses().listen.port, { headers: { host: 'x' }, agent: false });
      expect(res.status).toBe(504);
      expect(res.headers['x-mesh-reason']).toBe('upstream-timeout');
      // The entry is made once the response has left (write-batch.ts afterBatch), possibly just after the client read it.
      await vi.waitFor(() => expect(logs.entries.some((e) => e.reason === 'upstream-timeout' && e.status === 504)).toBe(true), { timeout: 2000 });
    } finally {
      await proxy.stop();
      for (const s of sockets) s.destroy();
      hanging.close();
    }
  });
});
