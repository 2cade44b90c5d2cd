// The SO_ORIGINAL_DST addon on real REDIRECTs: a "pod" namespace with the
// rules of `meshc init` (IPv4) or one ip6tables REDIRECT (IPv6), a server on
// the capture port that reads each connection's original destination, and a
// client in the pod dialing an address across a veth pair.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADDON_PATH, InterceptionError, loadAddon, originalDestination } from '../../runtime/interception/original-dst.ts';
import { NetnsLab, PROBE } from './netns.ts';

const MESHC = new URL('../../bin/meshc', import.meta.url).pathname;

/** Starts `probe.ts server|echo PORT HOST` in a namespace and waits until it listens. */
function probe(lab: NetnsLab, ns: string, mode: 'server' | 'echo', port: number, host: string): Promise<void> {
  return lab.start(ns, ['node', PROBE, mode, String(port), host], 'listening');
}

describe('originalDestination on intercepted connections', () => {
  const lab = new NetnsLab('odst');
  let pod = '';

  beforeAll(async () => {
    pod = lab.namespace('pod');
    const remote = lab.namespace('rem');
    lab.link(pod, '10.200.0.2/24', remote, '10.200.0.1/24');
    lab.link(pod, 'fd00:200::2/64', remote, 'fd00:200::1/64');
    lab.exec(pod, ['node', MESHC, 'init', '--proxy-uid', '1337', '--outbound-port', '15001', '--inbound-ports', '', '--exclude-outbound-ports', '7000']);
    lab.exec(pod, ['ip6tables', '-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-d', 'fd00:200::1', '-j', 'REDIRECT', '--to-ports', '15002']);
    await Promise.all([
      probe(lab, pod, 'server', 15001, '0.0.0.0'),
      probe(lab, pod, 'server', 15002, '::'),
      probe(lab, remote, 'echo', 7000, '10.200.0.1'),
    ]);
  });
  afterAll(() => lab.cleanup());

  it('gives the IPv4 address and port the app dialed before the REDIRECT', () => {
    const { first, rest } = lab.dial(pod, '10.200.0.1', 8080, 'hello');
    expect(first.originalDst).toEqual({ address: '10.200.0.1', port: 8080, family: 4 });
    expect(first.error).toBeNull();
    // REDIRECT of a locally sent packet goes to 127.0.0.1: the outbound listener must listen there.
    expect(first.local).toBe('127.0.0.1:15001');
    expect(rest).toBe('hello');
    // Another destination, another answer: nothing is cached per listener.
    expect(lab.dial(pod, '10.200.0.77', 443).first.originalDst).toEqual({ address: '10.200.0.77', port: 443, family: 4 });
  });

  it('gives the IPv6 original destination (IP6T_SO_ORIGINAL_DST)', () => {
    const { first } = lab.dial(pod, 'fd00:200::1', 8443);
    expect(first.originalDst).toEqual({ address: 'fd00:200::1', port: 8443, family: 6 });
  });

  it('reads an IPv4 connection accepted on a dual-stack IPv6 socket as IPv4', () => {
    // 15002 listens on ::, so an IPv4 client lands there as ::ffff:127.0.0.1.
    const { first } = lab.dial(pod, '127.0.0.1', 15002);
    expect(first.local).toBe('::ffff:127.0.0.1:15002');
    expect(first.originalDst).toEqual({ address: '127.0.0.1', port: 15002, family: 4 });
  });

  it('gives the listener itself for a connection that was not redirected, and excluded ports are not redirected', () => {
    expect(lab.dial(pod, '127.0.0.1', 15001).first.originalDst).toEqual({ address: '127.0.0.1', port: 15001, family: 4 });
    const excluded = lab.dial(pod, '10.200.0.1', 7000, 'direct');
    expect(excluded.first).toMatchObject({ echo: '10.200.0.1:7000' });
    expect(excluded.rest).toBe('direct');
  });
});

describe('originalDestination errors', () => {
  it('has the addon built where the wrapper loads it', async () => {
    const { existsSync } = await import('node:fs');
    expect(existsSync(ADDON_PATH), `${ADDON_PATH} missing: run npm run build:native`).toBe(true);
  });

  it('ADDON_UNAVAILABLE, saying how to build it, when the addon file is missing', () => {
    let err: unknown;
    try {
      loadAddon('/nonexistent/original_dst.node');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InterceptionError);
    expect((err as InterceptionError).code).toBe('ADDON_UNAVAILABLE');
    expect((err as Error).message).toMatch(/^the SO_ORIGINAL_DST addon is not available \(Cannot find module '\/nonexistent\/original_dst.node'.*\); build it with `npm run build:native`/);
  });

  it('NO_FD for a socket that has no descriptor (closed)', async () => {
    const server = net.createServer((s) => s.destroy());
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const socket = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    await new Promise((r) => socket.once('connect', r));
    socket.destroy();
    let err: unknown;
    try {
      originalDestination(socket);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InterceptionError);
    expect((err as InterceptionError).code).toBe('NO_FD');
    await new Promise((r) => server.close(r));
  });
});
