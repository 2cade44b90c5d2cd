// End to end: the real controller (real compiler), real sidecars (in process,
// each with its control client), tiny apps, real HTTP over real sockets.
//   web-0 (client) ──outbound──▶ web's sidecar ══mTLS══▶ ratings' sidecar ──▶ ratings app
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Sidecar } from '../../runtime/sidecar.ts';
import { startControlClient, type ControlClient } from '../../runtime/control-client.ts';
import { startController, type Controller, type ControllerStatus } from '../../controller/server.ts';
import { silentSink } from '../../controller/log.ts';
import type { NodeInfo } from '../../protocol/wire.ts';
import { freePort, tempDir, topologyYaml, waitFor, writeFiles } from './helpers.ts';

type Ports = [number, number, number, number];

interface Member {
  node: NodeInfo;
  ports: Ports;
  stateDir: string;
  sidecar?: Sidecar;
  client?: ControlClient;
}

function startApp(port: number, name: string): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ app: name, path: req.url }));
  });
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve(server)));
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });

/** One request through web's outbound listener to `ratings`. Never throws: failures are results. */
function call(outboundPort: number, path: string): Promise<{ status: number; rule?: string; error?: string }> {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port: outboundPort, path, headers: { host: 'ratings' }, agent, timeout: 10_000 }, (res) => {
      res.resume();
      res.on('end', () => {
        const rule = res.headers['x-mesh-rule'];
        resolve(typeof rule === 'string' ? { status: res.statusCode ?? 0, rule } : { status: res.statusCode ?? 0 });
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => resolve({ status: 0, error: err.message }));
    req.end();
  });
}

const policy = (denyPrefix: string, name = 'no-secret') => `# e2e ratings policy\nservice ratings {\n  deny ${name} { when path prefix "${denyPrefix}" }\n}\n`;

