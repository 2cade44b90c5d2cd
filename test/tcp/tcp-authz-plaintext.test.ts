// Authorization of plaintext opaque TCP on a PERMISSIVE inbound port
// (transparent mode's inbound listener also serves clients outside the mesh,
// runtime/interception/transparent.ts), on 127.0.0.1: such a client has no
// mesh identity, so `from` rules cannot admit it and a policy with allows
// refuses it by default; connection-level rules on its address still apply.
// The client sends bytes that are neither HTTP nor TLS: the sidecar relays
// them as opaque TCP to the app's main port (an HTTP server, which answers
// 400: proof the bytes reached it).
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compilePolicies, shutdownCompiler } from '../../compiler/index.ts';
import type { Bundle } from '../../protocol/bundle.ts';
import { spiffeIdFor } from '../runtime/pki.ts';
import { collectExchange, eventually, startTcpMesh, type Exchange, type TcpMesh } from './support.ts';

const POLICIES = {
  onlyWeb: `service catalog {
  allow web { from "${spiffeIdFor('web')}" }
}`,
  localNetwork: `service catalog {
  allow web { from "${spiffeIdFor('web')}" }
  allow local-network { when source ip in ["127.0.0.0/8", "::1"] }
}`,
  denyLocal: `service catalog {
  deny local-network { when source ip in ["127.0.0.0/8", "::1"] and not source present }
}`,
  noAuthz: `service catalog {
  rate_limit everyone { key remote_address rate 1000/s }
}`,
};

let mesh: TcpMesh;
const bundles = new Map<string, Bundle>();

beforeAll(async () => {
  mesh = await startTcpMesh(() => ({}), { interception: 'transparent', permissiveInbound: true, detectTimeoutMs: 200 });
  for (const [name, text] of Object.entries(POLICIES)) {
    const result = await compilePolicies([{ path: 'catalog.meshpolicy', text }]);
    expect(result.diagnostics.filter((d) => d.severity === 'error')).toEqual([]);
    bundles.set(name, result.bundle!);
  }
  await shutdownCompiler();
}, 120_000);
afterAll(async () => {
  await mesh?.stop();
});

/** Opaque bytes in plaintext to the catalog sidecar's inbound port; what came back. */
function plaintext(): Promise<Exchange> {
  const s = net.connect({ port: mesh.catalog.addresses().inbound.port, host: '127.0.0.1', allowHalfOpen: true });
  return collectExchange(s, 'connect', () => s.end(Buffer.from([0x00, 0x01, 0x02, 0x0d, 0x0a, 0x0d, 0x0a])), 10_000);
}

describe('plaintext opaque TCP on a permissive inbound port', () => {
  it('reaches the app when the service has no authorization rules', async () => {
    await mesh.catalog.applyBundle(bundles.get('noAuthz')!);
    const got = await plaintext();
    expect(got.received.toString()).toMatch(/^HTTP\/1\.1 400/);
    // Relayed as opaque TCP (not answered by the sidecar's HTTP codec): one TCP log line, no peer identity.
    const upstream = `127.0.0.1:${mesh.catalogApp.port}`;
    expect(await eventually(() => mesh.catalogLogs.entries.some((e) => e.protocol === 'tcp' && e.direction === 'inbound' && e.upstream === upstream && e.source_principal === ''))).toBe(true);
  });

  it('is refused by default once the service allows only mesh identities', async () => {
    await mesh.catalog.applyBundle(bundles.get('onlyWeb')!);
    const got = await plaintext();
    expect(got.received.length).toBe(0);
    expect(got.error).toBe('ECONNRESET');
    expect(
      await eventually(() => mesh.catalogLogs.entries.some((e) => e.reason === 'rbac-denied' && e.rule === 'catalog/default-deny' && e.listener === 'inbound' && e.source_principal === '')),
    ).toBe(true);
  });

  it('is admitted by an allow on its address, and refused by a deny on it', async () => {
    await mesh.catalog.applyBundle(bundles.get('localNetwork')!);
    expect((await plaintext()).received.toString()).toMatch(/^HTTP\/1\.1 400/);
    await mesh.catalog.applyBundle(bundles.get('denyLocal')!);
    expect((await plaintext()).received.length).toBe(0);
    expect(await eventually(() => mesh.catalogLogs.entries.some((e) => e.reason === 'rbac-denied' && e.rule === 'catalog/deny/local-network'))).toBe(true);
  });
});
