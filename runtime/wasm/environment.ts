// What every filter VM of one sidecar shares: shared data (key/value with
// compare-and-swap), shared queues, filter-defined metrics, the host's own
// failure/dry-run metrics, the HTTP-call dispatcher, the node's identity and
// the logger. It outlives chains, so a reload keeps counters, queues and
// rate-limit state.
//
// In:  a prom-client Registry and a log function from the sidecar.
// Out: a HostEnvironment the proxy-wasm host functions read and write.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { MetricType, WasmResult } from './abi.ts';
import type { HttpCallDispatcher } from './http-call.ts';
import { DEFAULT_LIMITS, type FilterLimits } from './limits.ts';

export type LogFn = (entry: Record<string, unknown>) => void;

interface SharedEntry {
  value: Uint8Array;
  cas: number;
}

export class SharedData {
  private readonly entries = new Map<string, SharedEntry>();
  private nextCas = 1;

  get(key: string): SharedEntry | undefined {
    return this.entries.get(key);
  }

  /** cas 0 sets unconditionally; otherwise the stored cas must match. */
  set(key: string, value: Uint8Array, cas: number): number {
    const current = this.entries.get(key);
    if (cas !== 0 && current && current.cas !== cas) return WasmResult.CasMismatch;
    this.entries.set(key, { value: value.slice(), cas: this.nextCas++ });
    return WasmResult.Ok;
  }
}

interface Queue {
  owner: string;
  items: Uint8Array[];
  /** Called when an item is enqueued; set by the VM that registered the queue. */
  onReady: ((id: number) => void) | undefined;
}

export class SharedQueues {
  private readonly byName = new Map<string, number>();
  private readonly byId = new Map<number, Queue>();
  private nextId = 1;

  /** Registering again (e.g. from a reloaded VM) returns the same id and re-points the notification. */
  register(vmId: string, name: string, onReady: (id: number) => void): number {
    const key = `${vmId}\0${name}`;
    const existing = this.byName.get(key);
    if (existing !== undefined) {
      const q = this.byId.get(existing);
      if (q) q.onReady = onReady;
      return existing;
    }
    const id = this.nextId++;
    this.byName.set(key, id);
    this.byId.set(id, { owner: vmId, items: [], onReady });
    return id;
  }

  /** A released VM stops being notified (and stops being referenced from here). */
  detach(onReady: (id: number) => void): void {
    for (const q of this.byId.values()) if (q.onReady === onReady) q.onReady = undefined;
  }

  resolve(vmId: string, name: string): number | undefined {
    return this.byName.get(`${vmId}\0${name}`);
  }

  enqueue(id: number, value: Uint8Array): number {
    const q = this.byId.get(id);
    if (!q) return WasmResult.NotFound;
    q.items.push(value.slice());
    const notify = q.onReady;
    if (notify) setImmediate(() => notify(id));
    return WasmResult.Ok;
  }

  dequeue(id: number): Uint8Array | number {
    const q = this.byId.get(id);
    if (!q) return WasmResult.NotFound;
    const item = q.items.shift();
    return item ?? WasmResult.Empty;
  }
}

interface FilterMetric {
  type: number;
  value: bigint;
  histogram: Histogram | undefined;
}

/**
 * Metrics defined by filters. Values are held here (proxy_get_metric must be
 * synchronous) and exported to Prometheus on scrape. Names are sanitised and
 * prefixed `wasmcustom_`, as Envoy prefixes custom Wasm stats.
 */
export class FilterMetrics {
  private readonly registry: Registry;
  private readonly byName = new Map<string, number>();
  private readonly byId = new Map<number, FilterMetric>();
  private nextId = 1;

  constructor(registry: Registry) {
    this.registry = registry;
  }

  define(type: number, rawName: string): number | undefined {
    if (type !== MetricType.Counter && type !== MetricType.Gauge && type !== MetricType.Histogram) return undefined;
    const name = 'wasmcustom_' + rawName.replace(/[^a-zA-Z0-9_:]/g, '_');
    const key = `${type}:${name}`;
    const existing = this.byName.get(key);
    if (existing !== undefined) return existing;
    const id = this.nextId++;
    const metric: FilterMetric = { type, value: 0n, histogram: undefined };
    const help = `filter-defined metric ${rawName}`;
    if (this.registry.getSingleMetric(name)) return undefined; // same name, other type
    if (type === MetricType.Histogram) {
      metric.histogram = new Histogram({ name, help, registers: [this.registry] });
    } else if (type === MetricType.Counter) {
      new Counter({
        name,
        help,
        registers: [this.registry],
        collect() {
          this.reset();
          this.inc(Number(metric.value));
        },
      });
    } else {
      new Gauge({
        name,
        help,
        registers: [this.registry],
        collect() {
          this.set(Number(metric.value));
        },
      });
    }
    this.byName.set(key, id);
    this.byId.set(id, metric);
    return id;
  }

