// The filter chain: an immutable, versioned list of proxy-wasm filters built
// from a verified bundle. The sidecar holds the current chain in one reference
// and swaps it on reload; each request pins the chain it started with
// (acquire/release) and a retired chain drops its VMs when the last request
// on it ends.
//
// In:  a Bundle (verified here), trusted keys, the sidecar's HostEnvironment.
// Out: a FilterChain, or a ChainError with a stable code; the caller keeps
//      its old chain on error.
import { BundleError, bundleVersion, verifyBundle, type Bundle, type BundleFilter, type FailurePolicy } from '../protocol/bundle.ts';
import { CodedError } from '../protocol/errors.ts';
import type { HostEnvironment } from './wasm/environment.ts';
import type { FilterLimits } from './wasm/limits.ts';
import { prepareModule, type PreparedModule } from './wasm/module-cache.ts';
import { FilterLoadError, FilterVm, checkAbi, type FilterIdentity } from './wasm/vm.ts';
import { hasAuthorizationRules } from './wasm/network.ts';

export class ChainError extends CodedError {}

/** What a chain is built from: one entry per filter, in order. */
export interface FilterSpec {
  name: string;
  /** Destination service the filter applies to, or "*". */
  service: string;
  rootId: string;
  configuration: string;
  failurePolicy: FailurePolicy;
  wasm: Uint8Array;
  /** Decisions are logged and counted, not enforced. */
  dryRun?: boolean;
  /** Overrides of the sidecar's default limits. */
  limits?: Partial<FilterLimits>;
  /** The filter has authorization rules, so it must decide opaque TCP connections (runtime/wasm/network.ts). */
  connectionPolicy?: boolean;
}

const FAILURE_POLICIES: readonly FailurePolicy[] = ['closed', 'open', 'reload'];
/** Backoff between attempts to build a fresh instance when the last attempt failed (policy reload). */
const RELOAD_BACKOFF_MIN_MS = 1_000;
const RELOAD_BACKOFF_MAX_MS = 30_000;

/**
 * One filter of a chain and its current instance. After a trap the instance
 * is broken: under `closed` and `open` it stays so until the next bundle
 * (requests get 503 or bypass it), under `reload` a fresh instance is built
 * at once and requests arriving meanwhile wait for it.
 */
export class ChainFilter {
  readonly name: string;
  readonly service: string;
  readonly failurePolicy: FailurePolicy;
  readonly dryRun: boolean;
  readonly connectionPolicy: boolean;
  private current: FilterVm;
  private readonly prepared: PreparedModule;
  private readonly env: HostEnvironment;
  private replacing: Promise<FilterVm | undefined> | undefined;
  private nextAttemptAt = 0;
  private backoffMs = RELOAD_BACKOFF_MIN_MS;
  private retired = false;

  constructor(spec: FilterSpec, prepared: PreparedModule, vm: FilterVm, env: HostEnvironment) {
    this.name = spec.name;
    this.service = spec.service;
    this.failurePolicy = spec.failurePolicy;
    this.dryRun = spec.dryRun === true;
    this.connectionPolicy = spec.connectionPolicy === true;
    this.prepared = prepared;
    this.current = vm;
    this.env = env;
  }

  /** The current instance (possibly broken); the data path asks it which callbacks exist. */
  get vm(): FilterVm {
    return this.current;
  }

  /**
   * The instance a new request should use: the current one, a fresh one
   * being built (reload), or undefined when the filter is unavailable.
   */
  instance(): FilterVm | undefined | Promise<FilterVm | undefined> {
    if (!this.current.broken) return this.current;
    if (this.failurePolicy !== 'reload' || this.retired) return undefined;
    return this.replacing ?? (Date.now() >= this.nextAttemptAt ? this.replace() : undefined);
  }

  /** A request saw `vm` trap: release it, and under reload start building its successor. */
  onTrap(vm: FilterVm): void {
    vm.release();
    if (vm === this.current && this.failurePolicy === 'reload' && !this.retired && !this.replacing) void this.replace();
  }

  private replace(): Promise<FilterVm | undefined> {
    const broken = this.current;
    const attempt = FilterVm.create(this.prepared, broken.identity, this.env).then(
      (fresh) => {
        this.replacing = undefined;
        if (this.retired) {
          fresh.release();
          return undefined;
        }
        this.current = fresh;
        this.backoffMs = RELOAD_BACKOFF_MIN_MS;
        this.env.host.reloads.inc({ filter: this.name, result: 'ok' });
        this.env.log({ event: 'filter-vm-replaced', filter: this.name });
        return fresh;
      },
      (err: unknown) => {
        this.replacing = undefined;
        this.nextAttemptAt = Date.now() + this.backoffMs;
        this.backoffMs = Math.min(this.backoffMs * 2, RELOAD_BACKOFF_MAX_MS);
        this.env.host.reloads.inc({ filter: this.name, result: 'failed' });
        this.env.log({ event: 'filter-vm-replace-failed', filter: this.name, error: (err as Error).message, retryInMs: this.nextAttemptAt - Date.now() });
        return undefined;
      },
    );
    this.replacing = attempt;
    return attempt;
  }

