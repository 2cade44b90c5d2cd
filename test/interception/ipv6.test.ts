// Transparent interception of IPv6 (and IPv4 beside it): a pod namespace under
// `meshc init --ipv6`, its sidecar (uid 1337) listening on `::` (dual-stack),
// and a remote namespace reached over a veth pair with both families.
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SidecarOptions } from '../../runtime/sidecar.ts';
import { createCa, issueLeaf } from '../runtime/pki.ts';
import { NetnsLab, PROBE } from './netns.ts';

const MESHC = new URL('../../bin/meshc', import.meta.url).pathname;
const SIDECAR = new URL('./sidecar-main.ts', import.meta.url).pathname;

type Entry = Record<string, unknown>;

describe('transparent interception over IPv6', () => {
  const lab = new NetnsLab('six');
  const dir = mkdtempSync(join(tmpdir(), 'meshc-ipv6-'));
  const log: Entry[] = [];
  let pod = '';

  async function logged(match: (e: Entry) => boolean): Promise<Entry> {
    const until = Date.now() + 10_000;
    for (;;) {
      const found = log.find(match);
      if (found) return found;
      if (Date.now() > until) throw new Error(`no log entry matched; have:\n${log.map((e) => JSON.stringify(e)).join('\n')}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  const tcp = (host: string, port: number, text: string) => lab.dial(pod, host, port, text);

  beforeAll(async () => {
    chmodSync(dir, 0o755);
    pod = lab.namespace('p');
    const remote = lab.namespace('r');
    const { ifA, ifB } = lab.link(pod, '10.204.0.1/24', remote, '10.204.0.2/24');
    lab.exec(pod, ['ip', 'addr', 'add', 'fd00:204::1/64', 'dev', ifA, 'nodad']);
    lab.exec(remote, ['ip', 'addr', 'add', 'fd00:204::2/64', 'dev', ifB, 'nodad']);
    lab.exec(pod, ['node', MESHC, 'init', '--proxy-uid', '1337', '--ipv6', '--exclude-inbound-ports', '15020']);
    const ca = await createCa();
    const cert = await issueLeaf(ca, 'web');
    const options: Omit<SidecarOptions, 'log'> = {
      node: { instance: 'web-v1-0', service: 'web', version: 'v1', namespace: 'default', serviceAccount: 'web' },
      interception: 'transparent',
      // `::` takes both families: a REDIRECT sends IPv4 to 127.0.0.1 and IPv6 to ::1.
      outbound: { host: '::', port: 15001 },
      inbound: { host: '::', port: 15006 },
      admin: { host: '::', port: 15020 },
      app: { host: '127.0.0.1', port: 8080 },
    };
    const file = join(dir, 'web.json');
    writeFileSync(file, JSON.stringify({ ...options, endpoints: { services: {} }, certificate: cert.payload, keyPem: cert.keyPem }));
    chmodSync(file, 0o644);
    await Promise.all([
      lab.start(remote, ['node', PROBE, 'echo', '7000', '::'], 'listening'),
      lab.start(remote, ['node', PROBE, 'http', '7080', '::'], 'listening'),
      lab.start(pod, ['setpriv', '--reuid=1337', '--regid=1337', '--clear-groups', 'node', SIDECAR, file], 'test-sidecar-ready', log),
    ]);
  });

  afterAll(async () => {
    await lab.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it('passes IPv6 TCP through the sidecar to its original destination', async () => {
    const { first, rest } = tcp('fd00:204::2', 7000, '{"family":6}');
    expect(first.echo).toBe('fd00:204::2:7000');
    // From the pod's address: the sidecar's own connection, not looped back to it.
    expect(String(first.remote)).toMatch(/^fd00:204::1:/);
    expect(rest).toBe('{"family":6}');
    expect(await logged((e) => e.protocol === 'tcp' && e.upstream === 'fd00:204::2:7000')).toMatchObject({ direction: 'outbound', egress: true });
  });

  it('passes IPv6 HTTP through as HTTP', async () => {
    const got = JSON.parse(lab.exec(pod, ['curl', '-sS', '-g', '--max-time', '10', 'http://[fd00:204::2]:7080/six'])) as Entry;
    expect(got.url).toBe('/six');
    expect(String(got.remote)).toMatch(/^fd00:204::1:/);
    expect(await logged((e) => e.path === '/six')).toMatchObject({ direction: 'outbound', destination_service: 'PassthroughCluster', endpoint: 'passthrough fd00:204::2:7080', status: 200 });
  });

  it('still intercepts IPv4 on the same dual-stack listener', async () => {
    const { first, rest } = tcp('10.204.0.2', 7000, '{"family":4}');
    expect(first.echo).toBe('::ffff:10.204.0.2:7000');
    expect(String(first.remote)).toMatch(/^::ffff:10\.204\.0\.1:/);
    expect(rest).toBe('{"family":4}');
    await logged((e) => e.protocol === 'tcp' && e.upstream === '10.204.0.2:7000');
  });
});
