// Shared pieces of the runtime tests: an echo app on a real socket, an HTTP
// client that can set any Host header, and bundles around fixture filters.
//
// In:  test parameters. Out: running servers, responses, Bundles.
import http, { type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { KeyObject } from 'node:crypto';
import type { FilterSpec } from '../../runtime/chain.ts';
import { StandaloneProxy } from '../../runtime/standalone.ts';
import { BUNDLE_FORMAT, PROXY_WASM_ABI, makeBundle, sha256Hex, type Bundle, type BundleManifest, type FailurePolicy } from '../../protocol/bundle.ts';

export interface EchoApp {
  port: number;
  /** Requests the app received, newest last. */
  seen: Array<{ method: string; url: string; headers: IncomingHttpHeaders; body: string }>;
  close(): Promise<void>;
}

/** An app that answers every request with JSON describing it, and header `x-app: <name>`. */
export async function startEchoApp(name: string): Promise<EchoApp> {
  const seen: EchoApp['seen'] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const entry = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') };
      seen.push(entry);
      if (seen.length > 100) seen.shift();
      const body = JSON.stringify({ app: name, ...entry });
      res.writeHead(200, { 'content-type': 'application/json', 'x-app': name, 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    seen,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

export interface SimpleResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

const clientAgent = new http.Agent({ keepAlive: true, maxSockets: 16 });

/** A plain HTTP request with full control over headers (fetch cannot set Host). */
export function request(
  port: number,
  options: { path?: string; method?: string; headers?: Record<string, string>; body?: string; agent?: http.Agent | false } = {},
): Promise<SimpleResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path: options.path ?? '/',
        method: options.method ?? 'GET',
        headers: options.headers ?? {},
        agent: options.agent === undefined ? clientAgent : options.agent,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.setTimeout(20_000, () => req.destroy(new Error('test client timeout')));
    req.end(options.body);
  });
}

export interface TestFilter {
  name: string;
  wasm: Uint8Array;
  configuration?: string;
  service?: string;
  failurePolicy?: FailurePolicy;
  rootId?: string;
}

/** A bundle around fixture modules, in the order given. */
export function makeTestBundle(filters: TestFilter[], signKey?: KeyObject): Bundle {
  const modules = new Map<string, Uint8Array>();
  const manifest: BundleManifest = {
    format: BUNDLE_FORMAT,
    abiVersion: PROXY_WASM_ABI,
    compiler: { name: 'runtime-tests', version: '0' },
    filters: filters.map((f) => {
      const file = `${f.name}.wasm`;
      modules.set(file, f.wasm);
      return {
        name: f.name,
        file,
        sha256: sha256Hex(f.wasm),
        size: f.wasm.length,
        service: f.service ?? '*',
        rootId: f.rootId ?? f.name,
        configuration: f.configuration ?? f.name,
        failurePolicy: f.failurePolicy ?? 'closed',
        source: { path: `${f.name}.meshpolicy`, sha256: sha256Hex(f.name) },
        rules: {},
      };
    }),
  };
  return makeBundle(manifest, modules, signKey);
}

export function collectLog(): { entries: Array<Record<string, unknown>>; log: (e: Record<string, unknown>) => void } {
  const entries: Array<Record<string, unknown>> = [];
  return { entries, log: (e) => entries.push(e) };
}

export interface StartedStandalone {
  proxy: StandaloneProxy;
  port: number;
  admin: number;
  logs: ReturnType<typeof collectLog>;
}

/** A standalone proxy with an admin port, for service "catalog", running `filters` in front of the app on `appPort`. */
export async function startStandalone(appPort: number, filters: FilterSpec[], logs = collectLog()): Promise<StartedStandalone> {
  const proxy = new StandaloneProxy({
    listen: { host: '127.0.0.1', port: 0 },
    admin: { host: '127.0.0.1', port: 0 },
    upstream: new URL(`http://127.0.0.1:${appPort}`),
    service: 'catalog',
    filters,
    log: logs.log,
  });
  await proxy.start();
  const { listen, admin } = proxy.addresses();
  return { proxy, port: listen.port, admin: admin!.port, logs };
}
