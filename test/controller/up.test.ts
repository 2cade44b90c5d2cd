// `meshc up` smoke test: the real CLI on a copy of examples/ with free ports;
// wait for traffic on every service and a denial with its rule id; SIGINT; a
// clean exit and no sidecar process left behind.
import { describe, expect, it } from 'vitest';
import { spawn, execFileSync } from 'node:child_process';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { freePort, tempDir, waitFor } from './helpers.ts';

const root = join(import.meta.dirname, '../..');

interface UpState {
  mesh: { services: { service: string; version: string; '2xx': number }[]; localResponses: { rule: string; total: number }[] };
  controller: { policy: { version: string | null } };
}

function childPids(pid: number): number[] {
  try {
    return execFileSync('ps', ['-o', 'pid=', '--ppid', String(pid)], { encoding: 'utf8' }).split('\n').map((s) => Number(s.trim())).filter((n) => n > 0);
  } catch {
    return []; // ps exits 1 when there are none
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('meshc up', () => {
  it('runs the example mesh, shows traffic and denials, and stops cleanly on SIGINT', async () => {
    const dir = await tempDir('up');
    try {
      for (const f of ['catalog.meshpolicy', 'ratings.meshpolicy', 'frontend.meshpolicy']) await copyFile(join(root, 'examples', f), join(dir.path, f));
      // Same topology, every 127.0.0.1 port replaced by a free one.
      let topology = await readFile(join(root, 'examples/topology.yaml'), 'utf8');
      const ports = [...new Set(topology.match(/127\.0\.0\.1:\d+/g) ?? [])];
      expect(ports.length).toBeGreaterThanOrEqual(19);
      for (const p of ports) topology = topology.replaceAll(p, `127.0.0.1:${await freePort()}`);
      await writeFile(join(dir.path, 'topology.yaml'), topology);

      const child = spawn(process.execPath, [join(root, 'bin/meshc'), 'up', '--dir', dir.path, '--no-open', '--dashboard', '127.0.0.1:0', '--controller', '127.0.0.1:0', '--rps', '5'], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
      try {
        // meshc up prints why it could not start, and exits: its output is then the failure message.
        const dashboard = await Promise.race([
          waitFor('the dashboard URL', () => /dashboard\s+(http:\/\/\S+)/.exec(out)?.[1], 90_000).catch((err: Error) => {
            throw new Error(`${err.message}\n${out}`);
          }),
          exited.then((e) => {
            throw new Error(`meshc up exited (${e.code ?? e.signal}) before printing the dashboard URL:\n${out}`);
          }),
        ]);
        expect(out).toContain('controller status  http://127.0.0.1:');
        const sidecars = childPids(child.pid!);
        expect(sidecars.length).toBe(5);

        const state = await waitFor('2xx on every service and a denial', async () => {
          const s = (await (await fetch(new URL('/api/state', dashboard))).json()) as UpState;
          const ok = (svc: string, v: string) => s.mesh.services.some((r) => r.service === svc && r.version === v && r['2xx'] > 0);
          const all = ok('frontend', 'v1') && ok('catalog', 'v1') && ok('catalog', 'v2') && ok('ratings', 'v1');
          return all && s.mesh.localResponses.some((l) => l.total > 0) ? s : undefined;
        }, 60_000);
        expect(state.controller.policy.version).toMatch(/^[0-9a-f]{16}$/);
        expect(state.mesh.localResponses.map((l) => l.rule)).toEqual(expect.arrayContaining(['ratings/deny/no-admin', 'ratings/default-deny']));
        expect(await (await fetch(dashboard)).text()).toContain('<title>meshc up</title>');

        child.kill('SIGINT');
        const exit = await Promise.race([exited, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`no exit after SIGINT:\n${out}`)), 30_000))]);
        expect(exit).toEqual({ code: 0, signal: null });
        expect(sidecars.filter(alive)).toEqual([]);
      } finally {
        if (child.exitCode === null) child.kill('SIGKILL');
      }
    } finally {
      await dir.cleanup();
    }
  }, 180_000);
});
