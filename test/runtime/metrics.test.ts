// The per-request metrics are aggregated by runtime/metrics.ts itself (one
// series per label set) instead of prom-client's Counter and Histogram. This
// checks that /metrics text and /stats JSON come out exactly as prom-client's
// own Counter and Histogram render the same records, so Istio dashboards and
// the controller's collector see no difference.
import { Counter, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { SidecarMetrics, type RequestRecord } from '../../runtime/metrics.ts';

const LABELS = ['reporter', 'source_workload', 'destination_service', 'destination_version', 'response_code', 'response_flags', 'request_protocol', 'grpc_response_status'];
const BUCKETS = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000];

function reference(): { registry: Registry; record(r: RequestRecord): void } {
  const registry = new Registry();
  const requests = new Counter({ name: 'istio_requests_total', help: 'Requests handled by this sidecar', labelNames: LABELS, registers: [registry] });
  const duration = new Histogram({ name: 'istio_request_duration_milliseconds', help: 'Request duration in milliseconds', labelNames: LABELS, buckets: BUCKETS, registers: [registry] });
  return {
    registry,
    record(r) {
      const labels = {
        reporter: r.reporter,
        source_workload: r.sourceWorkload || 'unknown',
        destination_service: r.destinationService || 'unknown',
        destination_version: r.destinationVersion || 'unknown',
        response_code: String(r.status),
        response_flags: r.responseFlags,
        request_protocol: r.requestProtocol,
        grpc_response_status: r.grpcStatus,
      };
      requests.inc(labels);
      duration.observe(labels, r.durationMs);
    },
  };
}

/** Deterministic records over several label sets, durations on, between and beyond the bucket bounds. */
function records(): RequestRecord[] {
  const out: RequestRecord[] = [];
  const durations = [0, 0.4, 1, 1.5, 2, 7, 25, 26, 99.9, 250, 4000, 29_999, 30_000, 45_000];
  let i = 0;
  for (const reporter of ['source', 'destination'] as const) {
    for (const status of [200, 503, 404]) {
      for (const version of ['v1', '', 'v2']) {
        for (let n = 0; n < 5; n++) {
          out.push({
            reporter,
            sourceWorkload: n % 2 ? 'web' : '',
            destinationService: 'catalog',
            destinationVersion: version,
            status,
            responseFlags: status === 503 ? 'UO' : '-',
            durationMs: durations[i++ % durations.length]!,
            requestProtocol: n === 4 ? 'grpc' : 'http',
            grpcStatus: n === 4 ? (status === 200 ? '0' : '14') : '',
          });
        }
      }
    }
  }
  return out;
}

/** Only the request metrics' lines of an exposition text. */
function requestLines(text: string): string[] {
  return text.split('\n').filter((l) => /istio_request(s_total|_duration_milliseconds)/.test(l));
}

describe('request metrics', () => {
  it('render the same /metrics text as prom-client Counter and Histogram', async () => {
    const mine = new SidecarMetrics();
    const ref = reference();
    for (const r of records()) {
      mine.record(r);
      ref.record(r);
    }
    const got = requestLines(await mine.registry.metrics());
    const want = requestLines(await ref.registry.metrics());
    expect(want.length).toBeGreaterThan(100);
    expect(got).toEqual(want);
  });

  it('give the same /stats JSON as prom-client', async () => {
    const mine = new SidecarMetrics();
    const ref = reference();
    for (const r of records()) {
      mine.record(r);
      ref.record(r);
    }
    const pick = (all: Awaited<ReturnType<Registry['getMetricsAsJSON']>>) =>
      all.filter((m) => m.name.startsWith('istio_request')).map((m) => ({ name: m.name, help: m.help, type: m.type, values: m.values }));
    // JSON round trip: both sides as a client of /stats reads them.
    const got = JSON.parse(JSON.stringify(pick(await mine.registry.getMetricsAsJSON())));
    const want = JSON.parse(JSON.stringify(pick(await ref.registry.getMetricsAsJSON())));
    expect(got).toEqual(want);
  });

  it('reset with the registry', async () => {
    const mine = new SidecarMetrics();
    for (const r of records()) mine.record(r);
    mine.registry.resetMetrics();
    expect(requestLines(await mine.registry.metrics()).filter((l) => !l.startsWith('#'))).toEqual([]);
  });
});
