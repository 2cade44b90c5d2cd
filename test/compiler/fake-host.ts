// A minimal scripted proxy-wasm host for checking what a compiled module
// decides, with a controllable clock and random source. It is a test double,
// not the runtime (runtime/wasm/ is): only the calls compiled policies make.
import { Wasm, type WasmImports, type WasmInstance, type WasmMemory } from './wasm.ts';

export interface LocalResponse {
  status: number;
  details: string;
  body: string;
  headers: Record<string, string>;
}

export interface RequestSpec {
  method?: string;
  path?: string;
  headers?: Record<string, string>;
  direction: 0 | 1 | 2;
  source?: string;
}

export interface RequestOutcome {
  contextId: number;
  action: number;
  local?: LocalResponse;
  routeVersion?: string;
}

const ROOT = 1;

export class FakeHost {
  nowNs = 1_000_000_000n;
  /** u32 values random_get hands out, in order (then zeros). */
  randoms: number[] = [];
  tickPeriodMs = 0;
  continued: number[] = [];
  logs: string[] = [];
  private instance!: WasmInstance;
  private nextContext = ROOT + 1;
  private current: { spec: RequestSpec; outcome: RequestOutcome } | undefined;
  private effective = ROOT;

  static async load(wasm: Uint8Array): Promise<FakeHost> {
    const host = new FakeHost();
    const { instance } = await Wasm.instantiate(wasm, host.imports());
    host.instance = instance;
    host.call('proxy_on_context_create', ROOT, 0);
    expect1(host.call('proxy_on_vm_start', ROOT, 0));
    expect1(host.call('proxy_on_configure', ROOT, 0));
    return host;
  }

  private call(name: string, ...args: number[]): number {
    const fn = this.instance.exports[name] as (...a: number[]) => number;
    return fn(...args);
  }

  memoryBytes(): number {
    return this.memory.buffer.byteLength;
  }

  private get memory(): WasmMemory {
    return this.instance.exports.memory as WasmMemory;
  }

  private readString(ptr: number, len: number): string {
    return Buffer.from(new Uint8Array(this.memory.buffer, ptr, len)).toString('utf8');
  }

  /** Copies bytes into module memory via proxy_on_memory_allocate and stores (ptr, size) at the out-pointers. */
  private returnBytes(bytes: Uint8Array, ptrOut: number, sizeOut: number): void {
    const ptr = this.call('proxy_on_memory_allocate', bytes.length);
    new Uint8Array(this.memory.buffer, ptr, bytes.length).set(bytes);
    const view = new DataView(this.memory.buffer);
    view.setUint32(ptrOut, ptr, true);
    view.setUint32(sizeOut, bytes.length, true);
  }

  private property(path: string): Uint8Array | undefined {
    const spec = this.current?.spec;
    if (!spec) return undefined;
    if (path === 'listener_direction') {
      const b = new Uint8Array(8);
      new DataView(b.buffer).setBigInt64(0, BigInt(spec.direction), true);
      return b;
    }
    if (path === 'source.principal' && spec.source !== undefined) return Buffer.from(spec.source);
    return undefined;
  }

  private header(name: string): string | undefined {
    const spec = this.current?.spec;
    if (!spec) return undefined;
    if (name === ':method') return spec.method ?? 'GET';
    if (name === ':path') return spec.path ?? '/';
    return spec.headers?.[name];
  }

  private imports(): WasmImports {
    const OK = 0;
    const NOT_FOUND = 1;
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
          if (this.current && this.readString(pathPtr, pathLen) === 'mesh.route.version') {
            this.current.outcome.routeVersion = this.readString(valPtr, valLen);
          }
          return OK;
        },
        proxy_get_header_map_value: (mapType: number, keyPtr: number, keyLen: number, ptrOut: number, sizeOut: number) => {
          if (mapType !== 0) return NOT_FOUND;
          const value = this.header(this.readString(keyPtr, keyLen));
          if (value === undefined) return NOT_FOUND;
          this.returnBytes(Buffer.from(value), ptrOut, sizeOut);
          return OK;
        },
        proxy_send_local_response: (status: number, dPtr: number, dLen: number, bPtr: number, bLen: number, hPtr: number, hLen: number) => {
          if (this.current) {
            this.current.outcome.local = {
              status,
              details: this.readString(dPtr, dLen),
              body: this.readString(bPtr, bLen),
              headers: this.readPairs(hPtr, hLen),
            };
          }
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
          if (streamType === 0) this.continued.push(this.effective);
          return OK;
        },
        proxy_get_current_time_nanoseconds: (out: number) => {
          new DataView(this.memory.buffer).setBigUint64(out, this.nowNs, true);
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

  /** Runs proxy_on_request_headers for a new stream context; the context stays open until finish(). */
  request(spec: RequestSpec): RequestOutcome {
    const contextId = this.nextContext++;
    const outcome: RequestOutcome = { contextId, action: -1 };
    this.current = { spec, outcome };
    this.effective = contextId;
    this.call('proxy_on_context_create', contextId, ROOT);
    outcome.action = this.call('proxy_on_request_headers', contextId, 2, 1);
    return outcome;
  }

  finish(contextId: number): void {
    this.call('proxy_on_done', contextId);
    this.call('proxy_on_delete', contextId);
    this.current = undefined;
  }

  tick(): void {
    this.effective = ROOT;
    this.call('proxy_on_tick', ROOT);
  }
}

function expect1(v: number): void {
  if (v !== 1) throw new Error(`expected 1, got ${v}`);
}
