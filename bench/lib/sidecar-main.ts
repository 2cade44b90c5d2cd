// One meshc Sidecar in its own process, configured from a JSON file instead of
// a controller, so a benchmark can run an outbound + inbound pair over mTLS.
//   node bench/lib/sidecar-main.ts config.json
// The config carries the listen addresses, the certificate, the endpoints and
// optionally a bundle directory. The access log goes to stdout, as in production.
import { readFile } from 'node:fs/promises';
import { readBundle } from '../../protocol/bundle.ts';
import type { CertificatePayload, EndpointsPayload, NodeInfo } from '../../protocol/wire.ts';
import { Sidecar, type Address, type SidecarOptions } from '../../runtime/sidecar.ts';

export interface SidecarBenchConfig {
  node: NodeInfo;
  inbound: Address;
  outbound: Address;
  app: Address;
  admin: Address;
  certificate: CertificatePayload;
  keyPem: string;
  endpoints: EndpointsPayload;
  bundleDir?: string;
  /** Further sidecar options (JSON-able), e.g. explicit-mode upstream ports for the TCP suite. */
  options?: Partial<SidecarOptions>;
}

const config = JSON.parse(await readFile(process.argv[2]!, 'utf8')) as SidecarBenchConfig;
const sidecar = new Sidecar({ node: config.node, inbound: config.inbound, outbound: config.outbound, app: config.app, admin: config.admin, ...config.options });
if (config.bundleDir) await sidecar.applyBundle(await readBundle(config.bundleDir));
sidecar.applyEndpoints(config.endpoints);
sidecar.applyCertificate(config.certificate, config.keyPem);
await sidecar.start();
const stop = (): void => {
  sidecar.stop().then(() => process.exit(0), () => process.exit(1));
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
