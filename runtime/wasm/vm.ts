// One proxy-wasm VM: an instance of a filter module with its root context,
// the v0.2.1 host functions it imports, and the stream contexts of requests
// in flight.
//
// In:  a compiled WebAssembly.Module, the filter's identity and configuration,
//      the sidecar's HostEnvironment.
// Out: a FilterVm the chain drives per request (createStream, onRequestHeaders,
//      ...). Any trap or host failure during a callback surfaces as a
//      FilterTrapError and marks the VM broken; the process never dies of it.
import { randomFillSync } from 'node:crypto';
import { ABI_MARKER, ABI_MARKER_COMPATIBLE, BufferType, Errno, LOG_LEVEL_NAMES, MapType, WasmResult } from './abi.ts';
import type { HostEnvironment } from './environment.ts';
import type { HeaderList, HttpStream } from './stream.ts';
import { propertyValue } from './properties.ts';
import { Wasm, type WasmImports, type WasmMemory, type WasmModule } from './webassembly.ts';
import { CodedError } from '../../protocol/errors.ts';

export interface FilterIdentity {
  /** Filter name; also the VM id that scopes shared queues. */
  name: string;
  rootId: string;
  vmConfiguration: Uint8Array;
  pluginConfiguration: Uint8Array;
}

/** A failure while loading a VM; the code says which step refused it. */
export class FilterLoadError extends CodedError {}

/** A trap (or proc_exit, or abort) inside a filter callback. */
export class FilterTrapError extends Error {
  readonly filter: string;
  readonly callback: string;
  constructor(filter: string, callback: string, cause: unknown) {
    super(`filter ${filter} trapped in ${callback}: ${cause instanceof Error ? cause.message : String(cause)}`);
    this.name = 'FilterTrapError';
    this.filter = filter;
    this.callback = callback;
  }
}

class ProcExit extends Error {
  constructor(code: number) {
    super(`proc_exit(${code})`);
  }
}

const ROOT_CONTEXT_ID = 1;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

type Exported = (...args: number[]) => number | undefined;
type ImportFn = (...args: never[]) => number | bigint | undefined | void;

/** Checks the ABI marker; refuses a module before anything is instantiated. */
export function checkAbi(module: WasmModule): void {
  const names = new Set(Wasm.Module.exports(module).map((e) => e.name));
  if (!names.has(ABI_MARKER) && !names.has(ABI_MARKER_COMPATIBLE)) {
    const found = [...names].filter((n) => n.startsWith('proxy_abi_version_'));
    throw new FilterLoadError(
      'FILTER_ABI',
      `module does not export ${ABI_MARKER}` + (found.length ? ` (it exports ${found.join(', ')})` : ' (not a proxy-wasm module?)'),
    );
  }
  if (!names.has('memory')) throw new FilterLoadError('FILTER_ABI', 'module does not export its memory');
}

export class FilterVm {
  readonly identity: FilterIdentity;
  broken = false;
  private readonly env: HostEnvironment;
  private exports!: Record<string, unknown>;
  private memory!: WasmMemory;
  private view!: DataView;
  private bytes!: Uint8Array;
  private nextContextId = ROOT_CONTEXT_ID + 1;
  /** Stream contexts in flight, by context id. */
  private readonly streams = new Map<number, HttpStream>();
  /** The context host calls act on: a stream, or undefined for the root context. */
  private current: HttpStream | undefined;
  private currentId = ROOT_CONTEXT_ID;
  /** Contexts whose proxy_on_done returned false; proxy_done finishes them. */
  private readonly pendingDone = new Set<number>();
  private tickTimer: NodeJS.Timeout | undefined;
  /** Set once the chain drops this VM: timers and queue notifications stop. */
  private released = false;

  private constructor(identity: FilterIdentity, env: HostEnvironment) {
    this.identity = identity;
    this.env = env;
  }

