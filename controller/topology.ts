// The mesh topology file (topology.yaml): which services exist, their identity,
// and where each instance's app and sidecar listen.
//
// In:  the YAML text and its path. Out: a validated MeshTopology, or every
//      problem found as TopologyError (stable code, file:line:col, message).
// Pure: no I/O. The format is documented in docs/controller.md.
import { LineCounter, parseDocument, isMap, isSeq, isScalar, type Node as YamlNode } from 'yaml';

export interface HostPort {
  host: string;
  port: number;
}

export interface MeshInstance {
  id: string;
  service: string;
  version: string;
  namespace: string;
  serviceAccount: string;
  spiffeId: string;
  /** Absent for a mesh client with no app of its own (e.g. a load generator). */
  app?: HostPort;
  inbound: HostPort;
  outbound: HostPort;
  admin: HostPort;
  /** Explicit mode: local ports of the sidecar bound to one mesh service each (`meshc proxy --upstream`). */
  upstreams?: UpstreamSpec[];
  /** Explicit mode: the sidecar's HTTP proxy port (`meshc proxy --http-proxy`). */
  httpProxy?: HostPort;
}

/** `NAME[:PORT]=HOST:PORT[/tcp|/http]`: connections to `listen` go to service `service` (opaque TCP to its app port `port`, 0 = main). */
export interface UpstreamSpec {
  service: string;
  port: number;
  listen: HostPort;
  protocol?: 'tcp' | 'http';
}

export interface MeshService {
  name: string;
  namespace: string;
  serviceAccount: string;
  spiffeId: string;
  /** Versions in order of first appearance. */
  versions: string[];
  instances: MeshInstance[];
}

export interface MeshTopology {
  trustDomain: string;
  /** Keyed by service name, in file order. */
  services: Record<string, MeshService>;
  /** Keyed by instance id. */
  instances: Record<string, MeshInstance>;
}

export interface TopologyError {
  code: string;
  file: string;
  line: number;
  col: number;
  message: string;
}

export type TopologyResult = { ok: true; topology: MeshTopology } | { ok: false; errors: TopologyError[] };

export const DEFAULT_TRUST_DOMAIN = 'mesh.local';
const NAME_RE = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;
const INSTANCE_KEYS = new Set(['id', 'version', 'app', 'inbound', 'outbound', 'admin', 'upstreams', 'httpProxy']);
const UPSTREAM_RE = /^([a-z0-9](?:[a-z0-9-]*[a-z0-9])?)(?::(\d{1,5}))?=(.+?)(?:\/(tcp|http))?$/;
const SERVICE_KEYS = new Set(['namespace', 'serviceAccount', 'instances']);

export function spiffeIdFor(trustDomain: string, namespace: string, serviceAccount: string): string {
  return `spiffe://${trustDomain}/ns/${namespace}/sa/${serviceAccount}`;
}

export function formatTopologyError(e: TopologyError): string {
  return `${e.file}:${e.line}:${e.col}: error ${e.code}: ${e.message}`;
}

