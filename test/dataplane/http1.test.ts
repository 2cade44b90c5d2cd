// The HTTP/1.1 codec through a real standalone proxy in front of a real
// node:http app: keep-alive, pipelining, chunked bodies and trailers both
// ways, 100-continue, HEAD/204/304, WebSocket upgrades, hop-by-hop removal
// (curl, ws and raw sockets as clients), then the hostile inputs a strict
// codec must refuse — each with its status, `x-mesh-reason`, a closed
// connection, a log line, and nothing reaching the app.
import { execFile } from 'node:child_process';
import { randomBytes, createHash } from 'node:crypto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { buildFixture } from '../runtime/build-fixtures.ts';
import { raw, startApp, startProxy, statuses, type TestApp, type TestProxy } from './support.ts';

const run = promisify(execFile);
let app: TestApp;
let px: TestProxy;

beforeAll(async () => {
  app = await startApp();
  px = await startProxy(app.port, { http: { headersTimeoutMs: 400, idleTimeoutMs: 800, maxConnections: 1000 } });
});

afterAll(async () => {
  await px?.stop();
  await app?.close();
});

const GET = (path: string, extra = ''): string => `GET ${path} HTTP/1.1\r\nHost: app\r\n${extra}\r\n`;

describe('HTTP/1.1 codec: correct traffic', () => {
  it('keeps connections alive both ways and answers pipelined requests in order', async () => {
    const before = app.connections;
    const r = await raw(px.port, [GET('/one') + GET('/two') + GET('/three')], { until: (t) => (t.match(/"url":"\/[a-z]+"/g) ?? []).length === 3 });
    expect(statuses(r.text)).toEqual([200, 200, 200]);
    expect([...r.text.matchAll(/"url":"(\/[a-z]+)"/g)].map((m) => m[1])).toEqual(['/one', '/two', '/three']);
    expect(r.closed).toBe(false);
    // Three requests, at most one new upstream connection (the pool reuses it).
    expect(app.connections - before).toBeLessThanOrEqual(1);
  });

  it('streams a chunked request body with trailers to the app, and a chunked response with trailers back', async () => {
    const req = 'POST /upload HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n' + '5\r\nhello\r\n' + '6;ext=1\r\n world\r\n' + '0\r\nx-sum: 42\r\n\r\n';
    const r = await raw(px.port, [req.slice(0, 70), req.slice(70)], { gapMs: 30, until: (t) => t.includes('}') });
    expect(statuses(r.text)).toEqual([200]);
    const seen = app.seen.at(-1)!;
    expect(seen.bodyLength).toBe(11);
    expect(seen.bodySha).toBe(createHash('sha256').update('hello world').digest('hex'));
    expect(seen.trailers['x-sum']).toBe('42');

    const t = await raw(px.port, [GET('/trailers')], { until: (x) => x.endsWith('\r\n\r\n') && x.includes('x-checksum') });
    expect(t.text).toMatch(/transfer-encoding: chunked\r\n/);
    expect(t.text).toContain('part one,');
    expect(t.text).toMatch(/0\r\nx-checksum: abc123\r\n\r\n$/);
  });

  it('carries a large upload and a large download through curl without corrupting a byte', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'meshc-h1-'));
    const file = join(dir, 'blob');
    const blob = randomBytes(3 * 1024 * 1024 + 17);
    await writeFile(file, blob);
    // Expect: 100-continue is what curl sends for a large body; the proxy answers 100 itself.
    const { stdout, stderr } = await run('curl', ['-sv', '--data-binary', `@${file}`, '-H', 'content-type: application/octet-stream', `http://127.0.0.1:${px.port}/upload`], { maxBuffer: 1 << 24 });
    expect(stderr).toMatch(/< HTTP\/1.1 100 Continue/);
    const seen = JSON.parse(stdout) as { bodyLength: number; bodySha: string; headers: Record<string, string> };
    expect(seen.bodyLength).toBe(blob.length);
    expect(seen.bodySha).toBe(createHash('sha256').update(blob).digest('hex'));
    expect(seen.headers.expect).toBeUndefined();
    // Chunked upload from curl (unknown length).
    const chunked = await run('curl', ['-s', '-H', 'transfer-encoding: chunked', '--data-binary', `@${file}`, `http://127.0.0.1:${px.port}/up2`], { maxBuffer: 1 << 24 });
    expect((JSON.parse(chunked.stdout) as { bodySha: string }).bodySha).toBe(createHash('sha256').update(blob).digest('hex'));
    const down = await run('curl', ['-s', '-o', join(dir, 'down'), '-w', '%{size_download} %{http_code}', `http://127.0.0.1:${px.port}/big/5000000`]);
    expect(down.stdout).toBe('5000000 200');
  });

  it('sends no body for HEAD, 204 and 304, and the connection stays usable', async () => {
    const r = await raw(px.port, [`HEAD /x HTTP/1.1\r\nHost: app\r\n\r\n`, GET('/status/204'), GET('/status/304'), GET('/after')], {
      gapMs: 50,
      until: (t) => t.includes('"url":"/after"'),
    });
    expect(statuses(r.text)).toEqual([200, 204, 304, 200]);
    const [head] = r.text.split('HTTP/1.1 204');
    expect(head).toMatch(/content-length: \d+\r\n/);
    expect(head!.endsWith('\r\n\r\n')).toBe(true);
    expect(r.text).not.toMatch(/HTTP\/1.1 204[^]*?transfer-encoding/);
  });

  it('removes hop-by-hop fields, including those Connection names', async () => {
    const r = await raw(px.port, [GET('/hop', 'Connection: keep-alive, x-private\r\nX-Private: secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nX-Kept: 1\r\n')], { until: (t) => t.includes('}') });
    const seen = JSON.parse(r.text.slice(r.text.indexOf('{'))) as { headers: Record<string, string> };
    expect(seen.headers['x-kept']).toBe('1');
    for (const h of ['x-private', 'keep-alive', 'te', 'proxy-connection']) expect(seen.headers[h]).toBeUndefined();
    expect(r.text).not.toMatch(/\r\nkeep-alive:/i);
  });

  it('removes hop-by-hop fields from responses, whether or not a filter sees the response head', async () => {
    const check = async (port: number): Promise<string> => {
      const r = await raw(port, [GET('/hop-response')], { until: (t) => t.endsWith('ok') });
      const head = r.text.slice(0, r.text.indexOf('\r\n\r\n')).toLowerCase();
      expect(statuses(r.text)).toEqual([200]);
      expect(head).toContain('\r\nx-app-kept: 1');
      expect(head).not.toContain('x-app-private');
      expect(head).not.toContain('keep-alive: timeout');
      return head;
    };
    // No filter: the fields are forwarded as parsed, with no header map built.
    await check(px.port);
    // A filter with a response-headers callback: the fields pass through its header map.
    const filtered = await startProxy(app.port, { filters: [{ name: 'p', service: '*', rootId: 'p', configuration: 'p', failurePolicy: 'closed', wasm: await buildFixture('probe') }] });
    try {
      expect(await check(filtered.port)).toContain('\r\nx-chain: p');
    } finally {
      await filtered.stop();
    }
  });

  it('forwards a response head as received less its hop-by-hop lines, on a kept-alive and a closing connection', async () => {
    const r = await raw(px.port, [GET('/hop-plain') + GET('/hop-plain')], { until: (t) => t.split('\r\n\r\nok').length === 3 });
    const heads = r.text.split('ok').slice(0, 2).map((t) => t.replace(/\r\ndate: [^\r]*/i, ''));
    const expected = 'HTTP/1.1 200 OK\r\nx-app-first: 1\r\nx-app-kept: 1\r\ncontent-length: 2\r\n\r\n';
    expect(heads.map((h) => h.toLowerCase())).toEqual([expected.toLowerCase(), expected.toLowerCase()]);
    expect(r.closed).toBe(false);
    const c = await raw(px.port, [GET('/hop-plain', 'Connection: close\r\n')]);
    expect(c.text.replace(/\r\ndate: [^\r]*/i, '').toLowerCase()).toBe('http/1.1 200 ok\r\nx-app-first: 1\r\nx-app-kept: 1\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok');
    expect(c.closed).toBe(true);
  });

  it('honours Connection: close and HTTP/1.0 without keep-alive', async () => {
    const c = await raw(px.port, [GET('/bye', 'Connection: close\r\n')]);
    expect(statuses(c.text)).toEqual([200]);
    expect(c.text).toMatch(/connection: close\r\n/);
    expect(c.closed).toBe(true);
    const old = await raw(px.port, ['GET /old HTTP/1.0\r\n\r\n']);
    expect(old.closed).toBe(true);
    expect(old.text).toMatch(/^HTTP\/1.1 200 /);
  });

  it('passes a WebSocket through as a byte stream after the 101', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${px.port}/ws`, { headers: { host: 'app' } });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const got: string[] = [];
    const all = new Promise<void>((resolve) =>
      ws.on('message', (m) => {
        got.push(String(m));
        if (got.length === 3) resolve();
      }),
    );
    ws.send('a');
    ws.send('b'.repeat(100_000));
    ws.send('c');
    await all;
    expect(got.map((g) => g.slice(0, 8))).toEqual(['echo: a', 'echo: bb', 'echo: c']);
    expect(got[1]!.length).toBe(100_006);
    ws.close();
    await new Promise((r) => ws.once('close', r));
  });
});

describe('HTTP/1.1 codec: hostile input', () => {
  const cases: Array<[string, string, number, string]> = [
    ['Content-Length with Transfer-Encoding (smuggling)', 'POST /s HTTP/1.1\r\nHost: app\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: app\r\n\r\n', 400, 'ambiguous-framing'],
    ['duplicate Content-Length', 'POST /s HTTP/1.1\r\nHost: app\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc', 400, 'ambiguous-framing'],
    ['conflicting Content-Length list', 'POST /s HTTP/1.1\r\nHost: app\r\nContent-Length: 3, 4\r\n\r\nabcd', 400, 'ambiguous-framing'],
    ['signed Content-Length', 'POST /s HTTP/1.1\r\nHost: app\r\nContent-Length: +3\r\n\r\nabc', 400, 'ambiguous-framing'],
    ['Transfer-Encoding other than chunked', 'POST /s HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n', 501, 'unsupported-transfer-coding'],
    ['obfuscated Transfer-Encoding', 'POST /s HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: xchunked\r\n\r\n', 501, 'unsupported-transfer-coding'],
    ['Transfer-Encoding in HTTP/1.0', 'POST /s HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 400, 'ambiguous-framing'],
    ['a chunk size that is not hex', 'POST /s HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n', 400, 'bad-chunk'],
    ['an oversized chunk size', 'POST /s HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nx\r\n', 400, 'bad-chunk'],
    ['chunk data without its CRLF', 'POST /s HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n', 400, 'bad-chunk'],
    ['a chunk-size line ended by bare LF', 'POST /s HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n', 400, 'bad-chunk'],
    ['obs-fold', 'GET / HTTP/1.1\r\nHost: app\r\nX-A: one\r\n two\r\n\r\n', 400, 'malformed-request'],
    ['bare LF inside the head', 'GET / HTTP/1.1\r\nHost: app\r\nX-A: a\nX-B: b\r\n\r\n', 400, 'malformed-request'],
    ['bare CR in a value', 'GET / HTTP/1.1\r\nHost: app\r\nX-A: a\rb\r\n\r\n', 400, 'malformed-request'],
    ['NUL in a value', 'GET / HTTP/1.1\r\nHost: app\r\nX-A: a\u0000b\r\n\r\n', 400, 'malformed-request'],
    ['whitespace before the colon', 'GET / HTTP/1.1\r\nHost : app\r\n\r\n', 400, 'malformed-request'],
    ['an invalid field name', 'GET / HTTP/1.1\r\nHost: app\r\nX@A: 1\r\n\r\n', 400, 'malformed-request'],
    ['an invalid method', 'GE(T / HTTP/1.1\r\nHost: app\r\n\r\n', 400, 'malformed-request'],
    ['two spaces in the request line', 'GET  / HTTP/1.1\r\nHost: app\r\n\r\n', 400, 'malformed-request'],
    ['a request target with a control character', 'GET /a\u0001b HTTP/1.1\r\nHost: app\r\n\r\n', 400, 'malformed-request'],
    ['HTTP/1.1 without Host', 'GET / HTTP/1.1\r\nX-A: 1\r\n\r\n', 400, 'malformed-request'],
    ['two Host fields', 'GET / HTTP/1.1\r\nHost: app\r\nHost: evil\r\n\r\n', 400, 'malformed-request'],
    ['an unsupported version', 'GET / HTTP/2.0\r\nHost: app\r\n\r\n', 505, 'version-not-supported'],
    ['bare LF line endings only', 'GET / HTTP/1.1\nHost: app\n\n', 400, 'malformed-request'],
    ['an unsupported expectation', 'POST / HTTP/1.1\r\nHost: app\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nx', 417, 'unsupported-expectation'],
    ['a header section over the limit', `GET / HTTP/1.1\r\nHost: app\r\nX-Big: ${'a'.repeat(40_000)}\r\n\r\n`, 431, 'headers-too-large'],
    ['more fields than allowed', `GET / HTTP/1.1\r\nHost: app\r\n${Array.from({ length: 120 }, (_, i) => `X-${i}: v`).join('\r\n')}\r\n\r\n`, 431, 'headers-too-large'],
    ['a request line over the limit', `GET /${'a'.repeat(9000)} HTTP/1.1\r\nHost: app\r\n\r\n`, 414, 'uri-too-long'],
  ];

  for (const [name, bytes, status, reason] of cases) {
    it(`refuses ${name}: ${status} ${reason}, closes, never reaches the app`, async () => {
      const before = app.seen.length;
      const r = await raw(px.port, [bytes]);
      expect(statuses(r.text)[0]).toBe(status);
      expect(r.text).toContain(`\r\nx-mesh-reason: ${reason}\r\n`);
      expect(r.text).toMatch(/\r\nconnection: close\r\n/);
      expect(r.closed).toBe(true);
      // Exactly one response: nothing smuggled behind the refused request was answered.
      expect(statuses(r.text)).toHaveLength(1);
      // The body-level refusals happen after the request was forwarded; none of them may complete there.
      expect(app.seen.slice(before).filter((s) => s.url === '/admin')).toHaveLength(0);
      if (!reason.includes('chunk')) expect(app.seen.length).toBe(before);
      expect(px.logs.some((e) => e.reason === reason && e.status === status)).toBe(true);
    });
  }

  it('answers 408 request-timeout to a slow head (slowloris) and closes', async () => {
    const started = performance.now();
    const r = await raw(px.port, ['GET / HTTP/1.1\r\n', 'Host: app\r\n', 'X-Slow: 1\r\n'], { gapMs: 150, waitMs: 3_000 });
    expect(statuses(r.text)).toEqual([408]);
    expect(r.text).toContain('x-mesh-reason: request-timeout');
    expect(r.closed).toBe(true);
    expect(performance.now() - started).toBeGreaterThanOrEqual(400);
  });

  it('closes the connection of a client that stops reading a response after the idle timeout (stream-idle-timeout), serving others meanwhile', async () => {
    const net = await import('node:net');
    const c = net.connect(px.port, '127.0.0.1');
    c.on('error', () => {});
    await new Promise((r) => c.once('connect', r));
    // Reads nothing: the response fills the socket buffers and then the proxy's.
    c.pause();
    const started = performance.now();
    c.write(GET('/big/268435456'));
    const other = await raw(px.port, [GET('/meanwhile', 'Connection: close\r\n')]);
    expect(statuses(other.text)).toEqual([200]);
    const logged = () => px.logs.find((e) => e.path === '/big/268435456');
    while (!logged() && performance.now() - started < 8_000) await new Promise((r) => setTimeout(r, 20));
    const after = performance.now() - started;
    // The idle timeout is 800 ms; the sweep looks every 100 ms.
    expect(after).toBeGreaterThanOrEqual(800);
    expect(after).toBeLessThan(8_000);
    expect(logged()).toMatchObject({ status: 200, reason: 'stream-idle-timeout' });
    expect(logged()!.bytes_sent as number).toBeLessThan(268435456);
    // The proxy closed the connection: a client that reads again finds its end.
    const closed = new Promise<boolean>((r) => {
      c.once('close', () => r(true));
      setTimeout(() => r(false), 5_000).unref();
    });
    c.resume();
    expect(await closed).toBe(true);
  });

  it('closes a connection that stays idle past the idle timeout', async () => {
    const r = await raw(px.port, [GET('/idle')], { waitMs: 4_000 });
    expect(statuses(r.text)).toEqual([200]);
    expect(r.closed).toBe(true);
  });

  it('answers 503 too-many-connections beyond the connection limit', async () => {
    const small = await startProxy(app.port, { http: { maxConnections: 2 } });
    try {
      const net = await import('node:net');
      const held = [net.connect(small.port, '127.0.0.1'), net.connect(small.port, '127.0.0.1')];
      await Promise.all(held.map((s) => new Promise((r) => s.once('connect', r))));
      await new Promise((r) => setTimeout(r, 50));
      const r = await raw(small.port, [GET('/over')]);
      expect(statuses(r.text)).toEqual([503]);
      expect(r.text).toContain('x-mesh-reason: too-many-connections');
      for (const s of held) s.destroy();
      await new Promise((r) => setTimeout(r, 50));
      const again = await raw(small.port, [GET('/again', 'Connection: close\r\n')]);
      expect(statuses(again.text)).toEqual([200]);
    } finally {
      await small.stop();
    }
  });
});
