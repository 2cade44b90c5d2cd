// Per-upstream local ports of explicit mode (as Consul's upstreams): each
// port is bound to one mesh service; the app connects to 127.0.0.1:PORT and
// speaks whatever it speaks there — HTTP goes the outbound HTTP path with
// that service as destination, anything else is relayed as opaque TCP.
//
// In:  `--upstream NAME[:PORT]=HOST:PORT[/tcp|/http]` values.
// Out: UpstreamPort records for SidecarOptions.upstreams; a coded error for a
//      malformed value.
import type { Address } from '../net.ts';

export interface UpstreamPort {
  /** The mesh service every connection to this port goes to. */
  service: string;
  /** For opaque TCP: the app port at the destination (0: the destination app's main port). */
  port: number;
  /** Where the local port listens (127.0.0.1 usually). */
  listen: Address;
  /** A declared protocol skips detection (and its server-first delay for `tcp`). */
  protocol?: 'tcp' | 'http';
}

export class UpstreamSpecError extends Error {
  readonly code = 'UPSTREAM_SPEC';
}

const SERVICE = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;

/** `catalog=127.0.0.1:9001`, `db:5432=127.0.0.1:9002/tcp`. */
export function parseUpstream(value: string): UpstreamPort {
  const eq = value.indexOf('=');
  if (eq <= 0) throw new UpstreamSpecError(`--upstream expects NAME[:PORT]=HOST:PORT[/tcp|/http], got "${value}"`);
  const left = value.slice(0, eq);
  let right = value.slice(eq + 1);
  let protocol: UpstreamPort['protocol'];
  const slash = right.lastIndexOf('/');
  if (slash !== -1) {
    const p = right.slice(slash + 1);
    if (p !== 'tcp' && p !== 'http') throw new UpstreamSpecError(`--upstream: protocol is tcp or http, got "${p}" in "${value}"`);
    protocol = p;
    right = right.slice(0, slash);
  }
  const colon = left.indexOf(':');
  const service = colon === -1 ? left : left.slice(0, colon);
  if (!SERVICE.test(service)) throw new UpstreamSpecError(`--upstream: "${service}" is not a service name`);
  let port = 0;
  if (colon !== -1) {
    port = Number(left.slice(colon + 1));
    if (!/^\d+$/.test(left.slice(colon + 1)) || port < 1 || port > 65535) throw new UpstreamSpecError(`--upstream: destination port "${left.slice(colon + 1)}" is not 1-65535`);
  }
  const m = /^(.*):(\d{1,5})$/.exec(right);
  if (!m || !m[1] || Number(m[2]) > 65535) throw new UpstreamSpecError(`--upstream: "${right}" is not HOST:PORT`);
  const listen: Address = { host: m[1].replace(/^\[(.*)\]$/, '$1'), port: Number(m[2]) };
  return protocol ? { service, port, listen, protocol } : { service, port, listen };
}
