// Compiled filters use AssemblyScript's minimal runtime, whose collector runs
// only when filters/abi.ts calls it at the end of outermost callbacks. Driven
// through the sidecar's own host for many requests, a compiled policy must
// keep deciding correctly (no object freed while in use) and its memory must
// stop growing (garbage is collected, not kept).
// In: bench/policies/hop.meshpolicy compiled for real (routes, a fault,
// allow/deny, a rate limit), requests with varying header values so every
// decision allocates. Out: decisions, and the guest memory's size.
import { readFile } from 'node:fs/promises';
import { Registry } from 'prom-client';
import { afterAll, describe, expect, it } from 'vitest';
import { compilePolicies, shutdownCompiler } from '../../compiler/index.ts';
import { Direction } from '../../protocol/properties.ts';
import { FilterChain } from '../../runtime/chain.ts';
import { createHostEnvironment } from '../../runtime/wasm/environment.ts';
import { HttpStream, type HeaderList, type StreamFacts } from '../../runtime/wasm/stream.ts';
import type { WasmMemory } from '../../runtime/wasm/webassembly.ts';
import { inboundFacts } from '../support/stream-facts.ts';

const POLICY = new URL('../../bench/policies/hop.meshpolicy', import.meta.url).pathname;

afterAll(async () => {
  await shutdownCompiler();
});

// The standalone direction, where all four rule kinds run.
const facts: StreamFacts = { ...inboundFacts('spiffe://mesh.local/ns/default/sa/client', 'r'), direction: Direction.Unspecified, destinationService: 'bench', scheme: 'http' };

describe('compiled filters collect their garbage', () => {
  it('decide 30,000 requests correctly with memory that stops growing', async () => {
    const result = await compilePolicies([{ path: POLICY, text: await readFile(POLICY, 'utf8') }]);
    if (!result.bundle) throw new Error(JSON.stringify(result.diagnostics));
    const f = result.bundle.manifest.filters[0]!;
    const chain = await FilterChain.fromSpecs(
      [{ name: f.name, service: '*', rootId: f.rootId, configuration: f.configuration, failurePolicy: 'closed', wasm: result.bundle.modules.get(f.file)! }],
      createHostEnvironment(new Registry(), () => {}),
      'collection-test',
    );
    try {
      const vm = chain.filters[0]!.vm;
      // The VM's memory is private to the host; the test reads its size only.
      const memoryBytes = () => (vm as unknown as { memory: WasmMemory }).memory.buffer.byteLength;
      const decide = (i: number) => {
        const headers: HeaderList = [
          [':method', i % 7 === 0 ? 'POST' : 'GET'],
          [':path', `/items/${i}?q=${'x'.repeat(i % 50)}`],
          [':authority', 'bench'],
          ['x-user-group', i % 3 === 0 ? 'beta' : `group-${i}`],
          ...(i % 11 === 0 ? ([['x-chaos', String(i)]] as HeaderList) : []),
        ];
        const stream = new HttpStream(facts, headers);
        const id = vm.createStream(stream);
        vm.onStream('proxy_on_request_headers', id, headers.length, 1);
        const version = stream.setProperties.get('mesh.route.version');
        vm.finishStream(id);
        return { status: stream.localResponse?.status, version: version && Buffer.from(version).toString() };
      };
      const check = (i: number) => {
        const d = decide(i);
        // The deny-by-default allow rule admits GET and HEAD only; then the fault, then the routes.
        if (i % 7 === 0) expect(d.status, `request ${i}`).toBe(403);
        else if (i % 11 === 0) expect(d.status, `request ${i}`).toBe(503);
        else if (i % 3 === 0) expect(d, `request ${i}`).toEqual({ status: undefined, version: 'v2' });
        else expect(['v1', 'v2'], `request ${i}`).toContain(d.version);
      };
      for (let i = 1; i <= 3_000; i++) check(i);
      const settled = memoryBytes();
      for (let i = 3_001; i <= 33_000; i++) check(i);
      // Every request allocates (strings for the header values, a request object): without collection
      // 30,000 of them would grow memory by megabytes. Allow one 64 KiB page of allocator slack.
      expect(memoryBytes()).toBeLessThanOrEqual(settled + 65_536);
    } finally {
      chain.retire();
    }
  }, 60_000);
});
