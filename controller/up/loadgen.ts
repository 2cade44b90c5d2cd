// The load generator of `meshc up`: a steady, bounded stream of requests sent
// through the loadgen sidecar's outbound listener, a mix of normal, beta-user,
// chaos and forbidden requests so every policy in examples/ shows up.
//
// In:  the outbound listener to send through, requests per second per path, a concurrency cap.
// Out: requests on the wire; per-path counts of outcomes (status classes, errors).
import http from 'node:http';
import type { HostPort } from '../topology.ts';

export interface LoadPath {
  name: string;
  host: string;
  path: string;
  headers?: Record<string, string>;
}

/** The default mix, matching the policies in examples/. */
export const DEFAULT_LOAD: LoadPath[] = [
  { name: 'items', host: 'frontend', path: '/items/42' },
  { name: 'items (beta user)', host: 'frontend', path: '/items/7', headers: { 'x-user-group': 'beta' } },
  { name: 'slow items', host: 'frontend', path: '/items/slow/3' },
  { name: 'admin (denied)', host: 'frontend', path: '/admin/stats' },
  { name: 'ratings direct (denied)', host: 'ratings', path: '/ratings/1' },
];

export interface PathStats {
  sent: number;
  '2xx': number;
  '4xx': number;
  '5xx': number;
  errors: number;
  lastError?: string;
}

export interface LoadGenerator {
  stats(): Record<string, PathStats>;
  stop(): Promise<void>;
}

export function startLoadGenerator(options: { target: HostPort; rps: number; paths?: LoadPath[]; maxInFlight?: number }): LoadGenerator {
  const paths = options.paths ?? DEFAULT_LOAD;
  const maxInFlight = options.maxInFlight ?? 32;
  const agent = new http.Agent({ keepAlive: true, maxSockets: maxInFlight });
  const stats: Record<string, PathStats> = {};
  for (const p of paths) stats[p.name] = { sent: 0, '2xx': 0, '4xx': 0, '5xx': 0, errors: 0 };
  let inFlight = 0;
  let stopped = false;
  const drained: (() => void)[] = [];

  const fire = (p: LoadPath): void => {
    // Bounded: when the mesh is slower than the offered load, skip rather than pile up.
    if (stopped || inFlight >= maxInFlight) return;
    const s = stats[p.name] as PathStats;
    s.sent++;
    inFlight++;
    const done = (outcome: '2xx' | '4xx' | '5xx' | 'errors', error?: string): void => {
      s[outcome]++;
      if (error) s.lastError = error;
      inFlight--;
      if (inFlight === 0) for (const d of drained.splice(0)) d();
    };
    const req = http.request({ host: options.target.host, port: options.target.port, path: p.path, headers: { host: p.host, ...p.headers }, agent, timeout: 15_000 }, (res) => {
      res.resume();
      res.on('end', () => {
        const code = res.statusCode ?? 0;
        done(code >= 500 ? '5xx' : code >= 400 ? '4xx' : '2xx');
      });
      res.on('error', (err) => done('errors', err.message));
    });
    req.on('timeout', () => req.destroy(new Error('timed out after 15 s')));
    req.on('error', (err) => done('errors', err.message));
    req.end();
  };

  const intervalMs = Math.max(10, Math.round(1000 / Math.max(0.1, options.rps)));
  const timers = paths.map((p, i) => {
    // Stagger the paths so they do not all fire on the same tick.
    const t = setInterval(() => fire(p), intervalMs);
    const first = setTimeout(() => fire(p), Math.round((intervalMs * i) / paths.length));
    return [t, first] as const;
  });

  return {
    stats: () => structuredClone(stats),
    async stop() {
      stopped = true;
      for (const [t, first] of timers) {
        clearInterval(t);
        clearTimeout(first);
      }
      if (inFlight > 0) await Promise.race([new Promise<void>((r) => drained.push(r)), new Promise((r) => setTimeout(r, 3_000))]);
      agent.destroy();
    },
  };
}
