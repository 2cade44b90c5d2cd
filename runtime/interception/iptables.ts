// The iptables rules of transparent interception, as an init container
// installs them in a pod's network namespace: inbound TCP to the sidecar's
// inbound port, outbound TCP to its outbound port, the sidecar's own traffic
// (by uid/gid) left alone. Same semantics as istio-iptables, own chain names.
//
// In:  InitOptions (validated by parseInitOptions from the CLI's strings).
// Out: an iptables-restore script for the nat table of one family (renderRules,
//      pure: IPv4, and with --ipv6 the same rules for ip6tables), and
//      applyRules / cleanRules that run (ip6)tables-save / (ip6)tables-restore.
//      Apply is one atomic restore that also drops the jumps an earlier run
//      left, so running it again replaces the rules; clean removes them all.
//      Bad options throw InitError (code INIT_ARGS); a failing iptables
//      command throws InitError (code IPTABLES_FAILED) with its stderr.
import { spawnSync } from 'node:child_process';
import net from 'node:net';

/** Chains of our own in the nat table; nothing else of the table is touched. */
export const CHAINS = {
  /** PREROUTING jumps here: which inbound TCP goes to the sidecar. */
  inbound: 'MESH_INBOUND',
  /** REDIRECT to the sidecar's inbound port. */
  inRedirect: 'MESH_IN_REDIRECT',
  /** OUTPUT jumps here: which locally sent TCP goes to the sidecar. */
  output: 'MESH_OUTPUT',
  /** REDIRECT to the sidecar's outbound port. */
  redirect: 'MESH_REDIRECT',
} as const;

const OUR_CHAINS: readonly string[] = Object.values(CHAINS);

export interface InitOptions {
  /** The sidecar's inbound capture port (Istio: 15006). */
  inboundPort: number;
  /** The sidecar's outbound capture port (Istio: 15001). */
  outboundPort: number;
  /** Users whose traffic is never redirected (the sidecar's); numeric ids or names. */
  proxyUids: string[];
  /** Groups whose traffic is never redirected. */
  proxyGids: string[];
  /** Inbound ports redirected to the sidecar: '*' = all but the excluded ones; [] = no inbound capture. */
  inboundPorts: '*' | number[];
  /** Inbound ports never redirected (with inboundPorts '*'), e.g. the sidecar's admin port for probes. */
  excludeInboundPorts: number[];
  /** Outbound destination ports never redirected. */
  excludeOutboundPorts: number[];
  /** Outbound destinations redirected: '*' = all; else only these CIDRs (IPv4 or IPv6). */
  outboundCidrs: '*' | string[];
  /** Outbound destinations never redirected. */
  excludeOutboundCidrs: string[];
  /** Also redirect the pod's IPv6 TCP (ip6tables); the sidecar must then listen on `::`. */
  ipv6: boolean;
}

export type Family = 4 | 6;

export type InitErrorCode = 'INIT_ARGS' | 'IPTABLES_FAILED';

export class InitError extends Error {
  readonly code: InitErrorCode;
  constructor(code: InitErrorCode, message: string) {
    super(message);
    this.name = 'InitError';
    this.code = code;
  }
}

/** What `meshc init` takes on its command line, as strings (commander's view). */
export interface InitFlags {
  inboundPort?: string;
  outboundPort?: string;
  proxyUid?: string;
  proxyGid?: string;
  inboundPorts?: string;
  excludeInboundPorts?: string;
  excludeOutboundPorts?: string;
  outboundCidrs?: string;
  excludeOutboundCidrs?: string;
  ipv6?: boolean;
}

/** The sidecar ports `meshc proxy --interception transparent` listens on by default. */
export const DEFAULT_INBOUND_PORT = 15006;
export const DEFAULT_OUTBOUND_PORT = 15001;

function bad(message: string): never {
  throw new InitError('INIT_ARGS', message);
}

function port(text: string, what: string): number {
  const n = /^\d{1,5}$/.test(text.trim()) ? Number(text) : NaN;
  if (!(n >= 1 && n <= 65535)) bad(`${what}: "${text}" is not a port (1-65535)`);
  return n;
}

/** `80,443` → [80, 443]. */
function ports(text: string | undefined, what: string): number[] {
  if (text === undefined || text.trim() === '') return [];
  return text.split(',').map((p) => port(p, what));
}

/** `10.0.0.0/8, 169.254.169.254, fd00::/8` → CIDRs with their prefix length; IPv6 ones only with --ipv6. */
function cidrs(text: string | undefined, what: string, ipv6: boolean): string[] {
  if (text === undefined || text.trim() === '') return [];
  return text.split(',').map((raw) => {
    const c = raw.trim();
    const [ip, bits, extra] = c.split('/');
    const family = ip ? net.isIP(ip) : 0;
    if (extra !== undefined || family === 0) bad(`${what}: "${c}" is not an IP address or CIDR`);
    if (family === 6 && !ipv6) bad(`${what}: "${c}" is IPv6, which is intercepted only with --ipv6`);
    const max = family === 4 ? 32 : 128;
    if (bits === undefined) return `${ip}/${max}`;
    const n = /^\d{1,3}$/.test(bits) ? Number(bits) : NaN;
    if (!(n >= 0 && n <= max)) bad(`${what}: "${c}" has a bad prefix length`);
    return `${ip}/${n}`;
  });
}

