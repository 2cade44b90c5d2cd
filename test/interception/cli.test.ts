// `meshc proxy --interception transparent [--deny-egress]`: the flags parse
// (and refuse what contradicts), and the real command, run as the exempt uid
// in a pod namespace under `meshc init`'s rules, intercepts the app's TCP.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseProxyArgs, ProxyArgsError } from '../../runtime/proxy-args.ts';
import { NetnsLab, PROBE } from './netns.ts';

const MESHC = new URL('../../bin/meshc', import.meta.url).pathname;
const connected = ['--controller', 'ws://127.0.0.1:1', '--service', 'web', '--service-version', 'v1', '--instance', 'web-0', '--inbound', '0.0.0.0:15006', '--outbound', '127.0.0.1:15001', '--app', '127.0.0.1:8080', '--admin', '0.0.0.0:15020'];

describe('meshc proxy --interception', () => {
  it('parses the mode and --deny-egress', () => {
    expect(parseProxyArgs([...connected, '--interception', 'transparent', '--deny-egress'])).toMatchObject({ interception: 'transparent', denyEgress: true, allowEgress: false });
    expect(parseProxyArgs([...connected, '--interception=explicit'])).toMatchObject({ interception: 'explicit', denyEgress: false });
    expect(parseProxyArgs(connected)).not.toHaveProperty('interception');
  });

  it('keeps the inbound port mTLS-only unless --permissive-inbound is given', () => {
    expect(parseProxyArgs([...connected, '--interception', 'transparent'])).not.toHaveProperty('permissiveInbound');
    expect(parseProxyArgs([...connected, '--interception', 'transparent', '--permissive-inbound'])).toMatchObject({ permissiveInbound: true });
  });

  it.each([
    [[...connected, '--interception', 'tproxy'], '--interception expects explicit or transparent, got "tproxy"'],
    [[...connected, '--allow-egress', '--deny-egress'], 'contradict'],
    [[...connected, '--permissive-inbound'], '--permissive-inbound needs --interception transparent'],
    [['--listen', '127.0.0.1:1', '--upstream', 'http://127.0.0.1:2', '--interception', 'transparent'], '--interception needs --controller'],
  ])('refuses %j', (argv, message) => {
    let err: unknown;
    try {
      parseProxyArgs(argv);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ProxyArgsError);
    expect((err as ProxyArgsError).code).toBe('PROXY_ARGS');
    expect((err as Error).message).toContain(message);
  });
});

describe('meshc proxy --interception transparent in a pod namespace', () => {
  const lab = new NetnsLab('cli');
  const stateDir = mkdtempSync(join(tmpdir(), 'meshc-cli-state-'));
  let pod = '';
  const log: Array<Record<string, unknown>> = [];

  let denied = '';
  const deniedLog: Array<Record<string, unknown>> = [];

  beforeAll(async () => {
    // The sidecar runs as uid 1337 and keeps its state there.
    chmodSync(stateDir, 0o777);
    pod = lab.namespace('p');
    denied = lab.namespace('d');
    const remote = lab.namespace('r');
    lab.link(pod, '10.203.0.1/24', remote, '10.203.0.2/24');
    lab.link(denied, '10.203.1.1/24', remote, '10.203.1.2/24');
    // As in a real pod, a default route: the start-up loop probe (192.0.2.1) leaves the pod and gets no answer.
    lab.exec(pod, ['ip', 'route', 'add', 'default', 'via', '10.203.0.2']);
    await lab.start(remote, ['node', PROBE, 'echo', '7000'], 'listening');
    const sidecar = ['setpriv', '--reuid=1337', '--regid=1337', '--clear-groups', 'node', MESHC, 'proxy', ...connected, '--interception', 'transparent'];
    for (const ns of [pod, denied]) lab.exec(ns, ['node', MESHC, 'init', '--proxy-uid', '1337', '--exclude-inbound-ports', '15020']);
    // No controller answers: the sidecars run without certificate or endpoints, which passthrough does not need.
    await Promise.all([
      lab.start(pod, [...sidecar, '--state-dir', join(stateDir, 'p')], 'listening', log),
      lab.start(denied, [...sidecar, '--state-dir', join(stateDir, 'd'), '--deny-egress'], 'listening', deniedLog),
    ]);
  });
  afterAll(async () => {
    await lab.cleanup();
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('passes the app\'s TCP to a destination outside the mesh through the sidecar', async () => {
    const { first, rest } = lab.dial(pod, '10.203.0.2', 7000, '{"via":"cli"}');
    expect(first).toMatchObject({ echo: '10.203.0.2:7000' });
    expect(rest).toBe('{"via":"cli"}');
    const until = Date.now() + 10_000;
    while (!log.some((e) => e.protocol === 'tcp' && e.upstream === '10.203.0.2:7000') && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    expect(log.find((e) => e.protocol === 'tcp' && e.upstream === '10.203.0.2:7000')).toMatchObject({ direction: 'outbound', egress: true });
  });

  it('refuses to start as a uid the rules do not exempt (its own connections would loop back to it)', () => {
    const looped = lab.namespace('l');
    const remote = lab.namespace('m');
    lab.link(looped, '10.203.2.1/24', remote, '10.203.2.2/24');
    lab.exec(looped, ['ip', 'route', 'add', 'default', 'via', '10.203.2.2']);
    lab.exec(looped, ['node', MESHC, 'init', '--proxy-uid', '1337']);
    // Run as root: not the exempt uid.
    const r = spawnSync('ip', ['netns', 'exec', looped, 'node', MESHC, 'proxy', ...connected, '--state-dir', join(stateDir, 'l'), '--interception', 'transparent'], { encoding: 'utf8', timeout: 30_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^meshc proxy: INTERCEPTION_LOOP: this sidecar's own connections are redirected back to it \(uid 0, gid 0\): run it as the uid or gid given to `meshc init --proxy-uid\/--proxy-gid`\n/);
  });

  it('refuses it with --deny-egress: the connection closes and the log says egress-denied', async () => {
    // The client sees its connection closed (or reset, if its bytes were still unread) without a byte from the server.
    const r = spawnSync('ip', ['netns', 'exec', denied, 'node', PROBE, 'client', '10.203.1.2', '7000', '{"via":"cli"}'], { encoding: 'utf8' });
    expect(r.stdout).toBe('');
    if (r.status !== 0) expect(r.stderr).toBe('client: ECONNRESET\n');
    const until = Date.now() + 10_000;
    while (!deniedLog.some((e) => e.reason === 'egress-denied') && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    expect(deniedLog.find((e) => e.reason === 'egress-denied')).toMatchObject({ protocol: 'tcp', listener: 'outbound' });
  });
});
