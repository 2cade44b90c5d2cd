// The filter chain: an immutable, versioned list of proxy-wasm filters built
// from a verified bundle. The sidecar holds the current chain in one reference
// and swaps it on reload; each request pins the chain it started with
// (acquire/release) and a retired chain drops its VMs when the last request
// on it ends.
//
// In:  a Bundle (verified here), trusted keys, the sidecar's HostEnvironment.
// Out: a FilterChain, or a ChainError with a stable code; the caller keeps
//      its old chain on error.
import { BundleError, bundleVersion, verifyBundle, type Bundle, type FailurePolicy } from '../protocol/bundle.ts';
import type { HostEnvironment } from './wasm/environment.ts';
import { Wasm, type WasmModule } from './wasm/webassembly.ts';
import { FilterLoadError, FilterVm, checkAbi, type FilterIdentity } from './wasm/vm.ts';
import { CodedError } from '../protocol/errors.ts';

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
}

/**
 * One filter of a chain. The VM is replaced by a fresh instance of the same
 * module after a trap; requests arriving before the replacement is ready get
 * the failure policy.
 */
export class ChainFilter {
  readonly name: string;
  readonly service: string;
  readonly failurePolicy: FailurePolicy;
  vm: FilterVm;
  private readonly module: WasmModule;
  private readonly env: HostEnvironment;
  private replacing = false;
  private retired = false;

  constructor(spec: FilterSpec, module: WasmModule, vm: FilterVm, env: HostEnvironment) {
    this.name = spec.name;
    this.service = spec.service;
    this.failurePolicy = spec.failurePolicy;
    this.module = module;
    this.vm = vm;
    this.env = env;
  }

  /** Starts building a fresh VM after a trap (once); the broken one serves no new request. */
  replaceBrokenVm(): void {
    if (this.replacing || this.retired) return;
    this.replacing = true;
    const broken = this.vm;
    FilterVm.create(this.module, broken.identity, this.env).then(
      (fresh) => {
        this.replacing = false;
        if (this.retired) {
          fresh.release();
          return;
        }
        this.vm = fresh;
        this.env.log({ event: 'filter-vm-replaced', filter: this.name });
        // Requests still holding the broken VM see `broken` and apply the policy.
        setImmediate(() => broken.release());
      },
      (err: unknown) => {
        this.replacing = false;
        this.env.log({ event: 'filter-vm-replace-failed', filter: this.name, error: (err as Error).message });
      },
    );
  }

  release(): void {
    this.retired = true;
    this.vm.release();
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

  /** Verifies the bundle, then compiles, instantiates and configures every module. */
  static async fromBundle(bundle: Bundle, env: HostEnvironment, trustedKeys: string[] = []): Promise<FilterChain> {
    try {
      verifyBundle(bundle, { trustedKeys });
    } catch (err) {
      if (err instanceof BundleError) throw new ChainError(err.code, err.message);
      throw new ChainError('BUNDLE_INVALID', (err as Error).message);
    }
    const specs: FilterSpec[] = bundle.manifest.filters.map((f) => ({
      name: f.name,
      service: f.service,
      rootId: f.rootId,
      configuration: f.configuration,
      failurePolicy: f.failurePolicy === 'open' ? 'open' : 'closed',
      // verifyBundle has checked every module is present.
      wasm: bundle.modules.get(f.file) ?? new Uint8Array(),
    }));
    return FilterChain.fromSpecs(specs, env, bundleVersion(bundle));
  }

  /** Builds a chain from modules directly (standalone `meshc proxy`). */
  static async fromSpecs(specs: FilterSpec[], env: HostEnvironment, version: string): Promise<FilterChain> {
    const names = new Set<string>();
    const filters: ChainFilter[] = [];
    // Modules with identical bytes are compiled once.
    const compiled = new Map<string, WasmModule>();
    try {
      for (const spec of specs) {
        if (names.has(spec.name)) throw new ChainError('CHAIN_DUPLICATE_FILTER', `filter name ${spec.name} appears twice`);
        names.add(spec.name);
        const key = Buffer.from(spec.wasm).toString('base64');
        let module = compiled.get(key);
        if (!module) {
          try {
            module = await Wasm.compile(spec.wasm);
          } catch (err) {
            throw new ChainError('FILTER_COMPILE', `filter ${spec.name}: not a valid Wasm module: ${(err as Error).message}`);
          }
          compiled.set(key, module);
        }
        const identity: FilterIdentity = {
          name: spec.name,
          rootId: spec.rootId,
          vmConfiguration: new Uint8Array(),
          pluginConfiguration: new TextEncoder().encode(spec.configuration),
        };
        try {
          checkAbi(module);
          const vm = await FilterVm.create(module, identity, env);
          filters.push(new ChainFilter(spec, module, vm, env));
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
