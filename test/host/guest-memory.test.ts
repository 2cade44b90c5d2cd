// GuestMemory's writers that avoid intermediate objects on hot host calls:
// a u64 from a number (the proxy clock, no BigInt) and a copy from a slice of
// a host buffer (random_get from the pool), both bounds-checked.
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../runtime/wasm/memory.ts';
import type { WasmMemory } from '../../runtime/wasm/webassembly.ts';

// The project's lib has no DOM, where TypeScript declares WebAssembly.Memory.
const { Memory } = (globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number }) => WasmMemory } }).WebAssembly;

function guest(): { mem: GuestMemory; view: DataView } {
  const memory = new Memory({ initial: 1 });
  return { mem: new GuestMemory(memory, undefined), view: new DataView(memory.buffer) };
}

describe('GuestMemory', () => {
  it('writes whole numbers as little-endian u64, as setBigUint64 would', () => {
    const { mem, view } = guest();
    const now = Math.round((performance.timeOrigin + performance.now()) * 1e6);
    for (const v of [0, 1, 0xffffffff, 0x100000000, 2 ** 53 - 1, 2 ** 53, now, 1.7e18, 2 ** 64 - 2 ** 12]) {
      expect(mem.writeU64Number(8, v)).toBe(true);
      expect(view.getBigUint64(8, true)).toBe(BigInt(v));
    }
    expect(mem.writeU64Number(65536 - 4, 1)).toBe(false);
  });

  it('copies a slice of a buffer into guest memory, short and long, and refuses out-of-bounds targets', () => {
    const { mem } = guest();
    const source = Uint8Array.from({ length: 100 }, (_, i) => i);
    expect(mem.writeFrom(16, source, 3, 11)).toBe(true);
    expect(Array.from(mem.read(16, 8)!)).toEqual([3, 4, 5, 6, 7, 8, 9, 10]);
    expect(mem.writeFrom(200, source, 10, 90)).toBe(true);
    expect(Array.from(mem.read(200, 80)!)).toEqual(Array.from(source.subarray(10, 90)));
    expect(mem.writeFrom(65536 - 4, source, 0, 8)).toBe(false);
  });
});