  increment(id: number, offset: bigint): number {
    const m = this.byId.get(id);
    if (!m) return WasmResult.NotFound;
    if (m.type === MetricType.Histogram) return WasmResult.BadArgument;
    if (m.type === MetricType.Counter && offset < 0n) return WasmResult.BadArgument;
    m.value += offset;
    return WasmResult.Ok;
  }

  record(id: number, value: bigint): number {
    const m = this.byId.get(id);
    if (!m) return WasmResult.NotFound;
    if (m.histogram) m.histogram.observe(Number(value));
    else m.value = value;
    return WasmResult.Ok;
  }

  get(id: number): bigint | number {
    const m = this.byId.get(id);
    if (!m) return WasmResult.NotFound;
    if (m.type === MetricType.Histogram) return WasmResult.BadArgument;
    return m.value;
  }
}

/** The host's own counters about filters (Prometheus names in docs/proxy-wasm-host.md). */
export class HostMetrics {
  readonly traps: Counter;
  readonly bypassed: Counter;
  readonly dryRun: Counter;
  readonly reloads: Counter;
  readonly bundleRefusals: Counter;
  private readonly instancesGauge: Gauge;
  /** Live filter instances (created and not yet released) of this sidecar. */
  liveInstances = 0;

  constructor(registry: Registry) {
    const registers = [registry];
    this.traps = new Counter({
      name: 'meshc_filter_traps_total',
      help: 'Filter traps by filter and cause (trap, fuel, memory)',
      labelNames: ['filter', 'cause'],
      registers,
    });
    this.bypassed = new Counter({
      name: 'meshc_filter_bypassed_total',
      help: 'Requests that skipped a failed filter under failure policy open (or a failed dry-run filter)',
      labelNames: ['filter'],
      registers,
    });
    this.dryRun = new Counter({
      name: 'meshc_dry_run_decisions_total',
      help: 'Local responses a dry-run filter decided but the host did not send, by filter and rule',
      labelNames: ['filter', 'rule'],
      registers,
    });
    this.reloads = new Counter({
      name: 'meshc_filter_instance_reloads_total',
      help: 'Fresh instances built after a trap under failure policy reload, by result',
      labelNames: ['filter', 'result'],
      registers,
    });
    this.bundleRefusals = new Counter({
      name: 'meshc_bundle_refusals_total',
      help: 'Bundles refused before serving, by error code',
      labelNames: ['code'],
      registers,
    });
    const self = this;
    this.instancesGauge = new Gauge({
      name: 'meshc_filter_instances',
      help: 'Live proxy-wasm filter instances',
      registers,
      collect() {
        this.set(self.liveInstances);
      },
    });
  }
}

/** What filters may learn about the sidecar they run in (node.* properties, mesh_identity). */
export interface NodeFacts {
  /** Instance id, e.g. catalog-v1-0 (node.id). */
  id: string;
  /** The service this sidecar fronts (node.cluster). */
  cluster: string;
  namespace: string;
  /** The sidecar's current SPIFFE ID, '' when it has none. */
  identity(): string;
}

export interface HostEnvironment {
  sharedData: SharedData;
  queues: SharedQueues;
  metrics: FilterMetrics;
  host: HostMetrics;
  log: LogFn;
  /** Minimum proxy-wasm log level (abi LogLevel) that reaches the log. */
  logLevel: number;
  /** Limits for filters that do not set their own. */
  limits: FilterLimits;
  /** Where proxy_http_call goes; undefined → the call returns Unimplemented. */
  httpCalls: HttpCallDispatcher | undefined;
  node: NodeFacts;
}

export interface HostEnvironmentOptions {
  logLevel?: number;
  limits?: Partial<FilterLimits>;
  httpCalls?: HttpCallDispatcher;
  node?: NodeFacts;
}

export function createHostEnvironment(registry: Registry, log: LogFn, options: HostEnvironmentOptions = {}): HostEnvironment {
  return {
    sharedData: new SharedData(),
    queues: new SharedQueues(),
    metrics: new FilterMetrics(registry),
    host: new HostMetrics(registry),
    log,
    logLevel: options.logLevel ?? 2,
    limits: { ...DEFAULT_LIMITS, ...options.limits },
    httpCalls: options.httpCalls,
    node: options.node ?? { id: '', cluster: '', namespace: '', identity: () => '' },
  };
}
