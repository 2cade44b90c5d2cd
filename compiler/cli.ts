// The compiler's subcommands: `meshc build`, `check`, `test`, `explain`, `fmt`.
// The compiler is imported inside the actions so that other subcommands (and
// --help) never load chevrotain or asc.
// In: command-line paths and options. Out: bundles, reports on stdout/stderr
// (`--json`: one JSON document on stdout instead), exit code 1 when the
// command found a problem (errors, failed tests, unformatted files), 2 for
// unusable input.
import type { Command } from 'commander';
import type { Bundle } from '../protocol/bundle.ts';
import type { Diagnostic } from './diagnostics.ts';

interface CommonOptions {
  json?: boolean;
  topology?: string;
  cache?: boolean;
}

async function loadTopology(path: string | undefined) {
  if (!path) return undefined;
  const { readFile } = await import('node:fs/promises');
  const { parseTopology } = await import('./topology.ts');
  return parseTopology(await readFile(path, 'utf8'), path);
}

/** The on-disk build cache, unless --no-cache. */
async function cacheFor(options: CommonOptions) {
  const { BuildCache, defaultCacheDir } = await import('./cache.ts');
  return options.cache === false ? new BuildCache() : new BuildCache(defaultCacheDir());
}

function fail(err: unknown, json: boolean | undefined): void {
  const e = err as Error & { code?: string };
  if (json) process.stdout.write(JSON.stringify({ error: { code: e.code ?? 'MESHC_ERROR', message: e.message } }) + '\n');
  else process.stderr.write(`meshc: ${e.code ? `${e.code}: ` : ''}${e.message}\n`);
  process.exitCode = 2;
}

function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

