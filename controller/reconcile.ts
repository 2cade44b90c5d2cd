// The controller's level-based reconcile loop (in the manner of controller-runtime).
//
// In:  a ConfigSource (whose events only enqueue the one key "mesh") and a compiler.
// Out: MeshState — the last good topology and bundle, plus the current errors —
//      handed to `onState` after every reconcile that changed it.
//
//   event ──▶ enqueue("mesh") ──debounce──▶ reconcile: read current state
//                                             ├─ topology invalid → keep last good, record errors
//                                             ├─ sources+topology digest unchanged → skip compile
//                                             ├─ compile errors → keep last good bundle, record diagnostics
//                                             └─ ok → new bundle
//   RetryableError → requeue with backoff;  any other error → terminal, recorded, waits for the next event.
import { createHash, type KeyObject } from 'node:crypto';
import { bundleVersion, toWire, type WireBundle } from '../protocol/bundle.ts';
import type { PolicyCompileResult, PolicyCompiler, PolicyDiagnostic } from './compile.ts';
import type { VersionedResource } from './derive.ts';
import type { Logger } from './log.ts';
import { RetryableError, type ConfigSource, type PolicySource } from './source.ts';
import { compilerTopology, formatTopologyError, type MeshTopology, type TopologyError } from './topology.ts';

export interface DiagnosticStatus {
  code: string;
  severity: 'error' | 'warning';
  message: string;
  hint?: string;
  file: string;
  line: number;
  col: number;
  /** The compiler's own one-line rendering (file:line:col: ...). */
  text: string;
}

export interface MeshState {
  /** Last good topology; absent until one has parsed. */
  topology?: MeshTopology;
  topologyErrors: TopologyError[];
  /** Last good bundle; absent until a policy set has compiled. */
  bundle?: VersionedResource<WireBundle>;
  /** Digest of the policy sources + topology the last good bundle was built from. */
  lastGoodDigest?: string;
  /** Digest of the inputs of the last compile attempt (good or not). */
  currentDigest?: string;
  /** Diagnostics of the last compile attempt: errors mean the last good bundle is still in use. */
  diagnostics: DiagnosticStatus[];
  /** The last error that stopped a reconcile (retryable or terminal), cleared by a clean pass. */
  lastError?: { code: string; message: string; retrying: boolean; at: string };
  /** Successful compiles so far. */
  generation: number;
}

export interface ReconcilerOptions {
  source: ConfigSource;
  compiler: () => Promise<PolicyCompiler>;
  signKey?: KeyObject;
  debounceMs?: number;
  log: Logger;
  onState: (state: MeshState) => void;
}

const RETRY_BASE_MS = 200;
const RETRY_CAP_MS = 10_000;

export class Reconciler {
  /** Counters for tests and /status: how often each stage actually ran. */
  readonly stats = { reconciles: 0, compiles: 0 };
  private readonly options: ReconcilerOptions;
  private readonly debounceMs: number;
  private current: MeshState = { topologyErrors: [], diagnostics: [], generation: 0 };
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private dirty = false;
  private retries = 0;
  private stopped = false;
  private idleWaiters: (() => void)[] = [];
  private compiler: PolicyCompiler | undefined;

  constructor(options: ReconcilerOptions) {
    this.options = options;
    this.debounceMs = options.debounceMs ?? 150;
  }

  state(): MeshState {
    return this.current;
  }

  /** Starts watching and runs a first reconcile right away. */
  start(): void {
    this.options.source.watch(() => this.enqueue());
    this.schedule(0);
  }

  /** Level-based: an event carries nothing but "look again". Bursts collapse into one reconcile. */
  enqueue(): void {
    this.schedule(this.debounceMs);
  }

