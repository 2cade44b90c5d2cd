// Transparent interception end to end, in network namespaces joined by veth
// pairs: two "pods" (web, catalog), each with the rules of `meshc init` and a
// sidecar running as uid 1337 (the uid the rules exempt), and an "outside"
// namespace with servers and a client that are not in the mesh.
//
//   pod web (A) ──10.201.0.0/24── pod catalog (B)
//        └──10.201.1.0/24── outside (X) ──10.201.2.0/24──┘
//
// Apps dial ordinary addresses (curl, raw TCP); nothing names the sidecar.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, chmodSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EndpointsPayload } from '../../protocol/wire.ts';
import type { SidecarOptions } from '../../runtime/sidecar.ts';
import { createCa, issueLeaf, spiffeIdFor } from '../runtime/pki.ts';
import { NetnsLab, PROBE } from './netns.ts';

const MESHC = new URL('../../bin/meshc', import.meta.url).pathname;
const SIDECAR = new URL('./sidecar-main.ts', import.meta.url).pathname;
const PROXY_UID = '1337';

type Entry = Record<string, unknown>;

describe('transparent interception between two pods', () => {
  const lab = new NetnsLab('tmesh');
  const dir = mkdtempSync(join(tmpdir(), 'meshc-interception-'));
  let a = '';
  let b = '';
  let x = '';
  const logs: Record<'web' | 'catalog', Entry[]> = { web: [], catalog: [] };

  async function sidecar(ns: string, service: 'web' | 'catalog', endpoints: EndpointsPayload, cert: Awaited<ReturnType<typeof issueLeaf>>): Promise<void> {
    const options: Omit<SidecarOptions, 'log'> = {
      node: { instance: `${service}-v1-0`, service, version: 'v1', namespace: 'default', serviceAccount: service },
      interception: 'transparent',
      // REDIRECT of locally sent packets lands on 127.0.0.1; inbound ones on the interface address.
      outbound: { host: '127.0.0.1', port: 15001 },
      inbound: { host: '0.0.0.0', port: 15006 },
      admin: { host: '0.0.0.0', port: 15020 },
      app: { host: '127.0.0.1', port: 8080 },
      tcp: { appPorts: [9000] },
      // catalog's pod may not leave the mesh (Istio's REGISTRY_ONLY); web's may (the transparent default).
      ...(service === 'catalog' ? { allowEgress: false } : {}),
      // catalog's pod also serves clients outside the mesh (PERMISSIVE); web's is mTLS only (the default, STRICT).
      ...(service === 'catalog' ? { permissiveInbound: true } : {}),
    };
    const file = join(dir, `${service}.json`);
    writeFileSync(file, JSON.stringify({ ...options, endpoints, certificate: cert.payload, keyPem: cert.keyPem }));
    // The sidecar runs as the proxy uid and must read its configuration.
    chmodSync(file, 0o644);
    await lab.start(ns, ['setpriv', `--reuid=${PROXY_UID}`, `--regid=${PROXY_UID}`, '--clear-groups', 'node', SIDECAR, file], 'test-sidecar-ready', logs[service]);
  }

  /** Waits (bounded) until `logs` has an entry matching `match`, and returns it. */
  async function entry(service: 'web' | 'catalog', match: (e: Entry) => boolean): Promise<Entry> {
    const until = Date.now() + 10_000;
    for (;;) {
      const found = logs[service].find(match);
      if (found) return found;
      if (Date.now() > until) throw new Error(`no ${service} log entry matched; have:\n${logs[service].map((e) => JSON.stringify(e)).join('\n')}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  const curl = (ns: string, url: string, ...extra: string[]): Entry => JSON.parse(lab.exec(ns, ['curl', '-sS', '--max-time', '10', ...extra, url])) as Entry;
  beforeAll(async () => {
    chmodSync(dir, 0o755);
    a = lab.namespace('a');
    b = lab.namespace('b');
    x = lab.namespace('x');
    const ab = lab.link(a, '10.201.0.1/24', b, '10.201.0.2/24');
    // web's service address (a virtual IP no host has, like a ClusterIP): routed out of the pod.
    lab.exec(a, ['ip', 'route', 'add', '10.96.0.0/16', 'dev', ab.ifA]);
    lab.link(a, '10.201.1.1/24', x, '10.201.1.2/24');
    lab.link(x, '10.201.2.1/24', b, '10.201.2.2/24');
    lab.exec(a, ['node', MESHC, 'init', '--proxy-uid', PROXY_UID, '--exclude-inbound-ports', '15020', '--exclude-outbound-ports', '7001']);
    lab.exec(b, ['node', MESHC, 'init', '--proxy-uid', PROXY_UID, '--exclude-inbound-ports', '15020,9090']);

    const ca = await createCa();
    const endpoints: EndpointsPayload = {
      services: {
        // Istio's model: an endpoint is the pod address and the app's port; the pod's rules take it to the sidecar.
        catalog: { endpoints: [{ instance: 'catalog-v1-0', address: '10.201.0.2', port: 8080, version: 'v1', spiffeId: spiffeIdFor('catalog') }] },
        web: { endpoints: [{ instance: 'web-v1-0', address: '10.201.0.1', port: 8080, version: 'v1', spiffeId: spiffeIdFor('web') }], addresses: ['10.96.0.1'] },
      },
    };
    await Promise.all([
      // catalog's apps: HTTP on 8080 (main), raw TCP echo on 9000 (served to the mesh), HTTP on 9090 (excluded from interception).
      lab.start(b, ['node', PROBE, 'http', '8080'], 'listening'),
      lab.start(b, ['node', PROBE, 'echo', '9000'], 'listening'),
      lab.start(b, ['node', PROBE, 'http', '9090'], 'listening'),
      lab.start(b, ['node', PROBE, 'http', '8081'], 'listening'),
      // web's own app.
      lab.start(a, ['node', PROBE, 'http', '8080'], 'listening'),
      // Outside the mesh.
      lab.start(x, ['node', PROBE, 'echo', '7000'], 'listening'),
      lab.start(x, ['node', PROBE, 'echo', '7001'], 'listening'),
      lab.start(x, ['node', PROBE, 'http', '7080'], 'listening'),
      sidecar(a, 'web', endpoints, await issueLeaf(ca, 'web')),
      sidecar(b, 'catalog', endpoints, await issueLeaf(ca, 'catalog')),
    ]);
  });

  afterAll(async () => {
    await lab.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs each sidecar as the exempt uid', async () => {
    expect((await entry('web', (e) => e.event === 'test-sidecar-ready')).uid).toBe(Number(PROXY_UID));
    expect((await entry('catalog', (e) => e.event === 'test-sidecar-ready')).uid).toBe(Number(PROXY_UID));
  });

  it('sends HTTP the app addressed to a pod through both sidecars over mTLS, with no loop', async () => {
    const got = curl(a, 'http://10.201.0.2:8080/items?by=address');
    // catalog's app was called by its own sidecar, not by web's address.
    expect(got.http).toBe('127.0.0.1:8080');
    expect(String(got.remote)).toMatch(/^127\.0\.0\.1:/);
    expect((got.headers as Record<string, string>)['x-request-id']).toMatch(/./);
    const out = await entry('web', (e) => e.direction === 'outbound' && e.path === '/items?by=address');
    expect(out).toMatchObject({ destination_service: 'catalog', endpoint: 'catalog-v1-0', status: 200 });
    await entry('catalog', (e) => e.direction === 'inbound' && e.path === '/items?by=address' && e.status === 200);
    // web's sidecar dialed 10.201.0.2:8080 itself: had its own rules caught that, it would have seen the request twice.
    await new Promise((r) => setTimeout(r, 200));
    expect(logs.web.filter((e) => e.path === '/items?by=address')).toHaveLength(1);
  });

  it('reaches another HTTP port of a mesh pod on that port, through both sidecars', async () => {
    const got = curl(a, 'http://10.201.0.2:8081/second-port');
    expect(got.http).toBe('127.0.0.1:8081');
    expect(String(got.remote)).toMatch(/^127\.0\.0\.1:/);
    expect(await entry('web', (e) => e.path === '/second-port')).toMatchObject({ direction: 'outbound', destination_service: 'catalog', status: 200 });
    await entry('catalog', (e) => e.direction === 'inbound' && e.path === '/second-port' && e.status === 200);
    // And from outside the mesh, through catalog's inbound side.
    expect(curl(x, 'http://10.201.2.2:8081/second-port-outside').http).toBe('127.0.0.1:8081');
    await entry('catalog', (e) => e.direction === 'inbound' && e.path === '/second-port-outside' && e.status === 200);
  });

  it('carries HTTP/2 with prior knowledge (h2c) the app sent to a pod address', async () => {
    const got = curl(a, 'http://10.201.0.2:8080/h2c', '--http2-prior-knowledge');
    expect(got.http).toBe('127.0.0.1:8080');
    expect(await entry('web', (e) => e.direction === 'outbound' && e.path === '/h2c')).toMatchObject({ destination_service: 'catalog', status: 200 });
    await entry('catalog', (e) => e.direction === 'inbound' && e.path === '/h2c' && e.status === 200);
  });

  it('takes the service from the Host header first', async () => {
    // Addressed to the outside server, but named catalog: the Host header decides, as in explicit mode.
    const got = curl(a, 'http://10.201.1.2:7080/by-host', '-H', 'Host: catalog');
    expect(got.http).toBe('127.0.0.1:8080');
    expect(await entry('web', (e) => e.path === '/by-host')).toMatchObject({ destination_service: 'catalog', status: 200 });
  });

  it('sends the app calling its own service address through its sidecar and back in (the loopback rule)', async () => {
    const got = curl(a, 'http://10.96.0.1:8080/self');
    // web's app answered, called by its sidecar's inbound side.
    expect(got.http).toBe('127.0.0.1:8080');
    expect(String(got.remote)).toMatch(/^127\.0\.0\.1:/);
    expect((got.headers as Record<string, string>)['x-request-id']).toMatch(/./);
    expect(await entry('web', (e) => e.direction === 'outbound' && e.path === '/self')).toMatchObject({ destination_service: 'web', endpoint: 'web-v1-0', status: 200 });
    await entry('web', (e) => e.direction === 'inbound' && e.path === '/self' && e.status === 200);
  });

  it('leaves the app talking to itself over loopback alone', async () => {
    const got = curl(a, 'http://10.201.0.1:8080/local');
    expect(got.http).toBe('10.201.0.1:8080');
    expect(String(got.remote)).toMatch(/^10\.201\.0\.1:/);
    await new Promise((r) => setTimeout(r, 200));
    expect(logs.web.filter((e) => e.path === '/local')).toEqual([]);
  });

  it('carries raw TCP to a mesh endpoint as mesh TCP, to the port the app dialed', async () => {
    // Not the start of a request line ('{' is no token character): detected as opaque TCP.
    const { first, rest } = lab.dial(a, '10.201.0.2', 9000, '{"raw":"tcp"}');
    // catalog's TCP app on 9000 (not its main port 8080), reached from its own sidecar.
    expect(first.echo).toBe('127.0.0.1:9000');
    expect(String(first.remote)).toMatch(/^127\.0\.0\.1:/);
    expect(rest).toBe('{"raw":"tcp"}');
    expect(await entry('web', (e) => e.protocol === 'tcp' && e.target_port === 9000)).toMatchObject({ direction: 'outbound', destination_service: 'catalog', endpoint: 'catalog-v1-0' });
    await entry('catalog', (e) => e.protocol === 'tcp' && e.direction === 'inbound' && e.upstream === '127.0.0.1:9000');
  });

  it('passes raw TCP to an address outside the mesh straight through (PassthroughCluster)', async () => {
    const { first, rest } = lab.dial(a, '10.201.1.2', 7000, '{"to":"outside"}');
    expect(first.echo).toBe('10.201.1.2:7000');
    // The connection came from web's pod (its sidecar), and the bytes arrived.
    expect(String(first.remote)).toMatch(/^10\.201\.1\.1:/);
    expect(rest).toBe('{"to":"outside"}');
    expect(await entry('web', (e) => e.protocol === 'tcp' && e.upstream === '10.201.1.2:7000')).toMatchObject({ egress: true });
  });

  it('passes HTTP to an address outside the mesh through, as HTTP', async () => {
    const got = curl(a, 'http://10.201.1.2:7080/egress');
    expect(got.http).toBe('10.201.1.2:7080');
    expect(got.url).toBe('/egress');
    expect(await entry('web', (e) => e.path === '/egress')).toMatchObject({ direction: 'outbound', destination_service: 'PassthroughCluster', endpoint: 'passthrough 10.201.1.2:7080', status: 200 });
  });

  it('leaves an excluded outbound port alone', async () => {
    const { first, rest } = lab.dial(a, '10.201.1.2', 7001, 'excluded');
    expect(first.echo).toBe('10.201.1.2:7001');
    expect(rest).toBe('excluded');
    await new Promise((r) => setTimeout(r, 200));
    expect(logs.web.filter((e) => JSON.stringify(e).includes(':7001'))).toEqual([]);
  });

  it('sends a client outside the mesh that dials the app port through the inbound sidecar', async () => {
    const got = curl(x, 'http://10.201.2.2:8080/from-outside');
    expect(got.http).toBe('127.0.0.1:8080');
    expect(String(got.remote)).toMatch(/^127\.0\.0\.1:/);
    expect((got.headers as Record<string, string>)['x-request-id']).toMatch(/./);
    await entry('catalog', (e) => e.direction === 'inbound' && e.path === '/from-outside' && e.status === 200);
  });

  it('refuses a plaintext client outside the mesh at a STRICT pod (web): logged, nothing reaches the app', async () => {
    const r = spawnSync('ip', ['netns', 'exec', x, 'curl', '-sS', '--max-time', '10', 'http://10.201.1.1:8080/strict'], { encoding: 'utf8' });
    expect(r.status).not.toBe(0);
    expect(r.stdout).toBe('');
    await entry('web', (e) => e.event === 'inbound-plaintext-refused' && e.reason === 'mtls-required');
    expect(logs.web.filter((e) => e.path === '/strict')).toEqual([]);
  });

  it('sends raw TCP from outside the mesh to the app port it dialed, through the inbound sidecar', async () => {
    const { first, rest } = lab.dial(x, '10.201.2.2', 9000, '{"from":"outside"}');
    // catalog's TCP app on 9000, called by its sidecar (not the main HTTP port 8080).
    expect(first).toMatchObject({ echo: '127.0.0.1:9000', remote: expect.stringMatching(/^127\.0\.0\.1:/) });
    expect(rest).toBe('{"from":"outside"}');
    await entry('catalog', (e) => e.protocol === 'tcp' && e.direction === 'inbound' && e.upstream === '127.0.0.1:9000' && e.source_principal === '');
  });

  it('refuses HTTP and TCP out of the mesh where egress is denied (catalog\'s pod)', async () => {
    const out = lab.exec(b, ['curl', '-sS', '--max-time', '10', '-o', '/dev/null', '-D', '-', 'http://10.201.2.1:7080/leave']);
    expect(out).toMatch(/^HTTP\/1\.1 403 /);
    expect(out.toLowerCase()).toContain('x-mesh-reason: egress-denied');
    expect(await entry('catalog', (e) => e.direction === 'outbound' && e.path === '/leave')).toMatchObject({ status: 403, reason: 'egress-denied' });
    // Raw TCP: closed without a byte from the server.
    const r = spawnSync('ip', ['netns', 'exec', b, 'node', PROBE, 'client', '10.201.2.1', '7000', '{"leave":1}'], { encoding: 'utf8' });
    expect(r.stdout).toBe('');
    await entry('catalog', (e) => e.protocol === 'tcp' && e.reason === 'egress-denied');
  });

  it('leaves an excluded inbound port alone', () => {
    const got = curl(x, 'http://10.201.2.2:9090/direct');
    expect(got.http).toBe('10.201.2.2:9090');
    // The outside client's own address: no sidecar in between.
    expect(String(got.remote)).toMatch(/^10\.201\.2\.1:/);
    expect(logs.catalog.filter((e) => e.path === '/direct')).toEqual([]);
  });
});
