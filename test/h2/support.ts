// Pieces of the HTTP/2 and gRPC tests: a sidecar pair (web → catalog) whose
// catalog app is any server the test starts, an h2c app that echoes what it
// saw (and answers with trailers), and a gRPC echo service on @grpc/grpc-js
// with unary, server-streaming, client-streaming and bidi methods (JSON
// messages, so no .proto file is needed).
//
// In:  the catalog app's port, an optional policy text. Out: running pieces.
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { compilePolicies, shutdownCompiler } from '../../compiler/index.ts';
import type { Bundle } from '../../protocol/bundle.ts';
import type { EndpointsPayload } from '../../protocol/wire.ts';
import type { Sidecar, SidecarOptions } from '../../runtime/sidecar.ts';
import { collectLog, makeTestBundle, startEchoApp, type EchoApp } from '../runtime/helpers.ts';
import { newSidecar, sidecarEndpoint, wirePair } from '../runtime/mesh.ts';
import { createCa, type TestCa } from '../runtime/pki.ts';

export interface H2Mesh {
  ca: TestCa;
  web: Sidecar;
  catalog: Sidecar;
  webLogs: ReturnType<typeof collectLog>;
  catalogLogs: ReturnType<typeof collectLog>;
  outbound: number;
  stop(): Promise<void>;
}

export async function policyBundle(policy: string | undefined): Promise<Bundle> {
  if (!policy) return makeTestBundle([]);
  const result = await compilePolicies([{ path: 'catalog.meshpolicy', text: policy }]);
  await shutdownCompiler();
  const errors = result.diagnostics.filter((d) => d.severity === 'error');
  if (errors.length || !result.bundle) throw new Error(`policy does not compile: ${JSON.stringify(errors)}`);
  return result.bundle;
}

/** web's outbound listener → mTLS → catalog's inbound listener → the app on `appPort`. */
export async function startPair(appPort: number, options: { bundle?: Bundle; sidecar?: Partial<SidecarOptions> } = {}): Promise<H2Mesh> {
  const ca = await createCa();
  const webApp: EchoApp = await startEchoApp('web');
  const webLogs = collectLog();
  const catalogLogs = collectLog();
  const web = newSidecar('web', webApp, { log: webLogs.log, ...options.sidecar });
  const catalog = newSidecar('catalog', webApp, { log: catalogLogs.log, app: { host: '127.0.0.1', port: appPort }, ...options.sidecar });
  await web.start();
  await catalog.start();
  const endpoints: EndpointsPayload = { services: { catalog: { endpoints: [sidecarEndpoint('catalog', catalog)] } } };
  await wirePair(ca, web, catalog, options.bundle ?? makeTestBundle([]), endpoints);
  return {
    ca,
    web,
    catalog,
    webLogs,
    catalogLogs,
    outbound: web.addresses().outbound.port,
    stop: async () => {
      await web.stop();
      await catalog.stop();
      await webApp.close();
    },
  };
}

export interface H2App {
  port: number;
  /** Requests seen: method, path, headers (pseudo-headers excluded), body length, trailers. */
  seen: Array<{ method: string; path: string; headers: Record<string, unknown>; bodyLength: number; trailers: Record<string, unknown> }>;
  sessions: number;
  close(): Promise<void>;
}