  /** A dry-run decision that was not enforced. */
  recordDryRun(rule: string, status: number, kind: 'local-response' | 'close'): void {
    this.env.host.dryRun.inc({ filter: this.name, rule: rule || 'unknown' });
    this.env.log({ event: 'dry-run', filter: this.name, decision: kind, rule, status });
  }

  /** A request went on without this (failed) filter. */
  recordBypass(): void {
    this.env.host.bypassed.inc({ filter: this.name });
  }

  release(): void {
    this.retired = true;
    this.current.release();
  }
}

export class FilterChain {
  readonly version: string;
  readonly filters: readonly ChainFilter[];
  private inFlight = 0;
  private retired = false;
  private readonly byService = new Map<string, readonly ChainFilter[]>();

  private constructor(version: string, filters: ChainFilter[]) {
    this.version = version;
    this.filters = Object.freeze(filters);
  }

  /** Verifies the bundle, then compiles (cached), instantiates and configures every module. Refusals are counted by code. */
  static async fromBundle(bundle: Bundle, env: HostEnvironment, trustedKeys: string[] = []): Promise<FilterChain> {
    try {
      try {
        verifyBundle(bundle, { trustedKeys });
      } catch (err) {
        if (err instanceof BundleError) throw new ChainError(err.code, err.message);
        throw new ChainError('BUNDLE_INVALID', (err as Error).message);
      }
      const specs = bundle.manifest.filters.map((f) => specFromManifest(f, bundle.modules.get(f.file) ?? new Uint8Array()));
      return await FilterChain.fromSpecs(specs, env, bundleVersion(bundle));
    } catch (err) {
      env.host.bundleRefusals.inc({ code: err instanceof CodedError ? err.code : 'CHAIN_BUILD_FAILED' });
      throw err;
    }
  }

  /** Builds a chain from modules directly (standalone `meshc proxy`). */
  static async fromSpecs(specs: FilterSpec[], env: HostEnvironment, version: string): Promise<FilterChain> {
    const names = new Set<string>();
    const filters: ChainFilter[] = [];
    try {
      for (const spec of specs) {
        if (names.has(spec.name)) throw new ChainError('CHAIN_DUPLICATE_FILTER', `filter name ${spec.name} appears twice`);
        names.add(spec.name);
        const limits: FilterLimits = { ...env.limits, ...spec.limits };
        let prepared: PreparedModule;
        try {
          prepared = await prepareModule(spec.wasm, limits);
        } catch (err) {
          const code = err instanceof CodedError ? err.code : 'FILTER_COMPILE';
          throw new ChainError(code, `filter ${spec.name}: ${(err as Error).message}`);
        }
        const identity: FilterIdentity = {
          name: spec.name,
          rootId: spec.rootId,
          vmConfiguration: new Uint8Array(),
          pluginConfiguration: new TextEncoder().encode(spec.configuration),
          limits,
        };
        try {
          checkAbi(prepared.module);
          const vm = await FilterVm.create(prepared, identity, env);
          filters.push(new ChainFilter(spec, prepared, vm, env));
        } catch (err) {
          if (err instanceof FilterLoadError) throw new ChainError(err.code, err.message);
          throw err;
        }
      }
    } catch (err) {
      for (const f of filters) f.release();
      throw err;
    }
    return new FilterChain(version, filters);
  }

  /** The filters that run for a destination service: its own and the "*" ones, in chain order. */
  filtersFor(service: string): readonly ChainFilter[] {
    let list = this.byService.get(service);
    if (!list) {
      list = this.filters.filter((f) => f.service === '*' || f.service === service);
      this.byService.set(service, list);
    }
    return list;
  }

  /** A request starts on this chain. */
  acquire(): void {
    this.inFlight++;
  }

  /** A request on this chain ended. */
  release(): void {
    this.inFlight--;
    if (this.retired && this.inFlight === 0) this.dropVms();
  }

  /** The chain was replaced: drop its VMs once no request uses it. */
  retire(): void {
    this.retired = true;
    if (this.inFlight === 0) this.dropVms();
  }

  private dropVms(): void {
    for (const f of this.filters) f.release();
  }
}

/** A manifest entry as a FilterSpec; a value the host cannot honour refuses the bundle. */
function specFromManifest(f: BundleFilter, wasm: Uint8Array): FilterSpec {
  const policy = f.failurePolicy ?? 'closed';
  if (!FAILURE_POLICIES.includes(policy)) {
    throw new ChainError('BUNDLE_MANIFEST_INVALID', `filter ${f.name}: failurePolicy "${String(policy)}" is not one of ${FAILURE_POLICIES.join(', ')}`);
  }
  const spec: FilterSpec = {
    name: f.name,
    service: f.service,
    rootId: f.rootId,
    configuration: f.configuration,
    failurePolicy: policy,
    wasm,
    dryRun: f.dryRun === true,
    connectionPolicy: hasAuthorizationRules(f.rules),
  };
  if (f.limits) {
    const limits: Partial<FilterLimits> = {};
    for (const key of ['memoryMaxBytes', 'fuelPerCallback'] as const) {
      const v = f.limits[key];
      if (v === undefined) continue;
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
        throw new ChainError('BUNDLE_MANIFEST_INVALID', `filter ${f.name}: limits.${key} must be a non-negative number`);
      }
      limits[key] = v;
    }
    spec.limits = limits;
  }
  return spec;
}
