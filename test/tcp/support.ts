// A sidecar pair for the TCP and explicit-mode tests: "web" (the client side,
// with explicit-mode ports) and "catalog" (an HTTP echo app on its main port,
// plus a TCP echo server and a server-first "greeter" on extra app ports), on
// 127.0.0.1 over real mTLS; and small raw TCP clients.
//
// In:  extra SidecarOptions per side. Out: running sidecars, apps, ports, logs.
import net from 'node:net';
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import type { EndpointsPayload } from '../../protocol/wire.ts';
import { Sidecar, type SidecarOptions } from '../../runtime/sidecar.ts';
import { collectLog, makeTestBundle, startEchoApp, type EchoApp } from '../runtime/helpers.ts';
import { nodeInfo, sidecarEndpoint, wirePair } from '../runtime/mesh.ts';
import { createCa, type TestCa } from '../runtime/pki.ts';

export interface TcpServer {
  port: number;
  /** Connections accepted so far. */
  accepted: number;
  close(): Promise<void>;
}

/** Starts a TCP server on 127.0.0.1 (allowHalfOpen) running `onSocket` per connection. */
export async function tcpServer(onSocket: (s: net.Socket) => void): Promise<TcpServer> {
  const sockets = new Set<net.Socket>();
  const out: TcpServer = { port: 0, accepted: 0, close: async () => {} };
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    out.accepted++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    onSocket(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  out.port = (server.address() as net.AddressInfo).port;
  out.close = () =>
    new Promise((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    });
  return out;
}

/** Echoes every byte and ends its side after the client ended (a half-close round trip). */
export const echo = (s: net.Socket): void => {
  s.pipe(s);
};

/** A server-first protocol (SMTP/MySQL style): greets at once, then answers each line. */
export const greeter = (s: net.Socket): void => {
  s.write('220 catalog ready\r\n');
  s.on('data', (d: Buffer) => s.write(`250 got ${d.toString().trim()}\r\n`));
  s.on('end', () => s.end('221 bye\r\n'));
};

export interface TcpMesh {
  ca: TestCa;
  web: Sidecar;
  catalog: Sidecar;
  catalogApp: EchoApp;
  echoServer: TcpServer;
  greeterServer: TcpServer;
  webLogs: ReturnType<typeof collectLog>;
  catalogLogs: ReturnType<typeof collectLog>;
  /** Explicit-mode ports of the web sidecar by name (upstream:catalog, upstream:catalog:PORT, http-proxy). */
  port(name: string): number;
  stop(): Promise<void>;
}

/**
 * `webExtra(echoPort, greeterPort)` gives the web sidecar's options (its
 * upstream ports need the catalog app's extra ports); catalog serves both
 * extra ports to the mesh.
 */
export async function startTcpMesh(webExtra: (echoPort: number, greeterPort: number) => Partial<SidecarOptions>, catalogExtra: Partial<SidecarOptions> = {}): Promise<TcpMesh> {
  const ca = await createCa();
  const webApp = await startEchoApp('web');
  const catalogApp = await startEchoApp('catalog');
  const echoServer = await tcpServer(echo);
  const greeterServer = await tcpServer(greeter);
  const webLogs = collectLog();
  const catalogLogs = collectLog();
  const local = { host: '127.0.0.1', port: 0 };
  const web = new Sidecar({ node: nodeInfo('web'), inbound: local, outbound: local, admin: local, app: { host: '127.0.0.1', port: webApp.port }, log: webLogs.log, ...webExtra(echoServer.port, greeterServer.port) });
  const catalog = new Sidecar({
    node: nodeInfo('catalog'),
    inbound: local,
    outbound: local,
    admin: local,
    app: { host: '127.0.0.1', port: catalogApp.port },
    log: catalogLogs.log,
    ...catalogExtra,
    tcp: { appPorts: [echoServer.port, greeterServer.port], ...catalogExtra.tcp },
  });
  await web.start();
  await catalog.start();
  const endpoints: EndpointsPayload = {
    services: { catalog: { endpoints: [sidecarEndpoint('catalog', catalog)] }, web: { endpoints: [sidecarEndpoint('web', web)] } },
  };
  await wirePair(ca, web, catalog, makeTestBundle([]), endpoints);
  return {
    ca,
    web,
    catalog,
    catalogApp,
    echoServer,
    greeterServer,
    webLogs,
    catalogLogs,
    port: (name) => {
      const a = web.addresses().explicit[name];
      if (!a) throw new Error(`no explicit port ${name}: ${Object.keys(web.addresses().explicit).join(', ')}`);
      return a.port;
    },
    stop: async () => {
      await web.stop();
      await catalog.stop();
      await webApp.close();
      await catalogApp.close();
      await echoServer.close();
      await greeterServer.close();
    },
  };
}

export interface Exchange {
  /** Everything the server side sent, until it closed or ended. */
  received: Buffer;
  /** The far side ended its stream cleanly (FIN), rather than resetting. */
  ended: boolean;
  error?: string;
}

/**
 * Collects what `socket` receives until it closes: every byte, whether the far
 * side ended cleanly (FIN) rather than resetting, and the error (its code) if
 * any. `send` runs once the socket is `ready`; a socket still open after
 * `timeoutMs` is destroyed.
 */
export function collectExchange(socket: net.Socket, ready: 'connect' | 'secureConnect', send: () => unknown, timeoutMs: number): Promise<Exchange> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let ended = false;
    let error: string | undefined;
    const timer = setTimeout(() => socket.destroy(new Error('test client timeout')), timeoutMs);
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.on('end', () => {
      ended = true;
      // A half-open socket (allowHalfOpen) ends its side too.
      socket.end();
    });
    socket.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ received: Buffer.concat(chunks), ended, ...(error ? { error } : {}) });
    });
    socket.once(ready, send);
  });
}

/**
 * Connects to 127.0.0.1:port, writes `payload` in 64 KiB pieces (honouring
 * backpressure), half-closes, and collects the answer until the peer ends.
 */
export function roundTrip(port: number, payload: Buffer, timeoutMs = 20_000): Promise<Exchange> {
  const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  return collectExchange(
    socket,
    'connect',
    async () => {
      for (let off = 0; off < payload.length; off += 65536) {
        if (!socket.write(payload.subarray(off, off + 65536))) await new Promise((r) => socket.once('drain', r));
      }
      socket.end();
    },
    timeoutMs,
  );
}

export function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Runs curl; resolves with its exit code, stdout and stderr (never rejects on a non-zero exit). */
export function curl(args: string[], timeoutMs = 20_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', '--max-time', String(Math.ceil(timeoutMs / 1000)), ...args], { timeout: timeoutMs + 2_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** The value of one Prometheus sample with exactly these labels (0 when absent). */
export function sample(text: string, name: string, labels: Record<string, string>): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{')) continue;
    const body = line.slice(name.length + 1, line.lastIndexOf('}'));
    const got = Object.fromEntries([...body.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.keys(labels).every((k) => got[k] === labels[k]) && Object.keys(got).length === Object.keys(labels).length) {
      return Number(line.slice(line.lastIndexOf(' ') + 1));
    }
  }
  return 0;
}

export async function metricsOf(adminPort: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${adminPort}/metrics`);
  return res.text();
}

/** Polls `check` every 20 ms until it returns true or `ms` pass. */
export async function eventually(check: () => boolean, ms = 5_000): Promise<boolean> {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    if (check()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return check();
}
