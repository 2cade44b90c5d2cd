// mesh.rules is opt-in: a compiled filter publishes it only when its host
// answers the mesh.trace property at proxy_on_configure. The sidecar's host
// (runtime/wasm/vm.ts) does not, so its streams carry no mesh.rules; the
// decision host behind meshc test / explain does, and gets the allowing rule.
// In: a two-rule policy compiled for real. Out: assertions on both hosts.
import { Registry } from 'prom-client';
import { afterAll, describe, expect, it } from 'vitest';
import { compilePolicies, shutdownCompiler } from '../../compiler/index.ts';
import { DecisionHost } from '../../compiler/run/host.ts';
import { inboundFacts } from '../support/stream-facts.ts';
import { FilterChain } from '../../runtime/chain.ts';
import { createHostEnvironment } from '../../runtime/wasm/environment.ts';
import { HttpStream, type HeaderList } from '../../runtime/wasm/stream.ts';

const POLICY = `service api {
  allow reads { from "spiffe://mesh.local/ns/a/sa/reader" when method == GET }
  audit gets { when method == GET }
}
`;
const READER = 'spiffe://mesh.local/ns/a/sa/reader';

afterAll(async () => {
  await shutdownCompiler();
});

async function bundle() {
  const result = await compilePolicies([{ path: 'trace.meshpolicy', text: POLICY }]);
  if (!result.bundle) throw new Error(JSON.stringify(result.diagnostics));
  return result.bundle;
}

describe('mesh.rules opt-in', () => {
  it('is published when the host answers mesh.trace (decision host)', async () => {
    const b = await bundle();
    const host = await DecisionHost.load(b.modules.get('api.wasm')!);
    const outcome = host.decide({ direction: 'inbound', method: 'GET', path: '/', source: READER });
    expect(outcome.action).toBe('continue');
    expect(outcome.rules).toEqual(['api/allow/reads', 'api/audit/gets']);
    expect(outcome.rule).toBe('api/allow/reads');
  });

  it('is not published by the sidecar host, and the decision is the same', async () => {
    const b = await bundle();
    const f = b.manifest.filters[0]!;
    const chain = await FilterChain.fromSpecs(
      [{ name: f.name, service: '*', rootId: f.rootId, configuration: f.configuration, failurePolicy: 'closed', wasm: b.modules.get(f.file)! }],
      createHostEnvironment(new Registry(), () => {}),
      'trace-test',
    );
    try {
      const vm = chain.filters[0]!.vm;
      const run = (source: string) => {
        const headers: HeaderList = [
          [':method', 'GET'],
          [':path', '/'],
        ];
        const stream = new HttpStream(inboundFacts(source, 't'), headers);
        const id = vm.createStream(stream);
        const action = vm.onStream('proxy_on_request_headers', id, headers.length, 1);
        const rules = stream.setProperties.get('mesh.rules');
        vm.finishStream(id);
        return { action, rules, status: stream.localResponse?.status };
      };
      const allowed = run(READER);
      expect(allowed.action).toBe(0);
      expect(allowed.status).toBeUndefined();
      expect(allowed.rules).toBeUndefined();
      const denied = run('spiffe://mesh.local/ns/a/sa/stranger');
      expect(denied.status).toBe(403);
      expect(denied.rules).toBeUndefined();
    } finally {
      chain.retire();
    }
  });
});
