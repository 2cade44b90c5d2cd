// Pure derivation: the controller's current inputs -> what each sidecar should hold.
//
// In:  the validated topology, the last good bundle (wire form + version) and
//      the certificates issued so far (by instance id).
// Out: per instance id, the desired version and payload of each resource type.
// No I/O and no clocks: tests drive it directly, the stream server diffs its
// output against what each sidecar has acknowledged.
import { sha256Hex, type WireBundle } from '../protocol/bundle.ts';
import type { CertificatePayload, Endpoint, EndpointsPayload } from '../protocol/wire.ts';
import type { MeshTopology } from './topology.ts';

export interface VersionedResource<P> {
  version: string;
  payload: P;
}

export interface DesiredResources {
  /** Absent until a first policy set has compiled. */
  bundle?: VersionedResource<WireBundle>;
  endpoints: VersionedResource<EndpointsPayload>;
  /** Absent until the sidecar has sent a CSR and the CA has signed it. */
  certificate?: VersionedResource<CertificatePayload>;
}

export interface DeriveInputs {
  topology: MeshTopology;
  bundle?: VersionedResource<WireBundle>;
  /** Instance id -> its current certificate; the version is the serial number. */
  certificates: ReadonlyMap<string, VersionedResource<CertificatePayload>>;
}

export function deriveResources(inputs: DeriveInputs): Map<string, DesiredResources> {
  const endpoints = deriveEndpoints(inputs.topology);
  const out = new Map<string, DesiredResources>();
  for (const id of Object.keys(inputs.topology.instances)) {
    const desired: DesiredResources = { endpoints };
    if (inputs.bundle) desired.bundle = inputs.bundle;
    const cert = inputs.certificates.get(id);
    if (cert) desired.certificate = cert;
    out.set(id, desired);
  }
  return out;
}

/**
 * Every service's reachable instances (those with an app behind their sidecar),
 * the same for every sidecar. The version is a digest of the payload, so an
 * unchanged topology yields an unchanged version and nothing is resent.
 */
export function deriveEndpoints(topology: MeshTopology): VersionedResource<EndpointsPayload> {
  const services: EndpointsPayload['services'] = {};
  for (const service of Object.values(topology.services)) {
    const endpoints: Endpoint[] = service.instances
      .filter((i) => i.app !== undefined)
      .map((i) => ({ instance: i.id, address: i.inbound.host, port: i.inbound.port, version: i.version, spiffeId: i.spiffeId }));
    if (endpoints.length > 0) services[service.name] = { endpoints };
  }
  const payload: EndpointsPayload = { services };
  return { version: sha256Hex(JSON.stringify(payload)).slice(0, 16), payload };
}
