// The policy IR: what the code generator (and, later, a reference interpreter)
// reads. Built from a checked AST by compiler/lower.ts; never refers back to it.
// Names are resolved, defaults filled in, header names lower-cased, `from`
// folded into conditions. Every rule carries its rule id and source span.
import type { SourceSpan } from '../protocol/bundle.ts';

/** A whole build: one ServiceIR per service block, sorted by service name. */
export interface PolicyIR {
  services: ServiceIR[];
}

/** All rules of one service, each family in source order. */
export interface ServiceIR {
  name: string;
  /** The file holding the service block. */
  sourcePath: string;
  span: SourceSpan;
  /** Client side: first match wins. */
  routes: RouteIR[];
  /** Client side: every match applies; an abort ends the request. */
  faults: FaultIR[];
  /** Server side: deny beats allow. */
  authz: AuthzIR;
  /** Server side: every matching limit takes a token; the first empty bucket answers 429. */
  rateLimits: RateLimitIR[];
}

/** Sends a matching request to one of the targets, drawn by weight. */
export interface RouteIR {
  id: string;
  span: SourceSpan;
  when: ConditionIR;
  targets: { version: string; weight: number }[];
}

/** Delays and/or aborts a matching request, each with its own probability. */
export interface FaultIR {
  id: string;
  span: SourceSpan;
  when: ConditionIR;
  delay?: { ms: number; percent: number };
  abort?: { status: number; percent: number };
}

/** One allow or deny rule: it applies when `when` holds. */
export interface AuthzRuleIR {
  id: string;
  span: SourceSpan;
  when: ConditionIR;
}

/** Denies are tried first (any match → 403); then, if allows exist, a request matching none is denied by defaultDenyId. */
export interface AuthzIR {
  denies: AuthzRuleIR[];
  allows: AuthzRuleIR[];
  /** `<service>/default-deny` when at least one allow exists, else null (no authorization). */
  defaultDenyId: string | null;
}

/** What a rate limit keys its buckets on. */
export type RateKeyIR = { kind: 'none' } | { kind: 'source' } | { kind: 'header'; name: string };

/** A token bucket per key: refills ratePerSecond tokens a second, holds at most burst. */
export interface RateLimitIR {
  id: string;
  span: SourceSpan;
  when: ConditionIR;
  key: RateKeyIR;
  ratePerSecond: number;
  burst: number;
}

/** A boolean condition over one request. */
export type ConditionIR =
  /** Always holds (no `when`). */
  | { op: 'true' }
  /** Every operand holds. */
  | { op: 'and'; args: ConditionIR[] }
  /** At least one operand holds. */
  | { op: 'or'; args: ConditionIR[] }
  /** The operand does not hold. */
  | { op: 'not'; arg: ConditionIR }
  /** `:method` is one of methods (upper-case). */
  | { op: 'method-in'; methods: string[] }
  /** The path (`:path` without query) equals value. */
  | { op: 'path-eq'; value: string }
  /** The path starts with value on a segment boundary. */
  | { op: 'path-prefix'; value: string }
  /** Header `name` (lower-case) is present and equals value. */
  | { op: 'header-eq'; name: string; value: string }
  /** Header `name` is present and starts with value. */
  | { op: 'header-prefix'; name: string; value: string }
  /** Header `name` is present. */
  | { op: 'header-present'; name: string }
  /** The peer's SPIFFE ID equals value. */
  | { op: 'source-eq'; value: string }
  /** The peer's SPIFFE ID matches pattern (`*` within one segment). */
  | { op: 'source-glob'; pattern: string };
