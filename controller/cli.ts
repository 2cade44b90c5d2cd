// Registers the controller's meshc subcommands: `meshc controller` (file mode)
// and `meshc up` (the local mesh). Heavy modules load inside the actions so
// `meshc --help` stays fast.
import type { Command } from 'commander';

export function registerControllerCommands(program: Command): void {
  program
    .command('controller')
    .description('Run the controller in file mode: compile the policies in DIR and stream bundles, endpoints and certificates to sidecars')
    .requiredOption('--dir <dir>', 'directory holding *.meshpolicy files and topology.yaml')
    .option('--listen <host:port>', 'stream (ws) and /status listener', '127.0.0.1:15010')
    .option('--state-dir <dir>', 'where the CA root key and certificate are kept', '.meshc/controller')
    .option('--sign-key <file>', 'Ed25519 private key (PEM) to sign bundles with')
    .action(async (opts: { dir: string; listen: string; stateDir: string; signKey?: string }) => {
      const { runControllerCommand } = await import('./run.ts');
      await runControllerCommand(opts);
    });

  program
    .command('up')
    .description('Run a local mesh: controller, demo apps, one sidecar per instance, a load generator and a dashboard')
    .option('--dir <dir>', 'policies and topology.yaml to run', 'examples')
    .option('--dashboard <host:port>', 'dashboard listener', '127.0.0.1:15000')
    .option('--controller <host:port>', 'controller listener', '127.0.0.1:15010')
    .option('--rps <n>', 'requests per second for each load-generator path', '3')
    .option('--no-open', 'do not open the dashboard in a browser')
    .action(async (opts: { dir: string; dashboard: string; controller: string; rps: string; open: boolean }) => {
      const { runUp } = await import('./up/index.ts');
      await runUp(opts);
    });
}
