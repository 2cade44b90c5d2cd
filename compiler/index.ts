// The compiler's public API (used by the CLI and the controller).
// In: .meshpolicy sources (+ optional topology and signing key).
// Out: diagnostics, and a bundle (protocol/bundle.ts) when there is no error.
// Pipeline: syntax/to-ast.ts → check/checker.ts → lower.ts (IR) →
// codegen/emit.ts (AssemblyScript) → codegen/worker-client.ts (asc in a worker).
import type { KeyObject } from 'node:crypto';
import { makeBundle, PROXY_WASM_ABI, BUNDLE_FORMAT, sha256Hex, type Bundle, type BundleFilter, type BundleManifest, type SourceSpan } from '../protocol/bundle.ts';
import { BuildCache, buildKey, cachedBundle, compilerIdentity, memoryCache } from './cache.ts';
import { COMPILER_NAME, COMPILER_VERSION } from './version.ts';
import type { PolicyFile } from './ast.ts';
import { analyse } from './check/analysis.ts';
import { checkFiles, type Topology } from './check/checker.ts';
import { emitService } from './codegen/emit.ts';
import { compileInWorker, shutdownWorker } from './codegen/worker-client.ts';
import { hasErrors, sortDiagnostics, type Diagnostic } from './diagnostics.ts';
import type { PolicyIR, ServiceIR } from './ir.ts';
import { lowerFiles } from './lower.ts';
import type { SourceFile } from './sources.ts';
import { parseSource } from './syntax/to-ast.ts';

/**
 * Host limits for the modules this compiler writes. The language terminates by
 * construction (no unbounded loops, regexes run as DFAs over the input), so
 * the sidecar need not meter them: fuel 0 saves the meter's cost on every
 * callback. Memory stays capped; a policy module uses well under 1 MiB.
 */
const COMPILED_FILTER_LIMITS = { memoryMaxBytes: 16 * 1024 * 1024, fuelPerCallback: 0 };

export type { Diagnostic } from './diagnostics.ts';
export type { Topology } from './check/checker.ts';
export type { SourceFile } from './sources.ts';
export { formatDiagnostic } from './diagnostics.ts';
export { BuildCache, defaultCacheDir } from './cache.ts';
export { COMPILER_NAME, COMPILER_VERSION } from './version.ts';
export { readPolicySources } from './sources.ts';

export interface CompileOptions {
  topology?: Topology;
  signKey?: KeyObject;
  /** Where finished builds and modules are kept (default: in memory, per process). */
  cache?: BuildCache;
}

export interface CompileResult {
  diagnostics: Diagnostic[];
  /** Absent iff any diagnostic is an error. */
  bundle?: Bundle;
}

export interface Front {
  asts: PolicyFile[];
  diagnostics: Diagnostic[];
  /** Present iff no diagnostic is an error. */
  ir?: PolicyIR;
}

/** Removes exact repeats (a finding reached twice through imports or mesh rules). */
function dedupe(list: Diagnostic[]): Diagnostic[] {
  const seen = new Set<string>();
  return list.filter((d) => {
    const key = JSON.stringify([d.code, d.span, d.message]);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** Parse, check, lower and analyse: everything before code generation. */
export function frontEnd(files: SourceFile[], options: CompileOptions = {}): Front {
  const diagnostics: Diagnostic[] = [];
  const asts: PolicyFile[] = [];
  for (const f of files) {
    const parsed = parseSource(f.path, f.text);
    diagnostics.push(...parsed.diagnostics);
    asts.push(parsed.ast);
  }
  // Checking half-parsed files would report errors that are only echoes of syntax errors.
  if (!hasErrors(diagnostics)) diagnostics.push(...checkFiles(asts, options.topology));
  if (hasErrors(diagnostics)) return { asts, diagnostics: sortDiagnostics(dedupe(diagnostics)) };
  const ir = lowerFiles(asts, options.topology);
  diagnostics.push(...analyse(ir));
  return { asts, diagnostics: sortDiagnostics(dedupe(diagnostics)), ir };
}

/** Parses, checks and analyses; no code generation. */
export function checkPolicies(files: SourceFile[], options: CompileOptions = {}): Diagnostic[] {
  return frontEnd(files, options).diagnostics;
}

function ruleSpans(service: ServiceIR): Record<string, SourceSpan> {
  const rules: { id: string; span: SourceSpan }[] = [
    ...service.authz.denies,
    ...service.authz.allows,
    ...service.audits,
    ...service.rateLimits,
    ...service.faults,
    ...service.routes,
  ];
  rules.sort((a, b) => (a.span.file < b.span.file ? -1 : a.span.file > b.span.file ? 1 : 0) || a.span.line - b.span.line || a.span.col - b.span.col);
  const out: Record<string, SourceSpan> = {};
  for (const r of rules) out[r.id] = r.span;
  if (service.authz.defaultDenyId) out[service.authz.defaultDenyId] = service.span;
  return out;
}

/** A service's module: from the cache when its generated source was built before, else asc. */
async function moduleFor(source: string, cache: BuildCache): Promise<Uint8Array> {
  const key = sha256Hex(`${compilerIdentity(COMPILER_VERSION)}\n${source}`);
  const hit = cache.getModule(key);
  if (hit) return hit;
  const wasm = await compileInWorker(source);
  cache.putModule(key, wasm);
  return wasm;
}

export async function compilePolicies(files: SourceFile[], options: CompileOptions = {}): Promise<CompileResult> {
  const cache = options.cache ?? memoryCache;
  const key = buildKey(files, options.topology);
  const cached = cachedBundle(cache, key, options.signKey);
  if (cached) return { diagnostics: cached.diagnostics as Diagnostic[], bundle: cached.bundle };
  const { diagnostics, ir } = frontEnd(files, options);
  if (!ir) return { diagnostics };
  const textByPath = new Map(files.map((f) => [f.path, f.text]));
  const wasms = await Promise.all(ir.services.map((s) => moduleFor(emitService(s), cache)));
  const modules = new Map<string, Uint8Array>();
  const filters: BundleFilter[] = ir.services.map((service, i) => {
    const wasm = wasms[i]!;
    const file = `${service.name}.wasm`;
    modules.set(file, wasm);
    const filter: BundleFilter = {
      name: service.name,
      file,
      sha256: sha256Hex(wasm),
      size: wasm.byteLength,
      service: service.name,
      rootId: 'meshc',
      configuration: '',
      failurePolicy: 'closed',
      source: { path: service.sourcePath, sha256: sha256Hex(textByPath.get(service.sourcePath) ?? '') },
      rules: ruleSpans(service),
      traffic: service.traffic,
      limits: COMPILED_FILTER_LIMITS,
    };
    if (service.dryRun) filter.dryRun = true;
    return filter;
  });
  const manifest: BundleManifest = {
    format: BUNDLE_FORMAT,
    abiVersion: PROXY_WASM_ABI,
    compiler: { name: COMPILER_NAME, version: COMPILER_VERSION },
    filters,
  };
  const bundle = makeBundle(manifest, modules, options.signKey);
  cache.putBuild(key, { manifestBytes: bundle.manifestBytes, modules, diagnostics });
  return { diagnostics, bundle };
}

/** Ends the compile worker (it is restarted by the next compilePolicies call). */
export function shutdownCompiler(): Promise<void> {
  return shutdownWorker();
}
