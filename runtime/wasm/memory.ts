// A filter's linear memory as the host sees it: bounds-checked reads and
// writes, and allocation through the guest's own allocator
// (`proxy_on_memory_allocate`, else `malloc`, as the spec says).
//
// In:  the instance's exported memory and allocator.
// Out: byte/string/integer access that never throws on a bad pointer (callers
//      turn `undefined`/`false` into InvalidMemoryAccess or FAULT).
import { Buffer } from 'node:buffer';
import { decodeUtf8, encodeUtf8 } from './text.ts';
import type { WasmMemory } from './webassembly.ts';

type Allocator = (size: number) => unknown;

/** Text up to this many UTF-16 units is written without an intermediate buffer. */
const SHORT_TEXT = 256;

export class GuestMemory {
  private readonly memory: WasmMemory;
  private readonly allocator: Allocator | undefined;
  private bytes: Uint8Array;
  private view: DataView;

  constructor(memory: WasmMemory, allocator: Allocator | undefined) {
    this.memory = memory;
    this.allocator = allocator;
    this.bytes = new Uint8Array(memory.buffer);
    this.view = new DataView(memory.buffer);
  }

  /**
   * Views go stale when memory grows: the old ArrayBuffer is detached (its
   * length drops to 0) and replaced. Checking the view's own length is much
   * cheaper than reading `memory.buffer` on every access.
   */
  private refresh(): void {
    if (this.bytes.byteLength === 0) {
      this.bytes = new Uint8Array(this.memory.buffer);
      this.view = new DataView(this.memory.buffer);
    }
  }

  inBounds(ptr: number, len: number): boolean {
    this.refresh();
    return ptr >= 0 && len >= 0 && ptr + len <= this.bytes.byteLength;
  }

  /** Whether guest memory at ptr holds exactly `bytes`, which must be `len` long. */
  holds(ptr: number, bytes: Uint8Array, len: number): boolean {
    if (bytes.length !== len || !this.inBounds(ptr, len)) return false;
    const mem = this.bytes;
    for (let i = 0; i < len; i++) if (mem[ptr + i] !== bytes[i]) return false;
    return true;
  }

  /** A copy of guest bytes, or undefined when the range is outside memory. */
  read(ptr: number, len: number): Uint8Array | undefined {
    ptr >>>= 0;
    len >>>= 0;
    if (!this.inBounds(ptr, len)) return undefined;
    return this.bytes.slice(ptr, ptr + len);
  }

  readString(ptr: number, len: number): string | undefined {
    ptr >>>= 0;
    len >>>= 0;
    if (!this.inBounds(ptr, len)) return undefined;
    return decodeUtf8(this.bytes, ptr, ptr + len);
  }

  readU32(ptr: number): number | undefined {
    ptr >>>= 0;
    if (!this.inBounds(ptr, 4)) return undefined;
    return this.view.getUint32(ptr, true);
  }

  writeU32(ptr: number, value: number): boolean {
    ptr >>>= 0;
    if (!this.inBounds(ptr, 4)) return false;
    this.view.setUint32(ptr, value >>> 0, true);
    return true;
  }

  writeU64(ptr: number, value: bigint): boolean {
    ptr >>>= 0;
    if (!this.inBounds(ptr, 8)) return false;
    this.view.setBigUint64(ptr, BigInt.asUintN(64, value), true);
    return true;
  }

  /** A whole number of at most 2^64 - 1 (exactly up to 2^53) as a u64, without a BigInt. */
  writeU64Number(ptr: number, value: number): boolean {
    ptr >>>= 0;
    if (!this.inBounds(ptr, 8)) return false;
    const high = Math.floor(value / 4294967296);
    this.view.setUint32(ptr, value - high * 4294967296, true);
    this.view.setUint32(ptr + 4, high, true);
    return true;
  }

  /** Copies source[start, end) to guest memory at ptr (no intermediate copy). */
  writeFrom(ptr: number, source: Uint8Array, start: number, end: number): boolean {
    ptr >>>= 0;
    const n = end - start;
    if (!this.inBounds(ptr, n)) return false;
    const mem = this.bytes;
    if (n <= 32) for (let i = 0; i < n; i++) mem[ptr + i] = source[start + i]!;
    else mem.set(source.subarray(start, end), ptr);
    return true;
  }

  writeBytes(ptr: number, value: Uint8Array): boolean {
    ptr >>>= 0;
    if (!this.inBounds(ptr, value.length)) return false;
    this.bytes.set(value, ptr);
    return true;
  }

  /** Allocates guest memory with the guest's allocator; throws (a trap) when it has none or it fails. */
  allocate(size: number): number {
    if (!this.allocator) throw new Error('module exports neither proxy_on_memory_allocate nor malloc');
    const ptr = this.allocator(size);
    if (typeof ptr !== 'number' || (ptr === 0 && size > 0)) throw new Error(`guest allocator failed for ${size} bytes`);
    return ptr >>> 0;
  }

  /** Copies bytes into fresh guest memory and writes (pointer, size) to the return slots; returns a WasmResult. */
  writeReturn(value: Uint8Array, ptrPtr: number, sizePtr: number): number {
    const n = value.length;
    const ptr = this.allocate(n);
    if (!this.returnSlotsFit(ptr, n, ptrPtr, sizePtr)) return 6;
    const mem = this.bytes;
    // Most values are a few bytes: a loop beats the fixed cost of TypedArray.set.
    if (n <= 32) for (let i = 0; i < n; i++) mem[ptr + i] = value[i]!;
    else mem.set(value, ptr);
    this.setReturnSlots(ptr, n, ptrPtr, sizePtr);
    return 0;
  }

  /**
   * writeReturn for text: short ASCII (header values, mostly) is written
   * straight into the guest's buffer, anything else goes through UTF-8 bytes.
   */
  writeReturnText(text: string, ptrPtr: number, sizePtr: number): number {
    const n = text.length;
    if (n > SHORT_TEXT) return this.writeReturn(encodeUtf8(text), ptrPtr, sizePtr);
    for (let i = 0; i < n; i++) if (text.charCodeAt(i) >= 0x80) return this.writeReturn(encodeUtf8(text), ptrPtr, sizePtr);
    const ptr = this.allocate(n);
    if (!this.returnSlotsFit(ptr, n, ptrPtr, sizePtr)) return 6;
    const mem = this.bytes;
    for (let i = 0; i < n; i++) mem[ptr + i] = text.charCodeAt(i);
    this.setReturnSlots(ptr, n, ptrPtr, sizePtr);
    return 0;
  }

  /** One bounds check (after the allocation that may have grown memory) for a value and its two u32 return slots. */
  private returnSlotsFit(ptr: number, n: number, ptrPtr: number, sizePtr: number): boolean {
    this.refresh();
    const size = this.bytes.byteLength;
    return ptr + n <= size && ptrPtr >>> 0 <= size - 4 && sizePtr >>> 0 <= size - 4;
  }

  private setReturnSlots(ptr: number, n: number, ptrPtr: number, sizePtr: number): void {
    this.view.setUint32(ptrPtr >>> 0, ptr, true);
    this.view.setUint32(sizePtr >>> 0, n, true);
  }

  /** Reads an AssemblyScript string object (UTF-16, byte length stored just before it). */
  readAsString(ptr: number): string {
    ptr >>>= 0;
    const len = ptr >= 4 ? this.readU32(ptr - 4) : undefined;
    if (len === undefined || !this.inBounds(ptr, len)) return '';
    return Buffer.from(this.bytes.subarray(ptr, ptr + len)).toString('utf16le');
  }
}
