// One proxy-wasm VM: an instance of a filter module with its root context,
// the v0.2.1 host functions it imports, and the stream contexts of requests
// in flight.
//
// In:  a PreparedModule (compiled, metered, memory-capped), the filter's
//      identity, configuration and limits, the sidecar's HostEnvironment.
// Out: a FilterVm the chain drives per request (createStream, onStream,
//      finishStream). Any trap, exhausted fuel or host failure during a
//      callback surfaces as a FilterTrapError and marks the VM broken; the
//      process never dies of it.
import { Buffer } from 'node:buffer';
import { ABI_MARKER, ABI_MARKER_COMPATIBLE, BufferType, Errno, LOG_LEVEL_NAMES, MapType, StreamType, WasmResult } from './abi.ts';
import type { HostEnvironment } from './environment.ts';
import { callForeignFunction } from './foreign.ts';
import type { HttpCallResponse } from './http-call.ts';
import { GuestMemory } from './memory.ts';
import type { FilterLimits } from './limits.ts';
import { FUEL_GLOBAL } from './limits.ts';
import type { PreparedModule } from './module-cache.ts';
import { deserializePairs, serializePairs } from './pairs.ts';
import { StreamContexts } from './contexts.ts';
import { KeyCache } from './keys.ts';
import { propertyResolver, type PropertyResolver } from './properties.ts';
import { encodeUtf8 } from './text.ts';
import { ConnectionStream, getHeader, type HeaderList, type HttpStream } from './stream.ts';
import { realtimeNanosNumber, wasiFunctions, type ImportFn } from './wasi.ts';
import { Wasm, type WasmImports, type WasmMemory, type WasmModule } from './webassembly.ts';
import { CodedError } from '../../protocol/errors.ts';

export interface FilterIdentity {
  /** Filter name; also the VM id that scopes shared queues. */
  name: string;
  rootId: string;
  vmConfiguration: Uint8Array;
  pluginConfiguration: Uint8Array;
  limits: FilterLimits;
}

/** A failure while loading a VM; the code says which step refused it. */
export class FilterLoadError extends CodedError {}

/** What stopped a callback: a trap (incl. proc_exit, abort, host error), exhausted fuel, or memory at its cap. */
export type TrapCause = 'trap' | 'fuel' | 'memory';

/** A trap inside a filter callback. */
export class FilterTrapError extends Error {
  readonly filter: string;
  readonly callback: string;
  readonly trapCause: TrapCause;
  constructor(filter: string, callback: string, cause: unknown, trapCause: TrapCause = 'trap') {
    const what = cause instanceof Error ? cause.message : String(cause);
    const why = trapCause === 'fuel' ? 'ran out of fuel (endless loop?)' : trapCause === 'memory' ? `trapped with memory near its cap (${what})` : `trapped: ${what}`;
    super(`filter ${filter} ${why} in ${callback}`);
    this.name = 'FilterTrapError';
    this.filter = filter;
    this.callback = callback;
    this.trapCause = trapCause;
  }
}

const ROOT_CONTEXT_ID = 1;
/** proxy_http_call timeout when the filter passes 0, and the most it may ask for. */
const DEFAULT_CALL_TIMEOUT_MS = 5_000;
const MAX_CALL_TIMEOUT_MS = 60_000;
const WASM_PAGE = 65536;

type Exported = (...args: number[]) => number | undefined;
interface FuelGlobal {
  value: number;
}

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

interface PropertyKey {
  /** The dotted path: property paths arrive as NUL-separated segments (or dotted). */
  path: string;
  resolve: PropertyResolver;
}

function propertyKey(raw: string): PropertyKey {
  const path = raw.replace(/\0+$/, '').split('\0').join('.');
  return { path, resolve: propertyResolver(path) };
}

const lowerCase = (name: string): string => name.toLowerCase();

