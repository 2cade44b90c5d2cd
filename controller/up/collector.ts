// Aggregates every sidecar's admin /stats (prom-client getMetricsAsJSON) into
// the dashboard's view: per service and version, requests/s and outcomes; the
// local responses with their rule ids; each sidecar's chain version.
//
// In:  the instances' admin addresses; polled once per `poll()`.
// Out: a MeshView snapshot (pure data, JSON-safe).
import type { MeshInstance } from '../topology.ts';

/** The sidecar's GET /stats: prom-client's getMetricsAsJSON() plus the chain in use. */
interface SidecarStats {
  instance: string;
  chainVersion: string | null;
  metrics: MetricJson[];
}

interface MetricJson {
  name: string;
  values: { labels: Record<string, string | number>; value: number }[];
}

export interface ServiceRow {
  service: string;
  version: string;
  rps: number;
  total: number;
  '2xx': number;
  '4xx': number;
  '5xx': number;
}

export interface LocalResponseRow {
  rule: string;
  instance: string;
  total: number;
  /** Increase over the last poll interval, per second. */
  rate: number;
}

export interface SidecarRow {
  instance: string;
  service: string;
  version: string;
  up: boolean;
  chainVersion: string | null;
  error?: string;
}

export interface MeshView {
  at: string;
  services: ServiceRow[];
  localResponses: LocalResponseRow[];
  sidecars: SidecarRow[];
}

export class StatsCollector {
  private readonly instances: MeshInstance[];
  private previous = new Map<string, number>();
  private previousAt = 0;
  private view: MeshView = { at: new Date(0).toISOString(), services: [], localResponses: [], sidecars: [] };

  constructor(instances: MeshInstance[]) {
    this.instances = instances;
  }

  current(): MeshView {
    return this.view;
  }

  async poll(): Promise<MeshView> {
    const now = Date.now();
    const dt = this.previousAt ? (now - this.previousAt) / 1000 : 0;
    const totals = new Map<string, number>();
    const services = new Map<string, ServiceRow>();
    const localResponses: LocalResponseRow[] = [];
    const sidecars = await Promise.all(
      this.instances.map(async (inst): Promise<SidecarRow> => {
        const row: SidecarRow = { instance: inst.id, service: inst.service, version: inst.version, up: false, chainVersion: null };
        let metrics: MetricJson[];
        try {
          const res = await fetch(`http://${inst.admin.host}:${inst.admin.port}/stats`, { signal: AbortSignal.timeout(900) });
          if (!res.ok) throw new Error(`/stats answered ${res.status}`);
          const stats = (await res.json()) as SidecarStats;
          if (!Array.isArray(stats.metrics)) throw new Error('/stats has no metrics array');
          metrics = stats.metrics;
          row.chainVersion = stats.chainVersion ?? null;
        } catch (err) {
          row.error = (err as Error).message;
          return row;
        }
        row.up = true;
        for (const m of metrics) {
          if (m.name === 'istio_requests_total') {
            for (const v of m.values) {
              // The server side's view: every request that reached the destination's sidecar.
              if (v.labels.reporter !== 'destination') continue;
              const service = String(v.labels.destination_service ?? inst.service);
              const version = String(v.labels.destination_version ?? inst.version);
              const key = `${service}\0${version}`;
              const r = services.get(key) ?? { service, version, rps: 0, total: 0, '2xx': 0, '4xx': 0, '5xx': 0 };
              const cls = String(v.labels.response_code ?? '0')[0];
              r.total += v.value;
              if (cls === '2') r['2xx'] += v.value;
              else if (cls === '4') r['4xx'] += v.value;
              else if (cls === '5') r['5xx'] += v.value;
              services.set(key, r);
              totals.set(`req\0${key}`, (totals.get(`req\0${key}`) ?? 0) + v.value);
            }
          } else if (m.name === 'meshc_local_responses_total') {
            for (const v of m.values) {
              const rule = String(v.labels.rule ?? '?');
              const key = `local\0${inst.id}\0${rule}`;
              totals.set(key, v.value);
              localResponses.push({ rule, instance: inst.id, total: v.value, rate: 0 });
            }
          }
        }
        return row;
      }),
    );
    const rate = (key: string): number => {
      if (!dt) return 0;
      const before = this.previous.get(key);
      const after = totals.get(key) ?? 0;
      return before === undefined ? 0 : Math.max(0, (after - before) / dt);
    };
    for (const [key, r] of services) r.rps = round(rate(`req\0${key}`));
    for (const l of localResponses) l.rate = round(rate(`local\0${l.instance}\0${l.rule}`));
    this.previous = totals;
    this.previousAt = now;
    this.view = {
      at: new Date(now).toISOString(),
      services: [...services.values()].sort((a, b) => `${a.service}${a.version}`.localeCompare(`${b.service}${b.version}`)),
      localResponses: localResponses.sort((a, b) => b.total - a.total),
      sidecars,
    };
    return this.view;
  }
}

function round(n: number): number {
  return Math.round(n * 10) / 10;
}