  /** Instantiates, initialises and configures a VM; throws FilterLoadError when any step fails. */
  static async create(module: WasmModule, identity: FilterIdentity, env: HostEnvironment): Promise<FilterVm> {
    checkAbi(module);
    const vm = new FilterVm(identity, env);
        try {
      vm.exports = (await Wasm.instantiate(module, vm.buildImports(module))).exports;
    } catch (err) {
      throw new FilterLoadError('FILTER_INSTANTIATE', `filter ${identity.name} does not instantiate: ${(err as Error).message}`);
    }
    vm.memory = vm.exports.memory as WasmMemory;
    vm.refreshViews();
    try {
      if (typeof vm.exports._initialize === 'function') {
        vm.callExport('_initialize');
        if (typeof vm.exports.main === 'function') vm.callExport('main', 0, 0);
      } else if (typeof vm.exports._start === 'function') {
        vm.callExport('_start');
      }
      vm.callExport('proxy_on_context_create', ROOT_CONTEXT_ID, 0);
      if (vm.hasExport('proxy_on_vm_start') && !vm.callExport('proxy_on_vm_start', ROOT_CONTEXT_ID, identity.vmConfiguration.length)) {
        throw new FilterLoadError('FILTER_VM_START', `filter ${identity.name}: proxy_on_vm_start returned false`);
      }
      if (vm.hasExport('proxy_on_configure') && !vm.callExport('proxy_on_configure', ROOT_CONTEXT_ID, identity.pluginConfiguration.length)) {
        throw new FilterLoadError('FILTER_CONFIGURE', `filter ${identity.name}: proxy_on_configure returned false (configuration refused)`);
      }
    } catch (err) {
      vm.release();
      if (err instanceof FilterLoadError) throw err;
      throw new FilterLoadError('FILTER_LOAD_TRAP', `filter ${identity.name} trapped while loading: ${(err as Error).message}`);
    }
    return vm;
  }

  hasExport(name: string): boolean {
    return typeof this.exports[name] === 'function';
  }

  /** Creates a stream context for a request; returns its context id. */
  createStream(stream: HttpStream): number {
    const id = this.nextContextId++;
    this.streams.set(id, stream);
    this.invoke('proxy_on_context_create', stream, id, id, ROOT_CONTEXT_ID);
    return id;
  }

  /** Calls a per-stream callback; returns the filter's action (0 when not exported). */
  onStream(callback: string, id: number, ...args: number[]): number {
    const stream = this.streams.get(id);
    if (!stream || !this.hasExport(callback)) return 0;
    return this.invoke(callback, stream, id, id, ...args) ?? 0;
  }

  /** Ends a stream context: proxy_on_done, then (unless deferred) proxy_on_log and proxy_on_delete. */
  finishStream(id: number): void {
    const stream = this.streams.get(id);
    if (!stream) return;
    try {
      const done = this.hasExport('proxy_on_done') ? this.invoke('proxy_on_done', stream, id, id) : 1;
      if (done === 0) {
        this.pendingDone.add(id);
        return;
      }
      this.deleteStream(id, stream);
    } catch (err) {
      this.streams.delete(id);
      throw err;
    }
  }

  /** Drops the VM: stops its timer and forgets its contexts. */
  release(): void {
    this.released = true;
    if (this.tickTimer) clearInterval(this.tickTimer);
    this.tickTimer = undefined;
    this.streams.clear();
  }

  /** After a trap: no more calls into this instance; wake streams it paused so they apply the failure policy. */
  private markBroken(): void {
    this.broken = true;
    for (const s of this.streams.values()) if (s.pausedBy === this) s.resume('continue');
  }

  private deleteStream(id: number, stream: HttpStream): void {
    this.pendingDone.delete(id);
    try {
      if (this.hasExport('proxy_on_log')) this.invoke('proxy_on_log', stream, id, id);
      if (this.hasExport('proxy_on_delete')) this.invoke('proxy_on_delete', stream, id, id);
    } finally {
      this.streams.delete(id);
    }
  }

  /** Calls an export with `stream` as the current context; any throw becomes a FilterTrapError. */
  private invoke(name: string, stream: HttpStream | undefined, contextId: number, ...args: number[]): number | undefined {
    if (this.broken) throw new FilterTrapError(this.identity.name, name, new Error('VM is broken by an earlier trap'));
    const prev = this.current;
    const prevId = this.currentId;
    this.current = stream;
    this.currentId = contextId;
    try {
      return this.callExport(name, ...args);
    } catch (err) {
      this.markBroken();
      throw new FilterTrapError(this.identity.name, name, err);
    } finally {
      this.current = prev;
      this.currentId = prevId;
    }
  }

