// `meshc proxy` options of explicit mode and opaque TCP (runtime/proxy-args.ts,
// runtime/explicit/upstreams.ts): what parses, and the coded errors.
import { describe, expect, it } from 'vitest';
import { parseProxyArgs, ProxyArgsError } from '../../runtime/proxy-args.ts';
import { parseUpstream, UpstreamSpecError } from '../../runtime/explicit/upstreams.ts';

const connected = ['--controller', 'ws://127.0.0.1:1', '--service', 'web', '--service-version', 'v1', '--instance', 'web-0', '--inbound', '127.0.0.1:1', '--outbound', '127.0.0.1:2', '--app', '127.0.0.1:3', '--admin', '127.0.0.1:4'];

describe('--upstream specs', () => {
  it('parses service, destination port, local address and declared protocol', () => {
    expect(parseUpstream('catalog=127.0.0.1:9001')).toEqual({ service: 'catalog', port: 0, listen: { host: '127.0.0.1', port: 9001 } });
    expect(parseUpstream('db:5432=127.0.0.1:9002/tcp')).toEqual({ service: 'db', port: 5432, listen: { host: '127.0.0.1', port: 9002 }, protocol: 'tcp' });
    expect(parseUpstream('api=[::1]:9003/http')).toEqual({ service: 'api', port: 0, listen: { host: '::1', port: 9003 }, protocol: 'http' });
  });

  it.each([
    ['catalog', 'NAME[:PORT]=HOST:PORT'],
    ['Catalog=127.0.0.1:1', 'not a service name'],
    ['db:0=127.0.0.1:1', 'not 1-65535'],
    ['db:x=127.0.0.1:1', 'not 1-65535'],
    ['db=127.0.0.1', 'not HOST:PORT'],
    ['db=127.0.0.1:70000', 'not HOST:PORT'],
    ['db=127.0.0.1:1/udp', 'tcp or http'],
  ])('refuses %j with a coded error', (spec, message) => {
    let err: unknown;
    try {
      parseUpstream(spec);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UpstreamSpecError);
    expect((err as UpstreamSpecError).code).toBe('UPSTREAM_SPEC');
    expect((err as Error).message).toContain(message);
  });
});

describe('meshc proxy, connected mode', () => {
  it('takes repeated --upstream, --http-proxy, --allow-egress, --detect-timeout-ms and --app-tcp-port', () => {
    const args = parseProxyArgs([...connected, '--upstream', 'catalog=127.0.0.1:9001', '--upstream=db:5432=127.0.0.1:9002/tcp', '--http-proxy', '127.0.0.1:3128', '--allow-egress', '--detect-timeout-ms', '250', '--app-tcp-port', '5432', '--app-tcp-port=6379']);
    expect(args).toMatchObject({
      mode: 'connected',
      upstreams: [
        { service: 'catalog', port: 0, listen: { host: '127.0.0.1', port: 9001 } },
        { service: 'db', port: 5432, listen: { host: '127.0.0.1', port: 9002 }, protocol: 'tcp' },
      ],
      httpProxy: { host: '127.0.0.1', port: 3128 },
      allowEgress: true,
      detectTimeoutMs: 250,
      appTcpPorts: [5432, 6379],
    });
  });

  it('defaults to no explicit ports and no egress', () => {
    expect(parseProxyArgs(connected)).toMatchObject({ upstreams: [], allowEgress: false, appTcpPorts: [] });
  });

  it.each([
    [['--upstream', 'catalog'], 'NAME[:PORT]=HOST:PORT'],
    [['--detect-timeout-ms', '0'], 'positive whole number'],
    [['--app-tcp-port', '99999'], 'port 1-65535'],
    [['--allow-egress=yes'], 'takes no value'],
  ])('refuses %j', (extra, message) => {
    expect(() => parseProxyArgs([...connected, ...extra])).toThrow(ProxyArgsError);
    expect(() => parseProxyArgs([...connected, ...extra])).toThrow(message);
  });

  it('keeps --upstream a single URL in standalone mode', () => {
    expect(parseProxyArgs(['--listen', '127.0.0.1:1', '--upstream', 'http://127.0.0.1:2'])).toMatchObject({ mode: 'standalone' });
    expect(() => parseProxyArgs(['--listen', '127.0.0.1:1', '--upstream', 'http://127.0.0.1:2', '--upstream', 'http://127.0.0.1:3'])).toThrow('one --upstream URL');
    expect(() => parseProxyArgs(['--listen', '127.0.0.1:1'])).toThrow('--upstream is required');
    expect(() => parseProxyArgs(['--listen', '127.0.0.1:1', '--upstream', 'http://127.0.0.1:2', '--http-proxy', '127.0.0.1:3'])).toThrow('needs --controller');
  });
});
