// Source addresses for `source ip in [...]`: the host's `source.address`
// ("1.2.3.4:5678", "[::1]:5678") parsed into bytes (4 for IPv4 and IPv4-mapped
// IPv6, 16 for IPv6), and CIDR blocks precomputed by the compiler.
// In: the address text / a block. Out: bytes or null / bool. Mirrors compiler/ip.ts.

export class Cidr {
  bytes: StaticArray<u8>;
  bits: i32;
  constructor(bytes: StaticArray<u8>, bits: i32) {
    this.bytes = bytes;
    this.bits = bits;
  }

  contains(address: Uint8Array): bool {
    if (address.length != this.bytes.length) return false;
    for (let i = 0; i < address.length; i++) {
      const keep = min(8, max(0, this.bits - i * 8));
      if (keep == 0) return true;
      const mask = <u8>((<i32>0xff << (8 - keep)) & 0xff);
      if ((address[i] & mask) != this.bytes[i]) return false;
    }
    return true;
  }
}

/** The host part of "host:port" / "[v6]:port". */
function hostPart(address: string): string {
  if (address.startsWith("[")) {
    const end = address.indexOf("]");
    return end < 0 ? address : address.substring(1, end);
  }
  const last = address.lastIndexOf(":");
  return last < 0 ? address : address.substring(0, last);
}

function parseV4(text: string, out: Uint8Array, at: i32): bool {
  let part = 0;
  let value = 0;
  let digits = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c == 46) { // '.'
      if (digits == 0 || part >= 3) return false;
      out[at + part] = <u8>value;
      part++;
      value = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      value = value * 10 + (c - 48);
      digits++;
      if (digits > 3 || value > 255) return false;
    } else return false;
  }
  if (digits == 0 || part != 3) return false;
  out[at + 3] = <u8>value;
  return true;
}

function hexValue(c: i32): i32 {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

/** Parses the groups of one side of "::" into `groups`; returns the count, or -1. */
function parseGroups(text: string, groups: Array<i32>): i32 {
  if (text.length == 0) return 0;
  const parts = text.split(":");
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i];
    if (i == parts.length - 1 && p.includes(".")) {
      const v4 = new Uint8Array(4);
      if (!parseV4(p, v4, 0)) return -1;
      groups.push((<i32>v4[0] << 8) | v4[1]);
      groups.push((<i32>v4[2] << 8) | v4[3]);
      continue;
    }
    if (p.length == 0 || p.length > 4) return -1;
    let g = 0;
    for (let j = 0; j < p.length; j++) {
      const h = hexValue(p.charCodeAt(j));
      if (h < 0) return -1;
      g = (g << 4) | h;
    }
    groups.push(g);
  }
  return groups.length;
}

/** The peer address as bytes, or null when it is not an IP address. */
export function parseAddress(address: string): Uint8Array | null {
  const host = hostPart(address);
  const v4 = new Uint8Array(4);
  if (parseV4(host, v4, 0)) return v4;
  const sep = host.indexOf("::");
  const head = new Array<i32>();
  const tail = new Array<i32>();
  if (sep >= 0) {
    if (host.indexOf("::", sep + 1) >= 0) return null;
    if (parseGroups(host.substring(0, sep), head) < 0 || parseGroups(host.substring(sep + 2), tail) < 0) return null;
    if (head.length + tail.length > 7) return null;
  } else {
    if (parseGroups(host, head) != 8) return null;
  }
  const out = new Uint8Array(16);
  for (let i = 0; i < head.length; i++) {
    out[i * 2] = <u8>(head[i] >> 8);
    out[i * 2 + 1] = <u8>(head[i] & 0xff);
  }
  const offset = 16 - tail.length * 2;
  for (let i = 0; i < tail.length; i++) {
    out[offset + i * 2] = <u8>(tail[i] >> 8);
    out[offset + i * 2 + 1] = <u8>(tail[i] & 0xff);
  }
  // IPv4-mapped IPv6 (::ffff:a.b.c.d) is an IPv4 peer.
  let mapped = out[10] == 0xff && out[11] == 0xff;
  for (let i = 0; i < 10 && mapped; i++) if (out[i] != 0) mapped = false;
  if (mapped) return out.subarray(12, 16);
  return out;
}
