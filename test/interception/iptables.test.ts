// The rules of `meshc init`: exact output of the generator for given options,
// clear errors for bad flags, and the real command in a network namespace
// (applied, re-applied with other options = replaced, cleaned).
import { spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { parseInitOptions, renderRules, InitError, ourState, renderClean } from '../../runtime/interception/iptables.ts';
import { NetnsLab } from './netns.ts';

const MESHC = new URL('../../bin/meshc', import.meta.url).pathname;

describe('renderRules', () => {
  it('writes the nat rules for a typical pod, exactly', () => {
    const options = parseInitOptions({ proxyUid: '1337', proxyGid: '1337', excludeInboundPorts: '15020,15021', excludeOutboundPorts: '53', excludeOutboundCidrs: '169.254.169.254' });
    expect(renderRules(options)).toBe(
      [
        '*nat',
        ':MESH_INBOUND - [0:0]',
        ':MESH_IN_REDIRECT - [0:0]',
        ':MESH_OUTPUT - [0:0]',
        ':MESH_REDIRECT - [0:0]',
        '-A MESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006',
        '-A MESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001',
        '-A MESH_INBOUND -p tcp --dport 15020 -j RETURN',
        '-A MESH_INBOUND -p tcp --dport 15021 -j RETURN',
        '-A MESH_INBOUND -p tcp -j MESH_IN_REDIRECT',
        '-A MESH_OUTPUT -o lo ! -d 127.0.0.1/32 -m owner --uid-owner 1337 -j MESH_IN_REDIRECT',
        '-A MESH_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN',
        '-A MESH_OUTPUT -m owner --uid-owner 1337 -j RETURN',
        '-A MESH_OUTPUT -o lo ! -d 127.0.0.1/32 -m owner --gid-owner 1337 -j MESH_IN_REDIRECT',
        '-A MESH_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN',
        '-A MESH_OUTPUT -m owner --gid-owner 1337 -j RETURN',
        '-A MESH_OUTPUT -d 127.0.0.1/32 -j RETURN',
        '-A MESH_OUTPUT -p tcp --dport 53 -j RETURN',
        '-A MESH_OUTPUT -d 169.254.169.254/32 -j RETURN',
        '-A MESH_OUTPUT -j MESH_REDIRECT',
        '-A PREROUTING -p tcp -j MESH_INBOUND',
        '-A OUTPUT -p tcp -j MESH_OUTPUT',
        'COMMIT',
        '',
      ].join('\n'),
    );
  });

  it('captures only the listed inbound ports and outbound CIDRs, and no inbound at all for an empty list', () => {
    const some = renderRules(parseInitOptions({ proxyUid: 'mesh', inboundPort: '7000', outboundPort: '7001', inboundPorts: '8080,9090', outboundCidrs: '10.0.0.0/8,192.168.0.0/16' }));
    const body = some.split('\n');
    expect(body).toContain('-A MESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 7000');
    expect(body).toContain('-A MESH_REDIRECT -p tcp -j REDIRECT --to-ports 7001');
    expect(body.filter((l) => l.startsWith('-A MESH_INBOUND'))).toEqual([
      '-A MESH_INBOUND -p tcp --dport 8080 -j MESH_IN_REDIRECT',
      '-A MESH_INBOUND -p tcp --dport 9090 -j MESH_IN_REDIRECT',
    ]);
    expect(body.filter((l) => l.includes('-j MESH_REDIRECT'))).toEqual(['-A MESH_OUTPUT -d 10.0.0.0/8 -j MESH_REDIRECT', '-A MESH_OUTPUT -d 192.168.0.0/16 -j MESH_REDIRECT']);
    const none = renderRules(parseInitOptions({ proxyUid: '1337', inboundPorts: '' }));
    expect(none).not.toContain('PREROUTING');
    expect(none).not.toMatch(/-A MESH_INBOUND/);
    expect(none).toContain('-A OUTPUT -p tcp -j MESH_OUTPUT');
  });

  it('writes the IPv6 rules with ::1 for loopback and only the IPv6 CIDRs', () => {
    const options = parseInitOptions({ proxyUid: '1337', ipv6: true, excludeOutboundCidrs: '10.0.0.0/8,fd00::/8', outboundCidrs: '192.168.0.0/16,2001:db8::/32' });
    const v6 = renderRules(options, [], 6).split('\n');
    expect(v6).toContain('-A MESH_OUTPUT -o lo ! -d ::1/128 -m owner --uid-owner 1337 -j MESH_IN_REDIRECT');
    expect(v6).toContain('-A MESH_OUTPUT -d ::1/128 -j RETURN');
    expect(v6.filter((l) => l.includes(' -d ') && !l.includes('::1/128'))).toEqual(['-A MESH_OUTPUT -d fd00::/8 -j RETURN', '-A MESH_OUTPUT -d 2001:db8::/32 -j MESH_REDIRECT']);
    const v4 = renderRules(options, [], 4).split('\n');
    expect(v4.filter((l) => l.includes(' -d ') && !l.includes('127.0.0.1/32'))).toEqual(['-A MESH_OUTPUT -d 10.0.0.0/8 -j RETURN', '-A MESH_OUTPUT -d 192.168.0.0/16 -j MESH_REDIRECT']);
  });

  it('deletes the jumps an earlier run left, in the same transaction', () => {
    const script = renderRules(parseInitOptions({ proxyUid: '1' }), ['-A PREROUTING -p tcp -j MESH_INBOUND', '-A OUTPUT -p tcp -j MESH_OUTPUT']);
    expect(script.split('\n').slice(0, 3)).toEqual(['*nat', '-D PREROUTING -p tcp -j MESH_INBOUND', '-D OUTPUT -p tcp -j MESH_OUTPUT']);
  });

  it('reads its own jumps and chains out of iptables-save and nothing else', () => {
    const save = [
      '*nat',
      ':PREROUTING ACCEPT [0:0]',
      ':OTHER - [0:0]',
      ':MESH_OUTPUT - [0:0]',
      '-A PREROUTING -p tcp -j OTHER',
      '-A OUTPUT -p tcp -j MESH_OUTPUT',
      '-A MESH_OUTPUT -j MESH_REDIRECT',
      'COMMIT',
    ].join('\n');
    const state = ourState(save);
    expect(state).toEqual({ jumps: ['-A OUTPUT -p tcp -j MESH_OUTPUT'], chains: ['MESH_OUTPUT'] });
    expect(renderClean(state.jumps, state.chains)).toBe('*nat\n-D OUTPUT -p tcp -j MESH_OUTPUT\n-F MESH_OUTPUT\n-X MESH_OUTPUT\nCOMMIT\n');
  });

  it('refuses bad options with INIT_ARGS and says which flag', () => {
    const cases: Array<[Parameters<typeof parseInitOptions>[0], RegExp]> = [
      [{}, /--proxy-uid or --proxy-gid is required/],
      [{ proxyUid: '1', inboundPort: '0' }, /--inbound-port: "0" is not a port/],
      [{ proxyUid: '1', outboundPort: '70000' }, /--outbound-port: "70000"/],
      [{ proxyUid: '1', inboundPort: '9000', outboundPort: '9000' }, /must differ/],
      [{ proxyUid: '1', excludeOutboundCidrs: '10.0.0.0/33' }, /bad prefix length/],
      [{ proxyUid: '1', outboundCidrs: 'fd00::/8' }, /"fd00::\/8" is IPv6, which is intercepted only with --ipv6/],
      [{ proxyUid: '1', ipv6: true, excludeOutboundCidrs: 'fd00::/129' }, /bad prefix length/],
      [{ proxyUid: '1', excludeOutboundCidrs: 'not-an-ip' }, /is not an IP address or CIDR/],
      [{ proxyUid: '1; rm -rf /' }, /--proxy-uid: "1; rm -rf \/" is not a numeric id/],
      [{ proxyUid: '1', excludeInboundPorts: '22,http' }, /--exclude-inbound-ports: "http"/],
    ];
    for (const [flags, message] of cases) {
      let err: unknown;
      try {
        parseInitOptions(flags);
      } catch (e) {
        err = e;
      }
      expect(err, JSON.stringify(flags)).toBeInstanceOf(InitError);
      expect((err as InitError).code).toBe('INIT_ARGS');
      expect((err as Error).message).toMatch(message);
    }
  });
});

describe('meshc init in a network namespace', () => {
  const lab = new NetnsLab('ipt');
  afterAll(() => lab.cleanup());

  const natRules = (ns: string): string[] =>
    lab
      .exec(ns, ['iptables-save', '-t', 'nat'])
      .split('\n')
      .filter((l) => l.startsWith('-A ') || /^:MESH_/.test(l));

  it('applies the rules, replaces them on a re-run, and --clean removes them', () => {
    const ns = lab.namespace('p');
    // Someone else's rule in the same table must survive every step.
    lab.exec(ns, ['iptables', '-t', 'nat', '-A', 'OUTPUT', '-p', 'udp', '--dport', '53', '-j', 'ACCEPT']);
    const dry = lab.exec(ns, ['node', MESHC, 'init', '--proxy-uid', '1337', '--dry-run']);
    expect(dry).toContain('-A OUTPUT -p tcp -j MESH_OUTPUT');
    expect(natRules(ns)).toEqual(['-A OUTPUT -p udp -m udp --dport 53 -j ACCEPT']);

    lab.exec(ns, ['node', MESHC, 'init', '--proxy-uid', '1337', '--exclude-inbound-ports', '15020']);
    const first = natRules(ns);
    expect(first.filter((l) => l === '-A PREROUTING -p tcp -j MESH_INBOUND')).toHaveLength(1);
    expect(first.filter((l) => l === '-A OUTPUT -p tcp -j MESH_OUTPUT')).toHaveLength(1);
    expect(first).toContain('-A MESH_INBOUND -p tcp -m tcp --dport 15020 -j RETURN');
    expect(first).toContain('-A MESH_OUTPUT -m owner --uid-owner 1337 -j RETURN');
    expect(first).toContain('-A MESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001');

    // Re-run with other options: the old rules are gone, not duplicated.
    lab.exec(ns, ['node', MESHC, 'init', '--proxy-uid', '2000', '--outbound-port', '16001', '--inbound-ports', '']);
    const second = natRules(ns);
    expect(second.filter((l) => l === '-A OUTPUT -p tcp -j MESH_OUTPUT')).toHaveLength(1);
    expect(second).not.toContain('-A PREROUTING -p tcp -j MESH_INBOUND');
    expect(second.join('\n')).not.toContain('1337');
    expect(second.join('\n')).not.toContain('15020');
    expect(second).toContain('-A MESH_OUTPUT -m owner --uid-owner 2000 -j RETURN');
    expect(second).toContain('-A MESH_REDIRECT -p tcp -j REDIRECT --to-ports 16001');

    lab.exec(ns, ['node', MESHC, 'init', '--clean']);
    expect(natRules(ns)).toEqual(['-A OUTPUT -p udp -m udp --dport 53 -j ACCEPT']);
    // Cleaning twice is fine.
    expect(lab.exec(ns, ['node', MESHC, 'init', '--clean'])).toContain('no interception rules');
  });

  it('installs IPv6 rules with --ipv6, removes them on a re-run without it, and --clean removes both', () => {
    const ns = lab.namespace('s');
    const nat6 = (): string[] =>
      lab
        .exec(ns, ['ip6tables-save', '-t', 'nat'])
        .split('\n')
        .filter((l) => l.startsWith('-A ') || /^:MESH_/.test(l));
    const out = lab.exec(ns, ['node', MESHC, 'init', '--proxy-uid', '1337', '--ipv6']);
    expect(out).toContain('# ip6tables-restore --noflush\n*nat\n');
    expect(nat6()).toContain('-A OUTPUT -p tcp -j MESH_OUTPUT');
    expect(nat6()).toContain('-A MESH_OUTPUT -d ::1/128 -j RETURN');
    expect(natRules(ns)).toContain('-A MESH_OUTPUT -d 127.0.0.1/32 -j RETURN');
    lab.exec(ns, ['node', MESHC, 'init', '--proxy-uid', '1337']);
    expect(nat6()).toEqual([]);
    expect(natRules(ns)).toContain('-A OUTPUT -p tcp -j MESH_OUTPUT');
    lab.exec(ns, ['node', MESHC, 'init', '--proxy-uid', '1337', '--ipv6']);
    lab.exec(ns, ['node', MESHC, 'init', '--clean']);
    expect(nat6()).toEqual([]);
    expect(natRules(ns)).toEqual([]);
  });

  it('exits 2 with a stable code on bad flags and changes nothing', () => {
    const ns = lab.namespace('q');
    const r = spawnSync('ip', ['netns', 'exec', ns, 'node', MESHC, 'init', '--inbound-port', '15006', '--outbound-port', 'x', '--proxy-uid', '1'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toBe('meshc init: INIT_ARGS: --outbound-port: "x" is not a port (1-65535)\n');
    expect(natRules(ns)).toEqual([]);
  });

  it('reports IPTABLES_FAILED when iptables refuses (no such owner)', () => {
    const ns = lab.namespace('r');
    const r = spawnSync('ip', ['netns', 'exec', ns, 'node', MESHC, 'init', '--proxy-uid', 'no_such_user_here'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^meshc init: IPTABLES_FAILED: iptables-restore --noflush exited with \d+/);
    // The restore is one transaction: nothing was half-applied.
    expect(natRules(ns)).toEqual([]);
  });
});

