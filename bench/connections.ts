// Authorization of an opaque TCP connection: the time the inbound sidecar
// spends deciding one connection (runtime/wasm/network.ts openConnection,
// then the session's end at close), at 1, 10, 100 and 1,000 allow rules
// keyed by identity, for the connection the last rule admits and for a
// stranger the policy refuses. The filter is compiled by the real compiler
// and loaded as the sidecar loads it (FilterChain.fromBundle).
// Out: a table of median µs per connection decision.
import { Registry } from 'prom-client';
import { compilePolicies, shutdownCompiler } from '../compiler/index.ts';
import { Direction } from '../protocol/properties.ts';
import { FilterChain } from '../runtime/chain.ts';
import { createHostEnvironment } from '../runtime/wasm/environment.ts';
import { shutdownMeteringProcess } from '../runtime/wasm/module-cache.ts';
import { openConnection } from '../runtime/wasm/network.ts';
import type { StreamFacts } from '../runtime/wasm/stream.ts';
import type { Table } from './lib/report.ts';
import type { SuiteOptions, SuiteResult } from './run.ts';

const SIZES = [1, 10, 100, 1000];
const BATCHES = 21;
const PER_BATCH = 2000;
const WARMUP = 20_000;

const identity = (i: number): string => `spiffe://mesh.local/ns/team${i % 10}/sa/app${i}`;

function facts(principal: string): StreamFacts {
  return {
    direction: Direction.Inbound,
    sourcePrincipal: principal,
    sourceAddress: '127.0.0.1',
    sourcePort: 40000,
    destinationAddress: '127.0.0.1',
    destinationPort: 9000,
    destinationService: 'catalog',
    peerUriSan: principal,
    requestId: '',
    scheme: '',
    protocol: '',
    mtls: true,
  };
}

/** Median over batches of the mean µs per decision (each awaited, as the TCP proxy does). */
async function medianMicros(decide: () => Promise<void>): Promise<number> {
  for (let i = 0; i < WARMUP; i++) await decide();
  const samples: number[] = [];
  for (let b = 0; b < BATCHES; b++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < PER_BATCH; i++) await decide();
    samples.push(Number(process.hrtime.bigint() - t0) / PER_BATCH / 1000);
  }
  samples.sort((a, b) => a - b);
  return samples[Math.floor(samples.length / 2)]!;
}

export async function run(_options: SuiteOptions): Promise<SuiteResult> {
  const rows: Array<[number, number, number]> = [];
  const hooks = { onFilterFailure: (): void => {} };
  for (const n of SIZES) {
    process.stderr.write(`connections: ${n} rules\n`);
    const rules = Array.from({ length: n }, (_, i) => `  allow r${i} { from "${identity(i)}" }`).join('\n');
    const result = await compilePolicies([{ path: `bench/connections-${n}.meshpolicy`, text: `service catalog {\n${rules}\n}\n` }]);
    if (!result.bundle) throw new Error(`bench policy with ${n} rules does not compile: ${JSON.stringify(result.diagnostics.slice(0, 3))}`);
    const chain = await FilterChain.fromBundle(result.bundle, createHostEnvironment(new Registry(), () => {}));
    const admitted = facts(identity(n - 1));
    const stranger = facts('spiffe://mesh.local/ns/x/sa/stranger');
    const decide = (f: StreamFacts, expect: 'allow' | 'deny') => async (): Promise<void> => {
      const v = await openConnection(chain, 'catalog', f, hooks);
      if (v.kind !== expect) throw new Error(`connections bench: expected ${expect}, got ${JSON.stringify(v)}`);
      if (v.kind === 'allow') v.session.end();
    };
    rows.push([n, await medianMicros(decide(admitted, 'allow')), await medianMicros(decide(stranger, 'deny'))]);
    chain.retire();
  }
  await shutdownCompiler();
  await shutdownMeteringProcess();
  const table: Table = {
    title: 'Opaque TCP connection authorization, median µs per connection (lower is better)',
    columns: ['allow rules', 'admitted (the last rule)', 'refused (default deny)'],
    rows,
    notes: [
      'Rule i: allow spiffe://mesh.local/ns/team<i%10>/sa/app<i>. One decision = openConnection (a ConnectionStream, proxy_on_new_connection: host calls listener_direction and source.principal; refused: mesh.connection.rule set, proxy_close_stream) awaited, then the session ended (the context finished, the chain released).',
      'For scale: bench/results/tcp.md measures 460-860 short connections per second through a sidecar pair on this machine (each a new mTLS connection between the sidecars), 1-2 ms each.',
      `Median of ${BATCHES} batches of ${PER_BATCH} decisions, after ${WARMUP} warm-up decisions, in one process.`,
    ],
  };
  return { tables: [table], raw: rows };
}
