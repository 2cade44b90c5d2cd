// Observability of a sidecar pair over real mTLS on 127.0.0.1: W3C trace
// context carried through both hops with a new span per hop, trace ids in
// both access logs, the deciding rule on a local response, and Istio's TCP
// connection metrics moving with real connections and bytes.
import http from 'node:http';
import https from 'node:https';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildFixture } from '../runtime/build-fixtures.ts';
import { makeTestBundle, request } from '../runtime/helpers.ts';
import { startMesh, type TestMesh } from '../runtime/mesh.ts';
import { issueLeaf } from '../runtime/pki.ts';
import { parseTraceparent } from '../../runtime/trace.ts';

let mesh: TestMesh;

beforeAll(async () => {
  const probe = await buildFixture('probe');
  mesh = await startMesh(makeTestBundle([{ name: 'probe', wasm: probe }]));
});

afterAll(async () => {
  await mesh?.stop();
});

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const CLIENT_SPAN = '00f067aa0ba902b7';
const VALID = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;

function outboundPort(): number {
  return mesh.web.addresses().outbound.port;
}

/** The traceparent the catalog app received for a request sent with `headers`. */
async function appTraceparent(headers: Record<string, string>): Promise<{ value: string; tracestate: string | undefined }> {
  const res = await request(outboundPort(), { headers: { host: 'catalog', ...headers } });
  expect(res.status).toBe(200);
  const seen = JSON.parse(res.body) as { headers: Record<string, string | undefined> };
  return { value: seen.headers.traceparent ?? '', tracestate: seen.headers.tracestate };
}

/** The access-log line of the request whose span this sidecar created. */
function logLine(entries: Array<Record<string, unknown>>, spanId: string): Record<string, unknown> | undefined {
  return entries.find((e) => e.span_id === spanId);
}

