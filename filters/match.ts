// String matchers the conditions compile to, over values that may be absent
// (null: every test is false). Whole-segment path prefixes, globs where `*`
// stays inside one path segment, and regexes as build-time DFAs.
// In: the request's value and the pattern. Out: bool. Linear time, no recursion.

/** "/items" matches "/items" and "/items/3", not "/itemsX". "/" matches every path. */
export function pathHasSegmentPrefix(path: string, prefix: string): bool {
  if (!path.startsWith(prefix)) return false;
  if (path.length == prefix.length) return true;
  if (prefix.endsWith("/")) return true;
  return path.charCodeAt(prefix.length) == 47; // '/'
}

/** `*` matches any run of characters except '/'. */
export function globMatchSegments(value: string, pattern: string): bool {
  // Classic two-pointer wildcard match; a star may not swallow '/'.
  let v = 0;
  let p = 0;
  let starP = -1;
  let starV = 0;
  const vl = value.length;
  const pl = pattern.length;
  while (v < vl) {
    const pc = p < pl ? pattern.charCodeAt(p) : -1;
    const vc = value.charCodeAt(v);
    if (pc == 42) { // '*'
      starP = p;
      starV = v;
      p++;
    } else if (pc == vc && pc != -1) {
      p++;
      v++;
    } else if (starP >= 0 && value.charCodeAt(starV) != 47) {
      // Let the last star absorb one more character (never a '/').
      starV++;
      v = starV;
      p = starP + 1;
    } else {
      return false;
    }
  }
  while (p < pl && pattern.charCodeAt(p) == 42) p++;
  return p == pl;
}

/**
 * A regex compiled to a DFA at build time (compiler/regex/automaton.ts):
 * `ascii[c]` is the class of code unit c < 128; above that, `starts`/`classOf`
 * map intervals to classes (binary search). `next[state * classCount + class]`
 * is the next state, -1 dead. State 0 starts.
 */
export class Dfa {
  ascii: StaticArray<u16>;
  starts: StaticArray<u32>;
  classOf: StaticArray<u16>;
  classCount: i32;
  next: StaticArray<i32>;
  accept: StaticArray<u8>;

  constructor(ascii: StaticArray<u16>, starts: StaticArray<u32>, classOf: StaticArray<u16>, classCount: i32, next: StaticArray<i32>, accept: StaticArray<u8>) {
    this.ascii = ascii;
    this.starts = starts;
    this.classOf = classOf;
    this.classCount = classCount;
    this.next = next;
    this.accept = accept;
  }

  private classOfCode(code: u32): i32 {
    if (code < 128) return <i32>unchecked(this.ascii[code]);
    let lo = 0;
    let hi = this.starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (unchecked(this.starts[mid]) <= code) lo = mid;
      else hi = mid - 1;
    }
    return <i32>unchecked(this.classOf[lo]);
  }

  /** Whole-value match: one table step per character. */
  matches(value: string): bool {
    let state = 0;
    const n = value.length;
    for (let i = 0; i < n; i++) {
      state = unchecked(this.next[state * this.classCount + this.classOfCode(<u32>value.charCodeAt(i))]);
      if (state < 0) return false;
    }
    return unchecked(this.accept[state]) != 0;
  }
}

/**
 * `s === null` on a string compiles to a call of String.__eq (operator
 * overloads apply to === too); decisions test values for null several times
 * each, so hot paths compare the reference itself.
 */
// @ts-ignore: decorator
@inline export function isNull(s: string | null): bool {
  return changetype<usize>(s) == 0;
}

export function tEq(v: string | null, s: string): bool {
  return !isNull(v) && changetype<string>(v) == s;
}

export function tIn(v: string | null, set: StaticArray<string>): bool {
  if (isNull(v)) return false;
  for (let i = 0; i < set.length; i++) if (unchecked(set[i]) == v) return true;
  return false;
}

export function tPrefix(v: string | null, s: string): bool {
  return !isNull(v) && changetype<string>(v).startsWith(s);
}

export function tSegmentPrefix(v: string | null, s: string): bool {
  return !isNull(v) && pathHasSegmentPrefix(changetype<string>(v), s);
}

export function tSuffix(v: string | null, s: string): bool {
  return !isNull(v) && changetype<string>(v).endsWith(s);
}

export function tContains(v: string | null, s: string): bool {
  return !isNull(v) && changetype<string>(v).includes(s);
}

export function tGlob(v: string | null, pattern: string): bool {
  return !isNull(v) && globMatchSegments(changetype<string>(v), pattern);
}

export function tRegex(v: string | null, dfa: Dfa): bool {
  return !isNull(v) && dfa.matches(changetype<string>(v));
}
