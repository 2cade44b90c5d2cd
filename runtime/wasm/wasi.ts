// The WASI preview1 calls the proxy-wasm v0.2.1 spec lets a filter make,
// served under both `wasi_snapshot_preview1` and the older `wasi_unstable`
// module name (same signatures for these calls). There is no file system, no
// arguments and no environment: a filter sees stdout/stderr as its log,
// clocks, randomness, and nothing else.
//
// In:  the filter's GuestMemory (once instantiated) and a log function.
// Out: the import table; unknown WASI names get ENOSYS from the caller.
import { Buffer } from 'node:buffer';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { randomFillSync } from 'node:crypto';
import { ClockId, Errno } from './abi.ts';
import type { GuestMemory } from './memory.ts';
import { randomPool, takeRandom } from '../random-pool.ts';

export type ImportFn = (...args: never[]) => number | bigint | undefined | void;

/** Thrown by proc_exit: unwinds the guest like a trap. */
export class ProcExit extends Error {
  constructor(code: number) {
    super(`proc_exit(${code})`);
  }
}

/** The largest random_get request served (the spec allows INVAL for "too large"). */
const MAX_RANDOM = 64 * 1024;

export function wasiFunctions(mem: () => GuestMemory, log: (level: 'info' | 'error', message: string) => void): Record<string, ImportFn> {
  const zeroSizes = (countPtr: number, sizePtr: number): number =>
    mem().writeU32(countPtr, 0) && mem().writeU32(sizePtr, 0) ? Errno.Success : Errno.Fault;
  const table = {
    fd_write: (fd: number, iovs: number, iovsLen: number, writtenPtr: number) => {
      if (fd !== 1 && fd !== 2) return Errno.Badf;
      const m = mem();
      const parts: Uint8Array[] = [];
      let total = 0;
      for (let i = 0; i < iovsLen >>> 0; i++) {
        const base = (iovs >>> 0) + i * 8;
        const ptr = m.readU32(base);
        const len = m.readU32(base + 4);
        const chunk = ptr === undefined || len === undefined ? undefined : m.read(ptr, len);
        if (!chunk) return Errno.Fault;
        parts.push(chunk);
        total += chunk.length;
      }
      log(fd === 1 ? 'info' : 'error', Buffer.concat(parts).toString('utf8').replace(/\n$/, ''));
      return m.writeU32(writtenPtr, total) ? Errno.Success : Errno.Fault;
    },
    // No readable or seekable descriptors: stdin is empty, everything else is not open.
    fd_read: (fd: number, _iovs: number, _iovsLen: number, readPtr: number) =>
      fd === 0 ? (mem().writeU32(readPtr, 0) ? Errno.Success : Errno.Fault) : Errno.Badf,
    fd_close: () => Errno.Badf,
    fd_seek: (fd: number) => (fd <= 2 ? Errno.Spipe : Errno.Badf),
    fd_fdstat_get: (fd: number, statPtr: number) => {
      if (fd > 2) return Errno.Badf;
      // filetype character_device (2), no flags, no rights beyond what preview1 assumes for stdio.
      const m = mem();
      return m.writeBytes(statPtr, new Uint8Array(24)) && m.writeBytes(statPtr, new Uint8Array([2])) ? Errno.Success : Errno.Fault;
    },
    // No preopened directories: libc's startup loop stops at the first BADF.
    fd_prestat_get: () => Errno.Badf,
    fd_prestat_dir_name: () => Errno.Badf,
    clock_time_get: (clockId: number, _precision: bigint, retPtr: number) => {
      let now: bigint;
      if (clockId === ClockId.Realtime) now = realtimeNanos();
      else if (clockId === ClockId.Monotonic) now = process.hrtime.bigint();
      else return Errno.Notsup;
      return mem().writeU64(retPtr, now) ? Errno.Success : Errno.Fault;
    },
    clock_res_get: (clockId: number, retPtr: number) => {
      if (clockId !== ClockId.Realtime && clockId !== ClockId.Monotonic) return Errno.Notsup;
      return mem().writeU64(retPtr, 1000n) ? Errno.Success : Errno.Fault;
    },
    random_get: (ptr: number, len: number) => {
      ptr >>>= 0;
      len >>>= 0;
      if (len > MAX_RANDOM) return Errno.Inval;
      const m = mem();
      if (!m.inBounds(ptr, len)) return Errno.Fault;
      if (len > randomPool.length) {
        const bytes = new Uint8Array(len);
        randomFillSync(bytes);
        return m.writeBytes(ptr, bytes) ? Errno.Success : Errno.Fault;
      }
      const at = takeRandom(len);
      return m.writeFrom(ptr, randomPool, at, at + len) ? Errno.Success : Errno.Fault;
    },
    proc_exit: (code: number) => {
      throw new ProcExit(code);
    },
    sched_yield: () => Errno.Success,
    environ_sizes_get: zeroSizes,
    environ_get: () => Errno.Success,
    args_sizes_get: zeroSizes,
    args_get: () => Errno.Success,
  };
  return table as unknown as Record<string, ImportFn>;
}

export function realtimeNanos(): bigint {
  return BigInt(realtimeNanosNumber());
}

/** Nanoseconds since the epoch as a number (exact to ~256 ns): filters ask on every request, and a BigInt costs an allocation or two. */
export function realtimeNanosNumber(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1e6);
}

