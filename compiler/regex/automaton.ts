// Regex syntax tree → Thompson NFA → DFA (subset construction) → minimal DFA.
// In: a pattern string. Out: a Dfa whose tables the code generator writes into
// the filter and whose `matches` runs here (tests, interpreter checks). A DFA
// reads each character once: matching is linear in the value, with no
// backtracking, so no pattern can be made to take super-linear time.
import { parseRegex, RegexError, type CharSet, type RegexNode } from './parse.ts';

export { RegexError } from './parse.ts';

/** Most DFA states a pattern may compile to; more is refused at build time. */
export const MAX_DFA_STATES = 2000;
const MAX_NFA_STATES = 20_000;

/**
 * A whole-value matcher. The code-unit space 0..0xFFFF is cut into intervals
 * (`starts[i]` up to the next start); `classOf[i]` is interval i's character
 * class; `next[state * classCount + class]` is the next state or -1 (dead).
 * State 0 starts.
 */
export interface Dfa {
  starts: number[];
  classOf: number[];
  classCount: number;
  next: number[];
  accept: boolean[];
}

interface Nfa {
  /** Per state: character-interval edges (interval ids) to a target. */
  edges: { intervals: number[]; to: number }[][];
  /** Per state: epsilon targets. */
  eps: number[][];
  start: number;
  end: number;
}

/** Cuts 0..0xFFFF into intervals on every set boundary in the tree. */
function intervalStarts(node: RegexNode): number[] {
  const cuts = new Set<number>([0]);
  const walk = (n: RegexNode): void => {
    switch (n.type) {
      case 'set':
        for (const [lo, hi] of n.set) {
          cuts.add(lo);
          if (hi < 0xffff) cuts.add(hi + 1);
        }
        return;
      case 'concat':
        n.parts.forEach(walk);
        return;
      case 'alt':
        n.options.forEach(walk);
        return;
      case 'repeat':
        walk(n.node);
        return;
      case 'empty':
        return;
    }
  };
  walk(node);
  return [...cuts].sort((a, b) => a - b);
}

function intervalsOf(set: CharSet, starts: number[]): number[] {
  const out: number[] = [];
  for (let i = 0; i < starts.length; i++) {
    const lo = starts[i]!;
    if (set.some(([a, b]) => lo >= a && lo <= b)) out.push(i);
  }
  return out;
}

function buildNfa(root: RegexNode, starts: number[]): Nfa {
  const edges: Nfa['edges'] = [];
  const eps: Nfa['eps'] = [];
  const state = (): number => {
    if (edges.length >= MAX_NFA_STATES) throw new RegexError('too-large', 'pattern is too large', 0, 'simplify the pattern or lower its repetition bounds');
    edges.push([]);
    eps.push([]);
    return edges.length - 1;
  };
  // Returns [entry, exit] of a fragment.
  const frag = (n: RegexNode): [number, number] => {
    switch (n.type) {
      case 'empty': {
        const s = state();
        return [s, s];
      }
      case 'set': {
        const a = state();
        const b = state();
        edges[a]!.push({ intervals: intervalsOf(n.set, starts), to: b });
        return [a, b];
      }
      case 'concat': {
        const frags = n.parts.map(frag);
        for (let i = 0; i + 1 < frags.length; i++) eps[frags[i]![1]]!.push(frags[i + 1]![0]);
        return [frags[0]![0], frags[frags.length - 1]![1]];
      }
      case 'alt': {
        const a = state();
        const b = state();
        for (const o of n.options) {
          const [x, y] = frag(o);
          eps[a]!.push(x);
          eps[y]!.push(b);
        }
        return [a, b];
      }
      case 'repeat': {
        const a = state();
        let tail = a;
        // The mandatory copies, then optional copies (or a loop when unbounded).
        for (let i = 0; i < n.min; i++) {
          const [x, y] = frag(n.node);
          eps[tail]!.push(x);
          tail = y;
        }
        const b = state();
        if (n.max === null) {
          const [x, y] = frag(n.node);
          eps[tail]!.push(x);
          eps[y]!.push(x);
          eps[y]!.push(b);
          eps[tail]!.push(b);
        } else {
          for (let i = n.min; i < n.max; i++) {
            const [x, y] = frag(n.node);
            eps[tail]!.push(x, b);
            tail = y;
          }
          eps[tail]!.push(b);
        }
        return [a, b];
      }
    }
  };
  const [start, end] = frag(root);
  return { edges, eps, start, end };
}

function closure(nfa: Nfa, states: Iterable<number>): number[] {
  const seen = new Set<number>();
  const stack = [...states];
  while (stack.length > 0) {
    const s = stack.pop()!;
    if (seen.has(s)) continue;
    seen.add(s);
    for (const t of nfa.eps[s]!) stack.push(t);
  }
  return [...seen].sort((a, b) => a - b);
}

