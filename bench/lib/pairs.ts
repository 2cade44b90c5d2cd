// Two-proxy setups for the data-plane benchmark, each with mutual TLS between
// its two proxies and plain HTTP on both ends (client → A → TLS → B → upstream):
// a haproxy pair, an nginx pair, and a meshc sidecar pair (outbound + inbound
// sidecar processes), all single-threaded, all with keep-alive to the next hop.
//
// In:  the upstream port, a directory for certificates and configs.
// Out: a RunningPair: the client-facing port, the pids to measure, stop().
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { EndpointsPayload } from '../../protocol/wire.ts';
import { createCa, issueLeaf, spiffeIdFor, type IssuedCert, type TestCa } from '../../test/runtime/pki.ts';
import { freePort, nginxConf, waitForPort } from './servers.ts';
import { withChildren } from './procstat.ts';
import { which } from './tools.ts';
import type { SidecarBenchConfig } from './sidecar-main.ts';

export interface RunningPair {
  name: string;
  /** Where the client sends requests (the first proxy). */
  port: number;
  /** Host header the first proxy routes by. */
  host: string;
  /** Processes whose CPU and memory count as the proxies'. */
  pids(): number[];
  stop(): Promise<void>;
}

export interface Pki {
  dir: string;
  ca: TestCa;
  client: IssuedCert;
  server: IssuedCert;
}

