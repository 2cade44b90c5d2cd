// A client sidecar whose outbound router is under test, in front of fake
// "catalog" endpoints: mTLS servers holding catalog's mesh certificate whose
// behaviour a test switches at will (answer, fail with a status, reset,
// hang, delay). The bundle carries a traffic policy and the router fixture
// filter, which copies x-route-version / x-route-id into mesh.route.*.
//
// In:  a ServiceTraffic and endpoint specs. Out: the running pieces, per
//      endpoint hit counts, the sidecar's log, a request helper.
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import asc from 'assemblyscript/asc';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BUNDLE_FORMAT, PROXY_WASM_ABI, makeBundle, sha256Hex, type Bundle } from '../../protocol/bundle.ts';
import type { ServiceTraffic } from '../../protocol/traffic.ts';
import type { EndpointsPayload } from '../../protocol/wire.ts';
import { Sidecar } from '../../runtime/sidecar.ts';
import { request, startEchoApp, type EchoApp, type SimpleResponse } from '../runtime/helpers.ts';
import { createCa, issueLeaf, spiffeIdFor, type TestCa } from '../runtime/pki.ts';

export type Behaviour = { kind: 'ok' } | { kind: 'status'; status: number } | { kind: 'reset' } | { kind: 'hang' } | { kind: 'delay'; ms: number };

export interface FakeEndpoint {
  instance: string;
  version: string;
  port: number;
  behaviour: Behaviour;
  hits: number;
  /** Authorities of the requests received, newest last. */
  authorities: string[];
  /** Request bodies received (latin1), in the order they ended. */
  bodies: string[];
  close(): Promise<void>;
}

async function startEndpoint(ca: TestCa, instance: string, version: string): Promise<FakeEndpoint> {
  const cert = await issueLeaf(ca, 'catalog');
  const sockets = new Set<Socket>();
  const ep: FakeEndpoint = { instance, version, port: 0, behaviour: { kind: 'ok' }, hits: 0, authorities: [], bodies: [], close: async () => {} };
  const server = https.createServer({ cert: cert.certPem, key: cert.keyPem, ca: ca.certPem, requestCert: true, rejectUnauthorized: true }, (req, res) => {
    ep.hits++;
    ep.authorities.push(req.headers.host ?? '');
    const b = ep.behaviour;
    const answer = (): void => {
      // Results a test filter left in request headers (x-r-*) come back as response headers.
      const echoed = Object.fromEntries(Object.entries(req.headers).filter(([k]) => k.startsWith('x-r-')));
      res.writeHead(200, { ...echoed, 'content-type': 'text/plain', 'x-instance': instance });
      res.end(`${instance}\n`);
    };
    const behave = (): void => {
      if (b.kind === 'status') {
        res.writeHead(b.status, { 'x-instance': instance });
        res.end('failing on purpose\n');
      } else if (b.kind === 'reset') req.socket.destroy();
      else if (b.kind === 'hang') return;
      else if (b.kind === 'delay') setTimeout(answer, b.ms);
      else answer();
    };
    // The endpoint reads the whole request before it behaves, as most servers do: an answer that
    // beat the request body would end the exchange (the proxy then closes the connection, as Envoy does).
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      ep.bodies.push(Buffer.concat(chunks).toString('latin1'));
      behave();
    });
  });
  server.on('secureConnection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  ep.port = (server.address() as AddressInfo).port;
  ep.close = () =>
    new Promise<void>((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    });
  return ep;
}

let routerWasm: Promise<Uint8Array> | undefined;

/** Compiles test/fixtures/dataplane/assembly/router.ts once per test process. */
export function buildRouterFilter(): Promise<Uint8Array> {
  routerWasm ??= (async () => {
    const source = fileURLToPath(new URL('../fixtures/dataplane/assembly/router.ts', import.meta.url));
    const outFile = join(await mkdtemp(join(tmpdir(), 'meshc-router-')), 'router.wasm');
    const result = await asc.main([source, '--outFile', outFile, '--optimize', '--runtime', 'incremental'], {});
    if (result.error) throw new Error(`asc failed: ${result.error.message}\n${result.stderr.toString()}`);
    return new Uint8Array(await readFile(outFile));
  })();
  return routerWasm;
}