  private callExport(name: string, ...args: number[]): number | undefined {
    const fn = this.exports[name] as Exported | undefined;
    if (typeof fn !== 'function') return undefined;
    const result = fn(...args);
    return typeof result === 'number' ? result : undefined;
  }

  private onTick(): void {
    if (this.broken || this.released || !this.hasExport('proxy_on_tick')) return;
    try {
      this.invoke('proxy_on_tick', undefined, ROOT_CONTEXT_ID, ROOT_CONTEXT_ID);
    } catch (err) {
      this.env.log({ event: 'filter-trap', filter: this.identity.name, callback: 'proxy_on_tick', error: (err as Error).message });
    }
  }

  private onQueueReady(queueId: number): void {
    if (this.broken || this.released || !this.hasExport('proxy_on_queue_ready')) return;
    try {
      this.invoke('proxy_on_queue_ready', undefined, ROOT_CONTEXT_ID, ROOT_CONTEXT_ID, queueId);
    } catch (err) {
      this.env.log({ event: 'filter-trap', filter: this.identity.name, callback: 'proxy_on_queue_ready', error: (err as Error).message });
    }
  }

  // ---- guest memory ----

  private refreshViews(): void {
    this.view = new DataView(this.memory.buffer);
    this.bytes = new Uint8Array(this.memory.buffer);
  }

  /** Views go stale when memory grows (the ArrayBuffer is replaced). */
  private mem(): Uint8Array {
    if (this.bytes.buffer !== this.memory.buffer) this.refreshViews();
    return this.bytes;
  }

  private dv(): DataView {
    if (this.view.buffer !== this.memory.buffer) this.refreshViews();
    return this.view;
  }

  private inBounds(ptr: number, len: number): boolean {
    return ptr >= 0 && len >= 0 && ptr + len <= this.memory.buffer.byteLength;
  }

  private read(ptr: number, len: number): Uint8Array | undefined {
    ptr >>>= 0;
    len >>>= 0;
    if (!this.inBounds(ptr, len)) return undefined;
    return this.mem().slice(ptr, ptr + len);
  }

  private readString(ptr: number, len: number): string | undefined {
    const b = this.read(ptr, len);
    return b ? decoder.decode(b) : undefined;
  }

  private writeU32(ptr: number, value: number): boolean {
    ptr >>>= 0;
    if (!this.inBounds(ptr, 4)) return false;
    this.dv().setUint32(ptr, value >>> 0, true);
    return true;
  }

  private writeU64(ptr: number, value: bigint): boolean {
    ptr >>>= 0;
    if (!this.inBounds(ptr, 8)) return false;
    this.dv().setBigUint64(ptr, BigInt.asUintN(64, value), true);
    return true;
  }

  /** Allocates guest memory with proxy_on_memory_allocate, or malloc when absent. */
  private allocate(size: number): number {
    const alloc = (this.exports.proxy_on_memory_allocate ?? this.exports.malloc) as Exported | undefined;
    if (typeof alloc !== 'function') throw new Error('module exports neither proxy_on_memory_allocate nor malloc');
    const ptr = alloc(size);
    if (typeof ptr !== 'number' || (ptr === 0 && size > 0)) throw new Error(`guest allocator failed for ${size} bytes`);
    return ptr >>> 0;
  }

  /** Copies bytes into fresh guest memory and writes (pointer, size) to the return slots. */
  private writeReturn(value: Uint8Array, ptrPtr: number, sizePtr: number): number {
    const ptr = this.allocate(value.length);
    if (!this.inBounds(ptr, value.length)) return WasmResult.InvalidMemoryAccess;
    this.mem().set(value, ptr);
    if (!this.writeU32(ptrPtr, ptr) || !this.writeU32(sizePtr, value.length)) return WasmResult.InvalidMemoryAccess;
    return WasmResult.Ok;
  }

  // ---- header maps ----