/** Subset construction over intervals. */
function determinize(nfa: Nfa, intervalCount: number): { next: number[][]; accept: boolean[] } {
  const index = new Map<string, number>();
  const sets: number[][] = [];
  const next: number[][] = [];
  const accept: boolean[] = [];
  const add = (set: number[]): number => {
    const key = set.join(',');
    let id = index.get(key);
    if (id === undefined) {
      if (sets.length >= MAX_DFA_STATES * 4) throw new RegexError('too-large', 'pattern needs too many automaton states', 0, 'simplify the pattern');
      id = sets.length;
      index.set(key, id);
      sets.push(set);
      accept.push(set.includes(nfa.end));
      next.push([]);
    }
    return id;
  };
  add(closure(nfa, [nfa.start]));
  for (let d = 0; d < sets.length; d++) {
    const row: number[] = [];
    for (let iv = 0; iv < intervalCount; iv++) {
      const targets: number[] = [];
      for (const s of sets[d]!) for (const e of nfa.edges[s]!) if (e.intervals.includes(iv)) targets.push(e.to);
      row.push(targets.length === 0 ? -1 : add(closure(nfa, targets)));
    }
    next[d] = row;
  }
  return { next, accept };
}

/** Moore partition refinement; state 0 stays the start state. Dead (-1) stays dead. */
function minimize(next: number[][], accept: boolean[]): { next: number[][]; accept: boolean[] } {
  const n = next.length;
  let block: number[] = accept.map((a) => (a ? 1 : 0));
  for (;;) {
    const sig = new Map<string, number>();
    const nextBlock: number[] = [];
    for (let s = 0; s < n; s++) {
      const key = `${block[s]}|${next[s]!.map((t) => (t < 0 ? -1 : block[t])).join(',')}`;
      let b = sig.get(key);
      if (b === undefined) {
        b = sig.size;
        sig.set(key, b);
      }
      nextBlock.push(b);
    }
    const stable = new Set(nextBlock).size === new Set(block).size;
    block = nextBlock;
    if (stable) break;
  }
  // Renumber blocks in order of first appearance from state 0 (BFS), so output is canonical.
  const order = new Map<number, number>();
  const queue = [0];
  order.set(block[0]!, 0);
  const rep = new Map<number, number>([[block[0]!, 0]]);
  while (queue.length > 0) {
    const s = queue.shift()!;
    for (const t of next[s]!) {
      if (t < 0) continue;
      const b = block[t]!;
      if (!order.has(b)) {
        order.set(b, order.size);
        rep.set(b, t);
        queue.push(t);
      }
    }
  }
  const outNext: number[][] = [];
  const outAccept: boolean[] = [];
  for (const [b, id] of order) {
    const s = rep.get(b)!;
    outNext[id] = next[s]!.map((t) => (t < 0 ? -1 : order.get(block[t]!)!));
    outAccept[id] = accept[s]!;
  }
  // A state that can never reach acceptance behaves like the dead state: make it -1.
  const live = new Set<number>();
  let changed = true;
  outAccept.forEach((a, i) => a && live.add(i));
  while (changed) {
    changed = false;
    outNext.forEach((row, i) => {
      if (!live.has(i) && row.some((t) => t >= 0 && live.has(t))) {
        live.add(i);
        changed = true;
      }
    });
  }
  return { next: outNext.map((row) => row.map((t) => (t >= 0 && live.has(t) ? t : -1))), accept: outAccept };
}

/** Compiles a pattern to a minimal whole-value DFA. Throws RegexError. */
export function compileRegex(pattern: string): Dfa {
  const tree = parseRegex(pattern);
  const starts = intervalStarts(tree);
  const nfa = buildNfa(tree, starts);
  const raw = determinize(nfa, starts.length);
  const dfa = minimize(raw.next, raw.accept);
  if (dfa.next.length > MAX_DFA_STATES) {
    throw new RegexError('too-large', `pattern needs ${dfa.next.length} automaton states (at most ${MAX_DFA_STATES})`, 0, 'simplify the pattern');
  }
  // Intervals that every state treats alike share one class: smaller tables.
  const classKey = new Map<string, number>();
  const classOf: number[] = [];
  for (let iv = 0; iv < starts.length; iv++) {
    const key = dfa.next.map((row) => row[iv]).join(',');
    let c = classKey.get(key);
    if (c === undefined) {
      c = classKey.size;
      classKey.set(key, c);
    }
    classOf.push(c);
  }
  // Merge adjacent intervals of the same class.
  const mStarts: number[] = [];
  const mClassOf: number[] = [];
  for (let iv = 0; iv < starts.length; iv++) {
    if (mClassOf.length > 0 && mClassOf[mClassOf.length - 1] === classOf[iv]) continue;
    mStarts.push(starts[iv]!);
    mClassOf.push(classOf[iv]!);
  }
  const classCount = classKey.size;
  const next: number[] = [];
  for (const row of dfa.next) {
    const byClass: number[] = new Array<number>(classCount).fill(-1);
    row.forEach((t, iv) => (byClass[classOf[iv]!] = t));
    next.push(...byClass);
  }
  return { starts: mStarts, classOf: mClassOf, classCount, next, accept: dfa.accept };
}

function classOfCode(dfa: Dfa, code: number): number {
  let lo = 0;
  let hi = dfa.starts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (dfa.starts[mid]! <= code) lo = mid;
    else hi = mid - 1;
  }
  return dfa.classOf[lo]!;
}

/** Runs the DFA over the whole value (the same loop the filter runs). */
export function dfaMatches(dfa: Dfa, value: string): boolean {
  let state = 0;
  for (let i = 0; i < value.length; i++) {
    state = dfa.next[state * dfa.classCount + classOfCode(dfa, value.charCodeAt(i))]!;
    if (state < 0) return false;
  }
  return dfa.accept[state]!;
}
