// Authorization on opaque TCP, through a sidecar pair over real mTLS on
// 127.0.0.1: policies compiled by the real compiler decide, in the catalog
// sidecar's filter (proxy_on_new_connection), whether a TCP connection may
// reach the catalog's TCP echo server. The web sidecar's identity reaches it
// through its upstream port; other identities ("probe", "intruder") dial the
// catalog's inbound listener directly with their own mesh certificates.
import net from 'node:net';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compilePolicies, shutdownCompiler } from '../../compiler/index.ts';
import { makeBundle, type Bundle } from '../../protocol/bundle.ts';
import { MESH_TCP_ALPN, encodeTransportHeader } from '../../protocol/transport.ts';
import { hostFixture } from '../host/fixtures.ts';
import { makeTestBundle } from '../runtime/helpers.ts';
import { issueLeaf, spiffeIdFor } from '../runtime/pki.ts';
import { collectExchange, curl, eventually, metricsOf, roundTrip, sample, startTcpMesh, type Exchange, type TcpMesh } from './support.ts';

const WEB = spiffeIdFor('web');
const PROBE = spiffeIdFor('probe');

const POLICIES = {
  // Only web may call catalog: everyone else is denied by catalog/default-deny.
  onlyWeb: `service catalog {
  allow web { from "${WEB}" }
}`,
  // A deny whose HTTP-only condition (path) cannot be known on TCP: it denies probe's connections outright.
  denyWithHttpCondition: `service catalog {
  deny probe-admin { from "${PROBE}" when path prefix "/admin" }
}`,
  // An allow whose HTTP-only condition (method) cannot be known on TCP: it admits no connection.
  allowWithHttpCondition: `service catalog {
  allow web-reads { from "${WEB}" when method == GET }
}`,
  // A port condition is known at connection time: the allow holds only for the main app port.
  allowMainPortOnly: `service catalog {
  allow web { from "${WEB}" when port == MAIN_PORT }
}`,
  // No authorization rules: connections are not decided at all.
  noAuthz: `service catalog {
  rate_limit everyone { key source rate 1000/s }
}`,
  denyAll: `service catalog {
  deny everyone { }
}`,
  // The whole filter in dry run: its closes are logged and counted, not enforced.
  dryRunService: `service catalog dry_run {
  allow web { from "${WEB}" }
}`,
  auditOnly: `service catalog {
  audit connections { from "${WEB}" }
}`,
};

let mesh: TcpMesh;
const bundles = new Map<string, Bundle>();

async function compile(text: string): Promise<Bundle> {
  const result = await compilePolicies([{ path: 'catalog.meshpolicy', text }]);
  expect(result.diagnostics.filter((d) => d.severity === 'error')).toEqual([]);
  return result.bundle!;
}

beforeAll(async () => {
  mesh = await startTcpMesh((echoPort) => ({
    upstreams: [{ service: 'catalog', port: echoPort, listen: { host: '127.0.0.1', port: 0 }, protocol: 'tcp' }],
  }));
  for (const [name, text] of Object.entries(POLICIES)) bundles.set(name, await compile(text.replace('MAIN_PORT', String(mesh.catalogApp.port))));
  await shutdownCompiler();
}, 120_000);
afterAll(async () => {
  await mesh?.stop();
});

const webPort = (): number => mesh.port(`upstream:catalog:${mesh.echoServer.port}/tcp`);

async function use(name: string): Promise<void> {
  await mesh.catalog.applyBundle(bundles.get(name)!);
}

/** Dials the catalog sidecar's inbound listener as `identity` (a mesh certificate of its own), for the echo port. */
async function dialAs(identity: string, payload: string, port = mesh.echoServer.port): Promise<Exchange> {
  const leaf = await issueLeaf(mesh.ca, identity);
  const c = tls.connect({
    port: mesh.catalog.addresses().inbound.port,
    host: '127.0.0.1',
    ca: mesh.ca.certPem,
    cert: leaf.certPem,
    key: leaf.keyPem,
    ALPNProtocols: [MESH_TCP_ALPN],
    checkServerIdentity: () => undefined,
  });
  return collectExchange(c, 'secureConnect', () => c.end(Buffer.concat([encodeTransportHeader(port), Buffer.from(payload)])), 10_000);
}

