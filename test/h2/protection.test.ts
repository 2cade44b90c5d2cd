// Hostile HTTP/2 clients (node:http2) against the outbound listener of a
// sidecar pair, each beside a well-behaved client that must not notice:
// rapid reset (CVE-2023-44487) ends in GOAWAY ENHANCE_YOUR_CALM, streams
// beyond SETTINGS_MAX_CONCURRENT_STREAMS are refused, an oversized header
// list gets 431; every refusal is logged with its reason and counted in
// meshc_http2_refused_total.
import http2 from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from '../runtime/helpers.ts';
import { startH2App, startPair, type H2App, type H2Mesh } from './support.ts';

const { NGHTTP2_CANCEL, NGHTTP2_ENHANCE_YOUR_CALM, NGHTTP2_REFUSED_STREAM } = http2.constants;

let app: H2App;
let mesh: H2Mesh;
const MAX_STREAMS = 8;
const MAX_RESETS = 40;

beforeAll(async () => {
  app = await startH2App();
  mesh = await startPair(app.port, { sidecar: { http2: { maxConcurrentStreams: MAX_STREAMS, maxResetsPerInterval: MAX_RESETS, resetIntervalMs: 60_000 } } });
});

afterAll(async () => {
  await mesh?.stop();
  await app?.close();
});

function connect(options: http2.ClientSessionOptions = {}): http2.ClientHttp2Session {
  const s = http2.connect(`http://127.0.0.1:${mesh.outbound}`, options);
  s.on('error', () => {});
  return s;
}

/** One GET on a session: status and body, or the stream's reset code. */
function get(session: http2.ClientHttp2Session, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string; rst: number }> {
  return new Promise((resolve) => {
    const s = session.request({ ':path': path, ':authority': 'catalog', ...headers });
    let status = 0;
    let body = '';
    s.on('response', (h) => (status = Number(h[':status'])));
    s.on('data', (c: Buffer) => (body += c.toString()));
    s.on('error', () => {});
    s.on('close', () => resolve({ status, body, rst: s.rstCode ?? 0 }));
    s.end();
  });
}

async function refusedMetric(reason: string): Promise<number> {
  const text = (await request(mesh.web.addresses().admin.port, { path: '/metrics' })).body;
  const m = new RegExp(`meshc_http2_refused_total\\{listener="outbound",reason="${reason}"\\} (\\d+)`).exec(text);
  return m ? Number(m[1]) : 0;
}

