// IR → AssemblyScript source for one service's filter module.
// In: a ServiceIR (never the AST). Out: the text of the module's entry file,
// which subclasses Policy (filters/policy.ts), installs it, and re-exports the
// proxy-wasm ABI from filters/abi.ts. Output depends only on the IR, so the
// same IR always gives the same source.
// Authorization rules are tested through filters/rules.ts firstMatch: once a
// family has INDEX_THRESHOLD rules or more, each rule is indexed by one
// conjunct it requires (exact source identity, else path prefix or exact
// path, else exact host, else method), so a decision tests only the rules
// under the request's own keys plus the unkeyed ones, in rule order.
// Services with authorization rules also get the same rules read at
// connection time (compiler/connection.ts) behind proxy_on_new_connection.
import { connectionAuthz, hasConnectionPolicy } from '../connection.ts';
import type { AuthzIR, AuthzRuleIR, ConditionIR, FieldIR, HeaderOpIR, RateKeyIR, RouteIR, RuleIR, ServiceIR, StringTestIR } from '../ir.ts';
import type { Dfa } from '../regex/automaton.ts';

/**
 * The ABI functions every module exports (defined in filters/abi.ts). Policies
 * decide on request headers, so body and trailer callbacks are left out: a
 * host skips callbacks a module does not export, which keeps bodies streaming
 * with their original framing and saves a Wasm call per chunk. Modules whose
 * routes change response headers also export RESPONSE_HEADERS_EXPORT.
 * Per-request context callbacks cost a Wasm call each on every request, so
 * they are left out where they would do nothing: proxy_on_context_create
 * always (a policy keeps no per-context state when a request starts), and
 * proxy_on_done/proxy_on_delete unless a request can leave state behind (a
 * delayed request to cancel, response-header changes to forget):
 * CONTEXT_END_EXPORTS. Hosts skip callbacks a module does not export (Envoy's
 * as ours).
 */
export const ABI_EXPORTS = [
  'proxy_abi_version_0_2_1',
  'proxy_on_memory_allocate',
  'proxy_on_vm_start',
  'proxy_on_configure',
  'proxy_on_tick',
  'proxy_on_request_headers',
] as const;

export const RESPONSE_HEADERS_EXPORT = 'proxy_on_response_headers';
/** Exported by modules of services with authorization rules: the decision on an opaque TCP connection. */
export const NEW_CONNECTION_EXPORT = 'proxy_on_new_connection';
export const CONTEXT_END_EXPORTS = ['proxy_on_done', 'proxy_on_delete'] as const;

/** Families this long or longer are indexed (by source, path, host, method). */
export const INDEX_THRESHOLD = 8;

/** Rule tests per generated function. */
const CHUNK = 32;

function str(value: string): string {
  // JSON string escapes are valid AssemblyScript string escapes.
  return JSON.stringify(value);
}

function f64(value: number): string {
  const text = String(value);
  return /[.eE]/.test(text) ? text : `${text}.0`;
}

/** Module-level constants the expressions refer to, deduplicated by content. */
class Globals {
  readonly lines: string[] = [];
  private readonly byKey = new Map<string, string>();
  private readonly slots = new Map<string, number>();

  constant(prefix: string, key: string, declare: (name: string) => string): string {
    let name = this.byKey.get(key);
    if (!name) {
      name = `${prefix}_${this.byKey.size}`;
      this.byKey.set(key, name);
      this.lines.push(declare(name));
    }
    return name;
  }

  /** The request-cache slot of a header (lower-case name). */
  headerSlot(name: string): number {
    let slot = this.slots.get(name);
    if (slot === undefined) {
      slot = this.slots.size;
      this.slots.set(name, slot);
    }
    return slot;
  }

  get slotCount(): number {
    return this.slots.size;
  }

  stringSet(values: string[]): string {
    return this.constant('SET', `set:${JSON.stringify(values)}`, (n) => `const ${n}: StaticArray<string> = [${values.map(str).join(', ')}];`);
  }

  regex(pattern: string, dfa: Dfa): string {
    return this.constant('RE', `re:${pattern}`, (n) => `// regex ${str(pattern)}\nconst ${n} = ${dfaLiteral(dfa)};`);
  }

