// `meshc build` and `meshc check`. The compiler is imported inside the actions
// so that other subcommands (and --help) never load chevrotain or asc.
// In: command-line paths and options. Out: a bundle directory, diagnostics on
// stderr, exit code 1 when any diagnostic is an error (2 for unusable input).
import type { Command } from 'commander';

interface BuildOptions {
  out: string;
  signKey?: string;
  topology?: string;
}

interface CheckOptions {
  topology?: string;
}

async function loadTopology(path: string | undefined) {
  if (!path) return undefined;
  const { readFile } = await import('node:fs/promises');
  const { parseTopology } = await import('./topology.ts');
  return parseTopology(await readFile(path, 'utf8'), path);
}

function fail(err: unknown): void {
  const e = err as Error & { code?: string };
  process.stderr.write(`meshc: ${e.code ? `${e.code}: ` : ''}${e.message}\n`);
  process.exitCode = 2;
}

export function registerCompilerCommands(program: Command): void {
  program
    .command('build')
    .description('compile .meshpolicy files (or directories of them) into a bundle of proxy-wasm filters')
    .argument('<paths...>', 'policy files or directories (searched recursively for *.meshpolicy)')
    .requiredOption('-o, --out <dir>', 'bundle output directory')
    .option('--sign-key <pem>', 'Ed25519 private key (PEM) to sign the manifest with')
    .option('--topology <yaml>', 'topology file: check service and version names against it')
    .action(async (paths: string[], options: BuildOptions) => {
      try {
        const { readFile } = await import('node:fs/promises');
        const { writeBundle, loadSigningKey } = await import('../protocol/bundle.ts');
        const compiler = await import('./index.ts');
        const topology = await loadTopology(options.topology);
        const signKey = options.signKey ? loadSigningKey(await readFile(options.signKey, 'utf8')) : undefined;
        const sources = await compiler.readPolicySources(paths);
        const result = await compiler.compilePolicies(sources, { ...(topology && { topology }), ...(signKey && { signKey }) });
        await compiler.shutdownCompiler();
        for (const d of result.diagnostics) process.stderr.write(compiler.formatDiagnostic(d) + '\n');
        if (!result.bundle) {
          process.exitCode = 1;
          return;
        }
        await writeBundle(options.out, result.bundle);
        const names = result.bundle.manifest.filters.map((f) => f.file).join(', ');
        process.stdout.write(`wrote ${options.out}: ${names || 'no filters'}${result.bundle.signature ? ' (signed)' : ''}\n`);
      } catch (err) {
        fail(err);
      }
    });

  program
    .command('check')
    .description('parse and check .meshpolicy files without generating code')
    .argument('<paths...>', 'policy files or directories (searched recursively for *.meshpolicy)')
    .option('--topology <yaml>', 'topology file: check service and version names against it')
    .action(async (paths: string[], options: CheckOptions) => {
      try {
        const compiler = await import('./index.ts');
        const topology = await loadTopology(options.topology);
        const sources = await compiler.readPolicySources(paths);
        const diagnostics = compiler.checkPolicies(sources, topology ? { topology } : {});
        for (const d of diagnostics) process.stderr.write(compiler.formatDiagnostic(d) + '\n');
        const errors = diagnostics.filter((d) => d.severity === 'error').length;
        const warnings = diagnostics.length - errors;
        process.stderr.write(`${sources.length} file(s) checked: ${errors} error(s), ${warnings} warning(s)\n`);
        if (errors > 0) process.exitCode = 1;
      } catch (err) {
        fail(err);
      }
    });
}
