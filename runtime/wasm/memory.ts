// A filter's linear memory as the host sees it: bounds-checked reads and
// writes, and allocation through the guest's own allocator
// (`proxy_on_memory_allocate`, else `malloc`, as the spec says).
//
// In:  the instance's exported memory and allocator.
// Out: byte/string/integer access that never throws on a bad pointer (callers
//      turn `undefined`/`false` into InvalidMemoryAccess or FAULT).
import { decodeUtf8 } from './text.ts';
import type { WasmMemory } from './webassembly.ts';

type Allocator = (size: number) => unknown;

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
    const ptr = this.allocate(value.length);
    if (!this.writeBytes(ptr, value)) return 6;
    if (!this.writeU32(ptrPtr, ptr) || !this.writeU32(sizePtr, value.length)) return 6;
    return 0;
  }

  /** Reads an AssemblyScript string object (UTF-16, byte length stored just before it). */
  readAsString(ptr: number): string {
    ptr >>>= 0;
    const len = ptr >= 4 ? this.readU32(ptr - 4) : undefined;
    if (len === undefined || !this.inBounds(ptr, len)) return '';
    return Buffer.from(this.bytes.subarray(ptr, ptr + len)).toString('utf16le');
  }
}