function denials(rule: string): Array<Record<string, unknown>> {
  return mesh.catalogLogs.entries.filter((e) => e.reason === 'rbac-denied' && e.rule === rule);
}

describe('authorization of opaque TCP connections', () => {
  it('admits the allowed identity and refuses another one with a reset, logs the deciding rule, counts UAEX', async () => {
    await use('onlyWeb');
    const allowed = await roundTrip(webPort(), Buffer.from('hello from web'));
    expect(allowed.error).toBeUndefined();
    expect(allowed.received.toString()).toBe('hello from web');

    const acceptedBefore = mesh.echoServer.accepted;
    const before = sample(await metricsOf(mesh.catalog.addresses().admin.port), 'istio_tcp_connections_closed_total', {
      reporter: 'destination',
      source_workload: 'probe',
      destination_service: 'catalog',
      response_flags: 'UAEX',
    });
    const refused = await dialAs('probe', 'hello from probe');
    expect(refused.received.length).toBe(0);
    expect(refused.error).toBe('ECONNRESET');
    // The app was never dialed.
    expect(mesh.echoServer.accepted).toBe(acceptedBefore);
    expect(await eventually(() => denials('catalog/default-deny').some((e) => e.source_principal === PROBE))).toBe(true);
    const line = denials('catalog/default-deny').find((e) => e.source_principal === PROBE)!;
    expect(line).toMatchObject({ protocol: 'tcp', direction: 'inbound', filter: 'catalog', termination_details: 'rbac_access_denied_matched_policy[catalog/default-deny]' });
    const after = sample(await metricsOf(mesh.catalog.addresses().admin.port), 'istio_tcp_connections_closed_total', {
      reporter: 'destination',
      source_workload: 'probe',
      destination_service: 'catalog',
      response_flags: 'UAEX',
    });
    expect(after - before).toBe(1);

    // The same certificate is admitted once a policy allows it: the refusal was the policy's.
    await use('noAuthz');
    const nowAllowed = await dialAs('probe', 'hello again');
    expect(nowAllowed.received.toString()).toBe('hello again');
  });

  it('a deny whose HTTP-only condition cannot be known denies the TCP connection (fail closed); other identities pass', async () => {
    await use('denyWithHttpCondition');
    const refused = await dialAs('probe', 'x');
    expect(refused.received.length).toBe(0);
    expect(await eventually(() => denials('catalog/deny/probe-admin').length > 0)).toBe(true);
    const other = await dialAs('intruder', 'not denied');
    expect(other.received.toString()).toBe('not denied');
  });

  it('an allow whose HTTP-only condition cannot be known admits no TCP connection, not even from its own identity', async () => {
    await use('allowWithHttpCondition');
    const got = await roundTrip(webPort(), Buffer.from('x'));
    expect(got.received.length).toBe(0);
    expect(await eventually(() => denials('catalog/default-deny').some((e) => e.source_principal === WEB))).toBe(true);
  });

  it('reads the destination port at connection time: an allow for the main app port does not admit the echo port', async () => {
    await use('allowMainPortOnly');
    const echoPort = await roundTrip(webPort(), Buffer.from('x'));
    expect(echoPort.received.length).toBe(0);
    // The main app port (an HTTP echo app) is admitted: the sidecar relays the raw bytes, the app answers.
    const main = await dialAs('web', 'GET / HTTP/1.1\r\nHost: catalog\r\nConnection: close\r\n\r\n', 0);
    expect(main.received.toString()).toMatch(/^HTTP\/1\.1 200/);
  });

  it('a port rule means the same on HTTP: destination.port of an inbound request is the app port, not the sidecar listener', async () => {
    await use('allowMainPortOnly');
    const r = await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', 'host: catalog', `http://127.0.0.1:${mesh.web.addresses().outbound.port}/port-rule`]);
    expect(r.stdout).toBe('200');
    expect(await eventually(() => mesh.catalogLogs.entries.some((e) => e.direction === 'inbound' && e.path === '/port-rule' && e.status === 200))).toBe(true);
  });

  it('with no authorization rules every mesh identity is admitted', async () => {
    await use('noAuthz');
    const web = await roundTrip(webPort(), Buffer.from('web'));
    expect(web.received.toString()).toBe('web');
    const probe = await dialAs('probe', 'probe');
    expect(probe.received.toString()).toBe('probe');
  });

  it('a dry-run service logs and counts the connection it would refuse, and lets it through', async () => {
    await use('dryRunService');
    const got = await dialAs('probe', 'dry run');
    expect(got.received.toString()).toBe('dry run');
    expect(await eventually(() => mesh.catalogLogs.entries.some((e) => e.event === 'dry-run' && e.filter === 'catalog' && e.decision === 'close' && e.rule === 'catalog/default-deny'))).toBe(true);
    const metrics = await metricsOf(mesh.catalog.addresses().admin.port);
    expect(sample(metrics, 'meshc_dry_run_decisions_total', { filter: 'catalog', rule: 'catalog/default-deny' })).toBeGreaterThanOrEqual(1);
  });

  it('an audit rule logs and counts the connection but decides nothing', async () => {
    await use('auditOnly');
    const got = await roundTrip(webPort(), Buffer.from('audited'));
    expect(got.received.toString()).toBe('audited');
    expect(await eventually(() => mesh.catalogLogs.entries.some((e) => e.event === 'filter-log' && String(e.message).startsWith('meshc audit: catalog/audit/connections matched a TCP connection from ' + WEB)))).toBe(true);
    const metrics = await metricsOf(mesh.catalog.addresses().admin.port);
    expect(metrics).toMatch(/wasmcustom_meshc_audit\.catalog\/audit\/connections|wasmcustom_meshc_audit_catalog_audit_connections/);
  });
});

