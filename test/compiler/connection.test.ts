// Connection-time authorization (compiler/connection.ts): how a condition
// over a request reads when only the connection is known, and which modules
// get proxy_on_new_connection. Decisions themselves are checked on both
// engines by test/corpus/connections.yaml and over real sockets in test/tcp/.
import { afterAll, describe, expect, it } from 'vitest';
import { compilePolicies, frontEnd, shutdownCompiler } from '../../compiler/index.ts';
import { connectionAuthz, connectionCondition, type Reading } from '../../compiler/connection.ts';
import { NEW_CONNECTION_EXPORT } from '../../compiler/codegen/emit.ts';
import type { ConditionIR } from '../../compiler/ir.ts';
import { parseRequestSpec } from '../../compiler/run/request.ts';
import { Wasm } from './wasm.ts';

afterAll(async () => {
  await shutdownCompiler();
});

const SOURCE: ConditionIR = { op: 'string', field: { kind: 'source' }, test: { kind: 'eq', value: 'spiffe://mesh.local/ns/default/sa/web' } };
const ACCOUNT: ConditionIR = { op: 'string', field: { kind: 'source-account' }, test: { kind: 'eq', value: 'batch' } };
const PORT: ConditionIR = { op: 'port-in', ports: [9000] };
const IP: ConditionIR = { op: 'ip-in', blocks: [{ family: 4, bytes: [10, 0, 0, 0], bits: 8 }] };
const METHOD: ConditionIR = { op: 'string', field: { kind: 'method' }, test: { kind: 'eq', value: 'GET' } };
const HEADER: ConditionIR = { op: 'present', field: { kind: 'header', name: 'x-debug' } };
const CLAIM: ConditionIR = { op: 'string', field: { kind: 'claim', name: 'role' }, test: { kind: 'eq', value: 'admin' } };
const and = (...args: ConditionIR[]): ConditionIR => ({ op: 'and', args });
const or = (...args: ConditionIR[]): ConditionIR => ({ op: 'or', args });
const not = (arg: ConditionIR): ConditionIR => ({ op: 'not', arg });
const TRUE: ConditionIR = { op: 'true' };
const FALSE: ConditionIR = { op: 'false' };

describe('connectionCondition', () => {
  const table: Array<[string, ConditionIR, Reading, ConditionIR]> = [
    ['connection fields are kept', and(SOURCE, PORT, IP, ACCOUNT), 'definitely', and(SOURCE, PORT, IP, ACCOUNT)],
    ['an HTTP-only leaf is false for an allow', METHOD, 'definitely', FALSE],
    ['an HTTP-only leaf is true for a deny', METHOD, 'possibly', TRUE],
    ['claims are HTTP-only', CLAIM, 'definitely', FALSE],
    ['an allow with an HTTP-only conjunct never matches', and(SOURCE, METHOD), 'definitely', FALSE],
    ['a deny with an HTTP-only conjunct matches on the rest', and(SOURCE, METHOD), 'possibly', SOURCE],
    ['an allow with an HTTP-only alternative matches on the rest', or(ACCOUNT, HEADER), 'definitely', ACCOUNT],
    ['a deny with an HTTP-only alternative matches every connection', or(ACCOUNT, HEADER), 'possibly', TRUE],
    ['not swaps the reading (allow)', not(METHOD), 'definitely', FALSE],
    ['not swaps the reading (deny)', not(METHOD), 'possibly', TRUE],
    ['not over a mix', and(not(or(ACCOUNT, HEADER)), PORT), 'possibly', and(not(ACCOUNT), PORT)],
    ['not over a mix, allow', not(and(SOURCE, METHOD)), 'definitely', not(SOURCE)],
    ['constants stay', TRUE, 'definitely', TRUE],
  ];
  for (const [name, input, reading, expected] of table) {
    it(name, () => expect(connectionCondition(input, reading)).toEqual(expected));
  }
});

describe('proxy_on_new_connection in compiled modules', () => {
  async function exportsOf(text: string, service: string): Promise<string[]> {
    const result = await compilePolicies([{ path: 'p.meshpolicy', text }]);
    expect(result.diagnostics.filter((d) => d.severity === 'error')).toEqual([]);
    return Wasm.Module.exports(new Wasm.Module(result.bundle!.modules.get(`${service}.wasm`)!)).map((e) => e.name);
  }

  it('is exported by a service with allow, deny or audit rules (its own or the mesh block\'s)', async () => {
    expect(await exportsOf('service a { allow x { from "spiffe://mesh.local/ns/default/sa/web" } }', 'a')).toContain(NEW_CONNECTION_EXPORT);
    expect(await exportsOf('service a { deny x { when method == POST } }', 'a')).toContain(NEW_CONNECTION_EXPORT);
    expect(await exportsOf('service a { audit x { } }', 'a')).toContain(NEW_CONNECTION_EXPORT);
    expect(await exportsOf('mesh { deny x { when header "x-debug" present } }\nservice a { route r { to v1 } }', 'a')).toContain(NEW_CONNECTION_EXPORT);
  });

  it('is left out where nothing would be decided (routes, faults, rate limits only)', async () => {
    const exports = await exportsOf('service a { route r { to v1 }\n fault f { abort 503 percent 1 }\n rate_limit l { rate 10/s } }', 'a');
    expect(exports).not.toContain(NEW_CONNECTION_EXPORT);
  });

  it('derives the connection rules without changing the IR the HTTP decision is generated from', () => {
    const service = frontEnd([{ path: 'p.meshpolicy', text: 'service a { allow x { from "spiffe://mesh.local/ns/default/sa/web" when method == GET } }' }]).ir!.services[0]!;
    const before = JSON.stringify(service);
    const derived = connectionAuthz(service);
    expect(derived.authz.allows[0]!.when).toEqual(FALSE);
    expect(derived.authz.defaultDenyId).toBe('a/default-deny');
    expect(JSON.stringify(service)).toBe(before);
  });
});

describe('connection cases in meshc test files', () => {
  it('take only connection fields', () => {
    expect(parseRequestSpec({ connection: true, source: 'spiffe://mesh.local/ns/default/sa/web', port: 9000 }, 'inbound')).toEqual({
      direction: 'inbound',
      connection: true,
      source: 'spiffe://mesh.local/ns/default/sa/web',
      port: 9000,
    });
    expect(() => parseRequestSpec({ connection: true, method: 'GET', path: '/x' })).toThrow(/a connection has no method, path/);
    expect(() => parseRequestSpec({ connection: 'yes' })).toThrow(/connection must be true or false/);
  });
});
