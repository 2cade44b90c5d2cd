// The compile worker thread: runs asc off the caller's event loop.
// In: { id, source } messages (AssemblyScript entry source).
// Out: { id, wasm } or { id, error } messages.
import { parentPort } from 'node:worker_threads';
import { compileAssemblyScript } from './asc.ts';

export interface CompileRequest {
  id: number;
  source: string;
}

export type CompileResponse = { id: number; wasm: Uint8Array } | { id: number; error: string };

const port = parentPort;
if (!port) throw new Error('compiler/codegen/worker.ts must run as a worker thread');

// One job at a time: asc is CPU-bound, and a queue keeps results in request order.
let queue: Promise<void> = Promise.resolve();
port.on('message', (request: CompileRequest) => {
  queue = queue.then(async () => {
    let response: CompileResponse;
    try {
      response = { id: request.id, wasm: await compileAssemblyScript(request.source) };
    } catch (err) {
      response = { id: request.id, error: (err as Error).message };
    }
    port.postMessage(response);
  });
});