  cidrs(blocks: { bytes: number[]; bits: number }[]): string {
    const list = blocks.map((b) => `new Cidr([${b.bytes.join(', ')}], ${b.bits})`).join(', ');
    return this.constant('CIDRS', `cidr:${list}`, (n) => `const ${n}: StaticArray<Cidr> = [${list}];`);
  }
}

function dfaLiteral(dfa: Dfa): string {
  const ascii: number[] = [];
  for (let c = 0; c < 128; c++) {
    let i = 0;
    while (i + 1 < dfa.starts.length && dfa.starts[i + 1]! <= c) i++;
    ascii.push(dfa.classOf[i]!);
  }
  return `new Dfa([${ascii.join(', ')}], [${dfa.starts.join(', ')}], [${dfa.classOf.join(', ')}], ${dfa.classCount}, [${dfa.next.join(', ')}], [${dfa.accept.map((a) => (a ? 1 : 0)).join(', ')}])`;
}

function fieldExpr(f: FieldIR, g: Globals): string {
  switch (f.kind) {
    case 'method':
      return 'r.method';
    case 'path':
      return 'r.path';
    case 'host':
      return 'r.host';
    case 'grpc-service':
      return 'r.grpcService';
    case 'grpc-method':
      return 'r.grpcMethod';
    case 'source':
      return 'r.source';
    case 'source-namespace':
      return 'r.sourceNamespace';
    case 'source-account':
      return 'r.sourceAccount';
    case 'header':
      return `r.hdr(${g.headerSlot(f.name)}, ${str(f.name)})`;
    case 'query':
      return `r.query(${str(f.name)})`;
    case 'claim':
      return `r.claim(${str(f.name)})`;
  }
}

function testExpr(value: string, t: StringTestIR, g: Globals): string {
  switch (t.kind) {
    case 'eq':
      return `tEq(${value}, ${str(t.value)})`;
    case 'in':
      return `tIn(${value}, ${g.stringSet(t.values)})`;
    case 'prefix':
      return `tPrefix(${value}, ${str(t.value)})`;
    case 'segment-prefix':
      return `tSegmentPrefix(${value}, ${str(t.value)})`;
    case 'suffix':
      return `tSuffix(${value}, ${str(t.value)})`;
    case 'contains':
      return `tContains(${value}, ${str(t.value)})`;
    case 'glob':
      return `tGlob(${value}, ${str(t.pattern)})`;
    case 'regex':
      return `tRegex(${value}, ${g.regex(t.pattern, t.dfa)})`;
  }
}

function conditionExpr(c: ConditionIR, g: Globals): string {
  switch (c.op) {
    case 'true':
      return 'true';
    case 'false':
      return 'false';
    case 'and':
      return `(${c.args.map((a) => conditionExpr(a, g)).join(' && ')})`;
    case 'or':
      return `(${c.args.map((a) => conditionExpr(a, g)).join(' || ')})`;
    case 'not':
      return `!${conditionExpr(c.arg, g)}`;
    case 'string':
      return testExpr(fieldExpr(c.field, g), c.test, g);
    case 'present':
      return `!isNull(${fieldExpr(c.field, g)})`;
    case 'port-in':
      return `(${c.ports.map((p) => `r.destinationPort == ${p}`).join(' || ') || 'false'})`;
    case 'ip-in':
      return `r.sourceIpIn(${g.cidrs(c.blocks)})`;
  }
}

function keyExpr(key: RateKeyIR, g: Globals): string {
  switch (key.kind) {
    case 'none':
      return '""';
    case 'source':
      return 'r.keySource';
    case 'path':
      return 'r.path';
    case 'remote-address':
      return 'r.keyAddress';
    case 'header':
      return `r.keyHeader(${g.headerSlot(key.name)}, ${str(key.name)})`;
  }
}

/** Wraps `body` lines in `if (cond)` unless the condition always holds. */
function guarded(cond: string, body: string[], indent: string): string[] {
  if (cond === 'true') return body.map((l) => indent + l);
  return [`${indent}if (${cond}) {`, ...body.map((l) => `${indent}  ${l}`), `${indent}}`];
}

