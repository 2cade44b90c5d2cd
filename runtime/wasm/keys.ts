// Names a filter passes to the host over and over (property paths, header
// names) from the same constant buffers in its memory. Decoding them on every
// call showed up in the host's profile, so each is decoded once and kept by
// its guest pointer; a hit is confirmed byte for byte, so a buffer reused for
// another name is simply decoded again.
//
// In:  the guest memory, a (pointer, length) the filter passed.
// Out: the value `make` derived from the decoded name (cached), or undefined
//      when the range is outside memory.
import type { GuestMemory } from './memory.ts';

/** Names longer than this are decoded every time (filters ask for short names). */
const MAX_KEY_BYTES = 256;
/** Distinct pointers remembered; bounds what a filter passing ever-new buffers can grow. */
const MAX_ENTRIES = 512;

interface Entry<T> {
  bytes: Uint8Array;
  value: T;
}

export class KeyCache<T> {
  private readonly entries = new Map<number, Entry<T>>();
  private readonly make: (name: string) => T;

  constructor(make: (name: string) => T) {
    this.make = make;
  }

  get(mem: GuestMemory, ptr: number, len: number): T | undefined {
    ptr >>>= 0;
    len >>>= 0;
    const hit = this.entries.get(ptr);
    if (hit !== undefined && mem.holds(ptr, hit.bytes, len)) return hit.value;
    const name = mem.readString(ptr, len);
    if (name === undefined) return undefined;
    const value = this.make(name);
    if (len <= MAX_KEY_BYTES && (hit !== undefined || this.entries.size < MAX_ENTRIES)) {
      this.entries.set(ptr, { bytes: mem.read(ptr, len)!, value });
    }
    return value;
  }
}