  /** Resolves once no reconcile is queued or running. */
  idle(): Promise<void> {
    if (!this.timer && !this.running) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.options.source.close();
    await this.running;
    await this.compiler?.shutdown();
    this.notifyIdle();
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    if (this.running) {
      this.dirty = true;
      return;
    }
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.running = this.runOnce().then((retryInMs) => {
        this.running = undefined;
        if (this.stopped) return;
        if (retryInMs !== undefined || this.dirty) {
          this.dirty = false;
          this.schedule(retryInMs ?? this.debounceMs);
        } else this.notifyIdle();
      });
    }, delayMs);
  }

  private notifyIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  /** One reconcile; returns a delay when it should be retried. Never throws. */
  private async runOnce(): Promise<number | undefined> {
    const log = this.options.log;
    this.stats.reconciles++;
    try {
      const next = await this.reconcile(this.current);
      this.retries = 0;
      delete next.lastError;
      this.publish(next);
      return undefined;
    } catch (err) {
      const e = err as Error & { code?: string };
      const retrying = err instanceof RetryableError;
      const code = e.code ?? 'RECONCILE_FAILED';
      this.publish({ ...this.current, lastError: { code, message: e.message, retrying, at: new Date().toISOString() } });
      if (retrying) {
        const delay = Math.min(RETRY_CAP_MS, RETRY_BASE_MS * 2 ** this.retries++);
        log.warn('reconcile failed, retrying', { code, error: e.message, retryInMs: delay });
        return delay;
      }
      log.error('reconcile failed; waiting for the next change', { code, error: e.message });
      return undefined;
    }
  }

  private publish(next: MeshState): void {
    this.current = next;
    this.options.onState(next);
  }

  /** Reads the current state and derives the next MeshState from it and the previous one. */
  private async reconcile(prev: MeshState): Promise<MeshState> {
    const log = this.options.log;
    const snapshot = await this.options.source.read();
    const next: MeshState = { ...prev };

    if (snapshot.topology.ok) {
      next.topology = snapshot.topology.topology;
      next.topologyErrors = [];
    } else {
      next.topologyErrors = snapshot.topology.errors;
      for (const e of snapshot.topology.errors) log.error('topology error; keeping the last good topology', { code: e.code, diagnostic: formatTopologyError(e) });
    }
    if (!next.topology) return next; // nothing to compile against yet

    const topology = compilerTopology(next.topology);
    const digest = inputDigest(snapshot.policies, topology);
    if (digest === prev.currentDigest) return next;

    const compiler = await this.loadCompiler();
    this.stats.compiles++;
    let result: PolicyCompileResult;
    try {
      result = await compiler.compile(snapshot.policies, topology, this.options.signKey);
    } catch (err) {
      throw new RetryableError('COMPILE_CRASHED', `the compiler failed before reporting diagnostics: ${(err as Error).message}`);
    }
    next.currentDigest = digest;
    next.diagnostics = result.diagnostics.map((d) => toStatus(d, compiler.format(d)));
    const errors = result.diagnostics.filter((d) => d.severity === 'error');
    for (const d of result.diagnostics) {
      (d.severity === 'error' ? log.error : log.warn)('policy diagnostic', { code: d.code, diagnostic: compiler.format(d) });
    }
    if (errors.length > 0 || !result.bundle) {
      log.error('policies do not compile; sidecars keep the last good bundle', { errors: errors.length, lastGood: prev.bundle?.version ?? null });
      return next;
    }
    const version = bundleVersion(result.bundle);
    next.bundle = { version, payload: toWire(result.bundle) };
    next.lastGoodDigest = digest;
    next.generation = prev.generation + 1;
    log.info('policies compiled', { version, files: snapshot.policies.length, filters: result.bundle.manifest.filters.length });
    return next;
  }

  private async loadCompiler(): Promise<PolicyCompiler> {
    if (!this.compiler) this.compiler = await this.options.compiler();
    return this.compiler;
  }
}

function inputDigest(policies: PolicySource[], topology: object): string {
  const h = createHash('sha256');
  for (const p of policies) h.update(`${p.path}\0${p.text.length}\0${p.text}\0`);
  h.update(JSON.stringify(topology));
  return h.digest('hex').slice(0, 16);
}

function toStatus(d: PolicyDiagnostic, text: string): DiagnosticStatus {
  const s: DiagnosticStatus = { code: d.code, severity: d.severity, message: d.message, file: d.span.file, line: d.span.line, col: d.span.col, text };
  if (d.hint) s.hint = d.hint;
  return s;
}
