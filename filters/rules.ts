// Finding the first matching rule of a family without testing them all: the
// compiler indexes rules by the exact source identity they require, so a
// request tests only the rules keyed by its own identity plus the rules with
// no such key, merged in rule order. Cost stays flat as rules are added for
// other identities.
// In: the index, the unkeyed rule list, the request's key, a rule test.
// Out: the index of the first matching rule, or -1.
import { Request } from "./request";

const NONE = new StaticArray<i32>(0);

/** The index from its compiled form: key i's rules are rules[ends[i-1] .. ends[i]). */
export function buildIndex(keys: StaticArray<string>, ends: StaticArray<i32>, rules: StaticArray<i32>): Map<string, StaticArray<i32>> {
  const index = new Map<string, StaticArray<i32>>();
  let start = 0;
  for (let i = 0; i < keys.length; i++) {
    const end = ends[i];
    const list = new StaticArray<i32>(end - start);
    for (let j = start; j < end; j++) list[j - start] = rules[j];
    index.set(keys[i], list);
    start = end;
  }
  return index;
}

export function firstMatch(
  keyed: Map<string, StaticArray<i32>> | null,
  always: StaticArray<i32>,
  key: string | null,
  test: (rule: i32, r: Request) => bool,
  r: Request,
): i32 {
  let byKey = NONE;
  if (keyed !== null && key !== null && keyed.has(key)) byKey = keyed.get(key);
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
