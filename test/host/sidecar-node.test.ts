// What a filter learns about the sidecar it runs in, through a real sidecar
// pair over mTLS: the node.* properties and the mesh_identity foreign
// function answer with the inbound sidecar's own instance, service, namespace
// and SPIFFE ID (standalone proxies have none; conformance.test.ts covers that).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTestBundle, request } from '../runtime/helpers.ts';
import { startMesh, type TestMesh } from '../runtime/mesh.ts';
import { spiffeIdFor } from '../runtime/pki.ts';
import { hostFixture } from './fixtures.ts';

let mesh: TestMesh;

beforeAll(async () => {
  const wasm = await hostFixture('conformance');
  mesh = await startMesh(makeTestBundle([{ name: 'conformance', wasm }]));
});

afterAll(async () => {
  await mesh?.stop();
});

function fields(value: string | undefined): Record<string, string> {
  return Object.fromEntries((value ?? '').split(';').map((p) => [p.slice(0, p.indexOf('=')), p.slice(p.indexOf('=') + 1)]));
}

describe('node facts in a connected sidecar', () => {
  it('answers node.* and mesh_identity with the sidecar that runs the filter', async () => {
    const res = await request(mesh.web.addresses().outbound.port, {
      headers: { host: 'catalog', 'x-op': 'foreign,props', 'x-props': 'node.id,node.cluster,node.metadata.NAMESPACE' },
    });
    expect(res.status).toBe(200);
    // The filter runs on both sidecars and each replaces the result headers:
    // the app sees what the inbound (catalog) sidecar answered.
    // The fixture appends a marker to every response body it sees (once per sidecar).
    const h = (JSON.parse(res.body.replace(/(\+conformance)+$/, '')) as { headers: Record<string, string> }).headers;
    const hexText = (v: string | undefined) => Buffer.from(v ?? '', 'hex').toString('utf8');
    expect(hexText(h['x-r-prop-node.id'])).toBe('catalog-v1-0');
    expect(hexText(h['x-r-prop-node.cluster'])).toBe('catalog');
    expect(hexText(h['x-r-prop-node.metadata.namespace'])).toBe('default');
    expect(fields(h['x-r-foreign'])['identity']).toBe(spiffeIdFor('catalog'));
  });
});
