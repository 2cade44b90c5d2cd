// meshc proxy (standalone) routes by the version a filter sets
// (mesh.route.version -> --version-upstream), with one route kept per version;
// and filter-set properties read back as text, the same string each time a
// value repeats.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StandaloneProxy } from '../../runtime/standalone.ts';
import { HttpStream } from '../../runtime/wasm/stream.ts';
import { buildRouterFilter } from '../dataplane/router-mesh.ts';
import { inboundFacts } from '../support/stream-facts.ts';
import { request, startEchoApp, type EchoApp } from './helpers.ts';

let v1: EchoApp;
let v2: EchoApp;
let proxy: StandaloneProxy;
let port: number;

beforeAll(async () => {
  v1 = await startEchoApp('v1');
  v2 = await startEchoApp('v2');
  proxy = new StandaloneProxy({
    listen: { host: '127.0.0.1', port: 0 },
    upstream: new URL(`http://127.0.0.1:${v1.port}`),
    versionUpstreams: new Map([['v2', new URL(`http://127.0.0.1:${v2.port}`)]]),
    filters: [{ name: 'router', service: '*', rootId: 'router', configuration: '', failurePolicy: 'closed', wasm: await buildRouterFilter() }],
    log: () => {},
  });
  await proxy.start();
  port = proxy.addresses().listen.port;
});

afterAll(async () => {
  await proxy?.stop();
  await v1?.close();
  await v2?.close();
});

describe('standalone routing by version', () => {
  it('sends each request to the upstream of the version its filter chose, the default upstream for none or an unknown one', async () => {
    const versions = ['v2', '', 'v2', 'v9', 'v2', ''];
    const apps: string[] = [];
    for (const v of versions) {
      const r = await request(port, { headers: { host: 'app', ...(v ? { 'x-route-version': v } : {}) } });
      expect(r.status).toBe(200);
      apps.push(String(r.headers['x-app']));
    }
    expect(apps).toEqual(['v2', 'v1', 'v2', 'v1', 'v2', 'v1']);
  });
});

describe('HttpStream.propertyText', () => {
  const stream = () => new HttpStream(inboundFacts('spiffe://mesh.local/ns/a/sa/b', 'id'), []);

  it('decodes what a filter set as UTF-8, undefined when unset', () => {
    const s = stream();
    expect(s.propertyText('mesh.route.version')).toBeUndefined();
    s.setProperties.set('mesh.route.version', Buffer.from('v2'));
    s.setProperties.set('mesh.route.id', Buffer.from('cätalog/route/ünï'));
    s.setProperties.set('mesh.rules', Buffer.from('r'.repeat(200)));
    expect(s.propertyText('mesh.route.version')).toBe('v2');
    expect(s.propertyText('mesh.route.id')).toBe('cätalog/route/ünï');
    expect(s.propertyText('mesh.rules')).toBe('r'.repeat(200));
  });

  it('gives a repeated value back by content, never a stale one', () => {
    const texts = new Set<string>();
    for (let i = 0; i < 50; i++) {
      const s = stream();
      const value = `v${i % 20}`;
      s.setProperties.set('mesh.route.version', Buffer.from(value));
      const text = s.propertyText('mesh.route.version')!;
      expect(text).toBe(value);
      texts.add(text);
    }
    expect(texts.size).toBe(20);
  });
});
