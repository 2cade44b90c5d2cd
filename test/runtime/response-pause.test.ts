// The response path while response-header filters decide: body bytes that
// arrive meanwhile are queued (the upstream socket is paused only past 64 KiB)
// and all reach the client, in order, once the filter continues; a chain
// without response callbacks writes the head at once. Real sockets: an app
// streaming a large body, the standalone proxy with the probe filter, node http.
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StandaloneProxy } from '../../runtime/standalone.ts';
import { buildFixture } from './build-fixtures.ts';
import { collectLog, startStandalone } from './helpers.ts';

const CHUNK = 16 * 1024;
const CHUNKS = 256; // 4 MiB: far past the 64 KiB held before the upstream pauses

/** Deterministic body bytes, so the client can check every byte and their order. */
function chunk(i: number): Buffer {
  const b = Buffer.alloc(CHUNK);
  for (let j = 0; j < CHUNK; j += 4) b.writeUInt32BE((i * CHUNK + j) >>> 0, j);
  return b;
}

const expected = createHash('sha256');
for (let i = 0; i < CHUNKS; i++) expected.update(chunk(i));
const expectedDigest = expected.digest('hex');

let app: http.Server;
let appPort: number;
let proxy: StandaloneProxy;
let port: number;

beforeAll(async () => {
  // Streams the body in chunks as fast as the socket takes them (chunked, no length).
  app = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    let i = 0;
    const more = (): void => {
      while (i < CHUNKS) {
        if (!res.write(chunk(i++))) {
          res.once('drain', more);
          return;
        }
      }
      res.end();
    };
    more();
  });
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
  appPort = (app.address() as AddressInfo).port;
  const probe = await buildFixture('probe');
  const running = await startStandalone(appPort, [{ name: 'probe', service: '*', rootId: 'probe', configuration: 'probe', failurePolicy: 'closed', wasm: probe }], collectLog());
  proxy = running.proxy;
  port = running.port;
});

afterAll(async () => {
  await proxy.stop();
  app.closeAllConnections();
  await new Promise<void>((r) => app.close(() => r()));
});

function get(action: string | undefined): Promise<{ status: number; headers: http.IncomingHttpHeaders; digest: string; bytes: number }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { host: 'catalog' };
    if (action) headers['x-test-action'] = action;
    const req = http.request({ port, path: '/big', headers, agent: false }, (res) => {
      const h = createHash('sha256');
      let bytes = 0;
      res.on('data', (c: Buffer) => {
        h.update(c);
        bytes += c.length;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, digest: h.digest('hex'), bytes }));
      res.on('error', reject);
    });
    req.setTimeout(20_000, () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

describe('response body while the response-header filters decide', () => {
  it('queues the body (pausing the upstream past the bound) and delivers every byte in order after the filter continues', async () => {
    const res = await get('pause-response');
    expect(res.status).toBe(200);
    // The filter paused its response-header callback and a tick continued it.
    expect(res.headers['x-response-resumed-by']).toBe('probe');
    expect(res.headers['x-chain']).toBeUndefined();
    expect(res.bytes).toBe(CHUNK * CHUNKS);
    expect(res.digest).toBe(expectedDigest);
  });

  it('passes the same body unpaused, with the filter’s response headers', async () => {
    const res = await get(undefined);
    expect(res.status).toBe(200);
    expect(res.headers['x-chain']).toBe('probe');
    expect(res.headers['x-response-resumed-by']).toBeUndefined();
    expect(res.bytes).toBe(CHUNK * CHUNKS);
    expect(res.digest).toBe(expectedDigest);
  });

  it('serves several paused responses at once on one proxy', async () => {
    const all = await Promise.all([get('pause-response'), get('pause-response'), get(undefined), get('pause-response')]);
    for (const r of all) {
      expect(r.status).toBe(200);
      expect(r.digest).toBe(expectedDigest);
    }
  });
});
