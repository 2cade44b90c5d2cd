// A minimal scripted proxy-wasm host that runs a compiled policy module and
// reports what it decided: the engine behind `meshc test`, `meshc explain` and
// the corpus. A controllable clock and random source
// make runs reproducible. It is not the sidecar's host (runtime/wasm/ is): it
// answers only the calls compiled policies make.
// In: module bytes, then RequestSpecs. Out: Outcomes.
import { decidingRule, DIRECTIONS, type HeaderChange, type Outcome, type RequestSpec } from './request.ts';

interface WasmMemory {
  readonly buffer: ArrayBuffer;
}
interface WasmInstance {
  readonly exports: Record<string, unknown>;
}
type WasmImports = Record<string, Record<string, unknown>>;
const Wasm = (globalThis as unknown as { WebAssembly: { instantiate(bytes: Uint8Array, imports: WasmImports): Promise<{ instance: WasmInstance }> } })
  .WebAssembly;

const ROOT = 1;
const OK = 0;
const NOT_FOUND = 1;
const BAD_ARGUMENT = 2;
const MAP_REQUEST = 0;
const MAP_RESPONSE = 2;
/** Longest injected delay the host waits out, stepping its clock 1 ms per tick. */
const MAX_DELAY_MS = 60_000;

const encoder = new TextEncoder();
const TRACE_ON = encoder.encode('1');
const decoder = new TextDecoder();

/** Header values repeat across requests (methods, paths of a benchmark): encode each once. */
const encodedValues = new Map<string, Uint8Array>();

function encodeCached(value: string): Uint8Array {
  let bytes = encodedValues.get(value);
  if (!bytes) {
    bytes = encoder.encode(value);
    if (encodedValues.size < 4096) encodedValues.set(value, bytes);
  }
  return bytes;
}

function int64(n: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigInt64(0, BigInt(n), true);
  return b;
}

/** The per-request state the host functions read and write. */
interface Stream {
  spec: RequestSpec;
  requestHeaders: Map<string, string>;
  responseHeaders: Map<string, string>;
  properties: Map<string, string>;
  local?: Outcome['local'];
  requestChanges: HeaderChange[];
  responseChanges: HeaderChange[];
  /** The spec's property values, encoded (filled on first use). */
  encoded?: Map<string, Uint8Array>;
  /** A connection the filter closed (proxy_close_stream, downstream). */
  closed?: boolean;
}

export class DecisionHost {
  /** Wall clock in nanoseconds (proxy_get_current_time_nanoseconds). */
  nowNs = 1_000_000_000n;
  /** u32 values random_get hands out, in order (then zeros). */
  randoms: number[] = [];
  tickPeriodMs = 0;
  readonly logs: string[] = [];
  readonly metrics = new Map<string, number>();
  private readonly metricNames: string[] = [];
  private instance!: WasmInstance;
  private nextContext = ROOT + 1;
  private stream: Stream | undefined;
  private effective = ROOT;
  private continued = new Set<number>();

  static async load(wasm: Uint8Array): Promise<DecisionHost> {
    const host = new DecisionHost();
    const { instance } = await Wasm.instantiate(wasm, host.imports());
    host.instance = instance;
    host.allocate = instance.exports['proxy_on_memory_allocate'] as (size: number) => number;
    host.callIfExported('proxy_on_context_create', ROOT, 0);
    host.call('proxy_on_vm_start', ROOT, 0);
    host.call('proxy_on_configure', ROOT, 0);
    return host;
  }

  private call(name: string, ...args: number[]): number {
    const fn = this.instance.exports[name] as ((...a: number[]) => number) | undefined;
    if (!fn) throw new Error(`module does not export ${name}`);
    return fn(...args);
  }

  /** Context callbacks are optional, as in any proxy-wasm host (compiled modules leave out the ones that would do nothing). */
  private callIfExported(name: string, ...args: number[]): void {
    if (this.has(name)) this.call(name, ...args);
  }

  private has(name: string): boolean {
    return typeof this.instance.exports[name] === 'function';
  }

  // Views of the module's memory, rebuilt only when it has grown (a host call
  // per property: keeping them costs nothing and saves an allocation each).
  private viewBuffer: ArrayBuffer | undefined;
  private bytesView = new Uint8Array(0);
  private dataView = new DataView(new ArrayBuffer(0));
  private allocate!: (size: number) => number;

