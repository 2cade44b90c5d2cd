// Explicit-mode ports in topology.yaml (controller/topology.ts): per-instance
// `upstreams` and `httpProxy`, which `meshc up` passes to each sidecar as
// --upstream / --http-proxy; their errors carry codes and positions.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseTopology } from '../../controller/topology.ts';

const base = (instanceExtra: string): string => `services:
  web:
    instances:
      - { id: web-0, version: v1, app: 127.0.0.1:7000, inbound: 127.0.0.1:7001, outbound: 127.0.0.1:7002, admin: 127.0.0.1:7003${instanceExtra} }
  db:
    instances:
      - { id: db-0, version: v1, app: 127.0.0.1:7100, inbound: 127.0.0.1:7101, outbound: 127.0.0.1:7102, admin: 127.0.0.1:7103 }
`;

describe('explicit-mode ports in the topology', () => {
  it('reads upstreams and an HTTP proxy port per instance', () => {
    const r = parseTopology(base(', upstreams: [db=127.0.0.1:9001, "db:5432=127.0.0.1:9002/tcp"], httpProxy: 127.0.0.1:3128'), 'topology.yaml');
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.topology.instances['web-0']).toMatchObject({
      upstreams: [
        { service: 'db', port: 0, listen: { host: '127.0.0.1', port: 9001 } },
        { service: 'db', port: 5432, listen: { host: '127.0.0.1', port: 9002 }, protocol: 'tcp' },
      ],
      httpProxy: { host: '127.0.0.1', port: 3128 },
    });
    expect(r.topology.instances['db-0']!.upstreams).toBeUndefined();
  });

  it.each([
    [', upstreams: [db]', 'TOPO_UPSTREAM'],
    [', upstreams: ["db:0=127.0.0.1:9001"]', 'TOPO_UPSTREAM'],
    [', upstreams: ["db=127.0.0.1:9001/udp"]', 'TOPO_UPSTREAM'],
    [', upstreams: db=127.0.0.1:9001', 'TOPO_UPSTREAM'],
    [', upstreams: [billing=127.0.0.1:9001]', 'TOPO_UPSTREAM_SERVICE'],
    [', upstreams: [db=127.0.0.1:7000]', 'TOPO_ADDRESS_CLASH'],
    [', httpProxy: 127.0.0.1:7002', 'TOPO_ADDRESS_CLASH'],
    [', httpProxy: nowhere', 'TOPO_ADDRESS'],
  ])('refuses %j with %s at its position', (extra, code) => {
    const r = parseTopology(base(extra), 'topology.yaml');
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.errors.map((e) => e.code)).toContain(code);
    const e = r.errors.find((x) => x.code === code)!;
    expect(e).toMatchObject({ file: 'topology.yaml', line: 4 });
    expect(e.col).toBeGreaterThan(100);
  });

  it('the example mesh gives its load generator an upstream port and an HTTP proxy port', async () => {
    const text = await readFile(join(import.meta.dirname, '../../examples/topology.yaml'), 'utf8');
    const r = parseTopology(text, 'topology.yaml');
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.topology.instances['loadgen-0']).toMatchObject({ upstreams: [{ service: 'frontend', port: 0, listen: { host: '127.0.0.1', port: 17104 } }], httpProxy: { host: '127.0.0.1', port: 17105 } });
  });
});