/** A bundle with one filter for service catalog: the router fixture, or the module given. */
export async function routerBundle(traffic: ServiceTraffic | undefined, filter?: { wasm: Uint8Array; rootId: string }): Promise<Bundle> {
  const wasm = filter?.wasm ?? (await buildRouterFilter());
  const modules = new Map([['router.wasm', wasm]]);
  return makeBundle(
    {
      format: BUNDLE_FORMAT,
      abiVersion: PROXY_WASM_ABI,
      compiler: { name: 'dataplane-tests', version: '0' },
      filters: [
        {
          name: 'catalog-routes',
          file: 'router.wasm',
          sha256: sha256Hex(wasm),
          size: wasm.length,
          service: 'catalog',
          rootId: filter?.rootId ?? 'router',
          configuration: '',
          failurePolicy: 'closed',
          source: { path: 'catalog.meshpolicy', sha256: sha256Hex('catalog') },
          rules: {},
          ...(traffic ? { traffic } : {}),
        },
      ],
    },
    modules,
  );
}

export interface RouterMesh {
  web: Sidecar;
  app: EchoApp;
  endpoints: FakeEndpoint[];
  logs: Array<Record<string, unknown>>;
  send(headers?: Record<string, string>, path?: string): Promise<SimpleResponse & { ms: number }>;
  setTraffic(traffic: ServiceTraffic | undefined): Promise<void>;
  stop(): Promise<void>;
}

export async function startRouterMesh(
  traffic: ServiceTraffic | undefined,
  specs: Array<{ instance: string; version?: string }>,
  upstreamTimeoutMs = 5_000,
  filter?: { wasm: Uint8Array; rootId: string },
): Promise<RouterMesh> {
  const ca = await createCa();
  const app = await startEchoApp('web');
  const logs: Array<Record<string, unknown>> = [];
  const web = new Sidecar({
    node: { instance: 'web-v1-0', service: 'web', version: 'v1', namespace: 'default', serviceAccount: 'web' },
    inbound: { host: '127.0.0.1', port: 0 },
    outbound: { host: '127.0.0.1', port: 0 },
    admin: { host: '127.0.0.1', port: 0 },
    app: { host: '127.0.0.1', port: app.port },
    upstreamTimeoutMs,
    log: (e) => logs.push(e),
  });
  await web.start();
  const endpoints = await Promise.all(specs.map((s) => startEndpoint(ca, s.instance, s.version ?? 'v1')));
  const payload: EndpointsPayload = {
    services: {
      catalog: { endpoints: endpoints.map((e) => ({ instance: e.instance, address: '127.0.0.1', port: e.port, version: e.version, spiffeId: spiffeIdFor('catalog') })) },
    },
  };
  await web.applyBundle(await routerBundle(traffic, filter));
  web.applyEndpoints(payload);
  const cert = await issueLeaf(ca, 'web');
  web.applyCertificate(cert.payload, cert.keyPem);
  const port = web.addresses().outbound.port;
  return {
    web,
    app,
    endpoints,
    logs,
    send: async (headers = {}, path = '/') => {
      const started = performance.now();
      const r = await request(port, { path, headers: { host: 'catalog', ...headers } });
      return { ...r, ms: performance.now() - started };
    },
    setTraffic: async (t) => web.applyBundle(await routerBundle(t)),
    stop: async () => {
      await web.stop();
      await Promise.all(endpoints.map((e) => e.close()));
      await app.close();
    },
  };
}

/** Runs `total` calls with at most `concurrency` at once. */
export async function concurrently<T>(total: number, concurrency: number, call: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < total) {
      const i = next++;
      out[i] = await call(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, total) }, worker));
  return out;
}