/** One key an index files a rule under: the dimension, and the value (for paths: whole-segment prefix or exact). */
type RuleKey = { dim: 'source' | 'host' | 'method' | 'path-prefix' | 'path-exact'; value: string };

/** The keys of a condition leaf on one dimension ("source", "path", "host", "method"), or undefined. */
function leafKeys(c: ConditionIR, dim: 'source' | 'path' | 'host' | 'method'): RuleKey[] | undefined {
  if (c.op !== 'string' || c.field.kind !== dim) return undefined;
  const t = c.test;
  const exact = dim === 'path' ? 'path-exact' : dim;
  if (t.kind === 'eq') return [{ dim: exact, value: t.value }];
  if (t.kind === 'in') return t.values.map((value) => ({ dim: exact, value }));
  // PathIndex never looks up "" (the checker rejects it; kept out so a rule is never filed where it cannot be found).
  if (dim === 'path' && t.kind === 'segment-prefix' && t.value !== '') return [{ dim: 'path-prefix', value: t.value }];
  return undefined;
}

/**
 * Keys on one dimension such that the condition can only hold when the
 * request has one of them (a leaf, an `or` all of whose sides are keyed, or
 * an `and` with a keyed conjunct), or undefined.
 */
function requiredKeys(c: ConditionIR, dim: 'source' | 'path' | 'host' | 'method'): RuleKey[] | undefined {
  const leaf = leafKeys(c, dim);
  if (leaf) return leaf;
  if (c.op === 'or') {
    const all: RuleKey[] = [];
    for (const a of c.args) {
      const k = requiredKeys(a, dim);
      if (!k) return undefined;
      all.push(...k);
    }
    return all;
  }
  if (c.op === 'and') {
    for (const a of c.args) {
      const k = requiredKeys(a, dim);
      if (k) return k;
    }
  }
  return undefined;
}

/** Dimensions in the order a rule is keyed by: identity is the most selective, method the least. */
const DIMENSIONS = ['source', 'path', 'host', 'method'] as const;

/** The keys a rule is filed under (all on one dimension), or undefined for the always list. */
function ruleKeys(c: ConditionIR): RuleKey[] | undefined {
  for (const dim of DIMENSIONS) {
    const k = requiredKeys(c, dim);
    if (k && k.length > 0) return k;
  }
  return undefined;
}

function isSourceKeyTest(c: ConditionIR): boolean {
  return c.op === 'string' && c.field.kind === 'source' && (c.test.kind === 'eq' || c.test.kind === 'in');
}

/**
 * A source-keyed rule's condition as tested after the index lookup: the
 * identity test the index already answered (the rule is only reached under
 * one of its identities) is dropped, saving a string comparison per decision.
 * Other keys are tested again (cheap, and the path index may list a rule
 * under a key that is not its whole test).
 */
function afterIndexLookup(c: ConditionIR): ConditionIR {
  if (isSourceKeyTest(c)) return { op: 'true' };
  if (c.op === 'and') {
    // Only the argument requiredKeys keyed the rule by, and only when it is the identity test itself.
    const i = c.args.findIndex((a) => requiredKeys(a, 'source') !== undefined);
    if (i >= 0 && isSourceKeyTest(c.args[i]!)) {
      const rest = c.args.filter((_, k) => k !== i);
      return rest.length === 1 ? rest[0]! : { ...c, args: rest };
    }
  }
  return c;
}

/** FNV-1a over UTF-16 code units, as filters/rules.ts PathIndex walks a path. */
export function pathHash(key: string): number {
  let h = 2166136261;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 16777619) >>> 0;
  return h;
}

function byKey<T>(a: [string, T], b: [string, T]): number {
  return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0;
}

/** Sorted key runs as data: keys, run ends and one flat rule list (ascending within a run). */
function runs(keyed: Map<string, number[]>): { keys: string[]; ends: number[]; flat: number[] } {
  const entries = [...keyed].sort(byKey);
  const ends: number[] = [];
  const flat: number[] = [];
  for (const [, list] of entries) {
    flat.push(...list);
    ends.push(flat.length);
  }
  return { keys: entries.map(([k]) => k), ends, flat };
}