export function parseTopology(text: string, file: string): TopologyResult {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  const errors: TopologyError[] = [];
  const at = (node: YamlNode | null | undefined, code: string, message: string): void => {
    const offset = node?.range?.[0] ?? 0;
    const pos = lines.linePos(offset);
    errors.push({ code, file, line: pos.line, col: pos.col, message });
  };

  for (const e of doc.errors) {
    const pos = lines.linePos(e.pos[0]);
    errors.push({ code: 'TOPO_YAML', file, line: pos.line, col: pos.col, message: e.message.split('\n')[0] ?? e.message });
  }
  if (errors.length > 0) return { ok: false, errors };

  const root = doc.contents;
  if (!isMap(root)) {
    at(root, 'TOPO_SHAPE', 'the topology must be a mapping with `services:` (and optionally `trustDomain:`)');
    return { ok: false, errors };
  }

  let trustDomain = DEFAULT_TRUST_DOMAIN;
  const tdNode = root.get('trustDomain', true);
  if (tdNode !== undefined) {
    if (!isScalar(tdNode) || typeof tdNode.value !== 'string' || !/^[a-z0-9.-]+$/.test(tdNode.value)) {
      at(tdNode as YamlNode, 'TOPO_TRUST_DOMAIN', 'trustDomain must be a DNS-like name such as "mesh.local"');
    } else trustDomain = tdNode.value;
  }
  for (const pair of root.items) {
    const key = isScalar(pair.key) ? String(pair.key.value) : '';
    if (key !== 'trustDomain' && key !== 'services') at(pair.key as YamlNode, 'TOPO_UNKNOWN_KEY', `unknown key "${key}" (expected trustDomain, services)`);
  }

  const servicesNode = root.get('services', true);
  const services: Record<string, MeshService> = {};
  const instances: Record<string, MeshInstance> = {};
  const addressOwners = new Map<string, string>();
  /** Upstream ports name services that may be defined later in the file: checked at the end. */
  const upstreamRefs: Array<{ node: YamlNode; service: string; id: string }> = [];
  if (!isMap(servicesNode)) {
    at((servicesNode as YamlNode | undefined) ?? root, 'TOPO_SERVICES', '`services:` must be a mapping of service name to its definition');
    return { ok: false, errors };
  }

  for (const pair of servicesNode.items) {
    const keyNode = pair.key as YamlNode;
    const name = isScalar(pair.key) ? String(pair.key.value) : '';
    if (!NAME_RE.test(name)) {
      at(keyNode, 'TOPO_SERVICE_NAME', `service name "${name}" must be lowercase letters, digits and dashes`);
      continue;
    }
    const def = pair.value;
    if (!isMap(def)) {
      at((def as YamlNode | null) ?? keyNode, 'TOPO_SERVICE_SHAPE', `service "${name}" must be a mapping with instances:`);
      continue;
    }
    for (const p of def.items) {
      const k = isScalar(p.key) ? String(p.key.value) : '';
      if (!SERVICE_KEYS.has(k)) at(p.key as YamlNode, 'TOPO_UNKNOWN_KEY', `unknown key "${k}" in service "${name}" (expected ${[...SERVICE_KEYS].join(', ')})`);
    }
    const namespace = optionalName(def.get('namespace', true), 'default', `namespace of service "${name}"`);
    const serviceAccount = optionalName(def.get('serviceAccount', true), name, `serviceAccount of service "${name}"`);
    const spiffeId = spiffeIdFor(trustDomain, namespace, serviceAccount);
    const service: MeshService = { name, namespace, serviceAccount, spiffeId, versions: [], instances: [] };
    services[name] = service;

    const list = def.get('instances', true);
    if (!isSeq(list) || list.items.length === 0) {
      at((list as YamlNode | undefined) ?? keyNode, 'TOPO_INSTANCES', `service "${name}" needs a non-empty instances: list`);
      continue;
    }
    for (const item of list.items) {
      if (!isMap(item)) {
        at(item as YamlNode, 'TOPO_INSTANCE_SHAPE', 'each instance must be a mapping {id, version, inbound, outbound, admin, app?}');
        continue;
      }
      for (const p of item.items) {
        const k = isScalar(p.key) ? String(p.key.value) : '';
        if (!INSTANCE_KEYS.has(k)) at(p.key as YamlNode, 'TOPO_UNKNOWN_KEY', `unknown key "${k}" in an instance of "${name}" (expected ${[...INSTANCE_KEYS].join(', ')})`);
      }
      const id = requiredString(item.get('id', true), item, `id of an instance of "${name}"`);
      const version = requiredString(item.get('version', true), item, `version of instance "${id ?? '?'}"`);
      if (id === undefined || version === undefined) continue;
      if (!NAME_RE.test(id)) at(item.get('id', true) as YamlNode, 'TOPO_INSTANCE_ID', `instance id "${id}" must be lowercase letters, digits and dashes`);
      if (instances[id]) {
        at(item.get('id', true) as YamlNode, 'TOPO_DUPLICATE_INSTANCE', `instance id "${id}" is used twice`);
        continue;
      }
      const addr = (field: 'app' | 'inbound' | 'outbound' | 'admin' | 'httpProxy', required: boolean): HostPort | undefined => {
        const node = item.get(field, true);
        if (node === undefined) {
          if (required) at(item, 'TOPO_ADDRESS_MISSING', `instance "${id}" needs ${field}: HOST:PORT`);
          return undefined;
        }
        const hp = isScalar(node) ? parseHostPort(String(node.value)) : undefined;
        if (!hp) {
          at(node as YamlNode, 'TOPO_ADDRESS', `${field} of instance "${id}" must be HOST:PORT with a port from 1 to 65535`);
          return undefined;
        }
        const key = `${hp.host}:${hp.port}`;
        const owner = addressOwners.get(key);
        if (owner) at(node as YamlNode, 'TOPO_ADDRESS_CLASH', `${key} (${field} of "${id}") is already used by ${owner}`);
        else addressOwners.set(key, `${field} of "${id}"`);
        return hp;
      };
      const app = addr('app', false);
      const inbound = addr('inbound', true);
      const outbound = addr('outbound', true);
      const admin = addr('admin', true);
      if (!inbound || !outbound || !admin) continue;
      const instance: MeshInstance = { id, service: name, version, namespace, serviceAccount, spiffeId, inbound, outbound, admin };
      if (app) instance.app = app;
      const httpProxy = addr('httpProxy', false);
      if (httpProxy) instance.httpProxy = httpProxy;
      const ups = item.get('upstreams', true);
      if (ups !== undefined) {
        if (!isSeq(ups)) at(ups as YamlNode, 'TOPO_UPSTREAM', `upstreams of instance "${id}" must be a list of "NAME[:PORT]=HOST:PORT[/tcp|/http]"`);
        else {
          instance.upstreams = [];
          for (const u of ups.items) {
            const m = isScalar(u) ? UPSTREAM_RE.exec(String(u.value)) : null;
            const listen = m ? parseHostPort(m[3]!) : undefined;
            const port = m?.[2] === undefined ? 0 : Number(m[2]);
            if (!m || !listen || port > 65535 || (m[2] !== undefined && port < 1)) {
              at(u as YamlNode, 'TOPO_UPSTREAM', `an upstream of instance "${id}" must be "NAME[:PORT]=HOST:PORT[/tcp|/http]" (port 1-65535)`);
              continue;
            }
            const key = `${listen.host}:${listen.port}`;
            const owner = addressOwners.get(key);
            if (owner) at(u as YamlNode, 'TOPO_ADDRESS_CLASH', `${key} (upstream of "${id}") is already used by ${owner}`);
            else addressOwners.set(key, `upstream of "${id}"`);
            const spec: UpstreamSpec = { service: m[1]!, port, listen };
            if (m[4]) spec.protocol = m[4] as 'tcp' | 'http';
            instance.upstreams.push(spec);
            upstreamRefs.push({ node: u as YamlNode, service: spec.service, id });
          }
        }
      }
      instances[id] = instance;
      service.instances.push(instance);
      if (!service.versions.includes(version)) service.versions.push(version);
    }
  }
  for (const r of upstreamRefs) {
    if (!services[r.service]) at(r.node, 'TOPO_UPSTREAM_SERVICE', `upstream of instance "${r.id}" names service "${r.service}", which the topology does not define`);
  }
  if (errors.length > 0) return { ok: false, errors };
  return { ok: true, topology: { trustDomain, services, instances } };

  function optionalName(node: unknown, fallback: string, what: string): string {
    if (node === undefined) return fallback;
    if (isScalar(node) && typeof node.value === 'string' && NAME_RE.test(node.value)) return node.value;
    at(node as YamlNode, 'TOPO_NAME', `${what} must be lowercase letters, digits and dashes`);
    return fallback;
  }
  function requiredString(node: unknown, parent: YamlNode, what: string): string | undefined {
    if (node === undefined) {
      at(parent, 'TOPO_FIELD_MISSING', `${what} is missing`);
      return undefined;
    }
    if (isScalar(node) && (typeof node.value === 'string' || typeof node.value === 'number')) return String(node.value);
    at(node as YamlNode, 'TOPO_FIELD', `${what} must be a string`);
    return undefined;
  }
}

/** HOST:PORT; port 0 ("any free port") only when `allowAnyPort` (listeners, never topology addresses). */
export function parseHostPort(text: string, allowAnyPort = false): HostPort | undefined {
  const m = /^([A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\]):(\d{1,5})$/.exec(text.trim());
  if (!m) return undefined;
  const port = Number(m[2]);
  if (port < (allowAnyPort ? 0 : 1) || port > 65535) return undefined;
  return { host: m[1] as string, port };
}

/** The topology in the compiler's terms: service name -> versions. */
export function compilerTopology(topology: MeshTopology): { services: Record<string, { versions: string[] }> } {
  const services: Record<string, { versions: string[] }> = {};
  for (const s of Object.values(topology.services)) services[s.name] = { versions: [...s.versions] };
  return { services };
}

