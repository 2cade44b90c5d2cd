// Child process entry for runtime/wasm/module-cache.ts: runs the binaryen
// instrumentation (tens of milliseconds per module, plus ~300 ms to load
// binaryen once) off the sidecar's event loop, so a reload never stalls
// traffic. A process, not a worker thread: binaryen and V8's compile zones
// leave ~85 MiB of freed but fragmented malloc memory behind in the threads
// that ran them, which the sidecar would carry for the rest of its life
// (194 MiB resident with one filter against 110 MiB without); a process gives
// all of it back when it exits.
//
// In:  { id, bytes, limits } messages over the IPC channel (advanced serialization).
// Out: { id, bytes } or { id, error: { code, message } }. Exits when the parent goes.
import process from 'node:process';
import { instrumentModule } from './metering.ts';
import type { FilterLimits } from './limits.ts';

export interface MeterRequest {
  id: number;
  bytes: Uint8Array;
  limits: FilterLimits;
}

export type MeterResponse = { id: number; bytes: Uint8Array } | { id: number; error: { code: string; message: string } };

process.on('message', (req: MeterRequest) => {
  let response: MeterResponse;
  try {
    const bytes = instrumentModule(req.bytes, req.limits);
    response = { id: req.id, bytes };
  } catch (err) {
    const e = err as Error & { code?: string };
    response = { id: req.id, error: { code: e.code ?? 'FILTER_METERING', message: e.message } };
  }
  process.send?.(response);
});
// The sidecar ended (or closed the channel when idle): nothing left to serve.
process.on('disconnect', () => process.exit(0));
