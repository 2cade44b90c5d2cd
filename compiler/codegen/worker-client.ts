// The caller's side of the compile workers: a small pool of worker threads
// (one per core, at most POOL_MAX), started on first use and reused across
// calls, so a long-running caller (the controller) never blocks its event loop
// on asc, and a build of several services uses the cores it has. Each module
// is compiled by one worker; which one does not change the output.
// In: AssemblyScript entry sources. Out: Wasm bytes; shutdownWorker() ends the threads.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { AssemblyScriptError } from './asc.ts';
import type { CompileRequest, CompileResponse } from './worker.ts';

interface Pending {
  resolve: (wasm: Uint8Array) => void;
  reject: (err: Error) => void;
}

interface PoolWorker {
  worker: Worker;
  pending: Map<number, Pending>;
}

const POOL_MAX = 4;
let pool: PoolWorker[] = [];
let nextId = 1;

function poolSize(): number {
  return Math.max(1, Math.min(POOL_MAX, availableParallelism()));
}

function startWorker(): PoolWorker {
  const w = new Worker(new URL('./worker.ts', import.meta.url));
  const entry: PoolWorker = { worker: w, pending: new Map() };
  const failAll = (err: Error): void => {
    for (const p of entry.pending.values()) p.reject(err);
    entry.pending.clear();
  };
  const forget = (): void => {
    pool = pool.filter((x) => x !== entry);
  };
  w.on('message', (response: CompileResponse) => {
    const p = entry.pending.get(response.id);
    if (!p) return;
    entry.pending.delete(response.id);
    if ('error' in response) p.reject(new AssemblyScriptError(response.error));
    else p.resolve(response.wasm);
    // An idle worker must not keep the process alive.
    if (entry.pending.size === 0) w.unref();
  });
  w.on('error', (err) => {
    forget();
    failAll(new AssemblyScriptError(`compile worker crashed: ${err.message}`));
  });
  w.on('exit', (code) => {
    forget();
    if (entry.pending.size > 0) failAll(new AssemblyScriptError(`compile worker exited with code ${code}`));
  });
  return entry;
}

/** The least busy worker, starting another while the pool is below its size. */
function pickWorker(): PoolWorker {
  const idle = pool.find((p) => p.pending.size === 0);
  if (idle) return idle;
  if (pool.length < poolSize()) {
    const entry = startWorker();
    pool.push(entry);
    return entry;
  }
  return pool.reduce((a, b) => (b.pending.size < a.pending.size ? b : a));
}

export function compileInWorker(source: string): Promise<Uint8Array> {
  const entry = pickWorker();
  const id = nextId++;
  const request: CompileRequest = { id, source };
  return new Promise((resolve, reject) => {
    entry.pending.set(id, { resolve, reject });
    entry.worker.ref();
    entry.worker.postMessage(request);
  });
}

export async function shutdownWorker(): Promise<void> {
  const workers = pool;
  pool = [];
  await Promise.all(workers.map((p) => p.worker.terminate()));
}