/** The CIDRs of one family. */
function ofFamily(list: string[], family: Family): string[] {
  return list.filter((c) => net.isIP(c.split('/')[0]!) === family);
}

/** A uid or gid as iptables' owner match takes it: a number or a user/group name. */
function owners(text: string | undefined, what: string): string[] {
  if (text === undefined || text.trim() === '') return [];
  return text.split(',').map((raw) => {
    const o = raw.trim();
    if (!/^(\d{1,10}|[a-z_][a-z0-9_-]{0,31})$/.test(o)) bad(`${what}: "${o}" is not a numeric id or a user/group name`);
    return o;
  });
}

export function parseInitOptions(flags: InitFlags): InitOptions {
  const inboundPorts = flags.inboundPorts?.trim() === '*' || flags.inboundPorts === undefined ? '*' : ports(flags.inboundPorts, '--inbound-ports');
  const ipv6 = flags.ipv6 === true;
  const outboundCidrs = flags.outboundCidrs?.trim() === '*' || flags.outboundCidrs === undefined ? '*' : cidrs(flags.outboundCidrs, '--outbound-cidrs', ipv6);
  const options: InitOptions = {
    inboundPort: flags.inboundPort === undefined ? DEFAULT_INBOUND_PORT : port(flags.inboundPort, '--inbound-port'),
    outboundPort: flags.outboundPort === undefined ? DEFAULT_OUTBOUND_PORT : port(flags.outboundPort, '--outbound-port'),
    proxyUids: owners(flags.proxyUid, '--proxy-uid'),
    proxyGids: owners(flags.proxyGid, '--proxy-gid'),
    inboundPorts,
    excludeInboundPorts: ports(flags.excludeInboundPorts, '--exclude-inbound-ports'),
    excludeOutboundPorts: ports(flags.excludeOutboundPorts, '--exclude-outbound-ports'),
    outboundCidrs,
    excludeOutboundCidrs: cidrs(flags.excludeOutboundCidrs, '--exclude-outbound-cidrs', ipv6),
    ipv6,
  };
  // Without an owner exclusion the sidecar's own upstream connections would be redirected back to it: a loop.
  if (options.proxyUids.length === 0 && options.proxyGids.length === 0) bad('--proxy-uid or --proxy-gid is required: the sidecar\'s own traffic must not be redirected to itself');
  if (options.inboundPort === options.outboundPort) bad('--inbound-port and --outbound-port must differ');
  return options;
}

/**
 * The nat-table rules of one family, as an iptables-restore (or
 * ip6tables-restore) script. `staleJumps` are jump rules into our chains an
 * earlier run left in PREROUTING/OUTPUT (from iptables-save); they are deleted
 * in the same transaction.
 */
