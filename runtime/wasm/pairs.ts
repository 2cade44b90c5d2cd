// The proxy-wasm map serialisation (spec v0.2.1, "Serialization"): a u32
// count, then (u32 key length, u32 value length) per pair, then each key and
// value followed by a NUL. An empty map may also arrive as zero bytes or a
// single 0x00 byte.
//
// In/Out: header lists ⇄ bytes. Malformed input gives undefined (ParseFailure).
import type { HeaderList } from './stream.ts';
import { decodeUtf8, encodeUtf8 } from './text.ts';


export function serializePairs(pairs: HeaderList): Uint8Array {
  const encoded = pairs.map(([k, v]) => [encodeUtf8(k), encodeUtf8(v)] as const);
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
  if (data.length === 0 || (data.length === 1 && data[0] === 0)) return [];
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
    const k = decodeUtf8(data, off, off + kl);
    off += kl + 1;
    const v = decodeUtf8(data, off, off + vl);
    off += vl + 1;
    pairs.push([k, v]);
  }
  return pairs;
}