async function until(check: () => boolean | Promise<boolean>, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('HTTP/2 protection', () => {
  it('rapid reset: GOAWAY ENHANCE_YOUR_CALM above the reset limit; another connection is unharmed', async () => {
    const good = connect();
    expect((await get(good, '/before')).status).toBe(200);
    const bad = connect();
    const goaway = new Promise<number>((resolve) => bad.once('goaway', (code: number) => resolve(code)));
    await new Promise<void>((r) => bad.once('remoteSettings', () => r()));
    // Open and cancel streams at once, as the attack does (bounded: the limit plus a margin).
    for (let i = 0; i < MAX_RESETS * 3 && !bad.closed && !bad.destroyed; i++) {
      const s = bad.request({ ':path': `/reset/${i}`, ':authority': 'catalog' });
      s.on('error', () => {});
      s.close(NGHTTP2_CANCEL);
      if (i % 10 === 9) await new Promise((r) => setImmediate(r));
    }
    expect(await goaway).toBe(NGHTTP2_ENHANCE_YOUR_CALM);
    await until(() => bad.destroyed || bad.closed);
    // The well-behaved connection keeps working.
    const after = await get(good, '/after');
    expect(after.status).toBe(200);
    expect(JSON.parse(after.body)).toMatchObject({ path: '/after' });
    good.close();
    expect(mesh.webLogs.entries.some((e) => e.reason === 'h2-rapid-reset' && e.protocol === 'HTTP/2')).toBe(true);
    expect(await refusedMetric('h2-rapid-reset')).toBe(1);
  });

  it('streams beyond SETTINGS_MAX_CONCURRENT_STREAMS are refused; a client that honours the setting is served in full', async () => {
    // Hostile: opens 3x the limit before the server's SETTINGS can arrive.
    const bad = connect({ peerMaxConcurrentStreams: 1000 });
    const results = await Promise.all(Array.from({ length: MAX_STREAMS * 3 }, (_, i) => get(bad, `/flood/${i}`)));
    const served = results.filter((r) => r.status === 200).length;
    const refused = results.filter((r) => r.rst === NGHTTP2_REFUSED_STREAM).length;
    expect(served).toBeLessThanOrEqual(MAX_STREAMS);
    expect(served).toBeGreaterThan(0);
    expect(served + refused).toBe(MAX_STREAMS * 3);
    await new Promise<void>((r) => bad.close(() => r()));
    // Counted from the stream ids nghttp2 processed, read when the client's GOAWAY arrives: a lower bound.
    await until(async () => (await refusedMetric('h2-stream-refused')) > 0);
    expect(await refusedMetric('h2-stream-refused')).toBeLessThanOrEqual(refused);
    expect(mesh.webLogs.entries.some((e) => e.reason === 'h2-stream-refused' && e.protocol === 'HTTP/2')).toBe(true);
    // Well-behaved: waits for the server's SETTINGS; node:http2 then queues streams over the limit itself.
    const good = connect();
    await new Promise<void>((r) => good.once('remoteSettings', () => r()));
    expect(good.remoteSettings.maxConcurrentStreams).toBe(MAX_STREAMS);
    const ok = await Promise.all(Array.from({ length: MAX_STREAMS * 3 }, (_, i) => get(good, `/polite/${i}`)));
    expect(ok.every((r) => r.status === 200)).toBe(true);
    good.close();
  });

  it('a stream whose client stops reading is reset (CANCEL) after the idle timeout; the connection serves on', async () => {
    const idle = await startPair(app.port, { sidecar: { http2: { idleTimeoutMs: 600 } } });
    try {
      const s = http2.connect(`http://127.0.0.1:${idle.outbound}`);
      s.on('error', () => {});
      const path = '/big/268435456';
      const started = performance.now();
      const stalled = new Promise<{ rst: number; ms: number }>((resolve) => {
        const st = s.request({ ':path': path, ':authority': 'catalog' });
        st.on('error', () => {});
        // Takes nothing: the window closes and the sidecar's writes wait.
        st.pause();
        st.on('close', () => resolve({ rst: st.rstCode ?? 0, ms: performance.now() - started }));
        st.end();
      });
      // Another stream on the same connection meanwhile.
      const other = await get(s, '/normal');
      expect(other.status).toBe(200);
      const r = await stalled;
      expect(r.rst).toBe(NGHTTP2_CANCEL);
      expect(r.ms).toBeGreaterThanOrEqual(600);
      expect(r.ms).toBeLessThan(5_000);
      await until(() => idle.webLogs.entries.some((e) => e.path === path));
      expect(idle.webLogs.entries.find((e) => e.path === path)).toMatchObject({ protocol: 'HTTP/2', status: 200, reason: 'stream-idle-timeout' });
      expect((await get(s, '/after')).status).toBe(200);
      s.close();
    } finally {
      await idle.stop();
    }
  });

  it('a header list over the listener limit gets 431 headers-too-large on that stream only', async () => {
    const s = connect();
    const big: Record<string, string> = {};
    for (let i = 0; i < 150; i++) big[`x-h${i}`] = 'v';
    const res = await get(s, '/big-headers', big);
    expect(res.status).toBe(431);
    expect(res.body).toContain('headers-too-large');
    // The same connection serves the next, normal request.
    expect((await get(s, '/normal')).status).toBe(200);
    s.close();
    expect(mesh.webLogs.entries.some((e) => e.reason === 'headers-too-large' && e.protocol === 'HTTP/2')).toBe(true);
    expect(await refusedMetric('headers-too-large')).toBe(1);
  });
});