export function renderRules(o: InitOptions, staleJumps: string[] = [], family: Family = 4): string {
  const { inbound, inRedirect, output, redirect } = CHAINS;
  const loopback = family === 4 ? '127.0.0.1/32' : '::1/128';
  const lines = ['*nat'];
  for (const jump of staleJumps) lines.push(jump.replace(/^-A /, '-D '));
  // Declaring a chain creates it, or with --noflush empties an existing one: a re-run replaces its rules.
  for (const chain of OUR_CHAINS) lines.push(`:${chain} - [0:0]`);
  lines.push(`-A ${inRedirect} -p tcp -j REDIRECT --to-ports ${o.inboundPort}`);
  lines.push(`-A ${redirect} -p tcp -j REDIRECT --to-ports ${o.outboundPort}`);

  // Inbound: TCP arriving from the network (PREROUTING never sees locally sent packets).
  if (o.inboundPorts === '*') {
    for (const p of o.excludeInboundPorts) lines.push(`-A ${inbound} -p tcp --dport ${p} -j RETURN`);
    lines.push(`-A ${inbound} -p tcp -j ${inRedirect}`);
  } else {
    for (const p of o.inboundPorts) lines.push(`-A ${inbound} -p tcp --dport ${p} -j ${inRedirect}`);
  }

  // Outbound: TCP sent by processes of the pod.
  const owned: Array<[string, string]> = [
    ...o.proxyUids.map((u): [string, string] => ['--uid-owner', u]),
    ...o.proxyGids.map((g): [string, string] => ['--gid-owner', g]),
  ];
  for (const [match, id] of owned) {
    // The sidecar calling its own pod through a pod or service address (the app calling itself
    // through the mesh) leaves on lo: hand it to the inbound side, as a remote caller would be.
    lines.push(`-A ${output} -o lo ! -d ${loopback} -m owner ${match} ${id} -j ${inRedirect}`);
    // Anything else on lo not sent by the sidecar is the app talking to itself: left alone.
    lines.push(`-A ${output} -o lo -m owner ! ${match} ${id} -j RETURN`);
    // The sidecar's own upstream connections: never redirected (this is what prevents a loop).
    lines.push(`-A ${output} -m owner ${match} ${id} -j RETURN`);
  }
  lines.push(`-A ${output} -d ${loopback} -j RETURN`);
  for (const p of o.excludeOutboundPorts) lines.push(`-A ${output} -p tcp --dport ${p} -j RETURN`);
  for (const c of ofFamily(o.excludeOutboundCidrs, family)) lines.push(`-A ${output} -d ${c} -j RETURN`);
  if (o.outboundCidrs === '*') lines.push(`-A ${output} -j ${redirect}`);
  else for (const c of ofFamily(o.outboundCidrs, family)) lines.push(`-A ${output} -d ${c} -j ${redirect}`);

  if (o.inboundPorts === '*' || o.inboundPorts.length > 0) lines.push(`-A PREROUTING -p tcp -j ${inbound}`);
  lines.push(`-A OUTPUT -p tcp -j ${output}`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/** The script that removes every rule and chain of ours, given the jumps iptables-save shows. */
export function renderClean(staleJumps: string[], existingChains: string[]): string {
  const lines = ['*nat'];
  for (const jump of staleJumps) lines.push(jump.replace(/^-A /, '-D '));
  for (const chain of existingChains) lines.push(`-F ${chain}`);
  for (const chain of existingChains) lines.push(`-X ${chain}`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/** From `iptables-save -t nat`: the jumps into our chains in built-in chains, and which of our chains exist. */
export function ourState(save: string): { jumps: string[]; chains: string[] } {
  const jumps: string[] = [];
  const chains: string[] = [];
  for (const line of save.split('\n')) {
    const decl = /^:(\S+) /.exec(line);
    if (decl && OUR_CHAINS.includes(decl[1]!)) chains.push(decl[1]!);
    const rule = /^-A (PREROUTING|OUTPUT|INPUT|POSTROUTING) .*-j (\S+)\s*$/.exec(line);
    if (rule && OUR_CHAINS.includes(rule[2]!)) jumps.push(line.trim());
  }
  return { jumps, chains };
}

function run(command: string, args: string[], input?: string): string {
  const r = spawnSync(command, args, { input, encoding: 'utf8' });
  if (r.error) throw new InitError('IPTABLES_FAILED', `${command}: ${r.error.message}`);
  if (r.status !== 0) throw new InitError('IPTABLES_FAILED', `${command} ${args.join(' ')} exited with ${r.status}: ${r.stderr.trim()}`);
  return r.stdout;
}

const TOOLS: Record<Family, { save: string; restore: string }> = {
  4: { save: 'iptables-save', restore: 'iptables-restore' },
  6: { save: 'ip6tables-save', restore: 'ip6tables-restore' },
};

function currentState(family: Family): { jumps: string[]; chains: string[] } {
  return ourState(run(TOOLS[family].save, ['-t', 'nat']));
}

/** The families a run installs: IPv4, and IPv6 with --ipv6. */
function families(o: InitOptions): Family[] {
  return o.ipv6 ? [4, 6] : [4];
}

/** The scripts of a dry run: IPv4 alone as before, and with --ipv6 each under a comment naming its command. */
export function renderDryRun(o: InitOptions): string {
  if (!o.ipv6) return renderRules(o);
  return families(o)
    .map((f) => `# ${TOOLS[f].restore} --noflush\n${renderRules(o, [], f)}`)
    .join('');
}

/**
 * Installs the rules in the current network namespace (needs NET_ADMIN);
 * returns the scripts applied. A run without --ipv6 also removes IPv6 rules an
 * earlier --ipv6 run left, so a re-run always ends with exactly what it asked for.
 */
export function applyRules(o: InitOptions): string {
  const applied: string[] = [];
  for (const f of families(o)) {
    const script = renderRules(o, currentState(f).jumps, f);
    run(TOOLS[f].restore, ['--noflush'], script);
    applied.push(o.ipv6 ? `# ${TOOLS[f].restore} --noflush\n${script}` : script);
  }
  if (!o.ipv6) cleanFamily(6, true);
  return applied.join('');
}

/** Removes our rules and chains of one family; `quiet`: a family the kernel or tools lack has nothing to remove. */
function cleanFamily(family: Family, quiet: boolean): string {
  let state;
  try {
    state = currentState(family);
  } catch (err) {
    if (quiet) return '';
    throw err;
  }
  if (state.jumps.length === 0 && state.chains.length === 0) return '';
  const script = renderClean(state.jumps, state.chains);
  run(TOOLS[family].restore, ['--noflush'], script);
  return `# ${TOOLS[family].restore} --noflush\n${script}`;
}

/** Removes our rules and chains (both families); returns the scripts applied (empty if there was nothing). */
export function cleanRules(): string {
  return cleanFamily(4, false) + cleanFamily(6, true);
}
