// Pure parts of the controller: topology validation, resource derivation, and
// the level-based reconcile (driven with a fake compiler, no sockets).
import { describe, expect, it } from 'vitest';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseTopology, formatTopologyError, type MeshTopology } from '../../controller/topology.ts';
import { deriveResources } from '../../controller/derive.ts';
import { Reconciler, type MeshState } from '../../controller/reconcile.ts';
import { DirectoryConfigSource } from '../../controller/source.ts';
import { createLogger, silentSink } from '../../controller/log.ts';
import { fakeCompiler, tempDir, topologyYaml, writeFiles } from './helpers.ts';

const fixture = (name: string) => join(import.meta.dirname, '../fixtures/controller', name);

function parsed(text: string): MeshTopology {
  const r = parseTopology(text, 'topology.yaml');
  if (!r.ok) throw new Error(r.errors.map(formatTopologyError).join('\n'));
  return r.topology;
}

describe('topology', () => {
  it('parses services, defaults namespace and service account, derives SPIFFE ids', async () => {
    const t = parsed(await readFile(fixture('topology-good.yaml'), 'utf8'));
    expect(t.trustDomain).toBe('example.org');
    expect(Object.keys(t.services)).toEqual(['catalog', 'ratings', 'loadgen']);
    expect(t.services.catalog?.versions).toEqual(['v1', 'v2']);
    expect(t.services.catalog?.spiffeId).toBe('spiffe://example.org/ns/default/sa/catalog');
    expect(t.services.ratings?.spiffeId).toBe('spiffe://example.org/ns/shop/sa/ratings-reader');
    expect(t.instances['catalog-v2-0']).toMatchObject({ service: 'catalog', version: 'v2', inbound: { host: '127.0.0.1', port: 17121 } });
    expect(t.instances['loadgen-0']?.app).toBeUndefined();
  });

  it('reports every problem with file:line:col and a stable code', async () => {
    const r = parseTopology(await readFile(fixture('topology-bad.yaml'), 'utf8'), 'bad.yaml');
    expect(r.ok).toBe(false);
    if (r.ok) return;
    const byCode = new Map(r.errors.map((e) => [e.code, e]));
    expect([...byCode.keys()].sort()).toEqual(['TOPO_ADDRESS', 'TOPO_ADDRESS_CLASH', 'TOPO_DUPLICATE_INSTANCE', 'TOPO_SERVICE_NAME', 'TOPO_UNKNOWN_KEY'].sort());
    // Positions point at the offending node (see the fixture's line numbers).
    expect(byCode.get('TOPO_ADDRESS')).toMatchObject({ file: 'bad.yaml', line: 5 });
    expect(byCode.get('TOPO_DUPLICATE_INSTANCE')).toMatchObject({ line: 7 });
    expect(byCode.get('TOPO_ADDRESS_CLASH')?.message).toContain('127.0.0.1:17101');
    expect(byCode.get('TOPO_SERVICE_NAME')).toMatchObject({ line: 9 });
    expect(byCode.get('TOPO_UNKNOWN_KEY')?.message).toContain('"replicas"');
    expect(formatTopologyError(byCode.get('TOPO_ADDRESS')!)).toMatch(/^bad\.yaml:5:\d+: error TOPO_ADDRESS: /);
  });

  it('reports YAML syntax errors with a position', () => {
    const r = parseTopology('services:\n  a: [1, 2\n', 't.yaml');
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.errors[0]).toMatchObject({ code: 'TOPO_YAML', file: 't.yaml' });
  });
});

describe('deriveResources', () => {
  const topology = parsed(
    topologyYaml([
      { service: 'catalog', id: 'catalog-v1-0', version: 'v1', ports: [1001, 1002, 1003, 1004] },
      { service: 'catalog', id: 'catalog-v2-0', version: 'v2', ports: [1011, 1012, 1013, 1014] },
      { service: 'ratings', id: 'ratings-v1-0', version: 'v1', ports: [1021, 1022, 1023, 1024] },
    ]),
  );
  const bundle = { version: 'b1', payload: { manifest: '{}', modules: {} } };

  it('gives every instance the same bundle and the endpoints of every service', () => {
    const out = deriveResources({ topology, bundle, certificates: new Map() });
    expect([...out.keys()].sort()).toEqual(['catalog-v1-0', 'catalog-v2-0', 'ratings-v1-0']);
    const r = out.get('ratings-v1-0')!;
    expect(r.bundle).toBe(bundle);
    expect(r.certificate).toBeUndefined();
    expect(r.endpoints.payload.services.catalog?.endpoints).toEqual([
      { instance: 'catalog-v1-0', address: '127.0.0.1', port: 1002, version: 'v1', spiffeId: 'spiffe://mesh.local/ns/default/sa/catalog' },
      { instance: 'catalog-v2-0', address: '127.0.0.1', port: 1012, version: 'v2', spiffeId: 'spiffe://mesh.local/ns/default/sa/catalog' },
    ]);
  });

  it('attaches only the instance its own certificate; versions are stable for equal inputs', () => {
    const cert = { version: 'serial-1', payload: { spiffeId: 'x', certChainPem: 'c', caBundlePem: 'r', notAfter: 'n' } };
    const a = deriveResources({ topology, certificates: new Map([['catalog-v1-0', cert]]) });
    const b = deriveResources({ topology, certificates: new Map() });
    expect(a.get('catalog-v1-0')?.certificate).toBe(cert);
    expect(a.get('catalog-v2-0')?.certificate).toBeUndefined();
    expect(a.get('catalog-v1-0')?.bundle).toBeUndefined();
    expect(a.get('catalog-v1-0')?.endpoints.version).toBe(b.get('catalog-v2-0')?.endpoints.version);
  });

  it('changes the endpoints version when an instance moves and leaves out instances without an app', () => {
    const moved = parsed(
      topologyYaml([
        { service: 'catalog', id: 'catalog-v1-0', version: 'v1', ports: [1001, 1099, 1003, 1004] },
        { service: 'catalog', id: 'catalog-v2-0', version: 'v2', ports: [1011, 1012, 1013, 1014] },
        { service: 'ratings', id: 'ratings-v1-0', version: 'v1', ports: [1021, 1022, 1023, 1024] },
      ]),
    );
    const before = deriveResources({ topology, certificates: new Map() }).get('ratings-v1-0')!.endpoints;
    const after = deriveResources({ topology: moved, certificates: new Map() }).get('ratings-v1-0')!.endpoints;
    expect(after.version).not.toBe(before.version);
    const client = parsed('services:\n  loadgen:\n    instances:\n      - { id: lg, version: v1, inbound: 127.0.0.1:1, outbound: 127.0.0.1:2, admin: 127.0.0.1:3 }\n');
    expect(deriveResources({ topology: client, certificates: new Map() }).get('lg')?.endpoints.payload.services).toEqual({});
  });
});

