// `meshc up`: the whole mesh on one machine.
//
// In:  a directory with topology.yaml and *.meshpolicy files (default examples/).
// Out, in order: the controller (in process), the demo apps (in process), one
//      `meshc proxy` child process per instance, the load generator, the
//      dashboard, a table of what runs where, and a summary line every 5 s.
//      SIGINT/SIGTERM stop everything (children first) and exit 0.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startController, type Controller } from '../server.ts';
import { DirectoryConfigSource } from '../source.ts';
import { formatTopologyError, parseHostPort, type HostPort, type MeshInstance, type MeshTopology } from '../topology.ts';
import { StatsCollector } from './collector.ts';
import { startDashboard, type Dashboard } from './dashboard.ts';
import { DEMO_CALL_GRAPH, startDemoApp, type DemoApp } from './demo-apps.ts';
import { startLoadGenerator, type LoadGenerator } from './loadgen.ts';

export interface UpOptions {
  dir: string;
  dashboard: string;
  controller: string;
  rps: string;
  open: boolean;
}

const MESHC_BIN = fileURLToPath(new URL('../../bin/meshc', import.meta.url));
const READY_TIMEOUT_MS = 60_000;
const CHILD_STOP_TIMEOUT_MS = 10_000;
const SUMMARY_EVERY_MS = 5_000;

class UpError extends Error {}

