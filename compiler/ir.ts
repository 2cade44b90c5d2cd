// The policy IR: what the code generator and the reference interpreter read.
// Built from a checked AST by compiler/lower.ts; never refers back to it.
// Names are resolved (constants, match blocks, imports), defaults filled in,
// header names lower-cased, `from` folded into conditions, mesh-wide rules
// merged into each service, routes put in precedence order, regexes compiled
// to DFAs. Every rule carries its rule id and source span.
import type { SourceSpan } from '../protocol/bundle.ts';
import type { RouteTraffic, ServiceTraffic } from '../protocol/traffic.ts';
import type { Cidr } from './ip.ts';
import type { Dfa } from './regex/automaton.ts';
import type { Window } from './check/window.ts';

/** A whole build: one ServiceIR per service, sorted by service name. */
export interface PolicyIR {
  services: ServiceIR[];
}

/** All rules of one service (mesh-wide ones first within each family). */
export interface ServiceIR {
  name: string;
  /** The file holding the service block ("" for a service only the mesh block governs). */
  sourcePath: string;
  span: SourceSpan;
  /** `service NAME dry_run`: the host logs and counts local responses instead of sending them. */
  dryRun: boolean;
  /** Client side: in precedence order; the first match wins. */
  routes: RouteIR[];
  /** Client side: every match applies; an abort ends the request. */
  faults: FaultIR[];
  /** Server side: deny beats allow. */
  authz: AuthzIR;
  /** Server side: logged and counted when they match; they decide nothing. */
  audits: RuleIR[];
  /** Server side: every matching limit takes a token; the first empty bucket answers 429. */
  rateLimits: RateLimitIR[];
  /** The router's policy for this service (manifest `traffic`). */
  traffic: ServiceTraffic;
}

/** The common part of every rule. */
export interface RuleIR {
  id: string;
  /** The whole rule (the manifest's rule map). */
  span: SourceSpan;
  /** Its name: where diagnostics about the rule point. */
  at: SourceSpan;
  when: ConditionIR;
}

export interface HeaderOpIR {
  op: 'set' | 'add' | 'remove';
  /** Lower-case. */
  name: string;
  value: string;
}

/** What a matching route does with the request. */
export type RouteActionIR =
  | { kind: 'forward'; targets: { version: string; weight: number }[]; rewrite?: RewriteIR }
  | { kind: 'redirect'; redirect: RedirectIR }
  | { kind: 'respond'; status: number; body: string; contentType: string };

/** Path rewrites keep the query string. `prefix` replaces the matched path prefix `matched`. */
export interface RewriteIR {
  path?: { kind: 'full'; value: string } | { kind: 'prefix'; matched: string; value: string };
  host?: string;
}

/** The Location of a redirect: each part given replaces the request's own. */
export interface RedirectIR {
  status: number;
  scheme?: string;
  host?: string;
  port?: number;
  path?: { kind: 'full'; value: string } | { kind: 'prefix'; matched: string; value: string };
}

export interface RouteIR extends RuleIR {
  action: RouteActionIR;
  requestHeaders: HeaderOpIR[];
  responseHeaders: HeaderOpIR[];
  /** Timeouts, retries, mirror for this route (also in the manifest's traffic.routes[id]). */
  traffic?: RouteTraffic;
}

/** Delays and/or aborts a matching request, each with its own probability, optionally only inside a time window. */
export interface FaultIR extends RuleIR {
  delay?: { ms: number; percent: number };
  /** `grpcStatus` set: a gRPC error (HTTP 200, grpc-status) instead of an HTTP status. */
  abort?: { status: number; grpcStatus?: number; percent: number };
  window?: Window;
}

export interface AuthzRuleIR extends RuleIR {
  /** Logged and counted when it would change the decision; never enforced. */
  dryRun: boolean;
}

/**
 * Enforced: a matching deny (first in order) denies; else, if enforced allows
 * exist, a request matching none is denied by defaultDenyId. Dry-run rules are
 * evaluated with the enforced ones into a shadow decision; when it differs, the
 * filter logs and counts it.
 */
export interface AuthzIR {
  denies: AuthzRuleIR[];
  allows: AuthzRuleIR[];
  /** `<service>/default-deny` when at least one enforced allow exists, else null. */
  defaultDenyId: string | null;
  /** The shadow decision's default deny: set when any allow (enforced or dry-run) exists. */
  shadowDefaultDenyId: string | null;
}

/** What a rate limit keys its buckets on. */
export type RateKeyIR = { kind: 'none' } | { kind: 'source' } | { kind: 'path' } | { kind: 'remote-address' } | { kind: 'header'; name: string };

/** A token bucket per key: refills ratePerSecond tokens a second, holds at most burst. */
export interface RateLimitIR extends RuleIR {
  key: RateKeyIR;
  ratePerSecond: number;
  burst: number;
  dryRun: boolean;
}

/** A request value a condition reads. */
export type FieldIR =
  | { kind: 'method' }
  /** `:path` without the query string. */
  | { kind: 'path' }
  /** `:authority`. */
  | { kind: 'host' }
  /** gRPC requests only (content-type application/grpc*): `/<service>/<method>` of `:path`. */
  | { kind: 'grpc-service' }
  | { kind: 'grpc-method' }
  /** Property source.principal (SPIFFE ID), and its `ns/<ns>` and `sa/<sa>` segments. */
  | { kind: 'source' }
  | { kind: 'source-namespace' }
  | { kind: 'source-account' }
  /** A request header (lower-case name); repeated headers joined with ",". */
  | { kind: 'header'; name: string }
  /** The first query parameter of that name in `:path`, undecoded. */
  | { kind: 'query'; name: string }
  /** Property mesh.jwt.claims.<name> (a verified JWT claim, supplied by the host). */
  | { kind: 'claim'; name: string };

/** A test on a string value (false when the value is absent). */
export type StringTestIR =
  | { kind: 'eq'; value: string }
  | { kind: 'in'; values: string[] }
  | { kind: 'prefix'; value: string }
  /** Whole-segment prefix (paths): "/a" matches "/a" and "/a/b", not "/ab". */
  | { kind: 'segment-prefix'; value: string }
  | { kind: 'suffix'; value: string }
  | { kind: 'contains'; value: string }
  /** `*` matches any run of characters other than "/". */
  | { kind: 'glob'; pattern: string }
  /** Whole-value match of `pattern` by its DFA. */
  | { kind: 'regex'; pattern: string; dfa: Dfa };

/** A boolean condition over one request. */
export type ConditionIR =
  | { op: 'true' }
  | { op: 'false' }
  | { op: 'and'; args: ConditionIR[] }
  | { op: 'or'; args: ConditionIR[] }
  | { op: 'not'; arg: ConditionIR }
  /** The field is present and passes the test. */
  | { op: 'string'; field: FieldIR; test: StringTestIR }
  /** The field is present. */
  | { op: 'present'; field: FieldIR }
  /** Property destination.port is one of ports. */
  | { op: 'port-in'; ports: number[] }
  /** The address in property source.address is in one of the blocks. */
  | { op: 'ip-in'; blocks: Cidr[] };
