// Worker thread entry for runtime/wasm/module-cache.ts: runs the binaryen
// instrumentation (tens of milliseconds per module, plus ~300 ms to load
// binaryen once) off the sidecar's event loop, so a reload never stalls traffic.
//
// In:  { id, bytes, limits } messages. Out: { id, bytes } or { id, error: { code, message } }.
import { parentPort } from 'node:worker_threads';
import { instrumentModule } from './metering.ts';
import type { FilterLimits } from './limits.ts';

export interface MeterRequest {
  id: number;
  bytes: Uint8Array;
  limits: FilterLimits;
}

export type MeterResponse = { id: number; bytes: Uint8Array } | { id: number; error: { code: string; message: string } };

parentPort?.on('message', (req: MeterRequest) => {
  let response: MeterResponse;
  try {
    const bytes = instrumentModule(req.bytes, req.limits);
    response = { id: req.id, bytes };
  } catch (err) {
    const e = err as Error & { code?: string };
    response = { id: req.id, error: { code: e.code ?? 'FILTER_METERING', message: e.message } };
  }
  parentPort?.postMessage(response);
});
