// String tests as the reference semantics defines them, in TypeScript: the
// interpreter evaluates conditions with these, and the analysis uses them to
// decide implications between literal values. Independent of the filter
// library (filters/match.ts), so the corpus compares two implementations.
// Regexes run on JavaScript's RegExp here, anchored to the whole value, and
// on the build-time DFA in the filter.
import type { StringTestIR } from '../ir.ts';

/** "/items" matches "/items" and "/items/3", not "/itemsX"; a prefix ending in "/" matches anything under it. */
export function segmentPrefix(path: string, prefix: string): boolean {
  if (!path.startsWith(prefix)) return false;
  return path.length === prefix.length || prefix.endsWith('/') || path[prefix.length] === '/';
}

/** `*` matches any run (possibly empty) of characters other than "/". */
export function globMatch(value: string, pattern: string): boolean {
  const parts = pattern.split('*').map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  return new RegExp(`^${parts.join('[^/]*')}$`).test(value);
}

const regexCache = new Map<string, RegExp>();

export function regexMatch(value: string, pattern: string): boolean {
  let re = regexCache.get(pattern);
  if (!re) {
    // The checker accepted the pattern, so it is valid JavaScript syntax; its own
    // anchors (allowed only at the ends) mean the same inside the group.
    re = new RegExp(`^(?:${pattern})$`);
    regexCache.set(pattern, re);
  }
  return re.test(value);
}

export function stringTest(test: StringTestIR, value: string): boolean {
  switch (test.kind) {
    case 'eq':
      return value === test.value;
    case 'in':
      return test.values.includes(value);
    case 'prefix':
      return value.startsWith(test.value);
    case 'segment-prefix':
      return segmentPrefix(value, test.value);
    case 'suffix':
      return value.endsWith(test.value);
    case 'contains':
      return value.includes(test.value);
    case 'glob':
      return globMatch(value, test.pattern);
    case 'regex':
      return regexMatch(value, test.pattern);
  }
}