export class FilterVm {
  readonly identity: FilterIdentity;
  broken = false;
  private readonly env: HostEnvironment;
  private exports!: Record<string, unknown>;
  private memory!: WasmMemory;
  private mem!: GuestMemory;
  private fuel: FuelGlobal | undefined;
  /** Nesting of guest calls (host functions may call the allocator): fuel is reset at the outermost only. */
  private depth = 0;
  private nextContextId = ROOT_CONTEXT_ID + 1;
  /** Stream contexts in flight, by context id. */
  private readonly streams = new StreamContexts();
  /** The context host calls act on: a stream, or undefined for the root context. */
  private current: HttpStream | undefined;
  private currentId = ROOT_CONTEXT_ID;
  /** Contexts whose proxy_on_done returned false; proxy_done finishes them. */
  private readonly pendingDone = new Set<number>();
  private tickTimer: NodeJS.Timeout | undefined;
  /** HTTP calls in flight: token → nothing more is needed (responses go to the root context). */
  private readonly calls = new Set<number>();
  private nextCallToken = 1;
  /** The response being delivered by proxy_on_http_call_response, readable only during it. */
  private callResponse: (HttpCallResponse & { status: number; message: string }) | undefined;
  private readonly queueReady = (queueId: number): void => this.onQueueReady(queueId);
  /** Property paths and header names the filter passes, decoded once per buffer. */
  private readonly propertyKeys = new KeyCache(propertyKey);
  private readonly headerKeys = new KeyCache(lowerCase);
  /** The per-request callbacks, looked up once (undefined when not exported). */
  private onContextCreate: Exported | undefined;
  private onDone: Exported | undefined;
  private onLog: Exported | undefined;
  private onDelete: Exported | undefined;
  /** Set once the chain drops this VM: timers, calls and queue notifications stop. */
  private released = false;

  private constructor(identity: FilterIdentity, env: HostEnvironment) {
    this.identity = identity;
    this.env = env;
  }

  /** Instantiates, initialises and configures a VM; throws FilterLoadError when any step fails. */
  static async create(prepared: PreparedModule, identity: FilterIdentity, env: HostEnvironment): Promise<FilterVm> {
    checkAbi(prepared.module);
    const vm = new FilterVm(identity, env);
    try {
      vm.exports = (await Wasm.instantiate(prepared.module, vm.buildImports(prepared.module))).exports;
    } catch (err) {
      throw new FilterLoadError('FILTER_INSTANTIATE', `filter ${identity.name} does not instantiate: ${(err as Error).message}`);
    }
    vm.memory = vm.exports.memory as WasmMemory;
    const alloc = (vm.exports.proxy_on_memory_allocate ?? vm.exports.malloc) as Exported | undefined;
    vm.onContextCreate = vm.exported('proxy_on_context_create');
    vm.onDone = vm.exported('proxy_on_done');
    vm.onLog = vm.exported('proxy_on_log');
    vm.onDelete = vm.exported('proxy_on_delete');
    const fuel = vm.exports[FUEL_GLOBAL] as FuelGlobal | undefined;
    vm.fuel = prepared.metered && identity.limits.fuelPerCallback > 0 ? fuel : undefined;
    if (fuel && !vm.fuel) fuel.value = 0x7fffffff; // metered module, metering turned off: effectively unlimited
    // Unmetered, the allocator is called directly: it runs on every host call that returns a value.
    const allocator = typeof alloc !== 'function' ? undefined : vm.fuel ? (size: number) => vm.guestCall(alloc, size, 0, 0, 0, 0) : alloc;
    vm.mem = new GuestMemory(vm.memory, allocator);
    env.host.liveInstances++;
    try {
      if (typeof vm.exports._initialize === 'function') {
        vm.callTop('_initialize');
        if (typeof vm.exports.main === 'function') vm.callTop('main', 0, 0);
      } else if (typeof vm.exports._start === 'function') {
        vm.callTop('_start');
      }
      vm.callTop('proxy_on_context_create', ROOT_CONTEXT_ID, 0);
      if (vm.hasExport('proxy_on_vm_start') && !vm.callTop('proxy_on_vm_start', ROOT_CONTEXT_ID, identity.vmConfiguration.length)) {
        throw new FilterLoadError('FILTER_VM_START', `filter ${identity.name}: proxy_on_vm_start returned false`);
      }
      if (vm.hasExport('proxy_on_configure') && !vm.callTop('proxy_on_configure', ROOT_CONTEXT_ID, identity.pluginConfiguration.length)) {
        throw new FilterLoadError('FILTER_CONFIGURE', `filter ${identity.name}: proxy_on_configure returned false (configuration refused)`);
      }
    } catch (err) {
      vm.release();
      if (err instanceof FilterLoadError) throw err;
      const cause = vm.trapCause();
      const why = cause === 'fuel' ? 'ran out of fuel' : cause === 'memory' ? 'hit its memory cap' : 'trapped';
      throw new FilterLoadError('FILTER_LOAD_TRAP', `filter ${identity.name} ${why} while loading: ${(err as Error).message}`);
    }
    return vm;
  }