describe('controller + sidecars end to end', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let controller: Controller | undefined;
  let controllerPort: number;
  const apps: http.Server[] = [];
  const members: Member[] = [];
  const web = () => members[0]!;
  const ratings = () => members[1]!;

  const startMember = async (m: Member): Promise<void> => {
    const [app, inbound, outbound, admin] = m.ports;
    m.sidecar = new Sidecar({
      node: m.node,
      app: { host: '127.0.0.1', port: app },
      inbound: { host: '127.0.0.1', port: inbound },
      outbound: { host: '127.0.0.1', port: outbound },
      admin: { host: '127.0.0.1', port: admin },
      log: () => {},
    });
    await m.sidecar.start();
    m.client = startControlClient(m.sidecar, { url: `ws://127.0.0.1:${controllerPort}`, stateDir: m.stateDir, node: m.node, log: () => {}, maxBackoffMs: 500 });
  };
  const stopMember = async (m: Member): Promise<void> => {
    await m.client?.close();
    await m.sidecar?.stop();
  };
  const startCtl = async () => {
    controller = await startController({ dir: dir.path, listen: { host: '127.0.0.1', port: controllerPort }, logSink: silentSink, debounceMs: 50 });
    return controller;
  };
  /** Waits until every sidecar acknowledged the controller's current bundle; returns that version. */
  const converged = async (notVersion?: string | null): Promise<string> =>
    waitFor(
      'every sidecar to ack the current bundle',
      () => {
        const s = controller!.status();
        const v = s.policy.version;
        if (!v || v === notVersion || !s.policy.current) return undefined;
        return s.sidecars.length === members.length && s.sidecars.every((c) => c.connected && c.acked.bundle === v) ? v : undefined;
      },
      60_000,
    );

  beforeAll(async () => {
    const root = await tempDir('e2e');
    const ports = async (): Promise<Ports> => [await freePort(), await freePort(), await freePort(), await freePort()];
    controllerPort = await freePort();
    members.push(
      { node: { instance: 'web-0', service: 'web', version: 'v1', namespace: 'default', serviceAccount: 'web' }, ports: await ports(), stateDir: join(root.path, 'state-web') },
      { node: { instance: 'ratings-v1-0', service: 'ratings', version: 'v1', namespace: 'default', serviceAccount: 'ratings' }, ports: await ports(), stateDir: join(root.path, 'state-ratings') },
    );
    // Policies live in their own directory, apart from the sidecars' state dirs.
    const policies = join(root.path, 'policies');
    await mkdir(policies);
    dir = { path: policies, cleanup: root.cleanup };
    await writeFiles(policies, {
      'topology.yaml': topologyYaml(members.map((m) => ({ service: m.node.service, id: m.node.instance, version: m.node.version, ports: m.ports }))),
      'ratings.meshpolicy': policy('/secret-0'),
    });
    for (const m of members) apps.push(await startApp(m.ports[0], m.node.service));
    await startCtl();
    for (const m of members) await startMember(m);
    await converged();
  }, 120_000);

  afterAll(async () => {
    for (const m of members) await stopMember(m);
    await controller?.stop();
    for (const a of apps) a.close();
    agent.destroy();
    await dir.cleanup();
  });

  it('hot-reloads five policy edits under a steady stream of requests with no failed request', async () => {
    const outbound = web().ports[2];
    expect(await call(outbound, '/items/1')).toEqual({ status: 200 });
    expect(await call(outbound, '/secret-0/x')).toMatchObject({ status: 403, rule: 'ratings/deny/no-secret' });

    const results: { status: number; rule?: string; error?: string }[] = [];
    let editing = true;
    const deadline = Date.now() + 90_000;
    // Eight workers, bounded in count (>= 1,000 overall, at most 20,000) and time.
    const workers = Array.from({ length: 8 }, async () => {
      while ((editing || results.length < 1_000) && results.length < 20_000 && Date.now() < deadline) {
        results.push(await call(outbound, '/items/7'));
      }
    });
    let version = controller!.status().policy.version;
    for (let i = 1; i <= 5; i++) {
      // Edits 1-4 change the policy without touching /items; edit 5 denies /items.
      await writeFile(join(dir.path, 'ratings.meshpolicy'), i < 5 ? policy(`/secret-${i}`) : policy('/items', 'no-items'));
      version = await converged(version);
    }
    editing = false;
    await Promise.all(workers);

    expect(results.length).toBeGreaterThanOrEqual(1_000);
    const failed = results.filter((r) => !(r.status === 200 || (r.status === 403 && r.rule === 'ratings/deny/no-items')));
    expect(failed).toEqual([]);
    // Behaviour changed after the last edit, on every request from then on.
    expect(await call(outbound, '/items/7')).toEqual({ status: 403, rule: 'ratings/deny/no-items' });
    expect(await call(outbound, '/secret-4/x')).toEqual({ status: 200 });
  }, 180_000);

  it('keeps the previous filters on every sidecar when an edit does not compile, and reports the errors', async () => {
    const outbound = web().ports[2];
    const before = controller!.status();
    const good = before.policy.version;
    await writeFile(join(dir.path, 'ratings.meshpolicy'), 'service ratings {\n  deny broken { when path prefix }\n}\n');
    const st = await waitFor('diagnostics in /status', async () => {
      const s = (await (await fetch(`${controller!.httpUrl}/status`)).json()) as ControllerStatus;
      return s.policy.diagnostics.length > 0 ? s : undefined;
    }, 30_000);
    expect(st.policy.version).toBe(good);
    expect(st.policy.current).toBe(false);
    const d = st.policy.diagnostics[0]!;
    expect(d.file).toBe(join(dir.path, 'ratings.meshpolicy'));
    expect(d.line).toBe(2);
    expect(d.code).toMatch(/^[A-Z]/);
    expect(d.text).toContain(`ratings.meshpolicy:2:${d.col}`);
    for (const s of st.sidecars) expect(s.acked.bundle).toBe(good);
    // Requests behave exactly as under the last good policy.
    expect(await call(outbound, '/items/7')).toEqual({ status: 403, rule: 'ratings/deny/no-items' });
    expect(await call(outbound, '/other')).toEqual({ status: 200 });
  }, 60_000);

  it('keeps serving with the controller gone, and a sidecar restarted meanwhile serves from its state dir', async () => {
    const outbound = web().ports[2];
    await controller!.stop();
    controller = undefined;
    await waitFor('clients to notice', () => members.every((m) => !m.client!.status().connected));
    expect(await call(outbound, '/items/7')).toEqual({ status: 403, rule: 'ratings/deny/no-items' });
    expect(await call(outbound, '/other')).toEqual({ status: 200 });

    // Restart the ratings sidecar (same ports, same state dir) while the controller is down.
    await stopMember(ratings());
    expect((await call(outbound, '/other')).status).not.toBe(200);
    await startMember(ratings());
    await ratings().client!.restored;
    await waitFor('restarted sidecar ready', async () => (await fetch(`http://127.0.0.1:${ratings().ports[3]}/ready`)).ok);
    expect(await call(outbound, '/other')).toEqual({ status: 200 });
    expect(await call(outbound, '/items/7')).toEqual({ status: 403, rule: 'ratings/deny/no-items' });

    // And when the controller returns, both reconnect and resume.
    await writeFile(join(dir.path, 'ratings.meshpolicy'), policy('/items', 'no-items'));
    await startCtl();
    await converged();
  }, 120_000);
});