/**
 * One authorization family (denies or allows): a test function over rule
 * indexes and, per rule subset (enforced / shadow), a RuleIndex (by source,
 * path, host, method, and the list of unkeyed rules). Returns the expression
 * finding the first match.
 */
function family(name: string, rules: AuthzRuleIR[], g: Globals, fns: string[]): { ids: string; first: (subset: 'enforced' | 'shadow') => string } {
  const ids = g.constant('IDS', `ids:${name}:${rules.map((r) => r.id).join(',')}`, (n) => `const ${n}: StaticArray<string> = [${rules.map((r) => str(r.id)).join(', ')}];`);
  const indexed = rules.length >= INDEX_THRESHOLD;
  const keysOf = rules.map((r) => (indexed ? ruleKeys(r.when) : undefined));
  // Keyed rules are reached only through the index (in both subsets), never through the ALWAYS list.
  const tested = (rule: AuthzRuleIR, i: number): ConditionIR => (keysOf[i]?.[0]?.dim === 'source' ? afterIndexLookup(rule.when) : rule.when);
  // Rule tests in chunks of CHUNK: the optimizer's time grows faster than a function's size.
  const chunks = Math.ceil(rules.length / CHUNK);
  for (let c = 0; c < chunks; c++) {
    fns.push(`function ${name}Matches${c}(i: i32, r: Request): bool {`, '  switch (i) {');
    rules.slice(c * CHUNK, (c + 1) * CHUNK).forEach((rule, k) => fns.push(`    case ${c * CHUNK + k}: return ${conditionExpr(tested(rule, c * CHUNK + k), g)};`));
    fns.push('  }', '  return false;', '}', '');
  }
  if (chunks === 1) fns.push(`function ${name}Matches(i: i32, r: Request): bool {`, `  return ${name}Matches0(i, r);`, '}', '');
  else {
    fns.push(`function ${name}Matches(i: i32, r: Request): bool {`, `  switch (i / ${CHUNK}) {`);
    for (let c = 0; c < chunks; c++) fns.push(`    case ${c}: return ${name}Matches${c}(i, r);`);
    fns.push('  }', '  return false;', '}', '');
  }
  const subsets = new Map<string, string>();
  const first = (subset: 'enforced' | 'shadow'): string => {
    let expr = subsets.get(subset);
    if (expr) return expr;
    // Per dimension, key → rules in rule order; a key listed twice by one rule counts once.
    const keyed = new Map<RuleKey['dim'], Map<string, number[]>>();
    const always: number[] = [];
    rules.forEach((r, i) => {
      if (subset === 'enforced' && r.dryRun) return;
      const keys = keysOf[i];
      if (!keys) return void always.push(i);
      for (const k of keys) {
        const dim = keyed.get(k.dim) ?? new Map<string, number[]>();
        keyed.set(k.dim, dim);
        const list = dim.get(k.value) ?? [];
        if (list[list.length - 1] !== i) list.push(i);
        dim.set(k.value, list);
      }
    });
    const prefix = `${name.toUpperCase()}_${subset.toUpperCase()}`;
    const keyIndex = (dim: 'source' | 'host' | 'method'): string => {
      const m = keyed.get(dim);
      if (!m) return 'null';
      const { keys, ends, flat } = runs(m);
      const p = `${prefix}_${dim.toUpperCase()}`;
      g.lines.push(
        `const ${p}_KEYS: StaticArray<string> = [${keys.map(str).join(', ')}];`,
        `const ${p}_ENDS: StaticArray<i32> = [${ends.join(', ')}];`,
        `const ${p}_RULES: StaticArray<i32> = [${flat.join(', ')}];`,
        `const ${p}_INDEX = buildIndex(${p}_KEYS, ${p}_ENDS, ${p}_RULES);`,
      );
      return `${p}_INDEX`;
    };
    const pathIndex = (): string => {
      const prefixes = keyed.get('path-prefix');
      const exacts = keyed.get('path-exact');
      if (!prefixes && !exacts) return 'null';
      // Prefix keys as "^<path>", exact keys as "=<path>": one sorted run list for both.
      const both = new Map<string, number[]>();
      for (const [k, v] of prefixes ?? []) both.set(`^${k}`, v);
      for (const [k, v] of exacts ?? []) both.set(`=${k}`, v);
      const { keys, ends, flat } = runs(both);
      const p = `${prefix}_PATH`;
      g.lines.push(
        `const ${p}_KEYS: StaticArray<string> = [${keys.map((k) => str(k.slice(1))).join(', ')}];`,
        `const ${p}_EXACT: StaticArray<bool> = [${keys.map((k) => String(k[0] === '=')).join(', ')}];`,
        `const ${p}_HASHES: StaticArray<u32> = [${keys.map((k) => String(pathHash(k.slice(1)))).join(', ')}];`,
        `const ${p}_ENDS: StaticArray<i32> = [${ends.join(', ')}];`,
        `const ${p}_RULES: StaticArray<i32> = [${flat.join(', ')}];`,
        `const ${p}_INDEX = new PathIndex(${p}_KEYS, ${p}_EXACT, ${p}_HASHES, ${p}_ENDS, ${p}_RULES);`,
      );
      return `${p}_INDEX`;
    };
    const source = keyIndex('source');
    const paths = pathIndex();
    const host = keyIndex('host');
    const method = keyIndex('method');
    g.lines.push(
      `const ${prefix}_ALWAYS: StaticArray<i32> = [${always.join(', ')}];`,
      `const ${prefix} = new RuleIndex(${source}, ${paths}, ${host}, ${method}, ${prefix}_ALWAYS);`,
    );
    expr = `firstMatch(${prefix}, ${name}Matches, r)`;
    subsets.set(subset, expr);
    return expr;
  };
  return { ids, first };
}