async function waitFor<T>(get: () => T | undefined, ms = 2_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = get();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('W3C trace context through a sidecar pair', () => {
  it('keeps the trace id and flags, adds a new span per hop, keeps tracestate, and logs the ids on both sides', async () => {
    const sent = `00-${TRACE_ID}-${CLIENT_SPAN}-01`;
    const got = await appTraceparent({ traceparent: sent, tracestate: 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7' });
    const parsed = parseTraceparent(got.value);
    expect(parsed).toBeDefined();
    expect(parsed!.traceId).toBe(TRACE_ID);
    expect(parsed!.flags).toBe('01');
    expect(parsed!.parentId).not.toBe(CLIENT_SPAN);
    expect(got.tracestate).toBe('congo=t61rcWkgMzE,rojo=00f067aa0ba902b7');

    // The catalog (inbound) sidecar's span is the app's parent; its parent is the web (outbound) sidecar's span.
    const inbound = await waitFor(() => logLine(mesh.catalogLogs.entries, parsed!.parentId));
    expect(inbound.direction).toBe('inbound');
    expect(inbound.trace_id).toBe(TRACE_ID);
    const webSpan = inbound.parent_span_id as string;
    expect(webSpan).toMatch(/^[0-9a-f]{16}$/);
    expect(webSpan).not.toBe(CLIENT_SPAN);
    expect(webSpan).not.toBe(parsed!.parentId);
    const outbound = await waitFor(() => logLine(mesh.webLogs.entries, webSpan));
    expect(outbound.direction).toBe('outbound');
    expect(outbound.trace_id).toBe(TRACE_ID);
    expect(outbound.parent_span_id).toBe(CLIENT_SPAN);
  });

  it('keeps unsampled flags as they are', async () => {
    const got = await appTraceparent({ traceparent: `00-${TRACE_ID}-${CLIENT_SPAN}-00` });
    expect(got.value).toMatch(new RegExp(`^00-${TRACE_ID}-[0-9a-f]{16}-00$`));
  });

  it('gives each request its own span ids', async () => {
    const a = parseTraceparent((await appTraceparent({ traceparent: `00-${TRACE_ID}-${CLIENT_SPAN}-01` })).value)!;
    const b = parseTraceparent((await appTraceparent({ traceparent: `00-${TRACE_ID}-${CLIENT_SPAN}-01` })).value)!;
    expect(a.traceId).toBe(b.traceId);
    expect(a.parentId).not.toBe(b.parentId);
  });

  it('starts a new valid trace for a request without one, the same trace on both hops', async () => {
    const got = await appTraceparent({});
    expect(got.value).toMatch(VALID);
    const parsed = parseTraceparent(got.value)!;
    expect(parsed.traceId).not.toBe('0'.repeat(32));
    const inbound = await waitFor(() => logLine(mesh.catalogLogs.entries, parsed.parentId));
    expect(inbound.trace_id).toBe(parsed.traceId);
    const outbound = await waitFor(() => logLine(mesh.webLogs.entries, inbound.parent_span_id as string));
    expect(outbound.trace_id).toBe(parsed.traceId);
    expect(outbound.parent_span_id).toBeUndefined();
    // Two requests without a trace are two traces.
    const again = parseTraceparent((await appTraceparent({})).value)!;
    expect(again.traceId).not.toBe(parsed.traceId);
  });

  it('replaces an invalid traceparent with a new trace and drops its tracestate', async () => {
    for (const bad of [
      '00-abc-def-01',
      `00-${'0'.repeat(32)}-${CLIENT_SPAN}-01`,
      `00-${TRACE_ID}-${'0'.repeat(16)}-01`,
      `ff-${TRACE_ID}-${CLIENT_SPAN}-01`,
      `00-${TRACE_ID.toUpperCase()}-${CLIENT_SPAN}-01`,
      `00-${TRACE_ID}-${CLIENT_SPAN}-01-extra`,
    ]) {
      const got = await appTraceparent({ traceparent: bad, tracestate: 'congo=t61rcWkgMzE' });
      expect(got.value, bad).toMatch(VALID);
      expect(parseTraceparent(got.value)!.traceId, bad).not.toBe(TRACE_ID);
      expect(got.tracestate, bad).toBeUndefined();
    }
  });

  it('accepts a later version, continuing its trace as version 00', async () => {
    const got = await appTraceparent({ traceparent: `cc-${TRACE_ID}-${CLIENT_SPAN}-01-what-the-future-holds` });
    expect(got.value).toMatch(new RegExp(`^00-${TRACE_ID}-[0-9a-f]{16}-01$`));
  });

  it('logs the deciding rule and the trace of a request a filter answered', async () => {
    const res = await request(outboundPort(), { headers: { host: 'catalog', 'x-test-action': 'local', traceparent: `00-${TRACE_ID}-${CLIENT_SPAN}-01` } });
    expect(res.status).toBe(403);
    // The web sidecar's filter answered: the request never left it.
    const line = await waitFor(() => mesh.webLogs.entries.find((e) => e.rule === 'probe.deny' && e.parent_span_id === CLIENT_SPAN));
    expect(line.status).toBe(403);
    expect(line.trace_id).toBe(TRACE_ID);
    expect(line.span_id).toMatch(/^[0-9a-f]{16}$/);
  });
});

/** Sum of the samples of one metric in Prometheus text whose labels contain every given pair. */
function sample(text: string, name: string, labels: Record<string, string>): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{')) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

async function metricsOf(admin: number): Promise<string> {
  return (await request(admin, { path: '/metrics', agent: false })).body;
}

describe('TCP metrics with Istio names', () => {
  it('count connections opened and closed and their bytes on the outbound listener', async () => {
    const webAdmin = mesh.web.addresses().admin.port;
    const outLabels = { reporter: 'source', source_workload: 'web', destination_service: 'unknown' };
    const before = await metricsOf(webAdmin);

    // Three fresh app connections, each with one request carrying a 10 000-byte body.
    const body = 'x'.repeat(10_000);
    let responseBytes = 0;
    for (let i = 0; i < 3; i++) {
      const agent = new http.Agent({ keepAlive: false });
      const res = await request(outboundPort(), { method: 'POST', body, headers: { host: 'catalog', 'content-type': 'text/plain' }, agent });
      expect(res.status).toBe(200);
      responseBytes += Buffer.byteLength(res.body);
      agent.destroy();
    }
    // Closing is asynchronous: wait until the sidecar saw all three close.
    let after = '';
    const until = Date.now() + 3_000;
    for (;;) {
      after = await metricsOf(webAdmin);
      const closed = sample(after, 'istio_tcp_connections_closed_total', outLabels) - sample(before, 'istio_tcp_connections_closed_total', outLabels);
      if (closed >= 3 || Date.now() > until) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    const delta = (name: string, labels: Record<string, string>, a: string, b: string): number => sample(a, name, labels) - sample(b, name, labels);
    expect(delta('istio_tcp_connections_opened_total', outLabels, after, before)).toBe(3);
    expect(delta('istio_tcp_connections_closed_total', outLabels, after, before)).toBe(3);
    // Received: at least the three bodies; sent: at least the three response bodies (heads come on top).
    const received = delta('istio_tcp_received_bytes_total', outLabels, after, before);
    expect(received).toBeGreaterThanOrEqual(30_000);
    expect(received).toBeLessThan(30_000 + 3 * 2_000);
    const sent = delta('istio_tcp_sent_bytes_total', outLabels, after, before);
    expect(sent).toBeGreaterThan(responseBytes);
    expect(sent).toBeLessThan(responseBytes + 3 * 2_000);
  });

  it('label inbound connections with the peer workload from its certificate and count plaintext bytes', async () => {
    // A client of its own identity, so the pooled connections of the web sidecar do not blur the counts.
    const client = await issueLeaf(mesh.ca, 'tcp-probe');
    const catalogAdmin = mesh.catalog.addresses().admin.port;
    const labels = { reporter: 'destination', source_workload: 'tcp-probe', destination_service: 'catalog' };
    expect(sample(await metricsOf(catalogAdmin), 'istio_tcp_connections_opened_total', labels)).toBe(0);
    const body = 'y'.repeat(5_000);
    for (let i = 0; i < 2; i++) {
      const status = await new Promise<number>((resolve, reject) => {
        const req = https.request(
          {
            host: '127.0.0.1',
            port: mesh.catalog.addresses().inbound.port,
            method: 'POST',
            path: '/',
            headers: { host: 'catalog', 'content-length': String(body.length) },
            cert: client.certPem,
            key: client.keyPem,
            ca: mesh.ca.certPem,
            checkServerIdentity: () => undefined,
            agent: false,
          },
          (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
          },
        );
        req.on('error', reject);
        req.end(body);
      });
      expect(status).toBe(200);
    }
    let text = '';
    const until = Date.now() + 3_000;
    do {
      text = await metricsOf(catalogAdmin);
      if (sample(text, 'istio_tcp_connections_closed_total', labels) >= 2) break;
      await new Promise((r) => setTimeout(r, 20));
    } while (Date.now() < until);
    expect(sample(text, 'istio_tcp_connections_opened_total', labels)).toBe(2);
    expect(sample(text, 'istio_tcp_connections_closed_total', labels)).toBe(2);
    // Plaintext HTTP bytes, not TLS records: the bodies plus two small heads each way.
    const received = sample(text, 'istio_tcp_received_bytes_total', labels);
    expect(received).toBeGreaterThanOrEqual(10_000);
    expect(received).toBeLessThan(10_000 + 2 * 1_000);
    expect(sample(text, 'istio_tcp_sent_bytes_total', labels)).toBeGreaterThan(10_000);
  });
});