  private get memory(): WasmMemory {
    return this.instance.exports['memory'] as WasmMemory;
  }

  private memoryObject: WasmMemory | undefined;

  private views(): void {
    const buffer = (this.memoryObject ??= this.memory).buffer;
    if (buffer !== this.viewBuffer) {
      this.viewBuffer = buffer;
      this.bytesView = new Uint8Array(buffer);
      this.dataView = new DataView(buffer);
    }
  }

  memoryBytes(): number {
    return this.memory.buffer.byteLength;
  }

  private readString(ptr: number, len: number): string {
    this.views();
    // Keys and property paths are short ASCII: decode them without TextDecoder.
    if (len <= 64) {
      let ascii = '';
      for (let i = 0; i < len; i++) {
        const c = this.bytesView[ptr + i]!;
        if (c >= 0x80) return decoder.decode(this.bytesView.subarray(ptr, ptr + len));
        ascii += String.fromCharCode(c);
      }
      return ascii;
    }
    return decoder.decode(this.bytesView.subarray(ptr, ptr + len));
  }

  /** Copies bytes into module memory (proxy_on_memory_allocate) and stores (ptr, size) at the out-pointers. */
  private returnBytes(bytes: Uint8Array, ptrOut: number, sizeOut: number): void {
    const ptr = this.allocate(bytes.length);
    this.views();
    this.bytesView.set(bytes, ptr);
    this.dataView.setUint32(ptrOut, ptr, true);
    this.dataView.setUint32(sizeOut, bytes.length, true);
  }

  /** Encodings of a request's values, made once per RequestSpec object. */
  private readonly encoded = new WeakMap<RequestSpec, Map<string, Uint8Array>>();

  private encodedOf(spec: RequestSpec): Map<string, Uint8Array> {
    let map = this.encoded.get(spec);
    if (map) return map;
    map = new Map();
    map.set('listener_direction', int64(DIRECTIONS[spec.direction]));
    if (spec.source !== undefined) map.set('source.principal', encoder.encode(spec.source));
    if (spec.sourceAddress !== undefined) map.set('source.address', encoder.encode(spec.sourceAddress));
    if (spec.port !== undefined) map.set('destination.port', int64(spec.port));
    if (spec.scheme !== undefined) map.set('request.scheme', encoder.encode(spec.scheme));
    for (const [k, v] of Object.entries(spec.claims ?? {})) map.set(`mesh.jwt.claims.${k}`, encoder.encode(v));
    this.encoded.set(spec, map);
    return map;
  }

  private property(path: string): Uint8Array | undefined {
    // Asks the module to publish mesh.rules (read once, at proxy_on_configure): outcomes need the deciding rule.
    if (path === 'mesh.trace') return TRACE_ON;
    const s = this.stream;
    if (!s) return undefined;
    if (s.properties.size > 0) {
      const set = s.properties.get(path);
      if (set !== undefined) return encoder.encode(set);
    }
    return (s.encoded ??= this.encodedOf(s.spec)).get(path);
  }

  private headerMap(mapType: number): Map<string, string> | undefined {
    if (!this.stream) return undefined;
    if (mapType === MAP_REQUEST) return this.stream.requestHeaders;
    if (mapType === MAP_RESPONSE) return this.stream.responseHeaders;
    return undefined;
  }

  private record(mapType: number, change: HeaderChange): void {
    if (!this.stream) return;
    (mapType === MAP_RESPONSE ? this.stream.responseChanges : this.stream.requestChanges).push(change);
  }