describe('reconcile', () => {
  async function setup(debounceMs = 100) {
    const dir = await tempDir('reconcile');
    await writeFiles(dir.path, {
      'topology.yaml': topologyYaml([{ service: 'catalog', id: 'catalog-v1-0', version: 'v1', ports: [1001, 1002, 1003, 1004] }]),
      'a.meshpolicy': 'service catalog {}\n',
    });
    const compiler = fakeCompiler();
    const states: MeshState[] = [];
    const reconciler = new Reconciler({
      source: new DirectoryConfigSource(dir.path),
      compiler: async () => compiler,
      debounceMs,
      log: createLogger('test', silentSink),
      onState: (s) => states.push(s),
    });
    return { dir, compiler, states, reconciler };
  }

  it('collapses a burst of events into one compile of the latest state', async () => {
    // A debounce far above five small writes even on a loaded machine: the burst is one burst.
    const { dir, compiler, reconciler } = await setup(1_000);
    try {
      reconciler.start();
      await reconciler.idle();
      expect(compiler.calls).toHaveLength(1);
      for (let i = 1; i <= 5; i++) {
        await writeFile(join(dir.path, 'a.meshpolicy'), `service catalog {} // edit ${i}\n`);
        reconciler.enqueue();
      }
      await reconciler.idle();
      expect(compiler.calls).toHaveLength(2);
      expect(compiler.calls[1]?.texts).toEqual(['service catalog {} // edit 5\n']);
      expect(reconciler.state().generation).toBe(2);
    } finally {
      await reconciler.stop();
      await dir.cleanup();
    }
  });

  it('skips the compile when nothing it reads has changed', async () => {
    const { dir, compiler, reconciler } = await setup(10);
    try {
      reconciler.start();
      await reconciler.idle();
      reconciler.enqueue();
      await reconciler.idle();
      expect(reconciler.stats.reconciles).toBe(2);
      expect(compiler.calls).toHaveLength(1);
    } finally {
      await reconciler.stop();
      await dir.cleanup();
    }
  });

  it('keeps the last good bundle and topology while the new ones are broken', async () => {
    const { dir, reconciler } = await setup(10);
    try {
      reconciler.start();
      await reconciler.idle();
      const good = reconciler.state();
      expect(good.bundle?.version).toMatch(/^[0-9a-f]{16}$/);

      await writeFile(join(dir.path, 'a.meshpolicy'), 'service catalog {\n  BROKEN\n}\n');
      reconciler.enqueue();
      await reconciler.idle();
      let s = reconciler.state();
      expect(s.bundle?.version).toBe(good.bundle?.version);
      expect(s.diagnostics).toEqual([expect.objectContaining({ code: 'E_FAKE', line: 2, col: 3, severity: 'error' })]);
      expect(s.currentDigest).not.toBe(s.lastGoodDigest);

      await writeFile(join(dir.path, 'topology.yaml'), 'services: [oops\n');
      reconciler.enqueue();
      await reconciler.idle();
      s = reconciler.state();
      expect(s.topology).toEqual(good.topology);
      expect(s.topologyErrors[0]?.code).toBe('TOPO_YAML');
    } finally {
      await reconciler.stop();
      await dir.cleanup();
    }
  });

  it('reacts to file changes through the directory watch', async () => {
    const { dir, compiler, reconciler } = await setup(50);
    try {
      reconciler.start();
      await reconciler.idle();
      await writeFile(join(dir.path, 'b.meshpolicy'), 'service ratings {}\n');
      const deadline = Date.now() + 10_000;
      while (compiler.calls.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      await reconciler.idle();
      expect(compiler.calls.at(-1)?.files.map((f) => f.split('/').at(-1))).toEqual(['a.meshpolicy', 'b.meshpolicy']);
    } finally {
      await reconciler.stop();
      await dir.cleanup();
    }
  });
});
