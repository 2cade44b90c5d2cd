// Reads the part of a topology YAML file the compiler needs: service names,
// their versions and (optionally) their ports. In: YAML text
// (`services: { <name>: { instances: [{ version }], ports: [8080] } }`; a
// `versions: [..]` list is accepted too). Out: Topology. Unknown fields are ignored.
import { parse } from 'yaml';
import type { Topology } from './check/checker.ts';

export class TopologyError extends Error {
  readonly code = 'MESHC_TOPOLOGY';
  constructor(message: string) {
    super(message);
    this.name = 'TopologyError';
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function parseTopology(yamlText: string, fileName = 'topology'): Topology {
  let doc: unknown;
  try {
    doc = parse(yamlText);
  } catch (err) {
    throw new TopologyError(`${fileName}: not valid YAML: ${(err as Error).message}`);
  }
  if (!isRecord(doc) || !isRecord(doc['services'])) throw new TopologyError(`${fileName}: expected a top-level "services:" map`);
  const services: Topology['services'] = {};
  for (const [name, value] of Object.entries(doc['services'])) {
    const versions = new Set<string>();
    if (isRecord(value)) {
      const instances = value['instances'];
      if (Array.isArray(instances)) {
        for (const inst of instances) if (isRecord(inst) && inst['version'] !== undefined) versions.add(String(inst['version']));
      }
      const listed = value['versions'];
      if (Array.isArray(listed)) for (const v of listed) versions.add(String(v));
    }
    const entry: Topology['services'][string] = { versions: [...versions].sort() };
    const ports = isRecord(value) ? value['ports'] : undefined;
    if (Array.isArray(ports)) entry.ports = ports.map(Number).filter((p) => Number.isInteger(p));
    services[name] = entry;
  }
  return { services };
}
