// Test helpers for the controller: temp policy directories, a fake compiler
// (so stream and reconcile tests do not need asc), free ports, polling.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeBundle, sha256Hex, PROXY_WASM_ABI, BUNDLE_FORMAT, type BundleFilter } from '../../protocol/bundle.ts';
import type { PolicyCompiler, PolicyDiagnostic } from '../../controller/compile.ts';

export async function tempDir(prefix: string): Promise<{ path: string; cleanup: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), `meshc-${prefix}-`));
  return { path, cleanup: () => rm(path, { recursive: true, force: true }) };
}

/** Ports freePort has returned (module state: one set per test file). */
const handedOut = new Set<number>();

/**
 * A port that was free a moment ago, for a process the test starts to bind.
 * Drawn below Linux's ephemeral range (32768-60999), where the OS picks the
 * local ports of every client connection: the tests that run beside this one
 * connect all the time, and one of those could take a port from that range
 * between this check and the bind. A port is handed out once per test file:
 * a test that takes twenty at random would otherwise draw the same one twice
 * in about one run out of sixty (`meshc up` then refuses the topology).
 */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (handedOut.has(port)) continue;
    const free = await new Promise<boolean>((resolve) => {
      const srv = createServer();
      srv.once('error', () => resolve(false));
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
    });
    if (free) {
      handedOut.add(port);
      return port;
    }
  }
}

export async function waitFor<T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await probe();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
}

/** A topology with the given instances, each on its own ports. */
export function topologyYaml(instances: { service: string; id: string; version: string; ports: [number, number, number, number] }[], trustDomain = 'mesh.local'): string {
  const byService = new Map<string, string[]>();
  for (const i of instances) {
    const [app, inbound, outbound, admin] = i.ports;
    const line = `      - { id: ${i.id}, version: ${i.version}, app: 127.0.0.1:${app}, inbound: 127.0.0.1:${inbound}, outbound: 127.0.0.1:${outbound}, admin: 127.0.0.1:${admin} }`;
    byService.set(i.service, [...(byService.get(i.service) ?? []), line]);
  }
  let text = `trustDomain: ${trustDomain}\nservices:\n`;
  for (const [service, lines] of byService) text += `  ${service}:\n    instances:\n${lines.join('\n')}\n`;
  return text;
}

export async function writeFiles(dir: string, files: Record<string, string>): Promise<void> {
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
}

/**
 * A stand-in for compiler/index.ts: each source becomes one "module" holding its
 * text; a line containing `BROKEN` yields an error diagnostic at that line.
 * Counts its calls and records the inputs it saw.
 */
export function fakeCompiler(): PolicyCompiler & { calls: { files: string[]; texts: string[] }[] } {
  const calls: { files: string[]; texts: string[] }[] = [];
  return {
    calls,
    async compile(files) {
      calls.push({ files: files.map((f) => f.path), texts: files.map((f) => f.text) });
      const diagnostics: PolicyDiagnostic[] = [];
      files.forEach((f) => {
        f.text.split('\n').forEach((line, i) => {
          const col = line.indexOf('BROKEN');
          if (col >= 0) diagnostics.push({ code: 'E_FAKE', severity: 'error', message: 'broken on purpose', span: { file: f.path, line: i + 1, col: col + 1, endLine: i + 1, endCol: col + 7 } });
        });
      });
      if (diagnostics.length > 0) return { diagnostics };
      const modules = new Map<string, Uint8Array>();
      const filters: BundleFilter[] = files.map((f, i) => {
        const bytes = new TextEncoder().encode(f.text);
        modules.set(`p${i}.wasm`, bytes);
        return { name: `p${i}`, file: `p${i}.wasm`, sha256: sha256Hex(bytes), size: bytes.length, service: '*', rootId: `p${i}`, configuration: '', failurePolicy: 'closed', source: { path: f.path, sha256: sha256Hex(f.text) }, rules: {} };
      });
      return { diagnostics: [], bundle: makeBundle({ format: BUNDLE_FORMAT, abiVersion: PROXY_WASM_ABI, compiler: { name: 'fake', version: '0' }, filters }, modules) };
    },
    format: (d) => `${d.span.file}:${d.span.line}:${d.span.col}: ${d.severity} ${d.code}: ${d.message}`,
    async shutdown() {},
  };
}
