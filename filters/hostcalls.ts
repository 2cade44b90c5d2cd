// Typed wrappers over the raw host imports: strings in, strings out.
// In: AssemblyScript strings. Out: host calls; host-allocated buffers (made
// through proxy_on_memory_allocate) are copied into strings and freed here.
import {
  proxy_add_header_map_value,
  proxy_close_stream,
  proxy_define_metric,
  proxy_get_current_time_nanoseconds,
  proxy_get_header_map_value,
  proxy_get_property,
  proxy_increment_metric,
  proxy_log,
  proxy_remove_header_map_value,
  proxy_replace_header_map_value,
  proxy_send_local_response,
  proxy_set_property,
} from "./host";
import { MAP_HTTP_REQUEST_HEADERS, METRIC_COUNTER, RESULT_OK, STREAM_DOWNSTREAM } from "./constants";

// Two out-parameters (pointer, size) for calls that return host-allocated bytes.
const OUT_PTR: usize = memory.data(4);
const OUT_SIZE: usize = memory.data(4);
const OUT_TIME: usize = memory.data(8);

/**
 * Host-returned values land here instead of on the heap when they fit: every
 * value is copied out and released before the next host call, so one buffer
 * serves them all and a decision allocates nothing for what the host returns.
 */
const SCRATCH_SIZE: usize = 1024;
const SCRATCH: usize = memory.data(<i32>SCRATCH_SIZE, 16);
let scratchTaken = false;

/** proxy_on_memory_allocate: the scratch buffer when free and large enough, else the heap. */
export function allocateForHost(size: usize): usize {
  if (!scratchTaken && size <= SCRATCH_SIZE) {
    scratchTaken = true;
    return SCRATCH;
  }
  return heap.alloc(size);
}

/** Gives back a buffer the host allocated. */
function releaseHostBuffer(ptr: usize): void {
  if (ptr == SCRATCH) scratchTaken = false;
  else heap.free(ptr);
}

/** Clears the out-parameters before a call that returns bytes; nothing holds the scratch buffer between calls. */
function expectHostBuffer(): void {
  store<u32>(OUT_PTR, 0);
  store<u32>(OUT_SIZE, 0);
  scratchTaken = false;
}

export function log(level: i32, message: string): void {
  const bytes = String.UTF8.encode(message);
  proxy_log(level, changetype<usize>(bytes), <usize>bytes.byteLength);
}

/**
 * Takes the host buffer left in OUT_PTR/OUT_SIZE as a string. When `last`
 * holds exactly the same ASCII text, `last` itself is returned: values that
 * repeat from request to request (method, the peer's identity) then cost no
 * allocation, and callers may compare them by reference.
 */
function takeReturnedString(last: string | null): string {
  const ptr = <usize>load<u32>(OUT_PTR);
  const size = <usize>load<u32>(OUT_SIZE);
  if (ptr == 0) return "";
  const text = changetype<usize>(last) != 0 && sameAscii(last, ptr, size) ? last : String.UTF8.decodeUnsafe(ptr, size);
  releaseHostBuffer(ptr);
  return text;
}

/** Whether the UTF-8 bytes at ptr are ASCII and spell `text` (read as UTF-16 units in place). */
function sameAscii(text: string, ptr: usize, size: usize): bool {
  if (<usize>text.length != size) return false;
  const units = changetype<usize>(text);
  for (let i: usize = 0; i < size; i++) {
    const b = <u32>load<u8>(ptr + i);
    if (b >= 0x80 || b != <u32>load<u16>(units + (i << 1))) return false;
  }
  return true;
}

/** UTF-8 bytes of a name, for the calls below (encode constant names once, at module start). */
export function utf8(name: string): ArrayBuffer {
  return String.UTF8.encode(name);
}

// Names a filter asks for on every request, encoded once.
export const KEY_METHOD = utf8(":method");
export const KEY_PATH = utf8(":path");
export const KEY_AUTHORITY = utf8(":authority");
export const KEY_CONTENT_TYPE = utf8("content-type");

/** A property's raw bytes as a string, or null when the host has no value. `key` is the UTF-8 path; `last` see takeReturnedString. */
export function getPropertyString(key: ArrayBuffer, last: string | null = null): string | null {
  expectHostBuffer();
  if (proxy_get_property(changetype<usize>(key), <usize>key.byteLength, OUT_PTR, OUT_SIZE) != RESULT_OK) return null;
  return takeReturnedString(last);
}

/** A property holding an int64 little-endian, or `fallback` when absent or malformed. */
export function getPropertyInt64(key: ArrayBuffer, fallback: i64): i64 {
  expectHostBuffer();
  if (proxy_get_property(changetype<usize>(key), <usize>key.byteLength, OUT_PTR, OUT_SIZE) != RESULT_OK) return fallback;
  const ptr = <usize>load<u32>(OUT_PTR);
  const size = load<u32>(OUT_SIZE);
  if (ptr == 0) return fallback;
  const value = size >= 8 ? load<i64>(ptr) : fallback;
  releaseHostBuffer(ptr);
  return value;
}

/** UTF-8 of strings in the module's static data (the rule ids and versions generated code passes), by address. */
const staticUtf8 = new Map<usize, ArrayBuffer>();

