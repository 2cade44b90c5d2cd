// The sidecar's control client against a real controller (fake compiler), with a
// recording stand-in for the sidecar: apply order, ACK/NACK, persistence,
// restore without a controller, reconnect.
import { afterEach, describe, expect, it } from 'vitest';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import type { Bundle } from '../../protocol/bundle.ts';
import type { CertificatePayload, EndpointsPayload, NodeInfo } from '../../protocol/wire.ts';
import { startControlClient, type ConfigurableSidecar, type ControlClient } from '../../runtime/control-client.ts';
import { startController, type Controller } from '../../controller/server.ts';
import { silentSink } from '../../controller/log.ts';
import { fakeCompiler, freePort, tempDir, topologyYaml, waitFor, writeFiles } from './helpers.ts';

class RecordingSidecar implements ConfigurableSidecar {
  readonly applied: string[] = [];
  bundle?: Bundle;
  endpoints?: EndpointsPayload;
  cert?: { cert: CertificatePayload; keyPem: string };
  /** Bundles whose module bytes contain this text are refused, as a sidecar refuses a bad bundle. */
  refuse?: string;
  async applyBundle(bundle: Bundle): Promise<void> {
    if (this.refuse && [...bundle.modules.values()].some((m) => new TextDecoder().decode(m).includes(this.refuse!))) throw Object.assign(new Error('filter p0 failed to start'), { code: 'CHAIN_START' });
    this.bundle = bundle;
    this.applied.push('bundle');
  }
  applyEndpoints(payload: EndpointsPayload): void {
    this.endpoints = payload;
    this.applied.push('endpoints');
  }
  applyCertificate(cert: CertificatePayload, keyPem: string): void {
    this.cert = { cert, keyPem };
    this.applied.push('certificate');
  }
}

const node: NodeInfo = { instance: 'catalog-v1-0', service: 'catalog', version: 'v1', namespace: 'default', serviceAccount: 'catalog' };

describe('control client', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function setup(port = 0) {
    const dir = await tempDir('cc');
    cleanups.push(dir.cleanup);
    await writeFiles(dir.path, {
      'topology.yaml': topologyYaml([{ service: 'catalog', id: 'catalog-v1-0', version: 'v1', ports: [1001, 1002, 1003, 1004] }]),
      'catalog.meshpolicy': 'service catalog {}\n',
    });
    const compiler = fakeCompiler();
    const start = () => startController({ dir: dir.path, listen: { host: '127.0.0.1', port }, compiler: async () => compiler, logSink: silentSink, debounceMs: 20 });
    const controller = await start();
    return { dir: dir.path, controller, start };
  }

  function client(sidecar: ConfigurableSidecar, url: string, stateDir: string): ControlClient {
    const c = startControlClient(sidecar, { url, stateDir, node, log: () => {}, maxBackoffMs: 300 });
    cleanups.push(() => c.close());
    return c;
  }

  it('applies certificate, endpoints and bundle in order, with the key it keeps, and ACKs them', async () => {
    const { controller } = await setup();
    cleanups.push(() => controller.stop());
    const state = await tempDir('cc-state');
    cleanups.push(state.cleanup);
    const sidecar = new RecordingSidecar();
    const c = client(sidecar, controller.url, state.path);
    await waitFor('all acked', () => Object.keys(controller.status().sidecars[0]?.acked ?? {}).length === 3);
    expect(sidecar.applied).toEqual(['certificate', 'endpoints', 'bundle']);
    const leaf = new X509Certificate(sidecar.cert!.cert.certChainPem);
    expect(leaf.checkPrivateKey(createPrivateKey(sidecar.cert!.keyPem))).toBe(true);
    expect(c.status()).toMatchObject({ connected: true, have: controller.status().sidecars[0]?.acked });
  });

  it('NACKs a bundle the sidecar refuses, keeps the previous one, and recovers on the next good edit', async () => {
    const { controller, dir } = await setup();
    cleanups.push(() => controller.stop());
    const state = await tempDir('cc-state');
    cleanups.push(state.cleanup);
    const sidecar = new RecordingSidecar();
    client(sidecar, controller.url, state.path);
    await waitFor('bundle', () => sidecar.bundle);
    const good = controller.status().policy.version;
    sidecar.refuse = 'poison';
    await writeFile(join(dir, 'catalog.meshpolicy'), 'service catalog {} // poison\n');
    const nack = await waitFor('nack', () => controller.status().sidecars[0]?.lastNack);
    expect(nack.error).toBe('CHAIN_START: filter p0 failed to start');
    expect(controller.status().sidecars[0]?.acked.bundle).toBe(good);
    await writeFile(join(dir, 'catalog.meshpolicy'), 'service catalog {} // fine\n');
    await waitFor('new bundle acked', () => {
      const s = controller.status();
      return s.sidecars[0]?.acked.bundle === s.policy.version && s.policy.version !== good;
    });
  });

  it('restores from its state dir with no controller, and resumes without refetching when it returns', async () => {
    const port = await freePort();
    const first = await setup(port);
    const state = await tempDir('cc-state');
    cleanups.push(state.cleanup);
    const one = new RecordingSidecar();
    const c1 = startControlClient(one, { url: first.controller.url, stateDir: state.path, node, log: () => {}, maxBackoffMs: 300 });
    await waitFor('all acked', () => Object.keys(first.controller.status().sidecars[0]?.acked ?? {}).length === 3);
    const held = { ...c1.status().have };
    await c1.close();
    await first.controller.stop();

    // Controller gone: a fresh client restores everything from disk.
    const two = new RecordingSidecar();
    const c2 = client(two, first.controller.url, state.path);
    await c2.restored;
    expect(two.applied).toEqual(['certificate', 'endpoints', 'bundle']);
    expect(c2.status()).toMatchObject({ connected: false, have: held });
    expect(two.cert?.keyPem).toBe(one.cert?.keyPem);

    // Controller back on the same port (in-memory CA: a new root, so only the certificate is new).
    const again = await first.start();
    cleanups.push(() => again.stop());
    await waitFor('reconnected and acked', () => again.status().sidecars[0]?.acked.certificate !== held.certificate && again.status().sidecars[0]?.acked.certificate);
    expect(two.applied).toEqual(['certificate', 'endpoints', 'bundle', 'certificate']);
  });
});
