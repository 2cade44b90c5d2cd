// `meshc proxy`: runs a sidecar connected to a controller, or a standalone
// proxy with filters from local .wasm files. Heavy modules load inside the
// action so `meshc --help` stays fast.
//
// In:  the raw argv after `proxy` (see runtime/proxy-args.ts).
// Out: a running proxy; a JSON line {"event":"listening",...} on stdout once
//      bound; graceful stop on SIGINT/SIGTERM; exit code 2 on bad arguments
//      or a refused filter.
import process from 'node:process';
import type { Command } from 'commander';
import { registerInitCommand } from './interception/cli.ts';

function fail(err: unknown): void {
  const e = err as Error & { code?: string };
  process.stderr.write(`meshc proxy: ${e.code ? `${e.code}: ` : ''}${e.message}\n`);
  process.exitCode = 2;
}

function onSignals(stop: () => Promise<void>): void {
  let stopping = false;
  const handler = (): void => {
    if (stopping) return;
    stopping = true;
    stop().then(
      () => process.exit(0),
      (err: unknown) => {
        fail(err);
        process.exit(1);
      },
    );
  };
  process.once('SIGINT', handler);
  process.once('SIGTERM', handler);
}

async function runStandalone(args: import('./proxy-args.ts').StandaloneArgs): Promise<void> {
  (await import('./wasm/webassembly.ts')).tierUpEarly();
  const { readFile } = await import('node:fs/promises');
  const { basename } = await import('node:path');
  const { StandaloneProxy } = await import('./standalone.ts');
  const { jsonLineLog } = await import('./sidecar.ts');
  const used = new Set<string>();
  const filters = await Promise.all(
    args.filters.map(async (f, i) => {
      let name = f.name ?? basename(f.file).replace(/\.wasm$/, '');
      if (used.has(name)) name = `${name}-${i}`;
      used.add(name);
      const spec: import('./chain.ts').FilterSpec = {
        name,
        service: '*',
        rootId: f.rootId ?? name,
        configuration: f.configuration,
        failurePolicy: f.failurePolicy,
        wasm: new Uint8Array(await readFile(f.file)),
      };
      if (f.dryRun) spec.dryRun = true;
      if (f.limits) spec.limits = f.limits;
      return spec;
    }),
  );
  const options: import('./standalone.ts').StandaloneOptions = {
    listen: args.listen,
    upstream: args.upstream,
    versionUpstreams: args.versionUpstreams,
    filters,
  };
  if (args.admin) options.admin = args.admin;
  if (args.service) options.service = args.service;
  if (args.upstreamTimeoutMs) options.upstreamTimeoutMs = args.upstreamTimeoutMs;
  const proxy = new StandaloneProxy(options);
  await proxy.start();
  jsonLineLog({ event: 'listening', mode: 'standalone', ...proxy.addresses(), filters: filters.map((f) => f.name) });
  onSignals(() => proxy.stop());
}

async function runConnected(args: import('./proxy-args.ts').ConnectedArgs): Promise<void> {
  (await import('./wasm/webassembly.ts')).tierUpEarly();
  const { readFile } = await import('node:fs/promises');
  const { Sidecar, jsonLineLog } = await import('./sidecar.ts');
  const { startControlClient } = await import('./control-client.ts');
  const trustedKeys = await Promise.all(args.trustedKeyFiles.map((f) => readFile(f, 'utf8')));
  const node = {
    instance: args.instance,
    service: args.service,
    version: args.serviceVersion,
    namespace: args.namespace,
    serviceAccount: args.serviceAccount,
  };
  const sidecar = new Sidecar({
    node,
    inbound: args.inbound,
    outbound: args.outbound,
    app: args.app,
    admin: args.admin,
    trustedKeys,
    ...(args.upstreamTimeoutMs ? { upstreamTimeoutMs: args.upstreamTimeoutMs } : {}),
    // Explicit mode (runtime/explicit) and opaque TCP settings.
    upstreams: args.upstreams,
    ...(args.httpProxy ? { httpProxy: args.httpProxy } : {}),
    // Unset: refused in explicit mode, passed through in transparent mode (docs/interception.md).
    allowEgress: args.denyEgress ? false : args.allowEgress || undefined,
    ...(args.interception ? { interception: args.interception } : {}),
    ...(args.permissiveInbound ? { permissiveInbound: true } : {}),
    ...(args.detectTimeoutMs ? { detectTimeoutMs: args.detectTimeoutMs } : {}),
    tcp: { appPorts: args.appTcpPorts },
  });
  await sidecar.start();
  const client = startControlClient(sidecar, { url: args.controller, stateDir: args.stateDir, node });
  jsonLineLog({ event: 'listening', mode: 'connected', instance: args.instance, ...sidecar.addresses() });
  onSignals(async () => {
    await client.close();
    await sidecar.stop();
  });
}

export function registerRuntimeCommands(program: Command): void {
  registerInitCommand(program);
  program
    .command('proxy')
    .description('run a sidecar (--controller) or a standalone proxy with local filters (--listen/--upstream/--filter)')
    .usage('[options] (see `meshc proxy --help`)')
    .helpOption(false)
    .allowUnknownOption(true)
    .allowExcessArguments(true)
    .argument('[args...]')
    .action(async (_args: string[], _opts: unknown, command: Command) => {
      // Commander has no order-preserving model for repeated groups; take the raw tokens after `proxy`.
      const all = process.argv;
      const raw = all.slice(all.indexOf('proxy') + 1);
      const { parseProxyArgs, PROXY_USAGE } = await import('./proxy-args.ts');
      if (raw.includes('--help') || raw.includes('-h')) {
        process.stdout.write(`${command.description()}\n\n${PROXY_USAGE}`);
        return;
      }
      try {
        const args = parseProxyArgs(raw);
        if (args.mode === 'standalone') await runStandalone(args);
        else await runConnected(args);
      } catch (err) {
        fail(err);
        if ((err as { code?: string }).code !== 'PROXY_ARGS') return;
        process.stderr.write(PROXY_USAGE);
      }
    });
}