export async function runUp(opts: UpOptions): Promise<void> {
  const dashboardAddr = parseHostPort(opts.dashboard, true);
  const controllerAddr = parseHostPort(opts.controller, true);
  const rps = Number(opts.rps);
  if (!dashboardAddr || !controllerAddr || !(rps > 0)) {
    process.stderr.write('meshc up: --dashboard and --controller take HOST:PORT, --rps a positive number\n');
    process.exit(2);
  }
  const mesh = new LocalMesh(resolve(opts.dir));
  let stopping: Promise<void> | undefined;
  const stop = (code: number): void => {
    stopping ??= mesh.stop().then(
      () => process.exit(code),
      (err: Error) => {
        process.stderr.write(`meshc up: error while stopping: ${err.message}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop(0));
  process.on('SIGTERM', () => stop(0));
  // Last resort: never leave sidecar processes behind, whatever ends this one.
  process.on('exit', () => mesh.killChildren());
  try {
    await mesh.start({ dashboard: dashboardAddr, controller: controllerAddr, rps, open: opts.open });
  } catch (err) {
    process.stderr.write(`meshc up: ${(err as Error).message}\n`);
    stop(1);
  }
}

class LocalMesh {
  private readonly dir: string;
  private runDir = '';
  private controller: Controller | undefined;
  private readonly apps: DemoApp[] = [];
  private readonly children = new Map<string, ChildProcess>();
  private load: LoadGenerator | undefined;
  private dashboard: Dashboard | undefined;
  private timers: NodeJS.Timeout[] = [];
  private failed = false;
  private stopping = false;

  constructor(dir: string) {
    this.dir = dir;
  }

  async start(o: { dashboard: HostPort; controller: HostPort; rps: number; open: boolean }): Promise<void> {
    const snapshot = await new DirectoryConfigSource(this.dir).read();
    if (!snapshot.topology.ok) throw new UpError(`the topology does not parse:\n${snapshot.topology.errors.map(formatTopologyError).join('\n')}`);
    const topology = snapshot.topology.topology;
    const instances = Object.values(topology.instances);
    this.runDir = await mkdtemp(join(tmpdir(), 'meshc-up-'));
    await mkdir(join(this.runDir, 'logs'));

    say(`starting the controller on ${o.controller.host}:${o.controller.port} (policies and topology from ${this.dir})`);
    const controllerLog = createWriteStream(join(this.runDir, 'logs', 'controller.log'));
    this.controller = await startController({
      dir: this.dir,
      listen: o.controller,
      stateDir: join(this.runDir, 'controller'),
      logSink: (line) => controllerLog.write(JSON.stringify(line) + '\n'),
    });
    await this.controller.reconciler.idle();
    const first = this.controller.status();
    if (!first.policy.version) {
      // Sidecars are ready only once they hold a filter chain: without a first good bundle nothing would start.
      const why = first.policy.diagnostics.map((d) => '  ' + d.text).join('\n') || `  ${first.lastError?.message ?? 'no bundle was produced'}`;
      throw new UpError(`the policies in ${this.dir} do not compile; fix them and run again:\n${why}`);
    }

    for (const inst of instances) this.spawnSidecar(inst, this.controller.url, await this.startApp(inst, topology));
    say(`waiting for ${instances.length} sidecars to be ready`);
    await Promise.all(instances.map((i) => this.waitReady(i)));

    const collector = new StatsCollector(instances);
    const loadgen = instances.find((i) => !i.app);
    if (loadgen) this.load = startLoadGenerator({ target: loadgen.outbound, rps: o.rps });
    const state = () => ({
      mesh: collector.current(),
      controller: this.controller?.status(),
      controllerStatusUrl: `${this.controller?.httpUrl}/status`,
      load: this.load?.stats() ?? {},
    });
    this.dashboard = await startDashboard(o.dashboard, state);
    // poll() reports unreachable sidecars in its rows; anything else it throws must not end the mesh.
    this.timers.push(setInterval(() => collector.poll().catch((err: Error) => say(`stats collection failed: ${err.message}`)), 1_000));
    this.timers.push(setInterval(() => say(summaryLine(collector.current(), this.controller?.status().policy)), SUMMARY_EVERY_MS));
    printTable(instances, this.dashboard.url, `${this.controller.httpUrl}/status`, join(this.runDir, 'logs'), this.dir);
    if (o.open && process.stdout.isTTY) openBrowser(this.dashboard.url);
  }

  /** Starts the instance's demo app and returns the address its sidecar forwards to. */
  private async startApp(inst: MeshInstance, topology: MeshTopology): Promise<HostPort> {
    // A mesh client (the load generator) has no app: nothing routes to it, but its
    // sidecar still needs an --app, so it gets a leaf app on a free port.
    const listen = inst.app ?? { host: '127.0.0.1', port: 0 };
    const nextService = DEMO_CALL_GRAPH[inst.service];
    const next = inst.app && nextService && topology.services[nextService] ? { service: nextService, outbound: inst.outbound } : undefined;
    const app = await startDemoApp({ service: inst.service, version: inst.version, listen, ...(next ? { next } : {}) });
    this.apps.push(app);
    return app.address;
  }

  private spawnSidecar(inst: MeshInstance, controllerUrl: string, app: HostPort): void {
    const args = [
      MESHC_BIN, 'proxy',
      '--controller', controllerUrl,
      '--service', inst.service,
      '--service-version', inst.version,
      '--instance', inst.id,
      '--namespace', inst.namespace,
      '--service-account', inst.serviceAccount,
      '--inbound', hp(inst.inbound),
      '--outbound', hp(inst.outbound),
      '--app', hp(app),
      '--admin', hp(inst.admin),
      '--state-dir', join(this.runDir, 'sidecars', inst.id),
      // Explicit mode (docs/runtime.md): local ports bound to mesh services, and an HTTP proxy port.
      ...(inst.upstreams ?? []).flatMap((u) => ['--upstream', `${u.service}${u.port ? `:${u.port}` : ''}=${hp(u.listen)}${u.protocol ? `/${u.protocol}` : ''}`]),
      ...(inst.httpProxy ? ['--http-proxy', hp(inst.httpProxy)] : []),
    ];
    const logPath = join(this.runDir, 'logs', `${inst.id}.log`);
    const log = createWriteStream(logPath);
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    child.on('exit', (code, signal) => {
      this.children.delete(inst.id);
      if (!this.stopping) {
        this.failed = true;
        say(`sidecar ${inst.id} exited (${signal ?? `code ${code}`}); its log: ${logPath}`);
      }
    });
    this.children.set(inst.id, child);
  }

  private async waitReady(inst: MeshInstance): Promise<void> {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    const url = `http://${hp(inst.admin)}/ready`;
    while (Date.now() < deadline) {
      if (!this.children.has(inst.id)) throw new UpError(`sidecar ${inst.id} exited during start-up; its log: ${join(this.runDir, 'logs', `${inst.id}.log`)}`);
      try {
        const res = await fetch(url, { signal: AbortSignal.timeout(1_000) });
        await res.body?.cancel();
        if (res.ok) return;
      } catch {
        // not listening yet
      }
      await sleep(200);
    }
    throw new UpError(`sidecar ${inst.id} was not ready within ${READY_TIMEOUT_MS / 1000} s (${url}); its log: ${join(this.runDir, 'logs', `${inst.id}.log`)}`);
  }

  /** Stops, in order: load, sidecars (SIGTERM, then SIGKILL after a deadline), apps, dashboard, controller. */
  async stop(): Promise<void> {
    this.stopping = true;
    say('stopping');
    for (const t of this.timers) clearInterval(t);
    await this.load?.stop();
    await Promise.all([...this.children.values()].map((c) => stopChild(c)));
    await Promise.all(this.apps.map((a) => a.close()));
    await this.dashboard?.close();
    await this.controller?.stop();
    if (this.runDir && !this.failed) await rm(this.runDir, { recursive: true, force: true });
    else if (this.runDir) say(`logs kept in ${join(this.runDir, 'logs')}`);
  }

  killChildren(): void {
    for (const c of this.children.values()) c.kill('SIGKILL');
  }
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), CHILD_STOP_TIMEOUT_MS);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

function hp(a: HostPort): string {
  return `${a.host}:${a.port}`;
}

function say(text: string): void {
  process.stdout.write(`[meshc up] ${text}\n`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function printTable(instances: MeshInstance[], dashboardUrl: string, statusUrl: string, logDir: string, dir: string): void {
  const header = ['instance', 'version', 'app', 'inbound (mTLS)', 'outbound', 'admin'];
  const rows = instances.map((i) => [i.id, i.version, i.app ? hp(i.app) : '-', hp(i.inbound), hp(i.outbound), hp(i.admin)]);
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? '').length)));
  const line = (cells: string[]) => '  ' + cells.map((cell, c) => cell.padEnd(widths[c] ?? 0)).join('  ');
  const out = [
    '',
    line(header),
    line(widths.map((w) => '-'.repeat(w))),
    ...rows.map(line),
    '',
    `  dashboard          ${dashboardUrl}`,
    `  controller status  ${statusUrl}`,
    `  logs               ${logDir}`,
    '',
    `  Edit ${dir}/*.meshpolicy and watch the dashboard. Ctrl-C stops everything.`,
    '',
  ];
  process.stdout.write(out.join('\n') + '\n');
}

function summaryLine(view: ReturnType<StatsCollector['current']>, policy: { version: string | null; current: boolean } | undefined): string {
  const services = view.services.map((r) => `${r.service} ${r.version} ${r.rps.toFixed(1)}/s`).join(' | ');
  const denials = view.localResponses.filter((l) => l.rate > 0).map((l) => `${l.rule} ${l.rate.toFixed(1)}/s`).join(', ');
  const down = view.sidecars.filter((s) => !s.up).map((s) => s.instance);
  return [
    `policy ${policy?.version ?? 'none'}${policy && !policy.current ? ' (latest edit has errors)' : ''}`,
    services || 'no traffic yet',
    denials ? `local: ${denials}` : '',
    down.length ? `DOWN: ${down.join(', ')}` : '',
  ].filter(Boolean).join(' · ');
}

function openBrowser(url: string): void {
  const cmd = process.platform === 'darwin' ? 'open' : process.platform === 'win32' ? 'explorer' : 'xdg-open';
  try {
    const child = spawn(cmd, [url], { stdio: 'ignore', detached: true });
    child.on('error', () => {});
    child.unref();
  } catch {
    // no browser opener: the URL is printed above
  }
}