/** Two started proxies (`a` in front of `b`) and their temp dir, as a RunningPair; stop ends both and removes the dir. */
export function runningPair(name: string, port: number, a: Child, b: Child, dir: string, pids: () => number[] = () => [a.pid, b.pid]): RunningPair {
  return {
    name,
    port,
    host: 'bench',
    pids,
    stop: async () => {
      await a.stop();
      await b.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export async function makePki(): Promise<Pki> {
  const dir = await mkdtemp(join(tmpdir(), 'meshc-bench-pki-'));
  const ca = await createCa();
  const client = await issueLeaf(ca, 'client');
  const server = await issueLeaf(ca, 'bench');
  await writeFile(join(dir, 'ca.pem'), ca.certPem);
  for (const [name, c] of [['client', client], ['server', server]] as const) {
    await writeFile(join(dir, `${name}.crt`), c.certPem);
    await writeFile(join(dir, `${name}.key`), c.keyPem);
    await writeFile(join(dir, `${name}.pem`), `${c.certPem.trim()}\n${c.keyPem.trim()}\n`);
  }
  return { dir, ca, client, server };
}

/** A benchmark process: its pid (for CPU and RSS) and a stop that waits for it to exit. */
export interface Child {
  pid: number;
  stop(): Promise<void>;
}

/** Starts a process and waits for its port; fails with its stderr if it exits first. */
export function startProcess(cmd: string, args: string[], port: number): Promise<Child> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const exited = new Promise<never>((_, reject) => child.once('exit', (code) => reject(new Error(`${cmd} exited with ${String(code)}: ${stderr}`))));
  return Promise.race([waitForPort(port), exited]).then(() => {
    exited.catch(() => undefined);
    return {
      pid: child.pid ?? -1,
      stop: () => stopProcess(child),
    };
  });
}

/** SIGTERM, then SIGKILL after 5 s; resolves once the process has exited. */
export async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await gone;
  clearTimeout(timer);
}

export async function startHaproxyPair(upstreamPort: number, pki: Pki): Promise<RunningPair> {
  const dir = await mkdtemp(join(tmpdir(), 'meshc-bench-hapair-'));
  const [pa, pb] = [await freePort(), await freePort()];
  const common = `global\n  nbthread 1\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n  option http-keep-alive\n`;
  await writeFile(join(dir, 'b.cfg'), `${common}frontend fe\n  bind 127.0.0.1:${pb} ssl crt ${pki.dir}/server.pem ca-file ${pki.dir}/ca.pem verify required\n  default_backend be\nbackend be\n  http-reuse always\n  server up 127.0.0.1:${upstreamPort}\n`);
  await writeFile(join(dir, 'a.cfg'), `${common}frontend fe\n  bind 127.0.0.1:${pa}\n  default_backend be\nbackend be\n  http-reuse always\n  server b 127.0.0.1:${pb} ssl verify required ca-file ${pki.dir}/ca.pem crt ${pki.dir}/client.pem\n`);
  const bin = which('haproxy') ?? 'haproxy';
  const b = await startProcess(bin, ['-f', join(dir, 'b.cfg'), '-db'], pb);
  const a = await startProcess(bin, ['-f', join(dir, 'a.cfg'), '-db'], pa);
  return runningPair('haproxy pair', pa, a, b, dir);
}

export async function startNginxPair(upstreamPort: number, pki: Pki): Promise<RunningPair> {
  const dir = await mkdtemp(join(tmpdir(), 'meshc-bench-ngpair-'));
  const [pa, pb] = [await freePort(), await freePort()];
  const conf = (name: string, server: string) => nginxConf(dir, name, server);
  // nginx checks the upstream certificate's name when verifying; our certificates carry only a SPIFFE
  // URI, so the A side does not verify B (B still requires A's client certificate).
  await writeFile(join(dir, 'b.conf'), conf('b', `  upstream up { server 127.0.0.1:${upstreamPort}; keepalive 64; }
  server {
    listen 127.0.0.1:${pb} ssl;
    ssl_certificate ${pki.dir}/server.crt;
    ssl_certificate_key ${pki.dir}/server.key;
    ssl_client_certificate ${pki.dir}/ca.pem;
    ssl_verify_client on;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }`));
  await writeFile(join(dir, 'a.conf'), conf('a', `  upstream b { server 127.0.0.1:${pb}; keepalive 64; }
  server {
    listen 127.0.0.1:${pa};
    location / {
      proxy_pass https://b;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_ssl_certificate ${pki.dir}/client.crt;
      proxy_ssl_certificate_key ${pki.dir}/client.key;
      proxy_ssl_session_reuse on;
    }
  }`));
  const bin = which('nginx') ?? 'nginx';
  const b = await startProcess(bin, ['-c', join(dir, 'b.conf'), '-p', dir], pb);
  const a = await startProcess(bin, ['-c', join(dir, 'a.conf'), '-p', dir], pa);
  return runningPair('nginx pair', pa, a, b, dir, () => [...withChildren(a.pid), ...withChildren(b.pid)]);
}

/** The floor: a bare Node.js TLS relay pair (bench/lib/node-relay.ts), the sidecar pair's processes and sockets without HTTP. */
export async function startNodeRelayPair(upstreamPort: number, pki: Pki): Promise<RunningPair> {
  const dir = await mkdtemp(join(tmpdir(), 'meshc-bench-relaypair-'));
  const [pa, pb] = [await freePort(), await freePort()];
  const main = new URL('./node-relay.ts', import.meta.url).pathname;
  const b = await startProcess(process.execPath, [main, 'back', String(pb), String(upstreamPort), pki.dir], pb);
  try {
    const a = await startProcess(process.execPath, [main, 'front', String(pa), String(pb), pki.dir], pa);
    return runningPair('Node TLS relay pair (no HTTP)', pa, a, b, dir);
  } catch (err) {
    await b.stop();
    throw err;
  }
}

export interface SidecarPairSpec {
  /** The inbound sidecar's app. */
  appPort: number;
  /** Versions the inbound sidecar is registered as (the bench policy routes to v1 or v2). */
  versions: string[];
  bundleDir?: string;
  outboundOptions?: SidecarBenchConfig['options'];
  inboundOptions?: SidecarBenchConfig['options'];
  /** A port the outbound sidecar listens on once ready; its outbound listener by default. */
  readyPort?: number;
}

export interface SidecarPairProcesses {
  dir: string;
  /** The outbound sidecar's outbound listener. */
  outboundPort: number;
  /** The outbound ("client") and inbound ("bench") sidecar processes. */
  a: Child;
  b: Child;
}

/** Outbound sidecar ("client") → mTLS → inbound sidecar ("bench") → its app, as two processes; the bundle (if any) runs on both. */
export async function startSidecarProcesses(pki: Pki, spec: SidecarPairSpec): Promise<SidecarPairProcesses> {
  const dir = await mkdtemp(join(tmpdir(), 'meshc-bench-scpair-'));
  const ports = { out: await freePort(), in: await freePort(), adminA: await freePort(), adminB: await freePort(), spare: await freePort() };
  const local = (port: number) => ({ host: '127.0.0.1', port });
  const endpoints: EndpointsPayload = {
    services: {
      bench: {
        endpoints: spec.versions.map((version) => ({ instance: `bench-${version}`, address: '127.0.0.1', port: ports.in, version, spiffeId: spiffeIdFor('bench') })),
      },
    },
  };
  const base = { endpoints, ...(spec.bundleDir ? { bundleDir: spec.bundleDir } : {}) };
  const outbound: SidecarBenchConfig = {
    ...base,
    node: { instance: 'client-0', service: 'client', version: 'v1', namespace: 'default', serviceAccount: 'client' },
    outbound: local(ports.out),
    inbound: local(0),
    app: local(ports.spare),
    admin: local(ports.adminA),
    certificate: pki.client.payload,
    keyPem: pki.client.keyPem,
    ...(spec.outboundOptions ? { options: spec.outboundOptions } : {}),
  };
  const inbound: SidecarBenchConfig = {
    ...base,
    node: { instance: 'bench-v1', service: 'bench', version: 'v1', namespace: 'default', serviceAccount: 'bench' },
    outbound: local(0),
    inbound: local(ports.in),
    app: local(spec.appPort),
    admin: local(ports.adminB),
    certificate: pki.server.payload,
    keyPem: pki.server.keyPem,
    ...(spec.inboundOptions ? { options: spec.inboundOptions } : {}),
  };
  await writeFile(join(dir, 'out.json'), JSON.stringify(outbound));
  await writeFile(join(dir, 'in.json'), JSON.stringify(inbound));
  const main = new URL('./sidecar-main.ts', import.meta.url).pathname;
  // The access log goes to stdout, which is ignored here.
  const b = await startProcess(process.execPath, [main, join(dir, 'in.json')], ports.in);
  try {
    const a = await startProcess(process.execPath, [main, join(dir, 'out.json')], spec.readyPort ?? ports.out);
    return { dir, outboundPort: ports.out, a, b };
  } catch (err) {
    // Nothing else holds the inbound sidecar: stop it rather than leave it running.
    await b.stop();
    throw err;
  }
}

/** The HTTP sidecar pair, as a RunningPair on the outbound sidecar's listener. */
export async function startSidecarPair(upstreamPort: number, pki: Pki, bundleDir: string | undefined, name: string): Promise<RunningPair> {
  const p = await startSidecarProcesses(pki, { appPort: upstreamPort, versions: ['v1', 'v2'], ...(bundleDir ? { bundleDir } : {}) });
  return runningPair(name, p.outboundPort, p.a, p.b, p.dir);
}