  private imports(): WasmImports {
    return {
      env: {
        proxy_log: (_level: number, ptr: number, len: number) => {
          this.logs.push(this.readString(ptr, len));
          return OK;
        },
        proxy_get_property: (pathPtr: number, pathLen: number, ptrOut: number, sizeOut: number) => {
          const value = this.property(this.readString(pathPtr, pathLen));
          if (!value) return NOT_FOUND;
          this.returnBytes(value, ptrOut, sizeOut);
          return OK;
        },
        proxy_set_property: (pathPtr: number, pathLen: number, valPtr: number, valLen: number) => {
          this.stream?.properties.set(this.readString(pathPtr, pathLen), this.readString(valPtr, valLen));
          return OK;
        },
        proxy_get_header_map_value: (mapType: number, keyPtr: number, keyLen: number, ptrOut: number, sizeOut: number) => {
          const value = this.headerMap(mapType)?.get(this.readString(keyPtr, keyLen));
          if (value === undefined) return NOT_FOUND;
          this.returnBytes(encodeCached(value), ptrOut, sizeOut);
          return OK;
        },
        proxy_replace_header_map_value: (mapType: number, kPtr: number, kLen: number, vPtr: number, vLen: number) => {
          const name = this.readString(kPtr, kLen);
          const value = this.readString(vPtr, vLen);
          this.headerMap(mapType)?.set(name, value);
          this.record(mapType, { op: 'set', name, value });
          return OK;
        },
        proxy_add_header_map_value: (mapType: number, kPtr: number, kLen: number, vPtr: number, vLen: number) => {
          const name = this.readString(kPtr, kLen);
          const value = this.readString(vPtr, vLen);
          const map = this.headerMap(mapType);
          const old = map?.get(name);
          map?.set(name, old === undefined ? value : `${old},${value}`);
          this.record(mapType, { op: 'add', name, value });
          return OK;
        },
        proxy_remove_header_map_value: (mapType: number, kPtr: number, kLen: number) => {
          const name = this.readString(kPtr, kLen);
          this.headerMap(mapType)?.delete(name);
          this.record(mapType, { op: 'remove', name });
          return OK;
        },
        proxy_send_local_response: (status: number, _dPtr: number, _dLen: number, bPtr: number, bLen: number, hPtr: number, hLen: number, grpc: number) => {
          if (this.stream) {
            const local: NonNullable<Outcome['local']> = { status, headers: this.readPairs(hPtr, hLen), body: this.readString(bPtr, bLen) };
            if (grpc >= 0) local.grpcStatus = grpc;
            this.stream.local = local;
          }
          return OK;
        },
        proxy_close_stream: (streamType: number) => {
          // Downstream (2): a network filter closes its connection.
          if (streamType !== 2 || !this.stream?.spec.connection) return BAD_ARGUMENT;
          this.stream.closed = true;
          return OK;
        },
        proxy_set_tick_period_milliseconds: (ms: number) => {
          this.tickPeriodMs = ms;
          return OK;
        },
        proxy_set_effective_context: (id: number) => {
          this.effective = id;
          return OK;
        },
        proxy_continue_stream: (streamType: number) => {
          if (streamType === 0) this.continued.add(this.effective);
          return OK;
        },
        proxy_get_current_time_nanoseconds: (out: number) => {
          new DataView(this.memory.buffer).setBigUint64(out, this.nowNs, true);
          return OK;
        },
        proxy_define_metric: (_type: number, namePtr: number, nameLen: number, idOut: number) => {
          const name = this.readString(namePtr, nameLen);
          let id = this.metricNames.indexOf(name);
          if (id < 0) id = this.metricNames.push(name) - 1;
          new DataView(this.memory.buffer).setUint32(idOut, id, true);
          return OK;
        },
        proxy_increment_metric: (id: number, offset: bigint) => {
          const name = this.metricNames[id];
          if (name === undefined) return NOT_FOUND;
          this.metrics.set(name, (this.metrics.get(name) ?? 0) + Number(offset));
          return OK;
        },
      },
      wasi_snapshot_preview1: {
        random_get: (ptr: number, len: number) => {
          const view = new DataView(this.memory.buffer);
          for (let i = 0; i + 4 <= len; i += 4) view.setUint32(ptr + i, this.randoms.shift() ?? 0, true);
          return 0;
        },
      },
    };
  }

  private readPairs(ptr: number, len: number): Record<string, string> {
    if (len === 0) return {};
    const view = new DataView(this.memory.buffer, ptr, len);
    const count = view.getUint32(0, true);
    const sizes: [number, number][] = [];
    for (let i = 0; i < count; i++) sizes.push([view.getUint32(4 + i * 8, true), view.getUint32(8 + i * 8, true)]);
    let offset = ptr + 4 + count * 8;
    const out: Record<string, string> = {};
    for (const [k, v] of sizes) {
      const key = this.readString(offset, k);
      offset += k + 1;
      out[key] = this.readString(offset, v);
      offset += v + 1;
    }
    return out;
  }