/**
 * The body of an authorize method: the enforced decision, the dry-run shadow
 * decision, audits. `prefix` names its generated functions and tables (the
 * request and the connection decisions live in one module); `audit` is the
 * library function an audit hit calls.
 */
function authorizeBody(authz: AuthzIR, audits: RuleIR[], g: Globals, fns: string[], prefix: string, audit: string): string[] {
  const { denies, allows, defaultDenyId, shadowDefaultDenyId } = authz;
  const body: string[] = ['let decision: string | null = null;'];
  const deny = denies.length > 0 ? family(`${prefix}deny`, denies, g, fns) : undefined;
  const allow = allows.length > 0 ? family(`${prefix}allow`, allows, g, fns) : undefined;
  const enforcedDenies = denies.some((d) => !d.dryRun);
  if (deny && enforcedDenies) body.push(`const d = ${deny.first('enforced')};`, `if (d >= 0) decision = ${deny.ids}[d];`);
  else body.push('const d = -1;');
  if (allow && defaultDenyId !== null) {
    body.push('let a = -1;', 'if (d < 0) {', `  a = ${allow.first('enforced')};`, `  if (a < 0) decision = ${str(defaultDenyId)};`, '}');
  } else body.push('const a = -1;');
  if (denies.some((d) => d.dryRun) || allows.some((a) => a.dryRun)) {
    body.push('let shadow: string | null = null;', 'let shadowAllow = -1;');
    if (deny) body.push(`const sd = ${deny.first('shadow')};`, `if (sd >= 0) shadow = ${deny.ids}[sd];`);
    else body.push('const sd = -1;');
    if (allow) {
      body.push('if (sd < 0) {', `  shadowAllow = ${allow.first('shadow')};`, `  if (shadowAllow < 0) shadow = ${str(shadowDefaultDenyId ?? '')};`, '}');
    }
    body.push(
      'if (isNull(shadow) != isNull(decision)) {',
      `  if (!isNull(shadow)) dryRunHit(changetype<string>(shadow), "would deny");`,
      `  else dryRunHit(${allow ? `shadowAllow >= 0 ? ${allow.ids}[shadowAllow] : ""` : '""'}, "would allow");`,
      '}',
    );
  }
  if (allow) body.push(`if (a >= 0 && isNull(decision)) r.applied(${allow.ids}[a]);`);
  for (const a of audits) body.push(...guarded(conditionExpr(a.when, g), [`${audit}(r, ${str(a.id)});`], ''));
  body.push('return decision;');
  return body.map((l) => `    ${l}`);
}

