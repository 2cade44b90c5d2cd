// The distribution stream: a real controller (fake compiler) and a real `ws`
// client speaking protocol/wire.ts by hand.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateKeyPairSync, createPublicKey, webcrypto, X509Certificate } from 'node:crypto';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import WebSocket from 'ws';
import { WIRE_PATH, WIRE_SUBPROTOCOL, decodeControllerMessage, encode, type Update, type NodeInfo, type ResourceType } from '../../protocol/wire.ts';
import { startController, type Controller, type ControllerStatus } from '../../controller/server.ts';
import { silentSink } from '../../controller/log.ts';
import { fakeCompiler, tempDir, topologyYaml, waitFor, writeFiles } from './helpers.ts';

const node: NodeInfo = { instance: 'catalog-v1-0', service: 'catalog', version: 'v1', namespace: 'default', serviceAccount: 'catalog' };

async function makeCsr(): Promise<string> {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const alg = { name: 'ECDSA', namedCurve: 'P-256' };
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: 'CN=test',
    keys: {
      privateKey: await webcrypto.subtle.importKey('pkcs8', privateKey.export({ type: 'pkcs8', format: 'der' }), alg, false, ['sign']),
      publicKey: await webcrypto.subtle.importKey('spki', createPublicKey(privateKey).export({ type: 'spki', format: 'der' }), alg, true, ['verify']),
    },
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
  });
  return csr.toString('pem');
}

/** A hand-driven sidecar end of the stream that records every update. */
class TestPeer {
  readonly updates: Update[] = [];
  readonly ws: WebSocket;
  closed?: { code: number; reason: string };
  constructor(url: string) {
    this.ws = new WebSocket(url + WIRE_PATH, WIRE_SUBPROTOCOL);
    this.ws.on('message', (d) => this.updates.push(decodeControllerMessage(d.toString())));
    this.ws.on('close', (code, reason) => (this.closed = { code, reason: reason.toString() }));
  }
  async open(): Promise<this> {
    await new Promise<void>((resolve, reject) => {
      this.ws.once('open', () => resolve());
      this.ws.once('error', reject);
    });
    return this;
  }
  send(msg: Parameters<typeof encode>[0]): void {
    this.ws.send(encode(msg));
  }
  ack(u: Update): void {
    this.send({ type: 'ack', resource: u.resource, version: u.version, nonce: u.nonce });
  }
  async close(): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return;
    await new Promise<void>((resolve) => {
      this.ws.once('close', () => resolve());
      this.ws.close();
    });
  }
}

