// Starts the processes a benchmark measures: nginx as the fast fixed-body
// upstream, haproxy as the reference proxy, and the meshc sidecar. Each runs
// from a private temp directory and is stopped by the returned handle.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { which } from './tools.ts';

export interface Running {
  name: string;
  port: number;
  pid: number;
  stop(): Promise<void>;
}

/** Ports freePort has handed out in this process: the kernel may offer a closed one again before its taker listens. */
const handedOut = new Set<number>();

/** A loopback port nothing listens on, never one this process was given before. */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const srv = createServer();
      srv.once('error', reject);
      srv.listen(0, '127.0.0.1', () => {
        const addr = srv.address();
        srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
      });
    });
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}

export async function waitForPort(port: number, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const sock = connect(port, '127.0.0.1');
      sock.once('connect', () => {
        sock.destroy();
        resolve(true);
      });
      sock.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listened on 127.0.0.1:${port} within ${timeoutMs} ms`);
}

/**
 * How a proxy is started: `wrap` runs it under another program (e.g. valgrind), which may take
 * `readyTimeoutMs` to listen; `nodeFlags` go to node before the sidecar's script.
 */
export interface StartOptions {
  wrap?: string[];
  readyTimeoutMs?: number;
  nodeFlags?: string[];
}

/** Spawns `cmd args`, under `options.wrap` if given. */
function spawnWrapped(cmd: string, args: string[], options: StartOptions): ChildProcess {
  const [first, ...rest] = options.wrap ?? [];
  return first === undefined ? spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] }) : spawn(first, [...rest, cmd, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Watches a started process and waits for its port; a process that exits first fails with its stderr. */
async function track(name: string, port: number, child: ChildProcess, dir: string, readyTimeoutMs?: number): Promise<Running> {
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const exited = new Promise<never>((_, reject) =>
    child.once('exit', (code) => reject(new Error(`${name} exited with ${String(code)} before listening: ${stderr}`))),
  );
  await Promise.race([waitForPort(port, readyTimeoutMs), exited]);
  exited.catch(() => undefined);
  return {
    name,
    port,
    pid: child.pid ?? -1,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await exited;
        clearTimeout(timer);
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** An nginx configuration file: one worker, its files in `dir`, and the given `http` block contents. */
export function nginxConf(dir: string, name: string, httpBlock: string): string {
  return `daemon off;
worker_processes 1;
pid ${dir}/${name}.pid;
error_log ${dir}/${name}.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir};
  proxy_temp_path ${dir};
  fastcgi_temp_path ${dir};
  uwsgi_temp_path ${dir};
  scgi_temp_path ${dir};
  keepalive_requests 1000000;
${httpBlock}
}
`;
}

/** nginx with one worker answering every request with a fixed 13-byte body. */
export async function startNginx(): Promise<Running> {
  const dir = await mkdtemp(join(tmpdir(), 'meshc-bench-nginx-'));
  const port = await freePort();
  const conf = nginxConf(dir, 'nginx', `  server {
    listen 127.0.0.1:${port};
    location / { return 200 "hello, mesh!\\n"; }
  }`);
  await writeFile(join(dir, 'nginx.conf'), conf);
  const child = spawn(which('nginx') ?? 'nginx', ['-c', join(dir, 'nginx.conf'), '-p', dir], { stdio: ['ignore', 'ignore', 'pipe'] });
  return track('nginx', port, child, dir);
}

/** haproxy, one thread, HTTP mode with keep-alive to the upstream: the reference proxy. */
export async function startHaproxy(upstreamPort: number, options: StartOptions = {}): Promise<Running> {
  const dir = await mkdtemp(join(tmpdir(), 'meshc-bench-haproxy-'));
  const port = await freePort();
  const conf = `global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:${port}
  default_backend be
backend be
  http-reuse always
  server up 127.0.0.1:${upstreamPort}
`;
  await writeFile(join(dir, 'haproxy.cfg'), conf);
  const child = spawnWrapped(which('haproxy') ?? 'haproxy', ['-f', join(dir, 'haproxy.cfg'), '-db'], options);
  return track('haproxy', port, child, dir, options.readyTimeoutMs);
}

/** The meshc sidecar in standalone mode (`meshc proxy --listen --upstream [--filter ...]`). */
export async function startSidecar(upstreamPort: number, filterArgs: string[], label: string, options: StartOptions = {}): Promise<Running> {
  const dir = await mkdtemp(join(tmpdir(), 'meshc-bench-sidecar-'));
  const port = await freePort();
  const bin = new URL('../../bin/meshc', import.meta.url).pathname;
  const args = [...(options.nodeFlags ?? []), bin, 'proxy', '--listen', `127.0.0.1:${port}`, '--upstream', `http://127.0.0.1:${upstreamPort}`, ...filterArgs];
  // Access log on, as in production; it goes to /dev/null here.
  const child = spawnWrapped(process.execPath, args, options);
  return track(label, port, child, dir, options.readyTimeoutMs);
}
