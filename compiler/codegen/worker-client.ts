// The caller's side of the compile worker: one worker thread, started on first
// use and reused across calls, so a long-running caller (the controller) never
// blocks its event loop on asc.
// In: AssemblyScript entry sources. Out: Wasm bytes; shutdownWorker() ends the thread.
import { Worker } from 'node:worker_threads';
import { AssemblyScriptError } from './asc.ts';
import type { CompileRequest, CompileResponse } from './worker.ts';

interface Pending {
  resolve: (wasm: Uint8Array) => void;
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
  const w = new Worker(new URL('./worker.ts', import.meta.url));
  w.on('message', (response: CompileResponse) => {
    const p = pending.get(response.id);
    if (!p) return;
    pending.delete(response.id);
    if ('error' in response) p.reject(new AssemblyScriptError(response.error));
    else p.resolve(response.wasm);
    // An idle worker must not keep the process alive.
    if (pending.size === 0) w.unref();
  });
  w.on('error', (err) => {
    if (worker === w) worker = undefined;
    failAll(new AssemblyScriptError(`compile worker crashed: ${err.message}`));
  });
  w.on('exit', (code) => {
    if (worker === w) worker = undefined;
    if (pending.size > 0) failAll(new AssemblyScriptError(`compile worker exited with code ${code}`));
  });
  return w;
}

export function compileInWorker(source: string): Promise<Uint8Array> {
  worker ??= startWorker();
  const w = worker;
  const id = nextId++;
  const request: CompileRequest = { id, source };
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject });
    w.ref();
    w.postMessage(request);
  });
}

export async function shutdownWorker(): Promise<void> {
  const w = worker;
  worker = undefined;
  if (w) await w.terminate();
}