function headerOps(ops: HeaderOpIR[], map: 'request' | 'response'): string[] {
  return ops.map((o) => {
    if (map === 'request') {
      if (o.op === 'set') return `r.setRequestHeader(${str(o.name)}, ${str(o.value)});`;
      if (o.op === 'add') return `r.addRequestHeader(${str(o.name)}, ${str(o.value)});`;
      return `r.removeRequestHeader(${str(o.name)});`;
    }
    if (o.op === 'set') return `setHeader(MAP_HTTP_RESPONSE_HEADERS, ${str(o.name)}, ${str(o.value)});`;
    if (o.op === 'add') return `addHeader(MAP_HTTP_RESPONSE_HEADERS, ${str(o.name)}, ${str(o.value)});`;
    return `removeHeader(MAP_HTTP_RESPONSE_HEADERS, ${str(o.name)});`;
  });
}

function routeBody(rt: RouteIR, i: number, g: Globals): string[] {
  const a = rt.action;
  if (a.kind === 'redirect') {
    const r = a.redirect;
    const path = !r.path ? '""' : r.path.kind === 'full' ? str(r.path.value) : `r.replacePrefix(${str(r.path.matched)}, ${str(r.path.value)})`;
    return [`r.redirect(${r.status}, ${str(rt.id)}, ${str(r.scheme ?? '')}, ${str(r.host ?? '')}, ${r.port ?? 0}, ${path});`, 'return false;'];
  }
  if (a.kind === 'respond') return [`r.respond(${a.status}, ${str(rt.id)}, ${str(a.body)}, ${str(a.contentType)});`, 'return false;'];
  const body: string[] = [];
  let version: string;
  if (a.targets.length === 1) version = str(a.targets[0]!.version);
  else {
    const versions = g.constant('VERSIONS', `versions:${rt.id}`, (n) => `const ${n}: StaticArray<string> = [${a.targets.map((t) => str(t.version)).join(', ')}];`);
    const weights = g.constant('WEIGHTS', `weights:${rt.id}`, (n) => `const ${n}: StaticArray<u32> = [${a.targets.map((t) => String(t.weight)).join(', ')}];`);
    version = `${versions}[pickWeighted(${weights})]`;
  }
  if (a.rewrite?.path) {
    const p = a.rewrite.path;
    body.push(`r.rewritePath(${p.kind === 'full' ? str(p.value) : `r.replacePrefix(${str(p.matched)}, ${str(p.value)})`});`);
  }
  if (a.rewrite?.host !== undefined) body.push(`r.rewriteHost(${str(a.rewrite.host)});`);
  body.push(...headerOps(rt.requestHeaders, 'request'));
  if (rt.responseHeaders.length > 0) body.push(`keepResponseRoute(r.contextId, ${i});`);
  body.push(`r.routeTo(${version}, ${str(rt.id)});`, 'return true;');
  return body;
}