  private headerMap(type: number): HeaderList | undefined {
    const s = this.current;
    if (!s) return undefined;
    switch (type) {
      case MapType.RequestHeaders:
        return s.requestHeaders;
      case MapType.RequestTrailers:
        return s.requestTrailers;
      case MapType.ResponseHeaders:
        return s.responseHeaders;
      case MapType.ResponseTrailers:
        return s.responseTrailers;
      default:
        return undefined;
    }
  }

  private setHeaderMap(type: number, list: HeaderList): boolean {
    const s = this.current;
    if (!s) return false;
    if (type === MapType.RequestHeaders) s.requestHeaders = list;
    else if (type === MapType.RequestTrailers) s.requestTrailers = list;
    else if (type === MapType.ResponseHeaders) s.responseHeaders = list;
    else if (type === MapType.ResponseTrailers) s.responseTrailers = list;
    else return false;
    return true;
  }

  private bodyBuffer(type: number): Buffer | undefined {
    if (type === BufferType.VmConfiguration) return Buffer.from(this.identity.vmConfiguration);
    if (type === BufferType.PluginConfiguration) return Buffer.from(this.identity.pluginConfiguration);
    if (type === BufferType.RequestBody) return this.current?.requestBody;
    if (type === BufferType.ResponseBody) return this.current?.responseBody;
    return undefined;
  }

  private buildImports(module: WasmModule): WasmImports {
    const env = this.hostFunctions();
    const wasi = this.wasiFunctions();
    const imports: Record<string, Record<string, ImportFn>> = {};
    for (const imp of Wasm.Module.imports(module)) {
      if (imp.kind !== 'function') continue; // memory/table/global imports are not provided; instantiate reports it
      const isWasi = imp.module === 'wasi_snapshot_preview1' || imp.module === 'wasi_unstable';
      const table = isWasi ? wasi : imp.module === 'env' ? env : {};
      const fallback: ImportFn = isWasi ? () => Errno.Nosys : () => WasmResult.Unimplemented;
      (imports[imp.module] ??= {})[imp.name] = table[imp.name] ?? fallback;
    }
    return imports;
  }