describe('failures and reloads', () => {
  it('a filter that traps in proxy_on_new_connection refuses the connection under fail-closed, is bypassed under fail-open, is rebuilt under reload', async () => {
    const wasm = await hostFixture('connection-trap');
    await mesh.catalog.applyBundle(makeTestBundle([{ name: 'trap', wasm, service: 'catalog', failurePolicy: 'closed' }]));
    const refused = await roundTrip(webPort(), Buffer.from('x'));
    expect(refused.received.length).toBe(0);
    expect(await eventually(() => mesh.catalogLogs.entries.some((e) => e.event === 'filter-trap' && e.filter === 'trap' && e.callback === 'proxy_on_new_connection'))).toBe(true);
    expect(await eventually(() => mesh.catalogLogs.entries.some((e) => e.reason === 'filter-failed' && e.filter === 'trap' && e.protocol === 'tcp'))).toBe(true);
    // Broken until the next bundle: the next connection is refused too.
    const again = await roundTrip(webPort(), Buffer.from('x'));
    expect(again.received.length).toBe(0);

    await mesh.catalog.applyBundle(makeTestBundle([{ name: 'trap', wasm, service: 'catalog', failurePolicy: 'open' }]));
    const bypassed = await roundTrip(webPort(), Buffer.from('through'));
    expect(bypassed.received.toString()).toBe('through');

    // reload: the connection that trapped is refused, and a fresh instance is built for the next one.
    await mesh.catalog.applyBundle(makeTestBundle([{ name: 'trap', wasm, service: 'catalog', failurePolicy: 'reload' }]));
    const replacedBefore = mesh.catalogLogs.entries.filter((e) => e.event === 'filter-vm-replaced' && e.filter === 'trap').length;
    expect((await roundTrip(webPort(), Buffer.from('x'))).received.length).toBe(0);
    expect(await eventually(() => mesh.catalogLogs.entries.filter((e) => e.event === 'filter-vm-replaced' && e.filter === 'trap').length > replacedBefore)).toBe(true);
  });

  it('a filter that pauses a new connection decides it later from its tick: continue admits it, close refuses it with its rule; close callbacks run', async () => {
    const wasm = await hostFixture('connection-pause');
    const closes = async (): Promise<number> => Number(/^wasmcustom_connection_closes(?:\{[^}]*\})? (\d+)/m.exec(await metricsOf(mesh.catalog.addresses().admin.port))?.[1] ?? 0);
    await mesh.catalog.applyBundle(makeTestBundle([{ name: 'pauser', wasm, service: 'catalog', configuration: 'continue' }]));
    const before = await closes();
    const admitted = await roundTrip(webPort(), Buffer.from('after a pause'));
    expect(admitted.received.toString()).toBe('after a pause');
    // proxy_on_downstream_connection_close ran once the connection closed.
    const end = Date.now() + 5_000;
    while ((await closes()) < before + 1 && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    expect(await closes()).toBe(before + 1);

    await mesh.catalog.applyBundle(makeTestBundle([{ name: 'pauser', wasm, service: 'catalog', configuration: 'close' }]));
    const refused = await roundTrip(webPort(), Buffer.from('x'));
    expect(refused.received.length).toBe(0);
    expect(await eventually(() => denials('fixture/close').some((e) => e.filter === 'pauser'))).toBe(true);
  });

  it('a filter that loops in proxy_on_new_connection is stopped by its fuel and refuses the connection (fail closed)', async () => {
    const wasm = await hostFixture('connection-loop');
    const base = makeTestBundle([{ name: 'looper', wasm, service: 'catalog', failurePolicy: 'closed' }]);
    const manifest = structuredClone(base.manifest);
    manifest.filters[0]!.limits = { fuelPerCallback: 1_000_000 };
    await mesh.catalog.applyBundle(makeBundle(manifest, base.modules));
    const refused = await roundTrip(webPort(), Buffer.from('x'));
    expect(refused.received.length).toBe(0);
    expect(await eventually(() => mesh.catalogLogs.entries.some((e) => e.event === 'filter-trap' && e.filter === 'looper' && e.cause === 'fuel'))).toBe(true);
    expect(await eventually(() => mesh.catalogLogs.entries.some((e) => e.reason === 'filter-failed' && e.filter === 'looper'))).toBe(true);
  });

  it('a filter with authorization rules that does not export proxy_on_new_connection fails closed', async () => {
    // A module without the export (no authorization rules) under a manifest that lists an allow rule: an older compiler's bundle.
    const plain = bundles.get('noAuthz')!;
    const manifest = structuredClone(plain.manifest);
    manifest.filters[0]!.rules = { ...manifest.filters[0]!.rules, 'catalog/allow/web': { file: 'catalog.meshpolicy', line: 2, col: 3, endLine: 2, endCol: 30 } };
    await mesh.catalog.applyBundle(makeBundle(manifest, plain.modules));
    const got = await roundTrip(webPort(), Buffer.from('x'));
    expect(got.received.length).toBe(0);
    expect(await eventually(() => mesh.catalogLogs.entries.some((e) => e.event === 'filter-failure' && e.protocol === 'tcp' && String(e.error).includes('does not export proxy_on_new_connection')))).toBe(true);
  });

  it('a reload from allow to deny refuses the next connection, while a connection opened before keeps running', async () => {
    await use('onlyWeb');
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ port: webPort(), host: '127.0.0.1' });
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
    const echoOf = (text: string): Promise<string> =>
      new Promise((resolve) => {
        let got = '';
        const onData = (d: Buffer): void => {
          got += d.toString();
          if (got.length >= text.length) {
            socket.off('data', onData);
            resolve(got);
          }
        };
        socket.on('data', onData);
        socket.write(text);
      });
    expect(await echoOf('before')).toBe('before');

    await use('denyAll');
    const next = await roundTrip(webPort(), Buffer.from('x'));
    expect(next.received.length).toBe(0);
    expect(await eventually(() => denials('catalog/deny/everyone').length > 0)).toBe(true);
    // The connection admitted under the old chain still carries bytes both ways.
    expect(await echoOf('after the reload')).toBe('after the reload');
    // Yet it does not keep the old chain's VM alive: the compiled filter wants no close callback.
    const instances = Number(/^meshc_filter_instances (\d+)/m.exec(await metricsOf(mesh.catalog.addresses().admin.port))?.[1]);
    expect(instances).toBe(bundles.get('denyAll')!.manifest.filters.length);
    socket.destroy();
  });
});

