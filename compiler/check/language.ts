// The vocabulary of the language that the checker and the lowering share:
// rule kinds, HTTP methods, duration and rate units.
// In: nothing. Out: constants.

export const RULE_KINDS = ['route', 'fault', 'allow', 'deny', 'rate_limit'] as const;
export type RuleKind = (typeof RULE_KINDS)[number];

export const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'] as const;

/** Duration suffix → milliseconds. */
export const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Rate unit (after "/") → seconds. */
export const RATE_UNITS_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600 };
