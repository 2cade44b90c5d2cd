// Reads the words of a settings clause (`retry attempts 3 on ["5xx"] ...`)
// into named options. In: the clause's items, its option table
// (language.ts SETTINGS_OPTIONS), a scope to resolve constants. Out: the
// leading value (for `respond 503`, `mirror v2`), the options found, and
// diagnostics through `report` (unknown option, missing or mistyped value,
// an option given twice). Shared by the checker and the lowering.
import type * as A from '../ast.ts';
import { didYouMean } from '../diagnostics.ts';
import { SETTINGS_OPTIONS, type OptionType } from './language.ts';
import { describe, resolveValue, type Report, type Resolved, type Scope } from './scope.ts';

export interface Options {
  leading?: Resolved;
  values: Map<string, Resolved | true>;
}

const TYPE_TEXT: Record<Exclude<OptionType, 'flag'>, string> = {
  number: 'a number',
  duration: 'a duration (e.g. 250ms)',
  string: 'a string',
  list: 'a list [ ... ]',
};

function fits(type: Exclude<OptionType, 'flag'>, r: Resolved): boolean {
  if (type === 'list') return r.kind === 'list';
  return r.kind === type;
}

/** `leading`: a value that comes before any option word (respond's status, mirror's version). */
export function readOptions(clause: { type: string; items: A.Value[] }, scope: Scope, report: Report, leading?: 'number' | 'word'): Options {
  const spec = SETTINGS_OPTIONS[clause.type] ?? {};
  const items = clause.items.map((v) => resolveValue(v, scope, report));
  const out: Options = { values: new Map() };
  let i = 0;
  if (leading && items.length > 0 && items[0]!.kind === leading) out.leading = items[i++];
  const known = Object.keys(spec).join(', ');
  while (i < items.length) {
    const item = items[i++]!;
    if (item.kind !== 'word') {
      report('MP2028', item.span, [`an option of ${clause.type} (${known})`, describe(item)]);
      continue;
    }
    const type = spec[item.text];
    if (!type) {
      report('MP2037', item.span, [item.text, clause.type, known], didYouMean(item.text, Object.keys(spec)));
      continue;
    }
    if (out.values.has(item.text)) report('MP2006', item.span, [item.text]);
    if (type === 'flag') {
      out.values.set(item.text, true);
      continue;
    }
    const value = items[i];
    if (!value || (value.kind === 'word' && spec[value.text] !== undefined)) {
      report('MP2038', item.span, [item.text, `needs ${TYPE_TEXT[type]}`]);
      continue;
    }
    i++;
    if (!fits(type, value)) {
      report('MP2028', value.span, [`${TYPE_TEXT[type]} after ${item.text}`, describe(value)]);
      continue;
    }
    out.values.set(item.text, value);
  }
  return out;
}
