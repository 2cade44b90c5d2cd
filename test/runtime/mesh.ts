// Two sidecars on 127.0.0.1 with their apps, wired like a mesh: the "web"
// sidecar's outbound listener reaches the "catalog" sidecar's inbound
// listener over mTLS. Used by the sidecar and hot-swap tests.
//
// In:  the bundle each sidecar should run. Out: ports, handles, a stop function.
import type { Bundle } from '../../protocol/bundle.ts';
import type { EndpointsPayload, NodeInfo } from '../../protocol/wire.ts';
import { Sidecar, type SidecarOptions } from '../../runtime/sidecar.ts';
import { collectLog, startEchoApp, type EchoApp } from './helpers.ts';
import { createCa, issueLeaf, spiffeIdFor, type TestCa } from './pki.ts';

export interface TestMesh {
  ca: TestCa;
  web: Sidecar;
  catalog: Sidecar;
  webApp: EchoApp;
  catalogApp: EchoApp;
  webLogs: ReturnType<typeof collectLog>;
  catalogLogs: ReturnType<typeof collectLog>;
  endpoints: EndpointsPayload;
  stop(): Promise<void>;
}

export function nodeInfo(service: string, version = 'v1'): NodeInfo {
  return { instance: `${service}-${version}-0`, service, version, namespace: 'default', serviceAccount: service };
}

const local = { host: '127.0.0.1', port: 0 };

export function newSidecar(service: string, app: EchoApp, extra: Partial<SidecarOptions> = {}): Sidecar {
  return new Sidecar({
    node: nodeInfo(service),
    inbound: local,
    outbound: local,
    admin: local,
    app: { host: '127.0.0.1', port: app.port },
    ...extra,
  });
}

/** The mesh endpoint of a started sidecar: its inbound listener on 127.0.0.1, version v1. */
export function sidecarEndpoint(service: string, sidecar: Sidecar): EndpointsPayload['services'][string]['endpoints'][number] {
  return { instance: `${service}-v1-0`, address: '127.0.0.1', port: sidecar.addresses().inbound.port, version: 'v1', spiffeId: spiffeIdFor(service) };
}

/** Gives both started sidecars the bundle and endpoints, and each its own certificate from `ca`. */
export async function wirePair(ca: TestCa, web: Sidecar, catalog: Sidecar, bundle: Bundle, endpoints: EndpointsPayload): Promise<void> {
  for (const s of [web, catalog]) {
    await s.applyBundle(bundle);
    s.applyEndpoints(endpoints);
  }
  const webCert = await issueLeaf(ca, 'web');
  const catalogCert = await issueLeaf(ca, 'catalog');
  web.applyCertificate(webCert.payload, webCert.keyPem);
  catalog.applyCertificate(catalogCert.payload, catalogCert.keyPem);
}

export async function startMesh(bundle: Bundle, options: Partial<SidecarOptions> = {}): Promise<TestMesh> {
  const ca = await createCa();
  const webApp = await startEchoApp('web');
  const catalogApp = await startEchoApp('catalog');
  const webLogs = collectLog();
  const catalogLogs = collectLog();
  const web = newSidecar('web', webApp, { log: webLogs.log, ...options });
  const catalog = newSidecar('catalog', catalogApp, { log: catalogLogs.log, ...options });
  await web.start();
  await catalog.start();
  const endpoints: EndpointsPayload = { services: { catalog: { endpoints: [sidecarEndpoint('catalog', catalog)] } } };
  await wirePair(ca, web, catalog, bundle, endpoints);
  return {
    ca,
    web,
    catalog,
    webApp,
    catalogApp,
    webLogs,
    catalogLogs,
    endpoints,
    stop: async () => {
      await web.stop();
      await catalog.stop();
      await webApp.close();
      await catalogApp.close();
    },
  };
}