  private hostFunctions(): Record<string, ImportFn> {
    const ok = WasmResult.Ok;
    const resumeCurrent = (): number => {
      if (!this.current) return WasmResult.NotFound;
      this.current.resume('continue');
      return ok;
    };
    return {
      proxy_log: (level: number, ptr: number, len: number) => {
        const message = this.readString(ptr, len);
        if (message === undefined) return WasmResult.InvalidMemoryAccess;
        if (level < 0 || level > 5) return WasmResult.BadArgument;
        if (level >= this.env.logLevel) this.env.log({ event: 'filter-log', filter: this.identity.name, level: LOG_LEVEL_NAMES[level], message });
        return ok;
      },
      proxy_get_log_level: (retPtr: number) => (this.writeU32(retPtr, this.env.logLevel) ? ok : WasmResult.InvalidMemoryAccess),
      proxy_get_current_time_nanoseconds: (retPtr: number) =>
        this.writeU64(retPtr, nowNanos()) ? ok : WasmResult.InvalidMemoryAccess,
      proxy_set_tick_period_milliseconds: (period: number) => {
        if (this.tickTimer) clearInterval(this.tickTimer);
        this.tickTimer = undefined;
        if (period > 0 && !this.released) {
          this.tickTimer = setInterval(() => this.onTick(), period >>> 0);
          this.tickTimer.unref();
        }
        return ok;
      },
      proxy_get_configuration: (retPtr: number, retSize: number) => this.writeReturn(this.identity.pluginConfiguration, retPtr, retSize),
      proxy_get_buffer_bytes: (type: number, start: number, maxSize: number, retPtr: number, retSize: number) => {
        if (type < 0 || type > BufferType.CallData) return WasmResult.BadArgument;
        const buf = this.bodyBuffer(type);
        if (!buf) return WasmResult.NotFound;
        start >>>= 0;
        if (start > buf.length) return WasmResult.BadArgument;
        const end = Math.min(buf.length, start + (maxSize >>> 0));
        return this.writeReturn(buf.subarray(start, end), retPtr, retSize);
      },
      proxy_get_buffer_status: (type: number, lenPtr: number, flagsPtr: number) => {
        const buf = this.bodyBuffer(type);
        if (!buf) return WasmResult.NotFound;
        return this.writeU32(lenPtr, buf.length) && this.writeU32(flagsPtr, 0) ? ok : WasmResult.InvalidMemoryAccess;
      },
      proxy_set_buffer_bytes: (type: number, start: number, size: number, dataPtr: number, dataLen: number) => {
        const s = this.current;
        if (type !== BufferType.RequestBody && type !== BufferType.ResponseBody) return WasmResult.BadArgument;
        const buf = this.bodyBuffer(type);
        if (!s || !buf) return WasmResult.NotFound;
        const data = this.read(dataPtr, dataLen);
        if (!data) return WasmResult.InvalidMemoryAccess;
        const from = Math.min(start >>> 0, buf.length);
        const to = Math.min(from + (size >>> 0), buf.length);
        const next = Buffer.concat([buf.subarray(0, from), data, buf.subarray(to)]);
        if (type === BufferType.RequestBody) s.requestBody = next;
        else s.responseBody = next;
        return ok;
      },
      proxy_get_header_map_pairs: (type: number, retPtr: number, retSize: number) => {
        const map = this.headerMap(type);
        if (!map) return WasmResult.NotFound;
        return this.writeReturn(serializePairs(map), retPtr, retSize);
      },
      proxy_set_header_map_pairs: (type: number, ptr: number, len: number) => {
        const data = this.read(ptr, len);
        if (!data) return WasmResult.InvalidMemoryAccess;
        const pairs = deserializePairs(data);
        if (!pairs) return WasmResult.ParseFailure;
        return this.setHeaderMap(type, pairs.map(([k, v]) => [k.toLowerCase(), v])) ? ok : WasmResult.NotFound;
      },
      proxy_get_header_map_size: (type: number, retPtr: number) => {
        const map = this.headerMap(type);
        if (!map) return WasmResult.NotFound;
        return this.writeU32(retPtr, serializePairs(map).length) ? ok : WasmResult.InvalidMemoryAccess;
      },
      proxy_get_header_map_value: (type: number, keyPtr: number, keyLen: number, retPtr: number, retSize: number) => {
        const map = this.headerMap(type);
        const key = this.readString(keyPtr, keyLen);
        if (key === undefined) return WasmResult.InvalidMemoryAccess;
        if (!map) return WasmResult.NotFound;
        const name = key.toLowerCase();
        let value: string | undefined;
        for (const [k, v] of map) if (k === name) value = value === undefined ? v : `${value},${v}`;
        if (value === undefined) return WasmResult.NotFound;
        return this.writeReturn(encoder.encode(value), retPtr, retSize);
      },
      proxy_add_header_map_value: (type: number, keyPtr: number, keyLen: number, valPtr: number, valLen: number) => {
        const key = this.readString(keyPtr, keyLen);
        const value = this.readString(valPtr, valLen);
        if (key === undefined || value === undefined) return WasmResult.InvalidMemoryAccess;
        const map = this.headerMap(type);
        if (!map) return WasmResult.NotFound;
        map.push([key.toLowerCase(), value]);
        return ok;
      },
      proxy_replace_header_map_value: (type: number, keyPtr: number, keyLen: number, valPtr: number, valLen: number) => {
        const key = this.readString(keyPtr, keyLen);
        const value = this.readString(valPtr, valLen);
        if (key === undefined || value === undefined) return WasmResult.InvalidMemoryAccess;
        const map = this.headerMap(type);
        if (!map) return WasmResult.NotFound;
        const name = key.toLowerCase();
        const next = map.filter(([k]) => k !== name);
        next.push([name, value]);
        this.setHeaderMap(type, next);
        return ok;
      },
      proxy_remove_header_map_value: (type: number, keyPtr: number, keyLen: number) => {
        const key = this.readString(keyPtr, keyLen);
        if (key === undefined) return WasmResult.InvalidMemoryAccess;
        const map = this.headerMap(type);
        if (!map) return WasmResult.NotFound;
        const name = key.toLowerCase();
        this.setHeaderMap(
          type,
          map.filter(([k]) => k !== name),
        );
        return ok;
      },
      proxy_get_property: (pathPtr: number, pathLen: number, retPtr: number, retSize: number) => {
        const raw = this.readString(pathPtr, pathLen);
        if (raw === undefined) return WasmResult.InvalidMemoryAccess;
        const value = propertyValue(propertyPath(raw), this.current, this.identity);
        if (!value) return WasmResult.NotFound;
        return this.writeReturn(value, retPtr, retSize);
      },
      proxy_set_property: (pathPtr: number, pathLen: number, valPtr: number, valLen: number) => {
        const raw = this.readString(pathPtr, pathLen);
        const value = this.read(valPtr, valLen);
        if (raw === undefined || !value) return WasmResult.InvalidMemoryAccess;
        if (!this.current) return WasmResult.NotFound;
        this.current.setProperties.set(propertyPath(raw), value);
        return ok;
      },
      proxy_send_local_response: (
        status: number,
        detailsPtr: number,
        detailsLen: number,
        bodyPtr: number,
        bodyLen: number,
        headersPtr: number,
        headersLen: number,
        _grpcStatus: number,
      ) => {
        const details = this.readString(detailsPtr, detailsLen);
        const body = this.read(bodyPtr, bodyLen);
        const headerBytes = this.read(headersPtr, headersLen);
        if (details === undefined || !body || !headerBytes) return WasmResult.InvalidMemoryAccess;
        const headers = headerBytes.length === 0 ? [] : deserializePairs(headerBytes);
        if (!headers) return WasmResult.ParseFailure;
        if (status < 100 || status > 999) return WasmResult.BadArgument;
        const s = this.current;
        if (!s) return WasmResult.NotFound;
        s.localResponse = { status, details, body, headers: headers.map(([k, v]) => [k.toLowerCase(), v]) };
        s.resume('local-response');
        return ok;
      },
      proxy_continue_stream: (_streamType: number) => resumeCurrent(),
      proxy_continue_request: () => resumeCurrent(),
      proxy_continue_response: () => resumeCurrent(),
      proxy_close_stream: (_streamType: number) => {
        const s = this.current;
        if (!s) return WasmResult.NotFound;
        s.closed = true;
        s.resume('close');
        return ok;
      },
      proxy_clear_route_cache: () => ok,
      proxy_get_status: () => WasmResult.NotFound,
      proxy_set_effective_context: (id: number) => {
        if (id === ROOT_CONTEXT_ID) {
          this.current = undefined;
          this.currentId = id;
          return ok;
        }
        const s = this.streams.get(id);
        if (!s) return WasmResult.BadArgument;
        this.current = s;
        this.currentId = id;
        return ok;
      },
      proxy_done: () => {
        const id = this.currentId;
        const s = this.streams.get(id);
        if (!s || !this.pendingDone.has(id)) return WasmResult.NotFound;
        // Run on_log/on_delete after the current callback returns, not inside it.
        queueMicrotask(() => {
          try {
            this.deleteStream(id, s);
          } catch (err) {
            this.env.log({ event: 'filter-trap', filter: this.identity.name, callback: 'proxy_on_log', error: (err as Error).message });
          }
        });
        return ok;
      },
      proxy_get_shared_data: (keyPtr: number, keyLen: number, retPtr: number, retSize: number, casPtr: number) => {
        const key = this.readString(keyPtr, keyLen);
        if (key === undefined) return WasmResult.InvalidMemoryAccess;
        const entry = this.env.sharedData.get(key);
        if (!entry) return WasmResult.NotFound;
        const r = this.writeReturn(entry.value, retPtr, retSize);
        if (r !== ok) return r;
        return this.writeU32(casPtr, entry.cas) ? ok : WasmResult.InvalidMemoryAccess;
      },
      proxy_set_shared_data: (keyPtr: number, keyLen: number, valPtr: number, valLen: number, cas: number) => {
        const key = this.readString(keyPtr, keyLen);
        const value = this.read(valPtr, valLen);
        if (key === undefined || !value) return WasmResult.InvalidMemoryAccess;
        return this.env.sharedData.set(key, value, cas >>> 0);
      },
      proxy_register_shared_queue: (namePtr: number, nameLen: number, retId: number) => {
        const name = this.readString(namePtr, nameLen);
        if (name === undefined) return WasmResult.InvalidMemoryAccess;
        const id = this.env.queues.register(this.identity.name, name, (qid) => this.onQueueReady(qid));
        return this.writeU32(retId, id) ? ok : WasmResult.InvalidMemoryAccess;
      },
      proxy_resolve_shared_queue: (vmPtr: number, vmLen: number, namePtr: number, nameLen: number, retId: number) => {
        const vmId = this.readString(vmPtr, vmLen);
        const name = this.readString(namePtr, nameLen);
        if (vmId === undefined || name === undefined) return WasmResult.InvalidMemoryAccess;
        const id = this.env.queues.resolve(vmId === '' ? this.identity.name : vmId, name);
        if (id === undefined) return WasmResult.NotFound;
        return this.writeU32(retId, id) ? ok : WasmResult.InvalidMemoryAccess;
      },
      proxy_enqueue_shared_queue: (id: number, valPtr: number, valLen: number) => {
        const value = this.read(valPtr, valLen);
        if (!value) return WasmResult.InvalidMemoryAccess;
        return this.env.queues.enqueue(id >>> 0, value);
      },
      proxy_dequeue_shared_queue: (id: number, retPtr: number, retSize: number) => {
        const item = this.env.queues.dequeue(id >>> 0);
        if (typeof item === 'number') return item;
        return this.writeReturn(item, retPtr, retSize);
      },
      proxy_define_metric: (type: number, namePtr: number, nameLen: number, retId: number) => {
        const name = this.readString(namePtr, nameLen);
        if (name === undefined) return WasmResult.InvalidMemoryAccess;
        const id = this.env.metrics.define(type, name);
        if (id === undefined) return WasmResult.BadArgument;
        return this.writeU32(retId, id) ? ok : WasmResult.InvalidMemoryAccess;
      },
      proxy_increment_metric: (id: number, offset: bigint) => this.env.metrics.increment(id >>> 0, BigInt(offset)),
      proxy_record_metric: (id: number, value: bigint) => this.env.metrics.record(id >>> 0, BigInt.asUintN(64, BigInt(value))),
      proxy_get_metric: (id: number, retPtr: number) => {
        const v = this.env.metrics.get(id >>> 0);
        if (typeof v === 'number') return v;
        return this.writeU64(retPtr, v) ? ok : WasmResult.InvalidMemoryAccess;
      },
      proxy_http_call: () => WasmResult.Unimplemented,
      proxy_call_foreign_function: () => WasmResult.NotFound,
      // AssemblyScript runtime imports (not proxy-wasm, but every AS module without --use abort= needs them).
      abort: (msgPtr: number, filePtr: number, line: number, col: number) => {
        throw new Error(`abort: ${this.readAsString(msgPtr)} at ${this.readAsString(filePtr)}:${line}:${col}`);
      },
      seed: () => Date.now(),
      trace: (msgPtr: number) => {
        this.env.log({ event: 'filter-log', filter: this.identity.name, level: 'trace', message: this.readAsString(msgPtr) });
      },
    } as unknown as Record<string, ImportFn>;
  }

