// meshc test, explain, fmt and --json, through the real CLI entry (bin/meshc).
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = new URL('../../', import.meta.url).pathname;
const NODE_BIN = join(ROOT, 'node_modules/.bin');
const CACHE = mkdtempSync(join(tmpdir(), 'meshc-cache-'));

function meshc(...args: string[]) {
  const r = spawnSync('node', [join(ROOT, 'bin/meshc'), ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, PATH: `${NODE_BIN}:${process.env.PATH ?? ''}`, MESHC_CACHE_DIR: CACHE },
    timeout: 120_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('meshc test', () => {
  it('runs the examples’ tests on the compiled filters: all pass, every rule reached', () => {
    const r = meshc('test', 'examples', '--json', '--fail-unreached');
    expect(r.stderr).toBe('');
    const report = JSON.parse(r.stdout) as { passed: number; failed: number; unreached: unknown[]; files: { file: string }[] };
    expect(report.failed).toBe(0);
    expect(report.passed).toBeGreaterThanOrEqual(15);
    expect(report.unreached).toEqual([]);
    expect(report.files.map((f) => f.file.replace(/.*\//, ''))).toEqual([
      'blue-green.meshpolicy.test.yaml',
      'catalog.meshpolicy.test.yaml',
      'frontend.meshpolicy.test.yaml',
      'rate-limits.meshpolicy.test.yaml',
      'ratings.meshpolicy.test.yaml',
    ]);
    expect(r.status).toBe(0);
  });

  it('reports a failure with the deciding rule, and rules no test reached; exit 1', () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshc-test-'));
    writeFileSync(join(dir, 'shop.meshpolicy'), 'service shop {\n  deny admin { when path prefix "/admin" }\n  deny old { when path prefix "/old" }\n}\n');
    writeFileSync(
      join(dir, 'shop.meshpolicy.test.yaml'),
      'direction: inbound\ntests:\n  - name: admin is allowed (wrong on purpose)\n    request: { path: /admin/x }\n    expect: { action: continue }\n',
    );
    const r = meshc('test', dir);
    expect(r.status).toBe(1);
    expect(r.stdout).toContain('FAIL admin is allowed (wrong on purpose)');
    expect(r.stdout).toContain('step 1: action: expected "continue", got "local"');
    expect(r.stdout).toContain('deciding rule: shop/deny/admin');
    expect(r.stdout).toContain('0 passed, 1 failed');
    expect(r.stdout).toMatch(/rules no test reached \(1\):\n {2}shop\/deny\/old {2}.*shop\.meshpolicy:3:3/);
  });

  it('exits 2 with a coded error on a malformed test file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshc-test-'));
    writeFileSync(join(dir, 'a.meshpolicy'), 'service a { deny d { } }\n');
    writeFileSync(join(dir, 'a.meshpolicy.test.yaml'), 'tests:\n  - request: { path: /, colour: blue }\n');
    const r = meshc('test', dir);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/TEST_FILE_INVALID: .*unknown request field colour/);
  });
});

describe('meshc explain', () => {
  it('names the deciding rule and its source line, from policies and curl-like flags', () => {
    const r = meshc('explain', '--policies', 'examples', '--direction', 'inbound', '--source', 'spiffe://mesh.local/ns/default/sa/catalog', 'http://ratings/admin/stats');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe('ratings: denied (403) by ratings/deny/no-admin\n  examples/ratings.meshpolicy:8:3  deny no-admin { when path prefix "/admin" }\n');
  });

  it('explains an opaque TCP connection: a deny on a path alone refuses every connection', () => {
    const r = meshc('explain', '--policies', 'examples', '--connection', '--direction', 'inbound', '--source', 'spiffe://mesh.local/ns/default/sa/catalog', 'tcp://ratings:9000');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe('ratings: connection refused by ratings/deny/no-admin\n  examples/ratings.meshpolicy:8:3  deny no-admin { when path prefix "/admin" }\n');
    const http = meshc('explain', '--policies', 'examples', '--connection', '-H', 'x-a: 1', 'tcp://ratings:9000');
    expect(http.status).not.toBe(0);
    expect(http.stderr).toMatch(/EXPLAIN_ARGS: a connection has no -H/);
  });

  it('explains from a built bundle and a JSON request, as JSON', () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshc-explain-'));
    expect(meshc('build', 'examples', '-o', join(dir, 'bundle')).status).toBe(0);
    writeFileSync(join(dir, 'req.json'), JSON.stringify({ direction: 'outbound', path: '/items', headers: { 'x-user-group': 'beta' } }));
    const r = meshc('explain', '--bundle', join(dir, 'bundle'), '--service', 'catalog', '--request', join(dir, 'req.json'), '--json');
    expect(r.status).toBe(0);
    const e = JSON.parse(r.stdout) as { outcome: { route: unknown; rule: string }; source: { span: { line: number } } };
    expect(e.outcome.route).toEqual({ version: 'v2', id: 'catalog/route/beta' });
    expect(e.source.span.line).toBe(5);
  });
});

describe('meshc fmt', () => {
  it('--check lists unformatted files and exits 1; fmt rewrites them; then --check passes', () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshc-fmt-'));
    cpSync(join(ROOT, 'examples'), dir, { recursive: true });
    writeFileSync(join(dir, 'messy.meshpolicy'), 'service   messy{deny d{when path=="/x"}}\n');
    const check = meshc('fmt', '--check', dir);
    expect(check.status).toBe(1);
    expect(check.stdout).toBe(`${join(dir, 'messy.meshpolicy')}: not formatted\n`);
    expect(meshc('fmt', dir).status).toBe(0);
    expect(readFileSync(join(dir, 'messy.meshpolicy'), 'utf8')).toBe('service messy {\n  deny d { when path == "/x" }\n}\n');
    const again = meshc('fmt', '--check', '--json', dir);
    expect(again.status).toBe(0);
    expect((JSON.parse(again.stdout) as { changed: number }).changed).toBe(0);
  });
});

describe('--json', () => {
  it('check and build print one JSON document on stdout', () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshc-json-'));
    const file = join(dir, 'a.meshpolicy');
    writeFileSync(file, 'service a { route r { to v1 90, v2 } }\n');
    const check = meshc('check', file, '--json');
    expect(check.status).toBe(1);
    const c = JSON.parse(check.stdout) as { errors: number; diagnostics: { code: string; span: { line: number; col: number } }[] };
    expect(c.errors).toBe(1);
    expect(c.diagnostics.map((d) => [d.code, d.span.line, d.span.col])).toEqual([['MP2019', 1, 33]]);
    const build = meshc('build', join(ROOT, 'examples'), '-o', join(dir, 'out'), '--json');
    expect(build.status).toBe(0);
    const b = JSON.parse(build.stdout) as { ok: boolean; filters: { name: string }[] };
    expect(b.ok).toBe(true);
    expect(b.filters.map((f) => f.name)).toEqual(['catalog', 'frontend', 'ratings']);
  });
});
