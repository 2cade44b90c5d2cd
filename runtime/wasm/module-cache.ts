// Turns filter bytes into a compiled WebAssembly.Module with the load-time
// limits applied (runtime/wasm/metering.ts, run in a worker thread), cached by
// module digest and limits: a reload that ships the same modules compiles
// nothing, and reload latency is then instantiate + configure only.
//
// In:  module bytes and FilterLimits.
// Out: a PreparedModule, or a CodedError (FILTER_COMPILE, FILTER_METERING, FILTER_MEMORY).
import { Worker } from 'node:worker_threads';
import { sha256Hex } from '../../protocol/bundle.ts';
import { CodedError } from '../../protocol/errors.ts';
import { MeteringError, type FilterLimits } from './limits.ts';
import { capMemoryBytes } from './memory-cap.ts';
import type { MeterRequest, MeterResponse } from './metering-worker.ts';
import { Wasm, type WasmModule } from './webassembly.ts';

export interface PreparedModule {
  module: WasmModule;
  /** sha256 of the bytes as shipped (before instrumentation). */
  digest: string;
  /** True when the module carries the fuel meter (exports `meshc_fuel`). */
  metered: boolean;
}

/** Distinct prepared modules kept; a sidecar rarely holds more than a couple of bundles' worth. */
const CACHE_SIZE = 64;
const cache = new Map<string, Promise<PreparedModule>>();

export function prepareModule(bytes: Uint8Array, limits: FilterLimits): Promise<PreparedModule> {
  const digest = sha256Hex(bytes);
  const metered = limits.fuelPerCallback > 0;
  // The fuel amount is baked in as the meter's initial value (the start function's budget).
  const key = `${digest}:${limits.memoryMaxBytes}:${limits.fuelPerCallback}`;
  let entry = cache.get(key);
  if (entry) {
    // Refresh recency: Map iteration order is insertion order.
    cache.delete(key);
    cache.set(key, entry);
    return entry;
  }
  entry = build(bytes, limits, digest, metered);
  cache.set(key, entry);
  entry.catch(() => cache.delete(key));
  while (cache.size > CACHE_SIZE) cache.delete(cache.keys().next().value as string);
  return entry;
}

async function build(bytes: Uint8Array, limits: FilterLimits, digest: string, metered: boolean): Promise<PreparedModule> {
  // A module that does not even compile is reported as such, not as a metering failure.
  if (!Wasm.validate(bytes)) {
    const reason = await Wasm.compile(bytes).then(() => 'invalid', (err: Error) => err.message);
    throw new CodedError('FILTER_COMPILE', `not a valid Wasm module: ${reason}`);
  }
  // Only the fuel meter needs binaryen (in the worker); a memory cap alone is a byte edit done here.
  const instrumented = metered ? await instrumentInWorker(bytes, limits) : capMemoryBytes(bytes, limits.memoryMaxBytes);
  let module: WasmModule;
  try {
    module = await Wasm.compile(instrumented);
  } catch (err) {
    throw new MeteringError('FILTER_METERING', `the instrumented module does not compile: ${(err as Error).message}`);
  }
  return { module, digest, metered };
}

// ---- the worker ----

interface Pending {
  resolve: (bytes: Uint8Array) => void;
  reject: (err: Error) => void;
}

let worker: Worker | undefined;
let nextId = 1;
const pending = new Map<number, Pending>();

function failAll(err: Error): void {
  for (const p of pending.values()) p.reject(err);
  pending.clear();
}

function startWorker(): Worker {
  const w = new Worker(new URL('./metering-worker.ts', import.meta.url));
  w.on('message', (res: MeterResponse) => {
    const p = pending.get(res.id);
    if (!p) return;
    pending.delete(res.id);
    if ('error' in res) p.reject(new MeteringError(res.error.code, res.error.message));
    else p.resolve(res.bytes);
    if (pending.size === 0) {
      // An idle worker must not keep the process alive, and should not keep
      // binaryen's tens of MiB resident between reloads either.
      w.unref();
      scheduleIdleExit(w);
    }
  });
  w.on('error', (err) => {
    if (worker === w) worker = undefined;
    failAll(new MeteringError('FILTER_METERING', `metering worker crashed: ${err.message}`));
  });
  w.on('exit', (code) => {
    if (worker === w) worker = undefined;
    if (pending.size > 0) failAll(new MeteringError('FILTER_METERING', `metering worker exited with code ${code}`));
  });
  return w;
}

/** Reloads come in bursts; a worker idle this long is ended and restarted on next use. */
const WORKER_IDLE_MS = 10_000;
let idleTimer: NodeJS.Timeout | undefined;

function scheduleIdleExit(w: Worker): void {
  clearTimeout(idleTimer);
  idleTimer = setTimeout(() => {
    if (worker === w && pending.size === 0) {
      worker = undefined;
      void w.terminate();
    }
  }, WORKER_IDLE_MS);
  idleTimer.unref();
}

function instrumentInWorker(bytes: Uint8Array, limits: FilterLimits): Promise<Uint8Array> {
  clearTimeout(idleTimer);
  worker ??= startWorker();
  const w = worker;
  const id = nextId++;
  const request: MeterRequest = { id, bytes, limits };
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject });
    w.ref();
    w.postMessage(request);
  });
}

/** Ends the worker (tests and benchmarks that want a clean exit); it restarts on next use. */
export async function shutdownMeteringWorker(): Promise<void> {
  const w = worker;
  worker = undefined;
  if (w) await w.terminate();
}