/** An h2c server: `/trailers` answers with a body and trailers, `/slow/<ms>` after a delay, `/big/<n>` with n bytes; anything else echoes the request as JSON. */
export async function startH2App(): Promise<H2App> {
  const app: H2App = { port: 0, seen: [], sessions: 0, close: async () => {} };
  const server = http2.createServer();
  server.on('session', () => app.sessions++);
  server.on('stream', (stream, headers) => {
    let length = 0;
    let trailers: Record<string, unknown> = {};
    stream.on('data', (c: Buffer) => (length += c.length));
    stream.on('trailers', (t: Record<string, unknown>) => (trailers = t));
    stream.on('end', () => {
      const plain = Object.fromEntries(Object.entries(headers).filter(([k]) => !k.startsWith(':')));
      const entry = { method: String(headers[':method']), path: String(headers[':path']), headers: plain, bodyLength: length, trailers };
      app.seen.push(entry);
      const slow = /^\/slow\/(\d+)/.exec(String(headers[':path']));
      if (slow) {
        setTimeout(() => {
          if (stream.destroyed) return;
          stream.respond({ ':status': 200, 'x-app': 'h2' });
          stream.end('slow');
        }, Number(slow[1]));
        return;
      }
      const big = /^\/big\/(\d+)/.exec(String(headers[':path']));
      if (big) {
        // n bytes in 64 KiB pieces, as fast as the client's window allows.
        stream.respond({ ':status': 200, 'content-type': 'application/octet-stream', 'x-app': 'h2' });
        const block = Buffer.alloc(64 * 1024, 0x61);
        let left = Number(big[1]);
        const more = (): void => {
          while (left > 0 && !stream.destroyed) {
            const piece = block.subarray(0, Math.min(block.length, left));
            left -= piece.length;
            if (!stream.write(piece)) {
              stream.once('drain', more);
              return;
            }
          }
          if (!stream.destroyed) stream.end();
        };
        more();
        return;
      }
      if (headers[':path'] === '/trailers') {
        stream.respond({ ':status': 200, 'content-type': 'text/plain', 'x-app': 'h2' }, { waitForTrailers: true });
        stream.once('wantTrailers', () => stream.sendTrailers({ 'x-checksum': 'abc123' }));
        stream.end('with trailers');
        return;
      }
      stream.respond({ ':status': 200, 'content-type': 'application/json', 'x-app': 'h2' });
      stream.end(JSON.stringify(entry));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  app.port = (server.address() as AddressInfo).port;
  app.close = () => new Promise<void>((r) => server.close(() => r()));
  return app;
}

// --- gRPC ---

type Msg = { text: string; n?: number; ms?: number };
const json = {
  serialize: (m: Msg): Buffer => Buffer.from(JSON.stringify(m)),
  deserialize: (b: Buffer): Msg => JSON.parse(b.toString('utf8')) as Msg,
};

function method(name: string, requestStream: boolean, responseStream: boolean): grpc.MethodDefinition<Msg, Msg> {
  return {
    path: `/mesh.test.Echo/${name}`,
    requestStream,
    responseStream,
    requestSerialize: json.serialize,
    requestDeserialize: json.deserialize,
    responseSerialize: json.serialize,
    responseDeserialize: json.deserialize,
  };
}

/** mesh.test.Echo: Unary (after `ms` if set), ServerStream (n replies, `ms` apart if set), ClientStream (joins), Bidi (echoes each). */
export const ECHO_SERVICE = {
  Unary: method('Unary', false, false),
  ServerStream: method('ServerStream', false, true),
  ClientStream: method('ClientStream', true, false),
  Bidi: method('Bidi', true, true),
} satisfies grpc.ServiceDefinition;

export interface GrpcApp {
  port: number;
  /** Metadata of the last call, as the server saw it. */
  lastMetadata: grpc.Metadata | undefined;
  close(): Promise<void>;
}

export async function startGrpcApp(): Promise<GrpcApp> {
  const app: GrpcApp = { port: 0, lastMetadata: undefined, close: async () => {} };
  const server = new grpc.Server();
  const trailer = (): grpc.Metadata => {
    const m = new grpc.Metadata();
    m.set('x-trailer', 'from-server');
    return m;
  };
  server.addService(ECHO_SERVICE, {
    Unary: (call: grpc.ServerUnaryCall<Msg, Msg>, cb: grpc.sendUnaryData<Msg>) => {
      app.lastMetadata = call.metadata;
      if (call.request.ms) {
        // Nothing (not even the response head) until the reply.
        setTimeout(() => cb(null, { text: `late: ${call.request.text}` }), call.request.ms);
        return;
      }
      const head = new grpc.Metadata();
      head.set('x-head', 'from-server');
      call.sendMetadata(head);
      if (call.request.text === 'fail') {
        cb({ code: grpc.status.NOT_FOUND, details: 'no such thing', metadata: trailer() });
        return;
      }
      cb(null, { text: `echo: ${call.request.text}` }, trailer());
    },
    ServerStream: (call: grpc.ServerWritableStream<Msg, Msg>) => {
      app.lastMetadata = call.metadata;
      const n = call.request.n ?? 3;
      if (call.request.ms) {
        // One message every `ms`.
        let i = 0;
        const next = (): void => {
          if (call.cancelled) return;
          if (i === n) {
            call.end(trailer());
            return;
          }
          call.write({ text: `${call.request.text} ${i}`, n: i });
          i++;
          setTimeout(next, call.request.ms);
        };
        next();
        return;
      }
      for (let i = 0; i < n; i++) call.write({ text: `${call.request.text} ${i}`, n: i });
      call.end(trailer());
    },
    ClientStream: (call: grpc.ServerReadableStream<Msg, Msg>, cb: grpc.sendUnaryData<Msg>) => {
      app.lastMetadata = call.metadata;
      const parts: string[] = [];
      call.on('data', (m: Msg) => parts.push(m.text));
      call.on('end', () => cb(null, { text: parts.join('+'), n: parts.length }, trailer()));
    },
    Bidi: (call: grpc.ServerDuplexStream<Msg, Msg>) => {
      app.lastMetadata = call.metadata;
      call.on('data', (m: Msg) => call.write({ text: `echo: ${m.text}` }));
      call.on('end', () => call.end(trailer()));
    },
  });
  app.port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))));
  app.close = () => new Promise<void>((r) => server.tryShutdown(() => r()));
  return app;
}

/** A generic grpc-js client for mesh.test.Echo at `port`, with `authority` as :authority (the mesh service). */
export function echoClient(port: number, authority = 'catalog'): grpc.Client & Record<keyof typeof ECHO_SERVICE, (...args: unknown[]) => unknown> {
  const Ctor = grpc.makeGenericClientConstructor(ECHO_SERVICE, 'Echo');
  return new Ctor(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { 'grpc.default_authority': authority }) as never;
}

export { grpc, type Msg };