describe('distribution stream', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let controller: Controller;
  const peers: TestPeer[] = [];

  beforeEach(async () => {
    dir = await tempDir('stream');
    await writeFiles(dir.path, {
      'topology.yaml': topologyYaml([
        { service: 'catalog', id: 'catalog-v1-0', version: 'v1', ports: [1001, 1002, 1003, 1004] },
        { service: 'ratings', id: 'ratings-v1-0', version: 'v1', ports: [1011, 1012, 1013, 1014] },
      ]),
      'catalog.meshpolicy': 'service catalog {}\n',
    });
    const compiler = fakeCompiler();
    controller = await startController({ dir: dir.path, listen: { host: '127.0.0.1', port: 0 }, compiler: async () => compiler, logSink: silentSink, debounceMs: 20 });
    await controller.reconciler.idle();
  });

  afterEach(async () => {
    for (const p of peers.splice(0)) await p.close();
    await controller.stop();
    await dir.cleanup();
  });

  const peer = async (): Promise<TestPeer> => {
    const p = await new TestPeer(controller.url).open();
    peers.push(p);
    return p;
  };
  const status = async (): Promise<ControllerStatus> => (await fetch(controller.httpUrl + '/status')).json() as Promise<ControllerStatus>;

  it('answers a hello with certificate, endpoints and bundle, and records ACK and NACK in /status', async () => {
    const p = await peer();
    p.send({ type: 'hello', node, have: {}, csrPem: await makeCsr() });
    await waitFor('three updates', () => p.updates.length >= 3);
    expect(p.updates.map((u) => u.resource)).toEqual(['certificate', 'endpoints', 'bundle']);
    const [cert, endpoints, bundle] = p.updates as [Update, Update, Update];
    if (cert.resource !== 'certificate' || endpoints.resource !== 'endpoints' || bundle.resource !== 'bundle') throw new Error('unexpected order');
    expect(new X509Certificate(cert.payload.certChainPem).subjectAltName).toBe('URI:spiffe://mesh.local/ns/default/sa/catalog');
    expect(Object.keys(endpoints.payload.services).sort()).toEqual(['catalog', 'ratings']);
    expect(bundle.version).toBe(controller.status().policy.version);

    p.ack(cert);
    p.ack(endpoints);
    p.send({ type: 'nack', resource: 'bundle', version: bundle.version, nonce: bundle.nonce, error: 'BUNDLE_DIGEST: module p0.wasm digest mismatch' });
    const s = await waitFor('acks recorded', async () => {
      const st = await status();
      return st.sidecars[0]?.lastNack ? st : undefined;
    });
    const sc = s.sidecars[0]!;
    expect(sc).toMatchObject({ instance: 'catalog-v1-0', connected: true, acked: { certificate: cert.version, endpoints: endpoints.version } });
    expect(sc.acked.bundle).toBeUndefined();
    expect(sc.lastNack).toMatchObject({ resource: 'bundle', version: bundle.version, error: 'BUNDLE_DIGEST: module p0.wasm digest mismatch' });
    expect(sc.certificate?.spiffeId).toBe('spiffe://mesh.local/ns/default/sa/catalog');
  });

  it('ignores a reply with a stale nonce', async () => {
    const p = await peer();
    p.send({ type: 'hello', node, have: {}, csrPem: await makeCsr() });
    await waitFor('updates', () => p.updates.length >= 3);
    const bundle = p.updates[2]!;
    p.send({ type: 'ack', resource: 'bundle', version: bundle.version, nonce: 'not-the-nonce' });
    p.ack(p.updates[0]!);
    await waitFor('certificate ack', async () => (await status()).sidecars[0]?.acked.certificate);
    expect((await status()).sidecars[0]?.acked.bundle).toBeUndefined();
  });

  it('resumes after a reconnect: nothing is resent when unchanged, and a policy edit resends only the bundle', async () => {
    const csrPem = await makeCsr();
    const first = await peer();
    first.send({ type: 'hello', node, have: {}, csrPem });
    await waitFor('updates', () => first.updates.length >= 3);
    for (const u of first.updates) first.ack(u);
    const have: Partial<Record<ResourceType, string>> = Object.fromEntries(first.updates.map((u) => [u.resource, u.version]));
    await waitFor('acks', async () => Object.keys((await status()).sidecars[0]?.acked ?? {}).length === 3);
    await first.close();
    await waitFor('disconnect recorded', async () => (await status()).sidecars[0]?.connected === false);

    const second = await peer();
    second.send({ type: 'hello', node, have, csrPem });
    await waitFor('reconnect recorded', async () => (await status()).sidecars[0]?.connected === true);

    // Updates arrive in order, so if anything had been resent it would come before this bundle.
    await writeFile(join(dir.path, 'catalog.meshpolicy'), 'service catalog { route r { to v1 } }\n');
    await waitFor('the edited bundle', () => second.updates.length >= 1);
    await controller.reconciler.idle();
    expect(second.updates.map((u) => u.resource)).toEqual(['bundle']);
    expect(second.updates[0]?.version).not.toBe(have.bundle);
    expect(second.updates[0]?.version).toBe(controller.status().policy.version);
  });

  it('closes the stream of an instance the topology does not know, with the reason', async () => {
    const p = await peer();
    p.send({ type: 'hello', node: { ...node, instance: 'ghost-0' }, have: {}, csrPem: await makeCsr() });
    await waitFor('close', () => p.closed);
    expect(p.closed).toEqual({ code: 4404, reason: 'unknown instance "ghost-0": not in the topology' });
  });

  it('refuses a sidecar claiming another service for a known instance', async () => {
    const p = await peer();
    p.send({ type: 'hello', node: { ...node, service: 'ratings' }, have: {}, csrPem: await makeCsr() });
    await waitFor('close', () => p.closed);
    expect(p.closed?.code).toBe(4403);
  });

  it('re-issues a certificate at two thirds of its lifetime and pushes only the certificate', async () => {
    await controller.stop();
    controller = await startController({ dir: dir.path, listen: { host: '127.0.0.1', port: 0 }, compiler: async () => fakeCompiler(), logSink: silentSink, debounceMs: 20, leafLifetimeMs: 1_500, renewCheckMs: 50 });
    await controller.reconciler.idle();
    const p = await peer();
    p.send({ type: 'hello', node, have: {}, csrPem: await makeCsr() });
    await waitFor('initial updates', () => p.updates.length >= 3);
    for (const u of p.updates) p.ack(u);
    const renewed = await waitFor('a renewed certificate', () => p.updates[3]);
    expect(renewed.resource).toBe('certificate');
    expect(renewed.version).not.toBe(p.updates[0]?.version);
    if (renewed.resource !== 'certificate' || p.updates[0]?.resource !== 'certificate') throw new Error('expected certificates');
    const before = new X509Certificate(p.updates[0].payload.certChainPem);
    const after = new X509Certificate(renewed.payload.certChainPem);
    expect(after.subjectAltName).toBe(before.subjectAltName);
    expect(after.publicKey.export({ format: 'jwk' })).toEqual(before.publicKey.export({ format: 'jwk' }));
    expect(new Date(after.validTo).getTime()).toBeGreaterThan(new Date(before.validTo).getTime());
  });

  it('serves /healthz and reports compile errors in /status while keeping the last good version', async () => {
    expect(await (await fetch(controller.httpUrl + '/healthz')).json()).toEqual({ ok: true });
    const good = controller.status().policy.version;
    await writeFile(join(dir.path, 'catalog.meshpolicy'), 'service catalog {\n    BROKEN\n}\n');
    const s = await waitFor('diagnostics', async () => {
      const st = await status();
      return st.policy.diagnostics.length > 0 ? st : undefined;
    });
    expect(s.policy.version).toBe(good);
    expect(s.policy.current).toBe(false);
    expect(s.policy.diagnostics[0]).toMatchObject({ code: 'E_FAKE', line: 2, col: 5, file: join(dir.path, 'catalog.meshpolicy') });
  });
});
