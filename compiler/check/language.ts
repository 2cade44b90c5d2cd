// The vocabulary of the language that the checker, the lowering and the
// formatter share: rule kinds and the clauses each takes, condition fields and
// the operators each accepts, units, and the options of settings clauses.
// In: nothing. Out: constants.
import type { ClauseType, CompareOp, Field } from '../ast.ts';

export const RULE_KINDS = ['route', 'fault', 'allow', 'deny', 'audit', 'rate_limit', 'traffic'] as const;
export type RuleKind = (typeof RULE_KINDS)[number];

/** Rule kinds a `mesh { }` block may hold (routes name versions, which differ per service). */
export const MESH_RULE_KINDS: readonly RuleKind[] = ['fault', 'allow', 'deny', 'audit', 'rate_limit', 'traffic'];

/** Which clauses each rule kind accepts. */
export const ALLOWED_CLAUSES: Record<RuleKind, ClauseType[]> = {
  route: ['when', 'to', 'timeout', 'retry', 'mirror', 'request_header', 'response_header', 'rewrite', 'redirect', 'respond'],
  fault: ['when', 'delay', 'abort', 'between'],
  allow: ['when', 'from', 'dry_run'],
  deny: ['when', 'from', 'dry_run'],
  audit: ['when', 'from'],
  rate_limit: ['when', 'key', 'rate', 'dry_run'],
  traffic: ['timeout', 'retry', 'retry_budget', 'load_balancer', 'connection_limits', 'outlier_detection'],
};

/** Clauses that may appear more than once in a rule (one header operation each). */
export const REPEATABLE_CLAUSES: ClauseType[] = ['request_header', 'response_header'];

export const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'] as const;

/** Duration suffix → milliseconds. */
export const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Rate unit (after "/") → seconds. */
export const RATE_UNITS_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600 };

const STRING_OPS: CompareOp[] = ['eq', 'ne', 'prefix', 'suffix', 'contains', 'regex', 'matches', 'in', 'present', 'absent'];

/** The operators each condition field accepts. */
export const FIELD_OPS: Record<Field, CompareOp[]> = {
  method: ['eq', 'ne', 'in'],
  path: ['eq', 'ne', 'prefix', 'suffix', 'contains', 'regex', 'matches', 'in'],
  host: STRING_OPS,
  port: ['eq', 'ne', 'in'],
  header: STRING_OPS,
  query: STRING_OPS,
  claim: STRING_OPS,
  'grpc-service': STRING_OPS,
  'grpc-method': STRING_OPS,
  source: STRING_OPS,
  'source-namespace': STRING_OPS,
  'source-account': STRING_OPS,
  'source-ip': ['eq', 'ne', 'in'],
};

/** How a field is written, for messages. */
export const FIELD_TEXT: Record<Field, string> = {
  method: 'method',
  path: 'path',
  host: 'host',
  port: 'port',
  header: 'header',
  query: 'query',
  claim: 'claim',
  'grpc-service': 'grpc service',
  'grpc-method': 'grpc method',
  source: 'source',
  'source-namespace': 'source namespace',
  'source-account': 'source account',
  'source-ip': 'source ip',
};

export const OP_TEXT: Record<CompareOp, string> = {
  eq: '==',
  ne: '!=',
  prefix: 'prefix',
  suffix: 'suffix',
  contains: 'contains',
  regex: 'regex',
  matches: 'matches',
  in: 'in',
  present: 'present',
  absent: 'absent',
};

/** Types of option values in settings clauses; `flag` takes none. */
export type OptionType = 'flag' | 'number' | 'duration' | 'string' | 'list';

/** The options of each settings clause. */
export const SETTINGS_OPTIONS: Record<string, Record<string, OptionType>> = {
  retry: { attempts: 'number', on: 'list', per_try_timeout: 'duration', backoff: 'duration', backoff_max: 'duration' },
  retry_budget: { percent: 'number', min_per_second: 'number' },
  load_balancer: { round_robin: 'flag', least_request: 'flag', peak_ewma: 'flag', decay: 'duration', consistent_hash: 'flag', header: 'string', cookie: 'string', source: 'flag' },
  connection_limits: { max_connections: 'number', max_pending: 'number', max_requests: 'number' },
  outlier_detection: { consecutive_5xx: 'number', consecutive_gateway_errors: 'number', interval: 'duration', base_ejection: 'duration', max_ejection_percent: 'number' },
  rewrite: { path: 'string', prefix: 'string', host: 'string' },
  redirect: { scheme: 'string', host: 'string', port: 'number', path: 'string', prefix: 'string', status: 'number' },
  respond: { body: 'string', content_type: 'string' },
  mirror: { percent: 'number' },
};

/** Envoy's retry conditions the router understands (numbers in `on` are retriable status codes). */
export const RETRY_ON = ['5xx', 'gateway-error', 'reset', 'connect-failure', 'retriable-status-codes'] as const;

export const REDIRECT_STATUSES = [301, 302, 303, 307, 308];

/** Defaults the language fills in (Envoy's where Envoy has one). */
export const DEFAULTS = {
  retryBackoffBaseMs: 25,
  retryBackoffMaxMs: 250,
  peakEwmaDecayMs: 10_000,
  outlierIntervalMs: 10_000,
  outlierBaseEjectionMs: 30_000,
  outlierMaxEjectionPercent: 10,
  outlierConsecutive5xx: 5,
  retryBudgetMinPerSecond: 10,
  redirectStatus: 302,
};
