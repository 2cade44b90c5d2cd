// What the data path owes the proxy-wasm host, in a connected sidecar:
// proxy_http_call to a mesh service goes over the outbound mTLS pool to one
// of its endpoints, and request/response trailers reach the filters' trailer
// callbacks before they are forwarded.
import { afterEach, describe, expect, it } from 'vitest';
import { hostFixture } from '../host/fixtures.ts';
import { startRouterMesh, type RouterMesh } from './router-mesh.ts';
import { raw, startApp, startProxy } from './support.ts';

let mesh: RouterMesh | undefined;

afterEach(async () => {
  await mesh?.stop();
  mesh = undefined;
});

function fields(value: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of String(value ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0) out[part.slice(0, i)] = part.slice(i + 1);
  }
  return out;
}

describe('proxy_http_call from a sidecar filter', () => {
  it('reaches a mesh service over the outbound pool and resumes the request with the answer', async () => {
    const wasm = await hostFixture('conformance');
    mesh = await startRouterMesh(undefined, [{ instance: 'a' }], 5_000, { wasm, rootId: 'conf' });
    const res = await mesh.send({ 'x-op': 'callout', 'x-callout': 'catalog' });
    expect(res.status).toBe(200);
    expect(fields(res.headers['x-r-callout'])).toMatchObject({ root: '1', status: '200' });
    // The call itself reached the endpoint over mTLS with the filter's :authority.
    expect(mesh.endpoints[0]!.authorities).toContain('callout.test');
    const unknown = await mesh.send({ 'x-op': 'callout', 'x-callout': 'no-such-service' });
    expect(unknown.headers['x-r-callout']).toBe('refused=2');
  });
});

describe('trailers through the filters', () => {
  it('calls the trailer callbacks both ways and forwards what the filters left', async () => {
    const app = await startApp();
    const px = await startProxy(app.port, { filters: [{ name: 'conf', service: '*', rootId: 'conf', configuration: '', failurePolicy: 'closed', wasm: await hostFixture('conformance') }] });
    try {
      const req = 'POST /t HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-sum: 42\r\n\r\n';
      const up = await raw(px.port, [req], { until: (t) => t.includes('}') });
      expect(up.text).toMatch(/^HTTP\/1.1 200 /);
      const seen = app.seen.at(-1)!;
      expect(seen.trailers['x-sum']).toBe('42');
      expect(seen.trailers['x-trailer-seen']).toBe('1');
      const down = await raw(px.port, ['GET /trailers HTTP/1.1\r\nHost: app\r\n\r\n'], { until: (t) => /x-response-trailer-seen: \d+\r\n\r\n$/.test(t) });
      expect(down.text).toMatch(/0\r\n(?:[^\r]+\r\n)*x-checksum: abc123\r\n/);
      expect(down.text).toMatch(/x-response-trailer-seen: 1\r\n\r\n$/);
    } finally {
      await px.stop();
      await app.close();
    }
  });
});
