// Parses the arguments of `meshc proxy` in order. Order matters: in
// standalone mode each --filter is followed by its own options
// (--filter-config, --filter-root-id, --failure-policy, --filter-name), so a
// small dedicated parser reads the raw argv rather than commander.
//
// In:  the argv tokens after `proxy`.
// Out: a ConnectedArgs or StandaloneArgs, or a ProxyArgsError naming the problem.
import type { FailurePolicy } from '../protocol/bundle.ts';
import type { Address } from './net.ts';
import { parseUpstream, type UpstreamPort } from './explicit/upstreams.ts';

export class ProxyArgsError extends Error {
  readonly code = 'PROXY_ARGS';
}

export interface StandaloneFilterArg {
  file: string;
  name?: string;
  configuration: string;
  rootId?: string;
  failurePolicy: FailurePolicy;
  /** Log and count the filter's local responses instead of sending them. */
  dryRun?: boolean;
  limits?: { memoryMaxBytes?: number; fuelPerCallback?: number };
}

export interface StandaloneArgs {
  mode: 'standalone';
  listen: Address;
  upstream: URL;
  versionUpstreams: Map<string, URL>;
  filters: StandaloneFilterArg[];
  admin?: Address;
  service?: string;
  upstreamTimeoutMs?: number;
}

export interface ConnectedArgs {
  mode: 'connected';
  controller: string;
  service: string;
  serviceVersion: string;
  instance: string;
  namespace: string;
  serviceAccount: string;
  inbound: Address;
  outbound: Address;
  app: Address;
  admin: Address;
  stateDir: string;
  trustedKeyFiles: string[];
  upstreamTimeoutMs?: number;
  /** Explicit mode: `--upstream NAME[:PORT]=HOST:PORT[/tcp|/http]`, repeatable. */
  upstreams: UpstreamPort[];
  /** Explicit mode: `--http-proxy HOST:PORT`. */
  httpProxy?: Address;
  /** `--allow-egress`: CONNECT and intercepted TCP may leave the mesh. */
  allowEgress: boolean;
  /** `--interception transparent|explicit` (docs/interception.md); absent: explicit. */
  interception?: 'explicit' | 'transparent';
  /** `--permissive-inbound`: transparent mode's inbound port also takes plaintext from outside the mesh (default: mTLS only). */
  permissiveInbound?: boolean;
  /** `--deny-egress`: transparent mode refuses destinations outside the mesh (it passes them through by default). */
  denyEgress: boolean;
  /** `--detect-timeout-ms MS`: silence before a connection is taken for a server-first protocol. */
  detectTimeoutMs?: number;
  /** `--app-tcp-port PORT`, repeatable: app ports besides --app that peers may reach as opaque TCP. */
  appTcpPorts: number[];
}

export const PROXY_USAGE = `Usage:
  meshc proxy --controller ws://HOST:PORT --service NAME --service-version V --instance ID
              [--namespace default] [--service-account NAME]
              --inbound HOST:PORT --outbound HOST:PORT --app HOST:PORT --admin HOST:PORT
              [--state-dir DIR] [--trusted-key FILE]... [--upstream-timeout-ms MS]
              [--upstream NAME[:PORT]=HOST:PORT[/tcp|/http]]... [--http-proxy HOST:PORT] [--allow-egress]
              [--detect-timeout-ms MS] [--app-tcp-port PORT]...
              [--interception explicit|transparent] [--deny-egress] [--permissive-inbound]
  meshc proxy --listen HOST:PORT --upstream URL
              [--filter FILE.wasm [--filter-name NAME] [--filter-config STRING] [--filter-root-id ID]
                                 [--failure-policy closed|open|reload] [--dry-run]
                                 [--memory-limit BYTES[Ki|Mi|Gi]] [--fuel UNITS]]
              [--filter ...]... [--version-upstream NAME=URL]... [--admin HOST:PORT] [--service NAME]
              [--upstream-timeout-ms MS]
`;

export function parseAddress(value: string, flag: string): Address {
  const m = /^(.*):(\d+)$/.exec(value);
  if (!m || !m[1]) throw new ProxyArgsError(`${flag} expects HOST:PORT, got "${value}"`);
  const port = Number(m[2]);
  if (port > 65535) throw new ProxyArgsError(`${flag}: port ${port} is out of range`);
  return { host: m[1].replace(/^\[(.*)\]$/, '$1'), port };
}

function parseUrl(value: string, flag: string): URL {
  try {
    const url = new URL(value);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('not http(s)');
    return url;
  } catch {
    throw new ProxyArgsError(`${flag} expects an http:// or https:// URL, got "${value}"`);
  }
}

