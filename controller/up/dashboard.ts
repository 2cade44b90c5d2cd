// The `meshc up` dashboard: one static page (dashboard.html) and the JSON it
// polls every second.
//
// In:  a listen address and a function that returns the current state.
// Out: GET / (the page), GET /api/state (JSON), a bound address.
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import type { HostPort } from '../topology.ts';

export interface Dashboard {
  url: string;
  close(): Promise<void>;
}

export async function startDashboard(listen: HostPort, state: () => unknown): Promise<Dashboard> {
  const page = await readFile(new URL('./dashboard.html', import.meta.url));
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && path === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': page.length });
      res.end(page);
    } else if (req.method === 'GET' && path === '/api/state') {
      const text = JSON.stringify(state());
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
      res.end(text);
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found: try / or /api/state\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${listen.host}:${port}/`,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
