// The demo services `meshc up` runs: tiny node:http apps that answer JSON naming
// their service and version, and call the next service through their own
// sidecar's outbound listener (`Host: <service>`), as a meshed app would.
//
// In:  DemoAppSpec (where to listen, which service to call next, where the sidecar's outbound is).
// Out: a listening app; downstream errors propagate as the same status code,
//      with the deciding rule (`x-mesh-rule`) passed back.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { RULE_HEADER } from '../../protocol/properties.ts';
import type { HostPort } from '../topology.ts';

export interface DemoAppSpec {
  service: string;
  version: string;
  listen: HostPort;
  /** The service this one calls for every request, and its own sidecar's outbound listener. */
  next?: { service: string; outbound: HostPort };
}

export interface DemoApp {
  address: HostPort;
  close(): Promise<void>;
}

/** Which downstream each demo service calls: frontend -> catalog -> ratings. */
export const DEMO_CALL_GRAPH: Record<string, string> = { frontend: 'catalog', catalog: 'ratings' };
/** Request headers an app passes on to the service it calls (the routing inputs of the demo policies). */
const PROPAGATED = ['x-user-group', 'x-chaos', 'x-request-id'];

export async function startDemoApp(spec: DemoAppSpec): Promise<DemoApp> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const server = http.createServer((req, res) => {
    handle(spec, agent, req, res).catch((err: Error) => reply(res, 502, { service: spec.service, version: spec.version, error: `demo app failure: ${err.message}` }));
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(spec.listen.port, spec.listen.host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  return {
    address: { host: spec.listen.host, port: addr.port },
    close: async () => {
      agent.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

async function handle(spec: DemoAppSpec, agent: http.Agent, req: IncomingMessage, res: ServerResponse): Promise<void> {
  req.resume();
  const self = { service: spec.service, version: spec.version, path: req.url ?? '/' };
  if (!spec.next) return reply(res, 200, { ...self, stars: starsFor(req.url ?? '/') });

  const headers: Record<string, string> = { host: spec.next.service };
  for (const h of PROPAGATED) {
    const v = req.headers[h];
    if (typeof v === 'string') headers[h] = v;
  }
  const down = await get(agent, spec.next.outbound, req.url ?? '/', headers);
  const rule = down.headers[RULE_HEADER];
  if (down.status >= 400) {
    return reply(res, down.status, { ...self, error: `${spec.next.service} answered ${down.status}`, upstream: down.body }, typeof rule === 'string' ? { [RULE_HEADER]: rule } : {});
  }
  reply(res, 200, { ...self, upstream: down.body });
}

function get(agent: http.Agent, to: HostPort, path: string, headers: Record<string, string>): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: unknown }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: to.host, port: to.port, path, method: 'GET', headers, agent, timeout: 10_000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => {
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {
          // not JSON (e.g. a sidecar's plain-text local response): keep the text
        }
        resolve({ status: res.statusCode ?? 502, headers: res.headers, body });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${to.host}:${to.port} within 10 s`)));
    req.on('error', reject);
    req.end();
  });
}

function reply(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/** A stable fake rating per path, so answers look like data. */
function starsFor(path: string): number {
  let h = 0;
  for (const c of path) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return 1 + (h % 5);
}