  /** Reads an AssemblyScript string object (UTF-16, byte length stored just before it). */
  private readAsString(ptr: number): string {
    ptr >>>= 0;
    if (ptr < 4 || !this.inBounds(ptr - 4, 4)) return '';
    const len = this.dv().getUint32(ptr - 4, true);
    if (!this.inBounds(ptr, len)) return '';
    return Buffer.from(this.mem().slice(ptr, ptr + len)).toString('utf16le');
  }

  private wasiFunctions(): Record<string, ImportFn> {
    return {
      fd_write: (fd: number, iovs: number, iovsLen: number, writtenPtr: number) => {
        if (fd !== 1 && fd !== 2) return Errno.Badf;
        const parts: Uint8Array[] = [];
        let total = 0;
        for (let i = 0; i < iovsLen; i++) {
          const base = (iovs >>> 0) + i * 8;
          if (!this.inBounds(base, 8)) return Errno.Fault;
          const ptr = this.dv().getUint32(base, true);
          const len = this.dv().getUint32(base + 4, true);
          const chunk = this.read(ptr, len);
          if (!chunk) return Errno.Fault;
          parts.push(chunk);
          total += len;
        }
        const message = Buffer.concat(parts).toString('utf8').replace(/\n$/, '');
        this.env.log({ event: 'filter-log', filter: this.identity.name, level: fd === 1 ? 'info' : 'error', message });
        return this.writeU32(writtenPtr, total) ? Errno.Success : Errno.Fault;
      },
      clock_time_get: (_clockId: number, _precision: bigint, retPtr: number) =>
        this.writeU64(retPtr, nowNanos()) ? Errno.Success : Errno.Fault,
      random_get: (ptr: number, len: number) => {
        ptr >>>= 0;
        len >>>= 0;
        if (!this.inBounds(ptr, len)) return Errno.Fault;
        fillRandom(this.mem(), ptr, len);
        return Errno.Success;
      },
      proc_exit: (code: number) => {
        throw new ProcExit(code);
      },
      environ_sizes_get: (countPtr: number, sizePtr: number) =>
        this.writeU32(countPtr, 0) && this.writeU32(sizePtr, 0) ? Errno.Success : Errno.Fault,
      environ_get: () => Errno.Success,
      args_sizes_get: (countPtr: number, sizePtr: number) =>
        this.writeU32(countPtr, 0) && this.writeU32(sizePtr, 0) ? Errno.Success : Errno.Fault,
      args_get: () => Errno.Success,
    } as unknown as Record<string, ImportFn>;
  }
}

