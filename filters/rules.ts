// Finding the first matching rule of a family without testing them all: the
// compiler indexes rules by the exact source identity they require, so a
// request tests only the rules keyed by its own identity plus the rules with
// no such key, merged in rule order. Cost stays flat as rules are added for
// other identities.
// In: the index, the unkeyed rule list, the request's key, a rule test.
// Out: the index of the first matching rule, or -1.
import { Request } from "./request";

const NONE = new StaticArray<i32>(0);

/**
 * Rule lists by source identity. The last lookup is remembered by reference:
 * filters/request.ts hands back the same string while a peer's identity
 * repeats, so consecutive requests from one client skip the hash lookup.
 */
export class SourceIndex {
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

/** The index from its compiled form: key i's rules are rules[ends[i-1] .. ends[i]). */
export function buildIndex(keys: StaticArray<string>, ends: StaticArray<i32>, rules: StaticArray<i32>): SourceIndex {
  const index = new Map<string, StaticArray<i32>>();
  let start = 0;
  for (let i = 0; i < keys.length; i++) {
    const end = ends[i];
    const list = new StaticArray<i32>(end - start);
    for (let j = start; j < end; j++) list[j - start] = rules[j];
    index.set(keys[i], list);
    start = end;
  }
  return new SourceIndex(index);
}

export function firstMatch(
  keyed: SourceIndex | null,
  always: StaticArray<i32>,
  key: string | null,
  test: (rule: i32, r: Request) => bool,
  r: Request,
): i32 {
  let byKey = NONE;
  if (keyed !== null && changetype<usize>(key) != 0) byKey = keyed.rulesOf(key);
  let i = 0;
  let j = 0;
  const n = byKey.length;
  const m = always.length;
  while (i < n || j < m) {
    let rule: i32;
    if (j >= m || (i < n && unchecked(byKey[i]) < unchecked(always[j]))) rule = unchecked(byKey[i++]);
    else rule = unchecked(always[j++]);
    if (test(rule, r)) return rule;
  }
  return -1;
}
