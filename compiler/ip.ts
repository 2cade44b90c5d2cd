// IP addresses and CIDR blocks as bytes, for `source ip in [...]`.
// In: text ("10.0.0.0/8", "fd00::/8", "192.168.1.7", "::1"). Out: family,
// network bytes (host bits cleared) and prefix length, or undefined when the
// text is not one. The interpreter and the code generator both use these, and
// the filter library (filters/ip.ts) parses the request's address the same way.

export interface Cidr {
  family: 4 | 6;
  /** 4 or 16 bytes, host bits zeroed. */
  bytes: number[];
  bits: number;
}

function parseV4(text: string): number[] | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  const out: number[] = [];
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    out.push(n);
  }
  return out;
}

function parseV6(text: string): number[] | undefined {
  if (!/^[0-9A-Fa-f:.]+$/.test(text)) return undefined;
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const groups = (s: string): number[] | undefined => {
    if (s === '') return [];
    const out: number[] = [];
    const parts = s.split(':');
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i]!;
      if (i === parts.length - 1 && p.includes('.')) {
        const v4 = parseV4(p);
        if (!v4) return undefined;
        out.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
      } else {
        if (!/^[0-9A-Fa-f]{1,4}$/.test(p)) return undefined;
        out.push(parseInt(p, 16));
      }
    }
    return out;
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (!head || !tail) return undefined;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const all = [...head, ...new Array<number>(halves.length === 2 ? missing : 0).fill(0), ...tail];
  return all.flatMap((g) => [g >> 8, g & 0xff]);
}

/** An address as bytes: 4 for IPv4 (and IPv4-mapped IPv6), 16 for IPv6. */
export function parseIp(text: string): number[] | undefined {
  const v4 = parseV4(text);
  if (v4) return v4;
  const v6 = parseV6(text);
  if (!v6) return undefined;
  const mapped = v6.slice(0, 10).every((b) => b === 0) && v6[10] === 0xff && v6[11] === 0xff;
  return mapped ? v6.slice(12) : v6;
}

export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf('/');
  const addrText = slash < 0 ? text : text.slice(0, slash);
  const v4 = parseV4(addrText);
  const bytes = v4 ?? parseV6(addrText);
  if (!bytes) return undefined;
  const max = bytes.length * 8;
  let bits = max;
  if (slash >= 0) {
    const b = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(b)) return undefined;
    bits = Number(b);
    if (bits > max) return undefined;
  }
  const masked = bytes.map((byte, i) => {
    const keep = Math.max(0, Math.min(8, bits - i * 8));
    return byte & ((0xff << (8 - keep)) & 0xff);
  });
  return { family: v4 ? 4 : 6, bytes: masked, bits };
}

/** The address part of an Envoy-style `source.address` ("1.2.3.4:5678", "[::1]:5678"). */
export function addressHost(address: string): string {
  if (address.startsWith('[')) {
    const end = address.indexOf(']');
    return end < 0 ? address : address.slice(1, end);
  }
  const colons = address.split(':').length - 1;
  // One colon: IPv4 with a port. More: an unbracketed IPv6 with the port last.
  if (colons >= 1) return address.slice(0, address.lastIndexOf(':'));
  return address;
}

export function cidrContains(block: Cidr, address: number[]): boolean {
  if (address.length !== block.bytes.length) return false;
  for (let i = 0; i < address.length; i++) {
    const keep = Math.max(0, Math.min(8, block.bits - i * 8));
    if (keep === 0) return true;
    const mask = (0xff << (8 - keep)) & 0xff;
    if ((address[i]! & mask) !== block.bytes[i]) return false;
  }
  return true;
}
