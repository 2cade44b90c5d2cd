// UTF-8 across the Wasm boundary. Every host call moves a few short strings
// (header names, property paths, values); for those a plain loop over ASCII
// beats TextEncoder/TextDecoder, whose fixed cost per call dominated the
// host's profile. Longer or non-ASCII text goes through Buffer's native UTF-8.
//
// In/Out: bytes ⇄ strings, exactly as UTF-8 would decode and encode them.

import { Buffer } from 'node:buffer';
const SHORT = 64;

/** Decodes bytes[start, end) as UTF-8 without copying them. */
export function decodeUtf8(bytes: Uint8Array, start: number, end: number): string {
  if (end - start <= SHORT) {
    let out = '';
    for (let i = start; i < end; i++) {
      const b = bytes[i]!;
      if (b >= 0x80) return Buffer.from(bytes.buffer, bytes.byteOffset + start, end - start).toString('utf8');
      out += String.fromCharCode(b);
    }
    return out;
  }
  return Buffer.from(bytes.buffer, bytes.byteOffset + start, end - start).toString('utf8');
}

export function encodeUtf8(text: string): Uint8Array {
  if (text.length <= SHORT) {
    const out = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c >= 0x80) return Buffer.from(text, 'utf8');
      out[i] = c;
    }
    return out;
  }
  return Buffer.from(text, 'utf8');
}
