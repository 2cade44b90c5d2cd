// Finding the first matching rule of a family without testing them all. The
// compiler keys each rule by one conjunct its condition requires (an exact
// source identity; else a path prefix or exact path; else an exact host; else
// a method) and leaves the rest in an "always" list. A request tests only the
// rules under its own keys plus the always list, merged in rule order, so the
// first match is a linear scan's and the cost stays flat as rules are added
// for other identities, paths, hosts or methods.
// In: the compiled index (RuleIndex), a rule test, the request.
// Out: the index of the first matching rule, or -1.
import { Request } from "./request";

const NONE = new StaticArray<i32>(0);
const FNV_OFFSET: u32 = 2166136261;
const FNV_PRIME: u32 = 16777619;
const SLASH: i32 = 47;

/**
 * Rule lists by exact string key. The last lookup is remembered by reference:
 * filters/request.ts hands back the same string while a peer's identity (or
 * host, or method) repeats, so consecutive requests skip the hash lookup.
 */
export class KeyIndex {
  private readonly byKey: Map<string, StaticArray<i32>>;
  private lastKey: string | null = null;
  private lastRules: StaticArray<i32> = NONE;

  constructor(byKey: Map<string, StaticArray<i32>>) {
    this.byKey = byKey;
  }

  rulesOf(key: string): StaticArray<i32> {
    if (changetype<usize>(key) == changetype<usize>(this.lastKey)) return this.lastRules;
    const rules = this.byKey.has(key) ? this.byKey.get(key) : NONE;
    this.lastKey = key;
    this.lastRules = rules;
    return rules;
  }
}

/** Key i's rules are rules[ends[i-1] .. ends[i]) of the compiled flat list. */
function slices(ends: StaticArray<i32>, rules: StaticArray<i32>): StaticArray<StaticArray<i32>> {
  const out = new StaticArray<StaticArray<i32>>(ends.length);
  let start = 0;
  for (let i = 0; i < ends.length; i++) {
    const end = ends[i];
    const list = new StaticArray<i32>(end - start);
    for (let j = start; j < end; j++) list[j - start] = rules[j];
    out[i] = list;
    start = end;
  }
  return out;
}

/** A key index from its compiled form (keys, run ends, flat rule list). */
export function buildIndex(keys: StaticArray<string>, ends: StaticArray<i32>, rules: StaticArray<i32>): KeyIndex {
  const lists = slices(ends, rules);
  const index = new Map<string, StaticArray<i32>>();
  for (let i = 0; i < keys.length; i++) index.set(keys[i], lists[i]);
  return new KeyIndex(index);
}

/** FNV-1a over UTF-16 code units; compiler/codegen/emit.ts computes the same at build time. */
function fnvStep(h: u32, c: i32): u32 {
  return (h ^ <u32>c) * FNV_PRIME;
}

/** An open-addressing table (linear probing) of entry numbers + 1 by hash; 0 is an empty slot. */
function hashTable(hashes: StaticArray<u32>, pick: StaticArray<bool>, want: bool): StaticArray<i32> {
  let count = 0;
  for (let i = 0; i < hashes.length; i++) if (pick[i] == want) count++;
  // At most half full, so a probe for an absent hash ends after a slot or two.
  let size = 2;
  while (size < count * 2) size <<= 1;
  const table = new StaticArray<i32>(size);
  for (let i = 0; i < hashes.length; i++) {
    if (pick[i] != want) continue;
    let slot = <i32>(hashes[i] & <u32>(size - 1));
    while (table[slot] != 0) slot = (slot + 1) & (size - 1);
    table[slot] = i + 1;
  }
  return table;
}

/**
 * Rules keyed by a whole-segment path prefix or an exact path. A request's
 * path is walked once: the running hash of path[0..k) is looked up at every
 * length k where a prefix can end (before a "/", after a "/", and the whole
 * path); a hit is confirmed by comparing the key with the path (no copy).
 */
export class PathIndex {
  private readonly keys: StaticArray<string>;
  private readonly hashes: StaticArray<u32>;
  private readonly lists: StaticArray<StaticArray<i32>>;
  private readonly prefixes: StaticArray<i32>;
  private readonly exacts: StaticArray<i32>;
  /** No prefix key is longer: the walk stops there unless an exact key may still match. */
  private maxPrefix: i32 = 0;
  private maxExact: i32 = -1;

  constructor(keys: StaticArray<string>, exact: StaticArray<bool>, hashes: StaticArray<u32>, ends: StaticArray<i32>, rules: StaticArray<i32>) {
    this.keys = keys;
    this.hashes = hashes;
    this.lists = slices(ends, rules);
    this.prefixes = hashTable(hashes, exact, false);
    this.exacts = hashTable(hashes, exact, true);
    for (let i = 0; i < keys.length; i++) {
      const len = keys[i].length;
      if (exact[i]) this.maxExact = max(this.maxExact, len);
      else this.maxPrefix = max(this.maxPrefix, len);
    }
  }

