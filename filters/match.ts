// String matchers the conditions compile to: whole-segment path prefixes and
// SPIFFE ID globs where `*` stays inside one path segment.
// In: the request's value and the pattern. Out: bool. Linear-time, no recursion.

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
