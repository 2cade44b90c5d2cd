// Authorization of an opaque TCP connection, derived from a service's IR.
// At connection time only connection attributes are known (the peer's SPIFFE
// ID and its namespace and account, the peer address, the destination port);
// a condition on anything HTTP-only (method, path, host, header, query, gRPC
// names, JWT claims) cannot be decided. Istio's rule for such rules on TCP
// traffic, generalised to any boolean condition:
//   - an allow matches only when its condition holds whatever the requests on
//     the connection would be ("definitely"): HTTP-only leaves count as false;
//   - a deny (and an audit) matches when its condition could hold for some
//     request ("possibly"): HTTP-only leaves count as true, so it denies more.
// `not` swaps the two readings. The result is ordinary IR over connection
// fields only, so the code generator and the reference interpreter evaluate
// it exactly as they evaluate HTTP rules: the two paths cannot drift.
//
// In:  a ServiceIR. Out: its connection-time authorization (AuthzIR + audits),
//      or the condition transform alone.
import type { AuthzIR, AuthzRuleIR, ConditionIR, RuleIR, ServiceIR } from './ir.ts';

/** How an HTTP-only condition is read at connection time. */
export type Reading = 'definitely' | 'possibly';

/** Fields whose value is known when a connection opens. */
const CONNECTION_FIELDS = new Set(['source', 'source-namespace', 'source-account']);

const TRUE: ConditionIR = { op: 'true' };
const FALSE: ConditionIR = { op: 'false' };

function knownAtConnection(c: ConditionIR): boolean {
  if (c.op === 'port-in' || c.op === 'ip-in') return true;
  if (c.op === 'string' || c.op === 'present') return CONNECTION_FIELDS.has(c.field.kind);
  return true;
}

/**
 * `c` rewritten over connection fields only: under `definitely` it holds only
 * where `c` holds for every request, under `possibly` wherever `c` holds for
 * some request. Constants are folded, so an HTTP-only rule becomes `true` or
 * `false` outright.
 */
export function connectionCondition(c: ConditionIR, reading: Reading): ConditionIR {
  switch (c.op) {
    case 'true':
    case 'false':
      return c;
    case 'not': {
      const arg = connectionCondition(c.arg, reading === 'definitely' ? 'possibly' : 'definitely');
      if (arg.op === 'true') return FALSE;
      if (arg.op === 'false') return TRUE;
      return { op: 'not', arg };
    }
    case 'and':
    case 'or': {
      // The absorbing constant of the operator decides it; the neutral one drops out.
      const absorbing = c.op === 'and' ? 'false' : 'true';
      const args: ConditionIR[] = [];
      for (const a of c.args) {
        const m = connectionCondition(a, reading);
        if (m.op === absorbing) return m;
        if (m.op !== 'true' && m.op !== 'false') args.push(m);
      }
      if (args.length === 0) return c.op === 'and' ? TRUE : FALSE;
      return args.length === 1 ? args[0]! : { op: c.op, args };
    }
    default:
      if (knownAtConnection(c)) return c;
      return reading === 'definitely' ? FALSE : TRUE;
  }
}

/** A service's authorization as it applies to an opaque TCP connection. */
export interface ConnectionAuthz {
  authz: AuthzIR;
  audits: RuleIR[];
}

function mapRule<T extends RuleIR>(rule: T, reading: Reading): T {
  return { ...rule, when: connectionCondition(rule.when, reading) };
}

/**
 * The connection-time rules: denies and audits read `possibly`, allows
 * `definitely`, the same ids and default-deny ids as for HTTP (so a
 * connection no allow admits is closed by `<service>/default-deny`).
 */
export function connectionAuthz(s: ServiceIR): ConnectionAuthz {
  const a = s.authz;
  return {
    authz: {
      denies: a.denies.map((d): AuthzRuleIR => mapRule(d, 'possibly')),
      allows: a.allows.map((r): AuthzRuleIR => mapRule(r, 'definitely')),
      defaultDenyId: a.defaultDenyId,
      shadowDefaultDenyId: a.shadowDefaultDenyId,
    },
    audits: s.audits.map((r) => mapRule(r, 'possibly')),
  };
}

/** Whether a service's filter decides connections: it has any allow, deny or audit (mesh-wide ones included). */
export function hasConnectionPolicy(s: ServiceIR): boolean {
  return s.authz.denies.length > 0 || s.authz.allows.length > 0 || s.audits.length > 0;
}