describe('data callbacks', () => {
  it('passes the bytes through a filter that reads them: held until a line ends, rewritten, counted on the way back, and closed on its word', async () => {
    const wasm = await hostFixture('connection-data');
    await mesh.catalog.applyBundle(makeTestBundle([{ name: 'liner', wasm, service: 'catalog' }]));
    const upstreamBytes = async (): Promise<number> => Number(/^wasmcustom_upstream_bytes(?:\{[^}]*\})? (\d+)/m.exec(await metricsOf(mesh.catalog.addresses().admin.port))?.[1] ?? 0);
    const before = await upstreamBytes();
    const socket = net.connect({ port: webPort(), host: '127.0.0.1' });
    let got = '';
    let error = '';
    socket.on('data', (d: Buffer) => (got += d.toString()));
    socket.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
    const closed = new Promise((r) => socket.once('close', r));
    await new Promise((r) => socket.once('connect', r));
    // Half a line: the filter holds it (Pause) until the rest arrives, then forwards the whole line once.
    socket.write('hel');
    await new Promise((r) => setTimeout(r, 100));
    expect(got).toBe('');
    socket.write('lo\n');
    expect(await eventually(() => got === '[HELLO\n')).toBe(true);
    // The echo's bytes crossed proxy_on_upstream_data.
    expect(await upstreamBytes()).toBe(before + '[HELLO\n'.length);

    socket.write('please STOP\n');
    await closed;
    expect(error).toBe('ECONNRESET');
    expect(got).toBe('[HELLO\n');
    expect(
      await eventually(() => mesh.catalogLogs.entries.some((e) => e.protocol === 'tcp' && e.reason === 'filter-closed-stream' && String(e.error).includes('closed by fixture/stop (filter liner)'))),
    ).toBe(true);

    // The half-close crosses the filter both ways; bytes held to the end are forwarded at the end of the stream.
    const line = await roundTrip(webPort(), Buffer.from('abc\n'));
    expect(line.received.toString()).toBe('[ABC\n');
    expect(line.ended).toBe(true);
    const big = Buffer.alloc(1024 * 1024, 'x');
    const held = await roundTrip(webPort(), big);
    expect(held.ended).toBe(true);
    expect(held.received.length).toBe(big.length + 1);
    expect(held.received.subarray(0, 2).toString()).toBe('[X');
  });

  it('a trap in a data callback resets the connection under fail-closed and passes the bytes unread under fail-open', async () => {
    const wasm = await hostFixture('connection-data');
    await mesh.catalog.applyBundle(makeTestBundle([{ name: 'liner', wasm, service: 'catalog', failurePolicy: 'closed' }]));
    const closedRun = await roundTrip(webPort(), Buffer.from('TRAP\n'));
    expect(closedRun.received.length).toBe(0);
    expect(await eventually(() => mesh.catalogLogs.entries.some((e) => e.event === 'filter-trap' && e.filter === 'liner' && e.callback === 'proxy_on_downstream_data'))).toBe(true);
    expect(await eventually(() => mesh.catalogLogs.entries.some((e) => e.protocol === 'tcp' && e.reason === 'filter-failed' && String(e.error).includes('(filter liner)')))).toBe(true);

    await mesh.catalog.applyBundle(makeTestBundle([{ name: 'liner', wasm, service: 'catalog', failurePolicy: 'open' }]));
    const socket = net.connect({ port: webPort(), host: '127.0.0.1' });
    let got = '';
    socket.on('data', (d: Buffer) => (got += d.toString()));
    await new Promise((r) => socket.once('connect', r));
    socket.write('TRAP\n');
    // The filter is bypassed from then on: the line and the next one come back as sent.
    expect(await eventually(() => got === 'TRAP\n')).toBe(true);
    socket.write('next\n');
    expect(await eventually(() => got === 'TRAP\nnext\n')).toBe(true);
    socket.destroy();
  });
});