  private collect(table: StaticArray<i32>, h: u32, path: string, len: i32, into: Array<StaticArray<i32>>): void {
    const mask = table.length - 1;
    let slot = <i32>(h & <u32>mask);
    let e = unchecked(table[slot]);
    while (e != 0) {
      if (unchecked(this.hashes[e - 1]) == h) {
        const key = unchecked(this.keys[e - 1]);
        if (key.length == len && path.startsWith(key)) into.push(unchecked(this.lists[e - 1]));
      }
      slot = (slot + 1) & mask;
      e = unchecked(table[slot]);
    }
  }

  /** Appends the rule lists of every key that matches `path` to `into`. */
  candidates(path: string, into: Array<StaticArray<i32>>): void {
    const n = path.length;
    // A prefix of length L is confirmed at k == L (the "/" after it), so the walk covers maxPrefix + 1.
    const walk = this.maxExact >= n ? n : min(n, this.maxPrefix + 1);
    let h = FNV_OFFSET;
    for (let k = 0; k < walk; k++) {
      const c = path.charCodeAt(k);
      if (c == SLASH) {
        // "/a" matches "/a/..." (a prefix ending before "/"), "/a/" matches "/a/..." (ending after one).
        if (k > 0) this.collect(this.prefixes, h, path, k, into);
        h = fnvStep(h, c);
        if (k + 1 < n) this.collect(this.prefixes, h, path, k + 1, into);
      } else h = fnvStep(h, c);
    }
    if (walk == n && n > 0) {
      this.collect(this.prefixes, h, path, n, into);
      this.collect(this.exacts, h, path, n, into);
    }
  }
}

/** One family's index for one rule subset (enforced or shadow); any part may be absent. */
export class RuleIndex {
  readonly source: KeyIndex | null;
  readonly paths: PathIndex | null;
  readonly host: KeyIndex | null;
  readonly method: KeyIndex | null;
  readonly always: StaticArray<i32>;
  readonly unkeyed: bool;

  constructor(source: KeyIndex | null, paths: PathIndex | null, host: KeyIndex | null, method: KeyIndex | null, always: StaticArray<i32>) {
    this.source = source;
    this.paths = paths;
    this.host = host;
    this.method = method;
    this.always = always;
    this.unkeyed = source === null && paths === null && host === null && method === null;
  }
}

// Scratch for one decision (decisions do not nest): the candidate lists and a read position in each.
const lists = new Array<StaticArray<i32>>();
const at = new Array<i32>();

/** Empty lists are left out of the merge. */
function pushRules(list: StaticArray<i32>): void {
  if (list.length > 0) lists.push(list);
}

/** The first rule of `list` (ascending) that passes `test`, or -1. */
function scan(list: StaticArray<i32>, test: (rule: i32, r: Request) => bool, r: Request): i32 {
  for (let i = 0; i < list.length; i++) if (test(unchecked(list[i]), r)) return unchecked(list[i]);
  return -1;
}

export function firstMatch(index: RuleIndex, test: (rule: i32, r: Request) => bool, r: Request): i32 {
  const always = index.always;
  // Families under INDEX_THRESHOLD rules have no keys: a plain scan.
  if (index.unkeyed) return scan(always, test, r);
  let bySource = NONE;
  const source = index.source;
  if (source !== null) {
    const s = r.source;
    if (s !== null) bySource = source.rulesOf(s);
  }
  let byHost = NONE;
  const host = index.host;
  if (host !== null) {
    const h = r.host;
    if (h !== null) byHost = host.rulesOf(h);
  }
  let byMethod = NONE;
  const method = index.method;
  if (method !== null) byMethod = method.rulesOf(r.method);
  const paths = index.paths;
  if (paths === null) {
    // One non-empty list (a request under one key, the common case) needs no merge and no scratch.
    const nonEmpty = i32(always.length > 0) + i32(bySource.length > 0) + i32(byHost.length > 0) + i32(byMethod.length > 0);
    if (nonEmpty == 0) return -1;
    if (nonEmpty == 1) return scan(always.length > 0 ? always : bySource.length > 0 ? bySource : byHost.length > 0 ? byHost : byMethod, test, r);
  }
  lists.length = 0;
  pushRules(always);
  pushRules(bySource);
  pushRules(byHost);
  pushRules(byMethod);
  if (paths !== null) paths.candidates(r.path, lists);
  const k = lists.length;
  if (k == 0) return -1;
  if (k == 1) return scan(unchecked(lists[0]), test, r);
  at.length = k;
  for (let i = 0; i < k; i++) unchecked((at[i] = 0));
  // k-way merge in rule order; a rule keyed under two matching keys (an `or` of paths) is tested once.
  let last = -1;
  while (true) {
    let best = -1;
    let bestRule = i32.MAX_VALUE;
    for (let i = 0; i < k; i++) {
      const list = unchecked(lists[i]);
      const p = unchecked(at[i]);
      if (p < list.length && unchecked(list[p]) < bestRule) {
        bestRule = unchecked(list[p]);
        best = i;
      }
    }
    if (best < 0) return -1;
    unchecked((at[best] = at[best] + 1));
    if (bestRule == last) continue;
    last = bestRule;
    if (test(bestRule, r)) return bestRule;
  }
}
