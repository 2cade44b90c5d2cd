// The memory cap, written into a module's memory section: a few bytes
// edited in place, no re-encoding of code or data, no binaryen. Cheap enough
// to run on the sidecar's main thread when a filter is not metered.
//
// In:  module bytes and a cap in bytes. Out: module bytes whose memory maximum
//      is at most the cap, or MeteringError (FILTER_MEMORY, FILTER_METERING).
import { MeteringError } from './limits.ts';

const WASM_PAGE = 65536;
/** wasm32's own limit: 4 GiB. */
const MAX_PAGES = 65536;

/** Caps the module's memory at `memoryMaxBytes` (rounded down to whole 64 KiB pages). */
export function capMemoryBytes(bytes: Uint8Array, memoryMaxBytes: number): Uint8Array {
  return capMemory(bytes, Math.min(MAX_PAGES, Math.floor(memoryMaxBytes / WASM_PAGE)));
}

function readLeb(bytes: Uint8Array, offset: number): { value: number; next: number } {
  let value = 0;
  let shift = 0;
  let pos = offset;
  for (;;) {
    if (pos >= bytes.length) throw new MeteringError('FILTER_METERING', 'truncated LEB128 in the module');
    const b = bytes[pos++]!;
    value += (b & 0x7f) * 2 ** shift;
    shift += 7;
    if ((b & 0x80) === 0) return { value, next: pos };
  }
}

function writeLeb(value: number): number[] {
  const out: number[] = [];
  do {
    let b = value % 128;
    value = Math.floor(value / 128);
    if (value > 0) b |= 0x80;
    out.push(b);
  } while (value > 0);
  return out;
}

/**
 * Sets the defined memory's maximum to min(declared maximum, capPages).
 * Refuses a module whose initial memory already exceeds the cap, and shared
 * or 64-bit memories (no proxy-wasm SDK emits them).
 */
export function capMemory(bytes: Uint8Array, capPages: number): Uint8Array {
  let pos = 8; // magic + version
  while (pos < bytes.length) {
    const id = bytes[pos]!;
    const size = readLeb(bytes, pos + 1);
    const start = size.next;
    const end = start + size.value;
    if (id === 5) {
      const count = readLeb(bytes, start);
      if (count.value !== 1) throw new MeteringError('FILTER_MEMORY', `module defines ${count.value} memories, expected 1`);
      const flags = bytes[count.next]!;
      if (flags > 1) throw new MeteringError('FILTER_MEMORY', `module memory has flags ${flags} (shared or 64-bit), not supported`);
      const initial = readLeb(bytes, count.next + 1);
      let max = capPages;
      if (flags === 1) max = Math.min(max, readLeb(bytes, initial.next).value);
      const limitsEnd = flags === 1 ? readLeb(bytes, initial.next).next : initial.next;
      if (initial.value > capPages) {
        throw new MeteringError(
          'FILTER_MEMORY',
          `module starts with ${initial.value * 64} KiB of memory, over the cap of ${capPages * 64} KiB`,
        );
      }
      const body = [...writeLeb(1), 1, ...writeLeb(initial.value), ...writeLeb(max), ...bytes.subarray(limitsEnd, end)];
      const section = [5, ...writeLeb(body.length), ...body];
      const out = new Uint8Array(pos + section.length + (bytes.length - end));
      out.set(bytes.subarray(0, pos), 0);
      out.set(section, pos);
      out.set(bytes.subarray(end), pos + section.length);
      return out;
    }
    pos = end;
  }
  // No memory section: the memory is imported (the host provides none, so instantiation reports it) or absent.
  return bytes;
}
