// Test program: one sidecar, run inside a "pod" network namespace (as the uid
// that `meshc init` exempts), configured from a JSON file the test wrote
// instead of a controller: endpoints and certificate are applied at start.
//
// In:  `node sidecar-main.ts CONFIG.json` with SidecarOptions (no log) plus
//      { endpoints, certificate, keyPem }.
// Out: the sidecar's JSON log lines on stdout, then {"event":"test-sidecar-ready"};
//      SIGTERM stops it.
import { readFileSync } from 'node:fs';
import type { CertificatePayload, EndpointsPayload } from '../../protocol/wire.ts';
import { Sidecar, type SidecarOptions } from '../../runtime/sidecar.ts';

interface Config extends SidecarOptions {
  endpoints: EndpointsPayload;
  certificate: CertificatePayload;
  keyPem: string;
}

const config = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as Config;
const { endpoints, certificate, keyPem, ...options } = config;
const sidecar = new Sidecar(options);
await sidecar.start();
sidecar.applyEndpoints(endpoints);
sidecar.applyCertificate(certificate, keyPem);
process.stdout.write(JSON.stringify({ event: 'test-sidecar-ready', uid: process.getuid?.(), ...sidecar.addresses() }) + '\n');
process.once('SIGTERM', () => {
  sidecar.stop().then(
    () => process.exit(0),
    () => process.exit(1),
  );
});
