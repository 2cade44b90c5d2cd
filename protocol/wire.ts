// The controller <-> sidecar stream: JSON messages over one WebSocket.
//
// Versioned and acknowledged, in the manner of xDS: for each resource type the
// controller sends an Update carrying a version and a nonce; the sidecar answers
// Ack (applied) or Nack (refused, with the reason; it keeps the last good one).
// On (re)connect the sidecar's Hello says which version of each resource it
// already holds, and the controller sends only what differs.
import type { WireBundle } from './bundle.ts';

export const WIRE_PATH = '/mesh/v1/stream';
export const WIRE_SUBPROTOCOL = 'meshc.v1';

export type ResourceType = 'bundle' | 'endpoints' | 'certificate';

export interface NodeInfo {
  /** Unique per sidecar, e.g. "catalog-v1-0". */
  instance: string;
  service: string;
  version: string;
  namespace: string;
  serviceAccount: string;
}

export interface Endpoint {
  instance: string;
  /** Where the endpoint's inbound sidecar listens. */
  address: string;
  port: number;
  version: string;
  /** SPIFFE ID the endpoint's sidecar must present; the client checks it. */
  spiffeId: string;
}

export interface EndpointsPayload {
  /**
   * `addresses`: the service's own (virtual) IPs, e.g. a Kubernetes ClusterIP; optional. A sidecar in
   * transparent mode knows an intercepted connection's service by its original destination address:
   * an endpoint's address or one of these.
   */
  services: Record<string, { endpoints: Endpoint[]; addresses?: string[] }>;
}

export interface CertificatePayload {
  spiffeId: string;
  /** Leaf first. */
  certChainPem: string;
  caBundlePem: string;
  notAfter: string;
}

export interface PayloadOf {
  bundle: WireBundle;
  endpoints: EndpointsPayload;
  certificate: CertificatePayload;
}

export type Update = {
  [R in ResourceType]: { type: 'update'; resource: R; version: string; nonce: string; payload: PayloadOf[R] };
}[ResourceType];

export interface Hello {
  type: 'hello';
  node: NodeInfo;
  /** Versions the sidecar already holds (from its on-disk cache). */
  have: Partial<Record<ResourceType, string>>;
  /** PEM certificate signing request for the sidecar's own key; the key never leaves the sidecar. */
  csrPem: string;
}

export interface Ack {
  type: 'ack';
  resource: ResourceType;
  version: string;
  nonce: string;
}

export interface Nack {
  type: 'nack';
  resource: ResourceType;
  version: string;
  nonce: string;
  error: string;
}

export type ControllerMessage = Update;
export type SidecarMessage = Hello | Ack | Nack;

export function encode(msg: ControllerMessage | SidecarMessage): string {
  return JSON.stringify(msg);
}

export function decodeSidecarMessage(text: string): SidecarMessage {
  const msg = JSON.parse(text) as SidecarMessage;
  if (msg.type !== 'hello' && msg.type !== 'ack' && msg.type !== 'nack') throw new Error(`unknown message type ${String((msg as { type?: unknown }).type)}`);
  return msg;
}

export function decodeControllerMessage(text: string): ControllerMessage {
  const msg = JSON.parse(text) as ControllerMessage;
  if (msg.type !== 'update') throw new Error(`unknown message type ${String((msg as { type?: unknown }).type)}`);
  return msg;
}
