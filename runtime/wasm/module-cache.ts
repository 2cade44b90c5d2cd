// Turns filter bytes into a compiled WebAssembly.Module with the load-time
// limits applied (runtime/wasm/metering.ts, run in a child process), cached by
// module digest and limits: a reload that ships the same modules compiles
// nothing, and reload latency is then instantiate + configure only.
//
// In:  module bytes and FilterLimits.
// Out: a PreparedModule, or a CodedError (FILTER_COMPILE, FILTER_METERING, FILTER_MEMORY).
import process from 'node:process';
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { sha256Hex } from '../../protocol/bundle.ts';
import { CodedError } from '../../protocol/errors.ts';
import { MeteringError, type FilterLimits } from './limits.ts';
import { capMemoryBytes } from './memory-cap.ts';
import type { MeterRequest, MeterResponse } from './metering-process.ts';
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
  // Only the fuel meter needs binaryen (in the child process); a memory cap alone is a byte edit done here.
  const instrumented = metered ? await instrumentInProcess(bytes, limits) : capMemoryBytes(bytes, limits.memoryMaxBytes);
  let module: WasmModule;
  try {
    module = await Wasm.compile(instrumented);
  } catch (err) {
    throw new MeteringError('FILTER_METERING', `the instrumented module does not compile: ${(err as Error).message}`);
  }
  return { module, digest, metered };
}

// ---- the metering process ----

interface Pending {
  resolve: (bytes: Uint8Array) => void;
  reject: (err: Error) => void;
}

/** One metering child process and the requests it has not answered yet. */
interface Meter {
  child: ChildProcess;
  pending: Map<number, Pending>;
}

let meter: Meter | undefined;
let nextId = 1;

function failAll(m: Meter, err: Error): void {
  for (const p of m.pending.values()) p.reject(err);
  m.pending.clear();
}

/** An idle child must not keep the sidecar alive (a busy one does, until it answers). */
function holdOpen(m: Meter, busy: boolean): void {
  if (busy) {
    m.child.ref();
    m.child.channel?.ref();
  } else {
    m.child.unref();
    m.child.channel?.unref();
  }
}

function startMeter(): Meter {
  const child = fork(fileURLToPath(new URL('./metering-process.ts', import.meta.url)), [], {
    serialization: 'advanced',
    // Not the parent's flags (a test runner's loaders, an inspector port): Node 24 runs .ts as it is.
    execArgv: [],
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  const m: Meter = { child, pending: new Map() };
  child.on('message', (res: MeterResponse) => {
    const p = m.pending.get(res.id);
    if (!p) return;
    m.pending.delete(res.id);
    if ('error' in res) p.reject(new MeteringError(res.error.code, res.error.message));
    else p.resolve(res.bytes);
    if (m.pending.size === 0) {
      holdOpen(m, false);
      scheduleIdleExit(m);
    }
  });
  child.on('error', (err) => {
    if (meter === m) meter = undefined;
    failAll(m, new MeteringError('FILTER_METERING', `metering process failed: ${err.message}`));
  });
  child.on('exit', (code, signal) => {
    if (meter === m) meter = undefined;
    if (m.pending.size > 0) failAll(m, new MeteringError('FILTER_METERING', `metering process exited (${signal ?? `code ${code}`})`));
  });
  return m;
}

/** Reloads come in bursts; a process idle this long is ended and started again on next use. */
const METER_IDLE_MS = 10_000;
let idleTimer: NodeJS.Timeout | undefined;

function scheduleIdleExit(m: Meter): void {
  clearTimeout(idleTimer);
  idleTimer = setTimeout(() => {
    if (meter === m && m.pending.size === 0) {
      meter = undefined;
      m.child.kill();
    }
  }, METER_IDLE_MS);
  idleTimer.unref();
}

function instrumentInProcess(bytes: Uint8Array, limits: FilterLimits): Promise<Uint8Array> {
  clearTimeout(idleTimer);
  meter ??= startMeter();
  const m = meter;
  const id = nextId++;
  const request: MeterRequest = { id, bytes, limits };
  return new Promise((resolve, reject) => {
    m.pending.set(id, { resolve, reject });
    holdOpen(m, true);
    m.child.send(request);
  });
}

/** The metering process's pid while one runs (tests). */
export function meteringProcessPid(): number | undefined {
  return meter?.child.pid;
}

/** Ends the metering process (tests and benchmarks that want a clean exit); it starts again on next use. */
export async function shutdownMeteringProcess(): Promise<void> {
  const m = meter;
  meter = undefined;
  if (!m || m.child.exitCode !== null || m.child.signalCode !== null) return;
  const exited = new Promise((r) => m.child.once('exit', r));
  // An idle child is unref'd: without this the wait for its exit would not keep the caller's process alive.
  m.child.ref();
  m.child.kill();
  await exited;
}