/** The UTF-8 bytes of `value`: a string literal is encoded once, anything else every time. */
function utf8Of(value: string): ArrayBuffer {
  const ptr = changetype<usize>(value);
  // Literals live below the heap and never move or die: their address names them for good.
  if (ptr >= __heap_base) return String.UTF8.encode(value);
  if (staticUtf8.has(ptr)) return staticUtf8.get(ptr);
  const bytes = String.UTF8.encode(value);
  staticUtf8.set(ptr, bytes);
  return bytes;
}

export function setPropertyString(key: ArrayBuffer, value: string): bool {
  const bytes = utf8Of(value);
  return proxy_set_property(changetype<usize>(key), <usize>key.byteLength, changetype<usize>(bytes), <usize>bytes.byteLength) == RESULT_OK;
}

/** A request header's value, or null when absent. `key` is the UTF-8 lower-case name; `last` see takeReturnedString. */
export function getRequestHeader(key: ArrayBuffer, last: string | null = null): string | null {
  expectHostBuffer();
  const result = proxy_get_header_map_value(MAP_HTTP_REQUEST_HEADERS, changetype<usize>(key), <usize>key.byteLength, OUT_PTR, OUT_SIZE);
  if (result != RESULT_OK) return null;
  return takeReturnedString(last);
}

/** Asks the host to close the downstream connection of the current (network) context. */
export function closeDownstream(): void {
  proxy_close_stream(STREAM_DOWNSTREAM);
}

/** Sets (replaces), adds or removes a header in `mapType` (request or response headers). */
export function setHeader(mapType: i32, name: string, value: string): void {
  const key = String.UTF8.encode(name);
  const bytes = String.UTF8.encode(value);
  proxy_replace_header_map_value(mapType, changetype<usize>(key), <usize>key.byteLength, changetype<usize>(bytes), <usize>bytes.byteLength);
}

export function addHeader(mapType: i32, name: string, value: string): void {
  const key = String.UTF8.encode(name);
  const bytes = String.UTF8.encode(value);
  proxy_add_header_map_value(mapType, changetype<usize>(key), <usize>key.byteLength, changetype<usize>(bytes), <usize>bytes.byteLength);
}

export function removeHeader(mapType: i32, name: string): void {
  const key = String.UTF8.encode(name);
  proxy_remove_header_map_value(mapType, changetype<usize>(key), <usize>key.byteLength);
}

const metricIds = new Map<string, u32>();
const METRIC_ID_OUT: usize = memory.data(4);

/** Adds 1 to the counter `name`, defining it on first use (a host without metrics is ignored). */
export function countMetric(name: string): void {
  if (!metricIds.has(name)) {
    const bytes = String.UTF8.encode(name);
    store<u32>(METRIC_ID_OUT, 0);
    if (proxy_define_metric(METRIC_COUNTER, changetype<usize>(bytes), <usize>bytes.byteLength, METRIC_ID_OUT) != RESULT_OK) return;
    metricIds.set(name, load<u32>(METRIC_ID_OUT));
  }
  proxy_increment_metric(metricIds.get(name), 1);
}

export function nowNanoseconds(): i64 {
  store<i64>(OUT_TIME, 0);
  proxy_get_current_time_nanoseconds(OUT_TIME);
  return load<i64>(OUT_TIME);
}

/**
 * Serialises header pairs in the proxy-wasm map format: u32 count, then a
 * (u32 key length, u32 value length) per pair, then each key and value
 * followed by a NUL byte.
 */
function serializePairs(names: Array<string>, values: Array<string>): ArrayBuffer {
  const encodedNames = new Array<ArrayBuffer>();
  const encodedValues = new Array<ArrayBuffer>();
  let size = 4;
  for (let i = 0; i < names.length; i++) {
    const n = String.UTF8.encode(names[i]);
    const v = String.UTF8.encode(values[i]);
    encodedNames.push(n);
    encodedValues.push(v);
    size += 8 + n.byteLength + 1 + v.byteLength + 1;
  }
  const out = new ArrayBuffer(size);
  const base = changetype<usize>(out);
  store<u32>(base, <u32>names.length);
  let offset: usize = 4;
  for (let i = 0; i < names.length; i++) {
    store<u32>(base + offset, <u32>encodedNames[i].byteLength);
    store<u32>(base + offset + 4, <u32>encodedValues[i].byteLength);
    offset += 8;
  }
  for (let i = 0; i < names.length; i++) {
    const n = encodedNames[i];
    memory.copy(base + offset, changetype<usize>(n), <usize>n.byteLength);
    offset += <usize>n.byteLength;
    store<u8>(base + offset, 0);
    offset += 1;
    const v = encodedValues[i];
    memory.copy(base + offset, changetype<usize>(v), <usize>v.byteLength);
    offset += <usize>v.byteLength;
    store<u8>(base + offset, 0);
    offset += 1;
  }
  return out;
}

/** Answers the current request from the filter (no upstream call); grpcStatus -1 for none. */
export function sendLocalResponse(status: i32, details: string, body: string, headerNames: Array<string>, headerValues: Array<string>, grpcStatus: i32 = -1): void {
  const detailBytes = String.UTF8.encode(details);
  const bodyBytes = String.UTF8.encode(body);
  const pairs = serializePairs(headerNames, headerValues);
  proxy_send_local_response(
    status,
    changetype<usize>(detailBytes),
    <usize>detailBytes.byteLength,
    changetype<usize>(bodyBytes),
    <usize>bodyBytes.byteLength,
    changetype<usize>(pairs),
    <usize>pairs.byteLength,
    grpcStatus,
  );
}