// Filters ask for a few random bytes per request (weights, percentages); one
// syscall-backed fill per 4 KiB instead of one per call keeps that cheap.
const randomPool = Buffer.alloc(4096);
let randomPoolUsed = randomPool.length;

function fillRandom(target: Uint8Array, offset: number, length: number): void {
  if (length > randomPool.length) {
    randomFillSync(target, offset, length);
    return;
  }
  if (randomPoolUsed + length > randomPool.length) {
    randomFillSync(randomPool);
    randomPoolUsed = 0;
  }
  target.set(randomPool.subarray(randomPoolUsed, randomPoolUsed + length), offset);
  // Bytes handed out are never handed out again.
  randomPoolUsed += length;
}

function nowNanos(): bigint {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
}

/** Property paths arrive as NUL-separated segments; the host keys them by dotted path. */
function propertyPath(raw: string): string {
  return raw.replace(/\0+$/, '').split('\0').join('.');
}

/** proxy-wasm header map encoding: u32 count, (u32 key len, u32 value len)*, then each key and value NUL-terminated. */
export function serializePairs(pairs: HeaderList): Uint8Array {
  const encoded = pairs.map(([k, v]) => [encoder.encode(k), encoder.encode(v)] as const);
  let size = 4 + encoded.length * 8;
  for (const [k, v] of encoded) size += k.length + v.length + 2;
  const out = new Uint8Array(size);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, encoded.length, true);
  let off = 4;
  for (const [k, v] of encoded) {
    dv.setUint32(off, k.length, true);
    dv.setUint32(off + 4, v.length, true);
    off += 8;
  }
  for (const [k, v] of encoded) {
    out.set(k, off);
    off += k.length + 1;
    out.set(v, off);
    off += v.length + 1;
  }
  return out;
}

export function deserializePairs(data: Uint8Array): HeaderList | undefined {
  if (data.length < 4) return undefined;
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const count = dv.getUint32(0, true);
  if (4 + count * 8 > data.length) return undefined;
  const sizes: Array<[number, number]> = [];
  for (let i = 0; i < count; i++) sizes.push([dv.getUint32(4 + i * 8, true), dv.getUint32(8 + i * 8, true)]);
  let off = 4 + count * 8;
  const pairs: HeaderList = [];
  for (const [kl, vl] of sizes) {
    if (off + kl + vl + 2 > data.length) return undefined;
    const k = decoder.decode(data.subarray(off, off + kl));
    off += kl + 1;
    const v = decoder.decode(data.subarray(off, off + vl));
    off += vl + 1;
    pairs.push([k, v]);
  }
  return pairs;
}