const UNITS: Record<string, number> = { '': 1, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3 };

/** `--memory-limit 16Mi` → bytes; at least one 64 KiB Wasm page. */
function parseBytes(v: string): number {
  const m = /^(\d+)(Ki|Mi|Gi)?$/.exec(v);
  const bytes = m ? Number(m[1]) * UNITS[m[2] ?? '']! : Number.NaN;
  if (!(bytes >= 65536)) throw new ProxyArgsError(`--memory-limit expects bytes (e.g. 16Mi, at least 64Ki), got "${v}"`);
  return bytes;
}

/** `--fuel 1000000`; 0 turns metering off. */
function parseCount(v: string, flag: string): number {
  if (!/^\d+$/.test(v) || Number(v) > 0x7fffffff) throw new ProxyArgsError(`${flag} expects a whole number up to 2147483647, got "${v}"`);
  return Number(v);
}

export function parseProxyArgs(argv: string[]): ConnectedArgs | StandaloneArgs {
  const single = new Map<string, string>();
  const trustedKeyFiles: string[] = [];
  const versionUpstreams = new Map<string, URL>();
  // --upstream is a URL in standalone mode and NAME=HOST:PORT (repeatable) in connected mode.
  const upstreamValues: string[] = [];
  const appTcpPorts: number[] = [];
  let allowEgress = false;
  let denyEgress = false;
  let permissiveInbound = false;
  const filters: StandaloneFilterArg[] = [];
  const filterOptions = new Set(['--filter-config', '--filter-root-id', '--failure-policy', '--filter-name', '--memory-limit', '--fuel']);
  const known = new Set([
    '--controller', '--service', '--service-version', '--instance', '--namespace', '--service-account',
    '--inbound', '--outbound', '--app', '--admin', '--state-dir', '--listen', '--upstream-timeout-ms', '--http-proxy', '--detect-timeout-ms', '--interception',
  ]);
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i]!;
    const eq = token.indexOf('=');
    const flag = token.startsWith('--') && eq > 0 ? token.slice(0, eq) : token;
    const inline = token.startsWith('--') && eq > 0 ? token.slice(eq + 1) : undefined;
    const value = (): string => {
      if (inline !== undefined) return inline;
      const v = argv[++i];
      if (v === undefined) throw new ProxyArgsError(`${flag} needs a value`);
      return v;
    };
    if (flag === '--filter') {
      filters.push({ file: value(), configuration: '', failurePolicy: 'closed' });
    } else if (flag === '--dry-run') {
      const f = filters.at(-1);
      if (!f) throw new ProxyArgsError('--dry-run must follow the --filter it belongs to');
      if (inline !== undefined) throw new ProxyArgsError('--dry-run takes no value');
      f.dryRun = true;
    } else if (filterOptions.has(flag)) {
      const f = filters.at(-1);
      if (!f) throw new ProxyArgsError(`${flag} must follow the --filter it belongs to`);
      const v = value();
      if (flag === '--filter-config') f.configuration = v;
      else if (flag === '--filter-root-id') f.rootId = v;
      else if (flag === '--filter-name') f.name = v;
      else if (flag === '--memory-limit') (f.limits ??= {}).memoryMaxBytes = parseBytes(v);
      else if (flag === '--fuel') (f.limits ??= {}).fuelPerCallback = parseCount(v, '--fuel');
      else if (v === 'closed' || v === 'open' || v === 'reload') f.failurePolicy = v;
      else throw new ProxyArgsError(`--failure-policy is closed, open or reload, got "${v}"`);
    } else if (flag === '--version-upstream') {
      const v = value();
      const at = v.indexOf('=');
      if (at <= 0) throw new ProxyArgsError(`--version-upstream expects NAME=URL, got "${v}"`);
      versionUpstreams.set(v.slice(0, at), parseUrl(v.slice(at + 1), '--version-upstream'));
    } else if (flag === '--trusted-key') {
      trustedKeyFiles.push(value());
    } else if (flag === '--upstream') {
      upstreamValues.push(value());
    } else if (flag === '--app-tcp-port') {
      const v = value();
      const port = Number(v);
      if (!/^\d+$/.test(v) || port < 1 || port > 65535) throw new ProxyArgsError(`--app-tcp-port expects a port 1-65535, got "${v}"`);
      appTcpPorts.push(port);
    } else if (flag === '--allow-egress') {
      if (inline !== undefined) throw new ProxyArgsError('--allow-egress takes no value');
      allowEgress = true;
    } else if (flag === '--permissive-inbound') {
      if (inline !== undefined) throw new ProxyArgsError('--permissive-inbound takes no value');
      permissiveInbound = true;
    } else if (flag === '--deny-egress') {
      if (inline !== undefined) throw new ProxyArgsError('--deny-egress takes no value');
      denyEgress = true;
    } else if (known.has(flag)) {
      single.set(flag, value());
    } else {
      throw new ProxyArgsError(`unknown option ${token}`);
    }
  }
  const timeout = single.get('--upstream-timeout-ms');
  const upstreamTimeoutMs = timeout === undefined ? undefined : Number(timeout);
  if (upstreamTimeoutMs !== undefined && !(upstreamTimeoutMs > 0)) throw new ProxyArgsError('--upstream-timeout-ms expects a positive number');
  const need = (flag: string): string => {
    const v = single.get(flag);
    if (v === undefined) throw new ProxyArgsError(`${flag} is required`);
    return v;
  };
  if (single.has('--controller')) {
    if (filters.length || single.has('--listen')) throw new ProxyArgsError('--controller cannot be combined with --listen/--filter (standalone mode)');
    let upstreams: UpstreamPort[];
    try {
      upstreams = upstreamValues.map(parseUpstream);
    } catch (err) {
      throw new ProxyArgsError((err as Error).message);
    }
    const service = need('--service');
    const out: ConnectedArgs = {
      mode: 'connected',
      controller: need('--controller'),
      service,
      serviceVersion: need('--service-version'),
      instance: need('--instance'),
      namespace: single.get('--namespace') ?? 'default',
      serviceAccount: single.get('--service-account') ?? service,
      inbound: parseAddress(need('--inbound'), '--inbound'),
      outbound: parseAddress(need('--outbound'), '--outbound'),
      app: parseAddress(need('--app'), '--app'),
      admin: parseAddress(need('--admin'), '--admin'),
      stateDir: single.get('--state-dir') ?? `.meshc/state/${need('--instance')}`,
      trustedKeyFiles,
      upstreams,
      allowEgress,
      denyEgress,
      appTcpPorts,
    };

    if (allowEgress && denyEgress) throw new ProxyArgsError('--allow-egress and --deny-egress contradict each other');
    const interception = single.get('--interception');
    if (interception !== undefined) {
      if (interception !== 'explicit' && interception !== 'transparent') throw new ProxyArgsError(`--interception expects explicit or transparent, got "${interception}"`);
      out.interception = interception;
    }
    if (permissiveInbound) {
      if (out.interception !== 'transparent') throw new ProxyArgsError('--permissive-inbound needs --interception transparent');
      out.permissiveInbound = true;
    }
    if (upstreamTimeoutMs !== undefined) out.upstreamTimeoutMs = upstreamTimeoutMs;
    const proxy = single.get('--http-proxy');
    if (proxy !== undefined) out.httpProxy = parseAddress(proxy, '--http-proxy');
    const detect = single.get('--detect-timeout-ms');
    if (detect !== undefined) {
      if (!/^\d+$/.test(detect) || Number(detect) < 1) throw new ProxyArgsError(`--detect-timeout-ms expects a positive whole number, got "${detect}"`);
      out.detectTimeoutMs = Number(detect);
    }
    return out;
  }
  if (!single.has('--listen')) throw new ProxyArgsError('give --controller (connected mode) or --listen/--upstream/--filter (standalone mode)');
  for (const flag of ['--http-proxy', '--detect-timeout-ms', '--interception']) if (single.has(flag)) throw new ProxyArgsError(`${flag} needs --controller (connected mode)`);
  if (allowEgress || denyEgress || permissiveInbound || appTcpPorts.length) throw new ProxyArgsError('--allow-egress, --deny-egress, --permissive-inbound and --app-tcp-port need --controller (connected mode)');
  if (upstreamValues.length !== 1) throw new ProxyArgsError(upstreamValues.length === 0 ? '--upstream is required' : 'standalone mode takes one --upstream URL');
  // Zero filters is a plain proxy: the baseline the benchmark compares a chain against.
  const out: StandaloneArgs = {
    mode: 'standalone',
    listen: parseAddress(need('--listen'), '--listen'),
    upstream: parseUrl(upstreamValues[0]!, '--upstream'),
    versionUpstreams,
    filters,
  };
  const admin = single.get('--admin');
  if (admin !== undefined) out.admin = parseAddress(admin, '--admin');
  const service = single.get('--service');
  if (service !== undefined) out.service = service;
  if (upstreamTimeoutMs !== undefined) out.upstreamTimeoutMs = upstreamTimeoutMs;
  return out;
}