  /**
   * Runs one request through the module: request headers, then (when it was
   * delayed) the clock until it resumes, then an empty 200 response through
   * the response-header callback, then the end of the stream.
   */
  decide(spec: RequestSpec): Outcome {
    if (spec.connection) return this.connection(spec);
    const contextId = this.nextContext++;
    const requestHeaders = new Map<string, string>([
      [':method', spec.method ?? 'GET'],
      [':path', spec.path ?? '/'],
    ]);
    if (spec.host !== undefined) requestHeaders.set(':authority', spec.host);
    for (const [k, v] of Object.entries(spec.headers ?? {})) requestHeaders.set(k.toLowerCase(), v);
    const stream: Stream = {
      spec,
      requestHeaders,
      responseHeaders: new Map([[':status', '200']]),
      properties: new Map(),
      requestChanges: [],
      responseChanges: [],
    };
    this.stream = stream;
    this.effective = contextId;
    this.callIfExported('proxy_on_context_create', contextId, ROOT);
    const action = this.call('proxy_on_request_headers', contextId, requestHeaders.size, 1);
    let delayMs: number | undefined;
    if (action !== 0 && !stream.local) {
      // Paused for a delay: step the clock until the tick resumes the stream.
      const start = this.nowNs;
      while (!this.continued.has(contextId) && this.nowNs - start < BigInt(MAX_DELAY_MS) * 1_000_000n) {
        this.nowNs += 1_000_000n;
        this.effective = ROOT;
        this.call('proxy_on_tick', ROOT);
      }
      if (!this.continued.has(contextId)) throw new Error(`request stayed paused for more than ${MAX_DELAY_MS} ms`);
      this.continued.delete(contextId);
      delayMs = Number((this.nowNs - start) / 1_000_000n);
    }
    if (!stream.local && this.has('proxy_on_response_headers')) {
      this.effective = contextId;
      this.call('proxy_on_response_headers', contextId, stream.responseHeaders.size, 1);
    }
    this.callIfExported('proxy_on_done', contextId);
    this.callIfExported('proxy_on_delete', contextId);
    this.stream = undefined;
    const rulesText = stream.properties.get('mesh.rules');
    const version = stream.properties.get('mesh.route.version');
    const id = stream.properties.get('mesh.route.id');
    const partial: Omit<Outcome, 'rule'> = {
      action: stream.local ? 'local' : delayMs !== undefined ? 'delayed' : 'continue',
      rules: rulesText ? rulesText.split(',') : [],
      requestHeaders: stream.requestChanges,
      responseHeaders: stream.responseChanges,
      metrics: Object.fromEntries([...this.metrics].sort()),
    };
    if (stream.local) partial.local = stream.local;
    if (version !== undefined && id !== undefined) partial.route = { version, id };
    if (delayMs !== undefined) partial.delayMs = delayMs;
    const outcome: Outcome = { ...partial };
    const rule = decidingRule(partial);
    if (rule !== undefined) outcome.rule = rule;
    return outcome;
  }

  /**
   * Runs one opaque TCP connection through the module: proxy_on_new_connection
   * (a module without it decides nothing: the connection goes on), then the
   * end of the context. No header maps: the decision may read only properties.
   */
  private connection(spec: RequestSpec): Outcome {
    const contextId = this.nextContext++;
    const stream: Stream = { spec, requestHeaders: new Map(), responseHeaders: new Map(), properties: new Map(), requestChanges: [], responseChanges: [] };
    this.stream = stream;
    this.effective = contextId;
    this.callIfExported('proxy_on_context_create', contextId, ROOT);
    this.callIfExported('proxy_on_new_connection', contextId);
    this.callIfExported('proxy_on_done', contextId);
    this.callIfExported('proxy_on_delete', contextId);
    this.stream = undefined;
    const rulesText = stream.properties.get('mesh.rules');
    const partial: Omit<Outcome, 'rule'> = {
      action: stream.closed ? 'closed' : 'continue',
      rules: rulesText ? rulesText.split(',') : [],
      requestHeaders: [],
      responseHeaders: [],
      metrics: Object.fromEntries([...this.metrics].sort()),
    };
    const closedBy = stream.closed ? stream.properties.get('mesh.connection.rule') : undefined;
    if (closedBy !== undefined) partial.closedBy = closedBy;
    const outcome: Outcome = { ...partial };
    const rule = decidingRule(partial);
    if (rule !== undefined) outcome.rule = rule;
    return outcome;
  }
}