export function emitService(service: ServiceIR): string {
  const g = new Globals();
  const fns: string[] = [];

  const authorize = authorizeBody(service.authz, service.audits, g, fns, '', 'auditHit');
  // Opaque TCP: the same rules read at connection time (compiler/connection.ts), only where any exist.
  const decidesConnections = hasConnectionPolicy(service);
  const connection = connectionAuthz(service);
  const authorizeConnection = decidesConnections ? authorizeBody(connection.authz, connection.audits, g, fns, 'conn', 'connectionAuditHit') : [];

  const limitRate: string[] = [];
  service.rateLimits.forEach((rl, i) => {
    g.lines.push(`// ${rl.id}`, `const BUCKETS_${i} = new BucketSet(${f64(rl.ratePerSecond)}, ${f64(rl.burst)});`);
    limitRate.push(...guarded(conditionExpr(rl.when, g), [`if (!r.takeToken(BUCKETS_${i}, ${keyExpr(rl.key, g)}, ${str(rl.id)}, ${rl.dryRun})) return false;`], '    '));
  });
  limitRate.push('    return true;');

  const injectFaults: string[] = [];
  for (const f of service.faults) {
    const body: string[] = [];
    if (f.delay) body.push(`if (chance(${f64(f.delay.percent)})) r.addDelay(${f64(f.delay.ms)}, ${str(f.id)});`);
    if (f.abort) {
      const send = f.abort.grpcStatus !== undefined ? `r.abortGrpc(${f.abort.grpcStatus}, ${str(f.id)});` : `r.abort(${f.abort.status}, ${str(f.id)});`;
      body.push(`if (chance(${f64(f.abort.percent)})) {`, `  ${send}`, '  return false;', '}');
    }
    let cond = conditionExpr(f.when, g);
    if (f.window) {
      const w = f.window.kind === 'absolute' ? `inAbsoluteWindow(${f.window.startMs}, ${f.window.endMs})` : `inDailyWindow(${f.window.startMinute}, ${f.window.endMinute})`;
      cond = cond === 'true' ? w : `${cond} && ${w}`;
    }
    injectFaults.push(...guarded(cond, body, '    '));
  }
  injectFaults.push('    return true;');

  const route: string[] = [];
  const responseCases: string[] = [];
  service.routes.forEach((rt, i) => {
    route.push(...guarded(conditionExpr(rt.when, g), routeBody(rt, i, g), '    '));
    if (rt.responseHeaders.length > 0) responseCases.push(`      case ${i}:`, ...headerOps(rt.responseHeaders, 'response').map((l) => `        ${l}`), '        break;');
  });
  route.push('    return true;');

  const exports: string[] = [...ABI_EXPORTS];
  if (decidesConnections) exports.push(NEW_CONNECTION_EXPORT);
  if (responseCases.length > 0) exports.push(RESPONSE_HEADERS_EXPORT);
  if (responseCases.length > 0 || service.faults.some((f) => f.delay)) exports.push(...CONTEXT_END_EXPORTS);
  return [
    `// Generated by meshc from ${service.sourcePath}: the filter for service ${service.name}. Do not edit.`,
    'import { Policy, installPolicy, keepResponseRoute } from "./filters/policy";',
    'import { Request, auditHit, connectionAuditHit, dryRunHit, setHeaderSlotCount } from "./filters/request";',
    'import { BucketSet } from "./filters/token-bucket";',
    'import { chance, pickWeighted } from "./filters/random";',
    'import { Dfa, isNull, tContains, tEq, tGlob, tIn, tPrefix, tRegex, tSegmentPrefix, tSuffix } from "./filters/match";',
    'import { Cidr } from "./filters/ip";',
    'import { PathIndex, RuleIndex, buildIndex, firstMatch } from "./filters/rules";',
    'import { inAbsoluteWindow, inDailyWindow } from "./filters/window";',
    'import { addHeader, removeHeader, setHeader } from "./filters/hostcalls";',
    'import { MAP_HTTP_RESPONSE_HEADERS } from "./filters/constants";',
    `export { ${exports.join(', ')} } from "./filters/abi";`,
    '',
    ...g.lines,
    `setHeaderSlotCount(${g.slotCount});`,
    '',
    ...fns,
    'class ServicePolicy extends Policy {',
    '  authorize(r: Request): string | null {',
    ...authorize,
    '  }',
    '',
    ...(decidesConnections ? ['  authorizeConnection(r: Request): string | null {', ...authorizeConnection, '  }', ''] : []),
    '  limitRate(r: Request): bool {',
    ...limitRate,
    '  }',
    '',
    '  injectFaults(r: Request): bool {',
    ...injectFaults,
    '  }',
    '',
    '  route(r: Request): bool {',
    ...route,
    '  }',
    '',
    '  responseHeaders(routeIndex: i32): void {',
    ...(responseCases.length > 0 ? ['    switch (routeIndex) {', ...responseCases, '    }'] : []),
    '  }',
    '}',
    '',
    'installPolicy(new ServicePolicy());',
    '',
  ].join('\n');
}
