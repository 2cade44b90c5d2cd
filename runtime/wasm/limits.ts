// Per-filter resource limits and their defaults, without the instrumentation
// itself (runtime/wasm/metering.ts, which loads binaryen and runs only in the
// metering worker). Everything on the sidecar's main thread imports this file.
import { CodedError } from '../../protocol/errors.ts';

export interface FilterLimits {
  /** Linear memory cap in bytes (rounded down to 64 KiB pages); growth past it fails and the filter traps. */
  memoryMaxBytes: number;
  /** Fuel units one callback may spend (one per function entry, loop iteration and return); 0 disables metering. */
  fuelPerCallback: number;
}

/**
 * Defaults: 64 MiB is ample for policy filters (ours use well under 1 MiB) and
 * small beside the sidecar's heap; 50 million fuel units take roughly 50-100 ms
 * of a tight loop here, ~1,000 times what a compiled policy spends per callback
 * (bench/host.ts measures both).
 */
export const DEFAULT_LIMITS: FilterLimits = { memoryMaxBytes: 64 * 1024 * 1024, fuelPerCallback: 50_000_000 };

/** The exported i32 global the meter decrements; the host refills it before each callback. */
export const FUEL_GLOBAL = 'meshc_fuel';

export class MeteringError extends CodedError {}