  hasExport(name: string): boolean {
    return typeof this.exports[name] === 'function';
  }

  private exported(name: string): Exported | undefined {
    const fn = this.exports[name];
    return typeof fn === 'function' ? (fn as Exported) : undefined;
  }

  /** Creates a stream context for a request; returns its context id. */
  createStream(stream: HttpStream): number {
    const id = this.nextContextId++;
    this.streams.set(id, stream);
    const fn = this.onContextCreate;
    if (fn) this.invoke('proxy_on_context_create', fn, stream, id, id, ROOT_CONTEXT_ID);
    return id;
  }

  /** Calls a per-stream callback with up to two arguments after the context id; returns the filter's action (0 when not exported). */
  onStream(callback: string, id: number, a = 0, b = 0): number {
    const stream = this.streams.get(id);
    const fn = stream ? this.exported(callback) : undefined;
    if (!fn) return 0;
    return this.invoke(callback, fn, stream, id, id, a, b);
  }

  /** Ends a stream context: proxy_on_done, then (unless deferred) proxy_on_log and proxy_on_delete. */
  finishStream(id: number): void {
    const stream = this.streams.get(id);
    if (!stream) return;
    try {
      const fn = this.onDone;
      const done = fn ? this.invoke('proxy_on_done', fn, stream, id, id) : 1;
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

  /** Drops the VM: stops its timer, HTTP-call deliveries and queue notifications, forgets its contexts. Idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.env.host.liveInstances--;
    if (this.tickTimer) clearInterval(this.tickTimer);
    this.tickTimer = undefined;
    this.env.queues.detach(this.queueReady);
    this.calls.clear();
    this.streams.clear();
    this.pendingDone.clear();
  }

  /** After a trap: no more calls into this instance; wake streams it paused so they apply the failure policy. */
  private markBroken(err: FilterTrapError): void {
    this.broken = true;
    this.env.host.traps.inc({ filter: this.identity.name, cause: err.trapCause });
    this.env.log({ event: 'filter-trap', filter: this.identity.name, callback: err.callback, cause: err.trapCause, error: err.message });
    if (this.tickTimer) clearInterval(this.tickTimer);
    this.tickTimer = undefined;
    for (const s of this.streams.values()) if (s.pausedBy === this) s.resume('continue');
  }

  private deleteStream(id: number, stream: HttpStream): void {
    if (this.pendingDone.size > 0) this.pendingDone.delete(id);
    if (!this.onLog && !this.onDelete) {
      this.streams.delete(id);
      return;
    }
    try {
      if (this.onLog) this.invoke('proxy_on_log', this.onLog, stream, id, id);
      if (this.onDelete) this.invoke('proxy_on_delete', this.onDelete, stream, id, id);
    } finally {
      this.streams.delete(id);
    }
  }

  /**
   * Why the last guest call failed: the fuel meter (exact), memory near its
   * cap (an allocator whose memory.grow failed traps within one allocation of
   * the cap, so "at least 3/4 of the cap" is taken as the cause), or anything else.
   */
  private trapCause(): TrapCause {
    if (this.fuel && this.fuel.value < 0) return 'fuel';
    const capBytes = Math.floor(this.identity.limits.memoryMaxBytes / WASM_PAGE) * WASM_PAGE;
    if (this.memory && this.memory.buffer.byteLength >= capBytes * 0.75) return 'memory';
    return 'trap';
  }

  /**
   * Calls export `fn` (named `name`) with `stream` as the current context;
   * any throw becomes a FilterTrapError. Arguments are positional, not
   * spread: this runs several times per request and a fixed arity keeps the
   * call monomorphic and allocation-free (extra zeros are ignored by Wasm).
   */
  private invoke(name: string, fn: Exported, stream: HttpStream | undefined, contextId: number, a = 0, b = 0, c = 0, d = 0, e = 0): number {
    if (this.broken) throw new FilterTrapError(this.identity.name, name, new Error('VM is broken by an earlier trap'));
    const prev = this.current;
    const prevId = this.currentId;
    this.current = stream;
    this.currentId = contextId;
    try {
      return this.guestCall(fn, a, b, c, d, e) ?? 0;
    } catch (err) {
      const trap = err instanceof FilterTrapError ? err : new FilterTrapError(this.identity.name, name, err, this.trapCause());
      this.markBroken(trap);
      throw trap;
    } finally {
      this.current = prev;
      this.currentId = prevId;
    }
  }

  /** Calls an export by name while loading (root context), refuelling first; undefined when not exported. */
  private callTop(name: string, a = 0, b = 0): number | undefined {
    const fn = this.exported(name);
    return fn ? this.guestCall(fn, a, b, 0, 0, 0) : undefined;
  }

  /** Calls into the guest, refuelling first when this is the outermost guest call. */
  private guestCall(fn: Exported, a: number, b: number, c: number, d: number, e: number): number | undefined {
    if (this.depth === 0 && this.fuel) this.fuel.value = this.identity.limits.fuelPerCallback;
    this.depth++;
    try {
      const result = fn(a, b, c, d, e);
      return typeof result === 'number' ? result : undefined;
    } finally {
      this.depth--;
    }
  }

  /** Root-context callbacks fired by the host (tick, queue, HTTP call response); a trap is logged and breaks the VM. */
  private rootCallback(name: string, a = 0, b = 0, c = 0, d = 0): void {
    const fn = this.exported(name);
    if (this.broken || this.released || !fn) return;
    try {
      this.invoke(name, fn, undefined, ROOT_CONTEXT_ID, ROOT_CONTEXT_ID, a, b, c, d);
    } catch {
      // markBroken has counted and logged it; streams it paused apply their failure policy.
    }
  }

  private onTick(): void {
    this.rootCallback('proxy_on_tick');
  }

  private onQueueReady(queueId: number): void {
    this.rootCallback('proxy_on_queue_ready', queueId);
  }

  private onCallDone(token: number, response: HttpCallResponse | undefined, error: Error | undefined): void {
    if (!this.calls.delete(token) || this.broken || this.released) return;
    const r = response ?? { headers: [], body: new Uint8Array(), trailers: [] };
    const status = Number(getHeader(r.headers, ':status') ?? 0);
    this.callResponse = { ...r, status, message: error ? error.message : '' };
    if (error) this.env.log({ event: 'filter-http-call-failed', filter: this.identity.name, token, error: error.message });
    try {
      this.rootCallback('proxy_on_http_call_response', token, r.headers.length, r.body.length, r.trailers.length);
    } finally {
      this.callResponse = undefined;
    }
  }

  // ---- maps and buffers ----

  /** The map for a map type; undefined when it is not available now; null for an unknown type. */
  private headerMap(type: number): HeaderList | undefined | null {
    const s = this.current;
    switch (type) {
      case MapType.RequestHeaders:
        return s?.requestHeaders;
      case MapType.RequestTrailers:
        return s?.requestTrailers;
      case MapType.ResponseHeaders:
        return s?.responseHeaders;
      case MapType.ResponseTrailers:
        return s?.responseTrailers;
      case MapType.HttpCallResponseHeaders:
        return this.callResponse?.headers;
      case MapType.HttpCallResponseTrailers:
        return this.callResponse?.trailers;
      case MapType.GrpcInitialMetadata:
      case MapType.GrpcTrailingMetadata:
        return undefined; // no gRPC calls: never available
      default:
        return null;
    }
  }

  /** Replaces a writable map; returns a WasmResult. HTTP-call maps are read-only. */
  private setHeaderMap(type: number, list: HeaderList): number {
    const s = this.current;
    if (type > MapType.HttpCallResponseTrailers || type < 0) return WasmResult.BadArgument;
    if (!s || type > MapType.ResponseTrailers) return WasmResult.NotFound;
    if (type === MapType.RequestHeaders) s.requestHeaders = list;
    else if (type === MapType.RequestTrailers) s.requestTrailers = list;
    else if (type === MapType.ResponseHeaders) s.responseHeaders = list;
    else s.responseTrailers = list;
    return WasmResult.Ok;
  }

  private buffer(type: number): Uint8Array | undefined {
    switch (type) {
      case BufferType.VmConfiguration:
        return this.identity.vmConfiguration;
      case BufferType.PluginConfiguration:
        return this.identity.pluginConfiguration;
      case BufferType.RequestBody:
        return this.current?.requestBody;
      case BufferType.ResponseBody:
        // The spec text names HTTP_RESPONSE_BODY for call responses; Envoy uses HTTP_CALL_RESPONSE_BODY. Serve both.
        return this.current?.responseBody ?? this.callResponse?.body;
      case BufferType.HttpCallResponseBody:
        return this.callResponse?.body;
      case BufferType.DownstreamData:
        return this.current instanceof ConnectionStream ? this.current.requestBody : undefined;
      case BufferType.UpstreamData:
        return this.current instanceof ConnectionStream ? this.current.responseBody : undefined;
      default:
        return undefined;
    }
  }

  private buildImports(module: WasmModule): WasmImports {
    const env = this.hostFunctions();
    const wasi = wasiFunctions(
      () => this.mem,
      (level, message) => this.env.log({ event: 'filter-log', filter: this.identity.name, level, message }),
    );
    const imports: Record<string, Record<string, ImportFn>> = {};
    for (const imp of Wasm.Module.imports(module)) {
      if (imp.kind !== 'function') continue; // memory/table/global imports are not provided; instantiate reports it
      const isWasi = imp.module === 'wasi_snapshot_preview1' || imp.module === 'wasi_unstable';
      const table = isWasi ? wasi : imp.module === 'env' ? env : {};
      const fallback: ImportFn = isWasi ? () => Errno.Nosys : () => WasmResult.Unimplemented;
      (imports[imp.module] ??= {})[imp.name] = (Object.hasOwn(table, imp.name) ? table[imp.name] : undefined) ?? fallback;
    }
    return imports;
  }

  private hostFunctions(): Record<string, ImportFn> {
    const ok = WasmResult.Ok;
    const bad = WasmResult.InvalidMemoryAccess;
    const m = (): GuestMemory => this.mem;
    // Downstream/Upstream act on a connection context (runtime/wasm/network.ts) only.
    const isTcp = (streamType: number): boolean => streamType === StreamType.Downstream || streamType === StreamType.Upstream;
    const resume = (streamType: number): number => {
      if (isTcp(streamType)) {
        if (!(this.current instanceof ConnectionStream)) return WasmResult.Unimplemented;
        this.current.resume('continue');
        return ok;
      }
      if (streamType !== StreamType.Request && streamType !== StreamType.Response) return WasmResult.BadArgument;
      if (!this.current) return WasmResult.NotFound;
      this.current.resume('continue');
      return ok;
    };
    /** Add, replace, remove: reads the key, finds the map, stores what `edit` makes of it (keys are lower-cased). */
    const editHeaderMap = (type: number, keyPtr: number, keyLen: number, edit: (map: HeaderList, name: string) => HeaderList): number => {
      const key = m().readString(keyPtr, keyLen);
      if (key === undefined) return bad;
      const map = this.headerMap(type);
      if (map === null) return WasmResult.BadArgument;
      if (!map) return WasmResult.NotFound;
      return this.setHeaderMap(type, edit(map, key.toLowerCase()));
    };
    const table = {
      proxy_log: (level: number, ptr: number, len: number) => {
        const message = m().readString(ptr, len);
        if (message === undefined) return bad;
        if (level < 0 || level > 5) return WasmResult.BadArgument;
        if (level >= this.env.logLevel) this.env.log({ event: 'filter-log', filter: this.identity.name, level: LOG_LEVEL_NAMES[level], message });
        return ok;
      },
      proxy_get_log_level: (retPtr: number) => (m().writeU32(retPtr, this.env.logLevel) ? ok : bad),
      proxy_get_current_time_nanoseconds: (retPtr: number) => (m().writeU64Number(retPtr, realtimeNanosNumber()) ? ok : bad),
      proxy_set_tick_period_milliseconds: (period: number) => {
        if (this.tickTimer) clearInterval(this.tickTimer);
        this.tickTimer = undefined;
        if (period > 0 && !this.released) {
          this.tickTimer = setInterval(() => this.onTick(), period >>> 0);
          this.tickTimer.unref();
        }
        return ok;
      },
      proxy_get_configuration: (retPtr: number, retSize: number) => m().writeReturn(this.identity.pluginConfiguration, retPtr, retSize),
      proxy_get_buffer_bytes: (type: number, start: number, maxSize: number, retPtr: number, retSize: number) => {
        if (type < 0 || type > BufferType.CallData) return WasmResult.BadArgument;
        const buf = this.buffer(type);
        if (!buf) return WasmResult.NotFound;
        start >>>= 0;
        if (start > buf.length) return WasmResult.BadArgument;
        const end = Math.min(buf.length, start + (maxSize >>> 0));
        return m().writeReturn(buf.subarray(start, end), retPtr, retSize);
      },
      proxy_get_buffer_status: (type: number, lenPtr: number, flagsPtr: number) => {
        if (type < 0 || type > BufferType.CallData) return WasmResult.BadArgument;
        const buf = this.buffer(type);
        if (!buf) return WasmResult.NotFound;
        return m().writeU32(lenPtr, buf.length) && m().writeU32(flagsPtr, 0) ? ok : bad;
      },
      proxy_set_buffer_bytes: (type: number, start: number, size: number, dataPtr: number, dataLen: number) => {
        if (type < 0 || type > BufferType.CallData) return WasmResult.BadArgument;
        const s = this.current;
        // A connection context keeps its downstream/upstream bytes where a request keeps its bodies.
        if (s instanceof ConnectionStream && (type === BufferType.DownstreamData || type === BufferType.UpstreamData)) {
          type = type === BufferType.DownstreamData ? BufferType.RequestBody : BufferType.ResponseBody;
        }
        if (type !== BufferType.RequestBody && type !== BufferType.ResponseBody) return WasmResult.BadArgument;
        const buf = type === BufferType.RequestBody ? s?.requestBody : s?.responseBody;
        if (!s || !buf) return WasmResult.NotFound;
        const data = m().read(dataPtr, dataLen);
        if (!data) return bad;
        const from = Math.min(start >>> 0, buf.length);
        const to = Math.min(from + (size >>> 0), buf.length);
        const next = Buffer.concat([buf.subarray(0, from), data, buf.subarray(to)]);
        if (type === BufferType.RequestBody) s.requestBody = next;
        else s.responseBody = next;
        return ok;
      },
      proxy_get_header_map_pairs: (type: number, retPtr: number, retSize: number) => {
        const map = this.headerMap(type);
        if (map === null) return WasmResult.BadArgument;
        if (!map) return WasmResult.NotFound;
        return m().writeReturn(serializePairs(map), retPtr, retSize);
      },
      proxy_set_header_map_pairs: (type: number, ptr: number, len: number) => {
        const data = m().read(ptr, len);
        if (!data) return bad;
        const pairs = deserializePairs(data);
        if (!pairs) return WasmResult.ParseFailure;
        return this.setHeaderMap(
          type,
          pairs.map(([k, v]) => [k.toLowerCase(), v]),
        );
      },
      proxy_get_header_map_size: (type: number, retPtr: number) => {
        const map = this.headerMap(type);
        if (map === null) return WasmResult.BadArgument;
        if (!map) return WasmResult.NotFound;
        return m().writeU32(retPtr, serializePairs(map).length) ? ok : bad;
      },
      proxy_get_header_map_value: (type: number, keyPtr: number, keyLen: number, retPtr: number, retSize: number) => {
        const name = this.headerKeys.get(this.mem, keyPtr, keyLen);
        if (name === undefined) return bad;
        const map = this.headerMap(type);
        if (map === null) return WasmResult.BadArgument;
        if (!map) return WasmResult.NotFound;
        const value = getHeader(map, name);
        if (value === undefined) return WasmResult.NotFound;
        return this.mem.writeReturnText(value, retPtr, retSize);
      },
      proxy_add_header_map_value: (type: number, keyPtr: number, keyLen: number, valPtr: number, valLen: number) => {
        const value = m().readString(valPtr, valLen);
        if (value === undefined) return bad;
        return editHeaderMap(type, keyPtr, keyLen, (map, name) => [...map, [name, value]]);
      },
      proxy_replace_header_map_value: (type: number, keyPtr: number, keyLen: number, valPtr: number, valLen: number) => {
        const value = m().readString(valPtr, valLen);
        if (value === undefined) return bad;
        return editHeaderMap(type, keyPtr, keyLen, (map, name) => [...map.filter(([k]) => k !== name), [name, value]]);
      },
      proxy_remove_header_map_value: (type: number, keyPtr: number, keyLen: number) =>
        editHeaderMap(type, keyPtr, keyLen, (map, name) => map.filter(([k]) => k !== name)),
      proxy_get_property: (pathPtr: number, pathLen: number, retPtr: number, retSize: number) => {
        const key = this.propertyKeys.get(this.mem, pathPtr, pathLen);
        if (key === undefined) return bad;
        const value = key.resolve(this.current, this.identity, this.env.node);
        if (!value) return WasmResult.NotFound;
        return this.mem.writeReturn(value, retPtr, retSize);
      },
      proxy_set_property: (pathPtr: number, pathLen: number, valPtr: number, valLen: number) => {
        const key = this.propertyKeys.get(this.mem, pathPtr, pathLen);
        const value = m().read(valPtr, valLen);
        if (key === undefined || !value) return bad;
        if (!this.current) return WasmResult.NotFound;
        this.current.setProperties.set(key.path, value);
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
        grpcStatus: number,
      ) => {
        const details = m().readString(detailsPtr, detailsLen);
        const body = m().read(bodyPtr, bodyLen);
        const headerBytes = m().read(headersPtr, headersLen);
        if (details === undefined || !body || !headerBytes) return bad;
        const pairs = deserializePairs(headerBytes);
        if (!pairs) return WasmResult.ParseFailure;
        if (status < 100 || status > 999) return WasmResult.BadArgument;
        const s = this.current;
        if (!s) return WasmResult.NotFound;
        let headers: HeaderList = pairs.map(([k, v]) => [k.toLowerCase(), v]);
        let code = status;
        let payload: Uint8Array = body;
        // grpc_status -1 (0xffffffff) means "not gRPC"; 0..16 are gRPC status codes.
        if (grpcStatus >= 0 && grpcStatus <= 16) {
          headers = headers.filter(([k]) => k !== 'grpc-status' && k !== 'grpc-message');
          headers.push(['grpc-status', String(grpcStatus)]);
          if (details) headers.push(['grpc-message', encodeURIComponent(details)]);
          // A gRPC client expects HTTP 200 with the status in a trailers-only response.
          if ((getHeader(s.requestHeaders, 'content-type') ?? '').startsWith('application/grpc')) {
            code = 200;
            payload = new Uint8Array();
            headers = headers.filter(([k]) => k !== 'content-type');
            headers.push(['content-type', 'application/grpc']);
          }
        }
        s.localResponse = { status: code, details, body: payload, headers };
        s.resume('local-response');
        return ok;
      },
      proxy_continue_stream: (streamType: number) => resume(streamType),
      proxy_continue_request: () => resume(StreamType.Request),
      proxy_continue_response: () => resume(StreamType.Response),
      proxy_close_stream: (streamType: number) => {
        const s = this.current;
        if (isTcp(streamType) && !(s instanceof ConnectionStream)) return WasmResult.Unimplemented;
        if (!isTcp(streamType) && streamType !== StreamType.Request && streamType !== StreamType.Response) return WasmResult.BadArgument;
        if (!s) return WasmResult.NotFound;
        s.closed = true;
        s.resume('close');
        return ok;
      },
      proxy_clear_route_cache: () => ok,
      proxy_get_status: (codePtr: number, msgPtr: number, msgSize: number) => {
        const r = this.callResponse;
        if (!r) return WasmResult.NotFound;
        if (!m().writeU32(codePtr, r.status)) return bad;
        return m().writeReturn(encodeUtf8(r.message), msgPtr, msgSize);
      },
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
            if (!this.broken && !this.released) this.deleteStream(id, s);
          } catch {
            // counted and logged by markBroken
          }
        });
        return ok;
      },
      proxy_get_shared_data: (keyPtr: number, keyLen: number, retPtr: number, retSize: number, casPtr: number) => {
        const key = m().readString(keyPtr, keyLen);
        if (key === undefined) return bad;
        const entry = this.env.sharedData.get(key);
        if (!entry) return WasmResult.NotFound;
        const r = m().writeReturn(entry.value, retPtr, retSize);
        if (r !== ok) return r;
        return m().writeU32(casPtr, entry.cas) ? ok : bad;
      },
      proxy_set_shared_data: (keyPtr: number, keyLen: number, valPtr: number, valLen: number, cas: number) => {
        const key = m().readString(keyPtr, keyLen);
        const value = m().read(valPtr, valLen);
        if (key === undefined || !value) return bad;
        return this.env.sharedData.set(key, value, cas >>> 0);
      },
      proxy_register_shared_queue: (namePtr: number, nameLen: number, retId: number) => {
        const name = m().readString(namePtr, nameLen);
        if (name === undefined) return bad;
        const id = this.env.queues.register(this.identity.name, name, this.queueReady);
        return m().writeU32(retId, id) ? ok : bad;
      },
      proxy_resolve_shared_queue: (vmPtr: number, vmLen: number, namePtr: number, nameLen: number, retId: number) => {
        const vmId = m().readString(vmPtr, vmLen);
        const name = m().readString(namePtr, nameLen);
        if (vmId === undefined || name === undefined) return bad;
        const id = this.env.queues.resolve(vmId === '' ? this.identity.name : vmId, name);
        if (id === undefined) return WasmResult.NotFound;
        return m().writeU32(retId, id) ? ok : bad;
      },
      proxy_enqueue_shared_queue: (id: number, valPtr: number, valLen: number) => {
        const value = m().read(valPtr, valLen);
        if (!value) return bad;
        return this.env.queues.enqueue(id >>> 0, value);
      },
      proxy_dequeue_shared_queue: (id: number, retPtr: number, retSize: number) => {
        const item = this.env.queues.dequeue(id >>> 0);
        if (typeof item === 'number') return item;
        return m().writeReturn(item, retPtr, retSize);
      },
      proxy_define_metric: (type: number, namePtr: number, nameLen: number, retId: number) => {
        const name = m().readString(namePtr, nameLen);
        if (name === undefined) return bad;
        const id = this.env.metrics.define(type, name);
        if (id === undefined) return WasmResult.BadArgument;
        return m().writeU32(retId, id) ? ok : bad;
      },
      proxy_increment_metric: (id: number, offset: bigint) => this.env.metrics.increment(id >>> 0, BigInt(offset)),
      proxy_record_metric: (id: number, value: bigint) => this.env.metrics.record(id >>> 0, BigInt.asUintN(64, BigInt(value))),
      proxy_get_metric: (id: number, retPtr: number) => {
        const v = this.env.metrics.get(id >>> 0);
        if (typeof v === 'number') return v;
        return m().writeU64(retPtr, v) ? ok : bad;
      },
      proxy_http_call: (
        upPtr: number,
        upLen: number,
        hPtr: number,
        hLen: number,
        bPtr: number,
        bLen: number,
        tPtr: number,
        tLen: number,
        timeout: number,
        retToken: number,
      ) => {
        const upstream = m().readString(upPtr, upLen);
        const hBytes = m().read(hPtr, hLen);
        const body = m().read(bPtr, bLen);
        const tBytes = m().read(tPtr, tLen);
        if (upstream === undefined || !hBytes || !body || !tBytes) return bad;
        const dispatcher = this.env.httpCalls;
        if (!dispatcher) return WasmResult.Unimplemented;
        const headers = deserializePairs(hBytes)?.map(([k, v]) => [k.toLowerCase(), v] as [string, string]);
        const trailers = deserializePairs(tBytes)?.map(([k, v]) => [k.toLowerCase(), v] as [string, string]);
        if (!headers || !trailers) return WasmResult.ParseFailure;
        for (const required of [':method', ':path', ':authority']) if (!getHeader(headers, required)) return WasmResult.BadArgument;
        if (!dispatcher.knows(upstream)) return WasmResult.BadArgument;
        const token = this.nextCallToken++;
        if (!m().writeU32(retToken, token)) return bad;
        this.calls.add(token);
        const ms = timeout >>> 0 === 0 ? DEFAULT_CALL_TIMEOUT_MS : Math.min(timeout >>> 0, MAX_CALL_TIMEOUT_MS);
        dispatcher.dispatch(upstream, headers, body, trailers, ms).then(
          (res) => this.onCallDone(token, res, undefined),
          (err: unknown) => this.onCallDone(token, undefined, err instanceof Error ? err : new Error(String(err))),
        );
        return ok;
      },
      proxy_call_foreign_function: (namePtr: number, nameLen: number, argPtr: number, argLen: number, retPtr: number, retSize: number) => {
        const name = m().readString(namePtr, nameLen);
        const args = m().read(argPtr, argLen);
        if (name === undefined || !args) return bad;
        const result = callForeignFunction(name, args, { identity: () => this.env.node.identity() });
        if (typeof result === 'number') return result;
        return m().writeReturn(result, retPtr, retSize);
      },
      // AssemblyScript runtime imports (not proxy-wasm, but every AS module without --use abort= needs them).
      abort: (msgPtr: number, filePtr: number, line: number, col: number) => {
        throw new Error(`abort: ${m().readAsString(msgPtr)} at ${m().readAsString(filePtr)}:${line}:${col}`);
      },
      seed: () => Date.now(),
      trace: (msgPtr: number) => {
        this.env.log({ event: 'filter-log', filter: this.identity.name, level: 'trace', message: m().readAsString(msgPtr) });
      },
    };
    return table as unknown as Record<string, ImportFn>;
  }
}