export function registerCompilerCommands(program: Command): void {
  program
    .command('build')
    .description('compile .meshpolicy files (or directories of them) into a bundle of proxy-wasm filters')
    .argument('<paths...>', 'policy files or directories (searched recursively for *.meshpolicy)')
    .requiredOption('-o, --out <dir>', 'bundle output directory')
    .option('--sign-key <pem>', 'Ed25519 private key (PEM) to sign the manifest with')
    .option('--topology <yaml>', 'topology file: check service, version and port names against it')
    .option('--no-cache', 'do not read or write the build cache ($MESHC_CACHE_DIR, default ~/.cache/meshc)')
    .option('--json', 'print the result as JSON on stdout')
    .action(async (paths: string[], options: CommonOptions & { out: string; signKey?: string }) => {
      try {
        const { readFile } = await import('node:fs/promises');
        const { writeBundle, loadSigningKey } = await import('../protocol/bundle.ts');
        const { readPolicySources } = await import('./sources.ts');
        const { buildKey, cachedBundle } = await import('./cache.ts');
        const topology = await loadTopology(options.topology);
        const signKey = options.signKey ? loadSigningKey(await readFile(options.signKey, 'utf8')) : undefined;
        const sources = await readPolicySources(paths);
        const cache = await cacheFor(options);
        // An unchanged build is answered from the cache before the compiler is even loaded.
        let result: { diagnostics: Diagnostic[]; bundle?: Bundle };
        const hit = cachedBundle(cache, buildKey(sources, topology), signKey);
        if (hit) result = { diagnostics: hit.diagnostics as Diagnostic[], bundle: hit.bundle };
        else {
          const compiler = await import('./index.ts');
          result = await compiler.compilePolicies(sources, { ...(topology && { topology }), ...(signKey && { signKey }), cache });
          await compiler.shutdownCompiler();
        }
        if (result.bundle) await writeBundle(options.out, result.bundle);
        if (!result.bundle) process.exitCode = 1;
        if (options.json) {
          printJson({
            ok: !!result.bundle,
            out: result.bundle ? options.out : null,
            signed: !!result.bundle?.signature,
            filters: result.bundle?.manifest.filters.map((f) => ({ name: f.name, file: f.file, sha256: f.sha256, size: f.size })) ?? [],
            diagnostics: result.diagnostics,
          });
          return;
        }
        const { formatDiagnostic } = await import('./diagnostics.ts');
        for (const d of result.diagnostics) process.stderr.write(formatDiagnostic(d) + '\n');
        if (!result.bundle) return;
        const names = result.bundle.manifest.filters.map((f) => f.file).join(', ');
        process.stdout.write(`wrote ${options.out}: ${names || 'no filters'}${result.bundle.signature ? ' (signed)' : ''}\n`);
      } catch (err) {
        fail(err, options.json);
      }
    });

  program
    .command('check')
    .description('parse, check and analyse .meshpolicy files without generating code')
    .argument('<paths...>', 'policy files or directories (searched recursively for *.meshpolicy)')
    .option('--topology <yaml>', 'topology file: check service, version and port names against it')
    .option('--json', 'print the diagnostics as JSON on stdout')
    .action(async (paths: string[], options: CommonOptions) => {
      try {
        const compiler = await import('./index.ts');
        const topology = await loadTopology(options.topology);
        const sources = await compiler.readPolicySources(paths);
        const diagnostics = compiler.checkPolicies(sources, topology ? { topology } : {});
        const errors = diagnostics.filter((d) => d.severity === 'error').length;
        const warnings = diagnostics.length - errors;
        if (errors > 0) process.exitCode = 1;
        if (options.json) {
          printJson({ files: sources.length, errors, warnings, diagnostics });
          return;
        }
        for (const d of diagnostics) process.stderr.write(compiler.formatDiagnostic(d) + '\n');
        process.stderr.write(`${sources.length} file(s) checked: ${errors} error(s), ${warnings} warning(s)\n`);
      } catch (err) {
        fail(err, options.json);
      }
    });

  program
    .command('test')
    .description('run policy tests (*.meshpolicy.test.yaml) against the compiled filters')
    .argument('<paths...>', 'test files or directories (searched recursively for *.meshpolicy.test.yaml)')
    .option('--fail-unreached', 'also fail when a rule is reached by no test')
    .option('--no-cache', 'do not read or write the build cache')
    .option('--json', 'print the report as JSON on stdout')
    .action(async (paths: string[], options: CommonOptions & { failUnreached?: boolean }) => {
      try {
        const { findTestFiles, formatReport, runPolicyTests } = await import('./tools/policy-tests.ts');
        const { shutdownCompiler } = await import('./index.ts');
        const files = await findTestFiles(paths);
        if (files.length === 0) throw Object.assign(new Error(`no *.meshpolicy.test.yaml under ${paths.join(', ')}`), { code: 'TEST_NONE' });
        const report = await runPolicyTests(files, { cache: await cacheFor(options) });
        await shutdownCompiler();
        if (report.failed > 0 || (options.failUnreached && report.unreached.length > 0)) process.exitCode = 1;
        if (options.json) printJson(report);
        else process.stdout.write(formatReport(report));
      } catch (err) {
        fail(err, options.json);
      }
    });

  program
    .command('explain')
    .description('say what the policies decide for a request, which rule decided and where it is written')
    .argument('[url]', 'request URL (http://<service>/path?query) or path')
    .option('--policies <path>', 'policy files or directories', collect)
    .option('--bundle <dir>', 'a built bundle instead of policies')
    .option('--service <name>', 'the destination service (default: the URL host)')
    .option('--request <file>', 'the request as JSON (fields as in policy tests)')
    .option('-X, --method <method>', 'request method', 'GET')
    .option('-H, --header <header>', '"name: value" (repeatable)', collect)
    .option('--source <spiffe-id>', "the peer's SPIFFE ID")
    .option('--source-address <ip:port>', "the peer's address")
    .option('--port <n>', 'destination port')
    .option('--claim <name=value>', 'a verified JWT claim (repeatable)', collect)
    .option('--scheme <scheme>', 'request scheme (http or https)')
    .option('--direction <dir>', 'inbound, outbound or unspecified (all rule families)', 'unspecified')
    .option('--connection', 'an opaque TCP connection instead of a request (URL: tcp://<service>:<port>)')
    .option('--topology <yaml>', 'topology file for the policies')
    .option('--json', 'print the explanation as JSON on stdout')
    .action(async (url: string | undefined, options: CommonOptions & { policies?: string[]; bundle?: string; service?: string; request?: string } & Record<string, unknown>) => {
      try {
        const { explain, formatExplanation, requestFromFlags, ExplainError } = await import('./tools/explain.ts');
        const { parseRequestSpec } = await import('./run/request.ts');
        const { readFile } = await import('node:fs/promises');
        let spec;
        let hint: string | undefined;
        if (options.request) spec = parseRequestSpec(JSON.parse(await readFile(options.request, 'utf8')) as unknown, 'unspecified');
        else {
          const parsed = requestFromFlags(url, options as Parameters<typeof requestFromFlags>[1]);
          spec = parsed.spec;
          hint = parsed.serviceHint;
        }
        let bundle;
        if (options.bundle) bundle = await (await import('../protocol/bundle.ts')).readBundle(options.bundle);
        else {
          if (!options.policies?.length) throw new ExplainError('EXPLAIN_ARGS', 'give --policies <path> or --bundle <dir>');
          const compiler = await import('./index.ts');
          const topology = await loadTopology(options.topology);
          const result = await compiler.compilePolicies(await compiler.readPolicySources(options.policies), { ...(topology && { topology }), cache: await cacheFor(options) });
          await compiler.shutdownCompiler();
          if (!result.bundle) {
            for (const d of result.diagnostics) process.stderr.write(compiler.formatDiagnostic(d) + '\n');
            throw new ExplainError('EXPLAIN_POLICIES', 'the policies do not compile');
          }
          bundle = result.bundle;
        }
        const service = options.service ?? (bundle.manifest.filters.some((f) => f.service === hint) ? hint : undefined);
        const e = await explain(bundle, service, spec);
        if (options.json) printJson(e);
        else process.stdout.write(formatExplanation(e));
      } catch (err) {
        fail(err, options.json);
      }
    });

  program
    .command('fmt')
    .description('format .meshpolicy files in place (canonical layout, comments kept)')
    .argument('<paths...>', 'policy files or directories')
    .option('--check', 'change nothing; exit 1 when a file is not formatted')
    .option('--json', 'print the files and whether each changed as JSON on stdout')
    .action(async (paths: string[], options: CommonOptions & { check?: boolean }) => {
      try {
        const { writeFile } = await import('node:fs/promises');
        const { readPolicySources } = await import('./sources.ts');
        const { formatSource } = await import('./format/format.ts');
        const results: { path: string; changed: boolean; error?: string }[] = [];
        for (const f of await readPolicySources(paths)) {
          try {
            const formatted = formatSource(f.text);
            const changed = formatted !== f.text;
            if (changed && !options.check) await writeFile(f.path, formatted);
            results.push({ path: f.path, changed });
          } catch (err) {
            results.push({ path: f.path, changed: false, error: (err as Error).message });
          }
        }
        const changed = results.filter((r) => r.changed);
        const broken = results.filter((r) => r.error);
        if (broken.length > 0 || (options.check && changed.length > 0)) process.exitCode = 1;
        if (options.json) {
          printJson({ check: !!options.check, files: results, changed: changed.length });
          return;
        }
        for (const r of broken) process.stderr.write(`${r.path}: ${r.error}\n`);
        for (const r of changed) process.stdout.write(options.check ? `${r.path}: not formatted\n` : `formatted ${r.path}\n`);
      } catch (err) {
        fail(err, options.json);
      }
    });
}
