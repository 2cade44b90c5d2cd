// Regular-expression parser for the subset the filters can run in linear time.
// In: a pattern (JavaScript/RE2 syntax). Out: a small syntax tree over
// character sets, or a RegexError with a stable kind and the offending offset.
// Supported: literals and escapes, `.`, classes `[...]`/`[^...]`, `\d \w \s`
// (and negations), groups `(...)` `(?:...)` `(?<name>...)`, `* + ?`, bounded
// `{m}` `{m,}` `{m,n}` (lazy forms too: laziness means nothing for a whole-value
// match), alternation, and `^`/`$` at the very start/end (patterns always match
// the whole value, so anchors are allowed only where they are redundant).
// Refused: backreferences, lookaround, word boundaries, inline flags, anchors
// elsewhere — anything a DFA cannot do or that would change meaning silently.

/** A set of UTF-16 code units as sorted, disjoint, inclusive [lo, hi] ranges. */
export type CharSet = [number, number][];

export type RegexNode =
  | { type: 'empty' }
  | { type: 'set'; set: CharSet }
  | { type: 'concat'; parts: RegexNode[] }
  | { type: 'alt'; options: RegexNode[] }
  | { type: 'repeat'; node: RegexNode; min: number; max: number | null };

/** Why a pattern was refused: `unsupported` (valid elsewhere, not here), `invalid` (malformed), `too-large`. */
export class RegexError extends Error {
  readonly kind: 'unsupported' | 'invalid' | 'too-large';
  readonly offset: number;
  readonly hint: string | undefined;
  constructor(kind: 'unsupported' | 'invalid' | 'too-large', message: string, offset: number, hint?: string) {
    super(message);
    this.kind = kind;
    this.offset = offset;
    this.hint = hint;
  }
}

/** Largest repetition bound accepted; larger bounds blow up the automaton. */
export const MAX_REPEAT = 100;
const MAX_CODE = 0xffff;

export function normalize(ranges: [number, number][]): CharSet {
  const sorted = ranges.filter(([lo, hi]) => lo <= hi).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const out: CharSet = [];
  for (const [lo, hi] of sorted) {
    const last = out[out.length - 1];
    if (last && lo <= last[1] + 1) last[1] = Math.max(last[1], hi);
    else out.push([lo, hi]);
  }
  return out;
}

export function complement(set: CharSet): CharSet {
  const out: CharSet = [];
  let next = 0;
  for (const [lo, hi] of set) {
    if (lo > next) out.push([next, lo - 1]);
    next = hi + 1;
  }
  if (next <= MAX_CODE) out.push([next, MAX_CODE]);
  return out;
}

const DIGIT: CharSet = [[0x30, 0x39]];
const WORD: CharSet = normalize([[0x30, 0x39], [0x41, 0x5a], [0x5f, 0x5f], [0x61, 0x7a]]);
// JavaScript's \s: WhiteSpace and LineTerminator code points.
const SPACE: CharSet = normalize([
  [0x09, 0x0d], [0x20, 0x20], [0xa0, 0xa0], [0x1680, 0x1680], [0x2000, 0x200a], [0x2028, 0x2029],
  [0x202f, 0x202f], [0x205f, 0x205f], [0x3000, 0x3000], [0xfeff, 0xfeff],
]);
/** `.`: anything but a line terminator, as in JavaScript without the s flag. */
const DOT: CharSet = complement(normalize([[0x0a, 0x0a], [0x0d, 0x0d], [0x2028, 0x2029]]));

class Parser {
  private pos = 0;
  private readonly src: string;

  constructor(src: string) {
    this.src = src;
  }

  parse(): RegexNode {
    if (this.src.startsWith('^')) this.pos = 1;
    const node = this.alternation(true);
    if (this.pos < this.src.length) {
      // Only a stray ")" can stop the top-level alternation early.
      throw new RegexError('invalid', 'unmatched ")"', this.pos);
    }
    return node;
  }

  private peek(): string | undefined {
    return this.src[this.pos];
  }

  private alternation(top: boolean): RegexNode {
    const options = [this.sequence(top)];
    while (this.peek() === '|') {
      this.pos++;
      options.push(this.sequence(top));
    }
    return options.length === 1 ? options[0]! : { type: 'alt', options };
  }

  private sequence(top: boolean): RegexNode {
    const parts: RegexNode[] = [];
    for (;;) {
      const c = this.peek();
      if (c === undefined || c === '|' || c === ')') break;
      if (c === '$') {
        // Redundant only as the pattern's last character.
        if (top && this.pos === this.src.length - 1) {
          this.pos++;
          break;
        }
        throw new RegexError('unsupported', '"$" is only allowed at the end of the pattern', this.pos, 'patterns match the whole value; remove the anchor');
      }
      if (c === '^') throw new RegexError('unsupported', '"^" is only allowed at the start of the pattern', this.pos, 'patterns match the whole value; remove the anchor');
      parts.push(this.quantified());
    }
    if (parts.length === 0) return { type: 'empty' };
    return parts.length === 1 ? parts[0]! : { type: 'concat', parts };
  }

  private quantified(): RegexNode {
    const start = this.pos;
    let node = this.atom();
    for (;;) {
      const c = this.peek();
      let min: number;
      let max: number | null;
      if (c === '*') [min, max] = [0, null];
      else if (c === '+') [min, max] = [1, null];
      else if (c === '?') [min, max] = [0, 1];
      else if (c === '{' && /^\{\d+(,\d*)?\}/.test(this.src.slice(this.pos))) {
        const m = /^\{(\d+)(,(\d*))?\}/.exec(this.src.slice(this.pos))!;
        min = Number(m[1]);
        max = m[2] === undefined ? min : m[3] === '' ? null : Number(m[3]);
        if (max !== null && max < min) throw new RegexError('invalid', `repetition {${m[1]},${m[3]}} has its bounds out of order`, this.pos);
        if (min > MAX_REPEAT || (max !== null && max > MAX_REPEAT)) {
          throw new RegexError('too-large', `repetition bound above ${MAX_REPEAT}`, this.pos, 'use a smaller bound, or * / + when any count will do');
        }
        this.pos += m[0].length - 1;
      } else break;
      this.pos++;
      if (this.peek() === '?') this.pos++;
      else if (this.peek() === '+') throw new RegexError('unsupported', 'possessive quantifiers are not supported', this.pos);
      if (node.type === 'empty') throw new RegexError('invalid', 'nothing to repeat', start);
      node = { type: 'repeat', node, min, max };
    }
    return node;
  }

  private atom(): RegexNode {
    const at = this.pos;
    const c = this.src[this.pos++]!;
    switch (c) {
      case '.':
        return { type: 'set', set: DOT };
      case '[':
        return { type: 'set', set: this.charClass(at) };
      case '(':
        return this.group(at);
      case '*':
      case '+':
      case '?':
        throw new RegexError('invalid', `nothing to repeat before "${c}"`, at);
      case '{':
        // A "{" that does not start a valid bound is a literal, as in JavaScript.
        return { type: 'set', set: [[0x7b, 0x7b]] };
      case '\\':
        return { type: 'set', set: this.escape(at, false) };
      default:
        return { type: 'set', set: [[c.charCodeAt(0), c.charCodeAt(0)]] };
    }
  }

  private group(at: number): RegexNode {
    if (this.peek() === '?') {
      const rest = this.src.slice(this.pos);
      if (rest.startsWith('?:')) this.pos += 2;
      else if (/^\?<[A-Za-z_$][\w$]*>/.test(rest)) this.pos += /^\?<[A-Za-z_$][\w$]*>/.exec(rest)![0].length;
      else if (/^\?(=|!|<=|<!)/.test(rest)) {
        throw new RegexError('unsupported', 'lookaround assertions are not supported', at, 'a DFA cannot look ahead or behind; match the text itself, or split the check into two conditions joined with and / not');
      } else throw new RegexError('unsupported', `group modifier "(${rest.slice(0, 3)}" is not supported`, at);
    }
    const inner = this.alternation(false);
    if (this.peek() !== ')') throw new RegexError('invalid', 'unclosed group "("', at);
    this.pos++;
    return inner;
  }

  private charClass(at: number): CharSet {
    let negated = false;
    if (this.peek() === '^') {
      negated = true;
      this.pos++;
    }
    const ranges: [number, number][] = [];
    let first = true;
    for (;;) {
      const c = this.peek();
      if (c === undefined) throw new RegexError('invalid', 'unclosed character class "["', at);
      if (c === ']' && !first) break;
      first = false;
      const lo = this.classAtom();
      if (this.peek() === '-' && this.src[this.pos + 1] !== ']' && this.src[this.pos + 1] !== undefined) {
        const dash = this.pos;
        this.pos++;
        const hi = this.classAtom();
        if (lo.length !== 1 || hi.length !== 1 || lo[0]![0] !== lo[0]![1] || hi[0]![0] !== hi[0]![1]) {
          throw new RegexError('invalid', 'a range in a character class needs a single character at each end', dash);
        }
        if (hi[0]![0] < lo[0]![0]) throw new RegexError('invalid', 'character class range out of order', dash);
        ranges.push([lo[0]![0], hi[0]![0]]);
      } else ranges.push(...lo);
    }
    this.pos++;
    const set = normalize(ranges);
    return negated ? complement(set) : set;
  }

  /** One member of a class: a character or a class escape. */
  private classAtom(): CharSet {
    const at = this.pos;
    const c = this.src[this.pos++]!;
    if (c === '\\') return this.escape(at, true);
    return [[c.charCodeAt(0), c.charCodeAt(0)]];
  }

  private escape(at: number, inClass: boolean): CharSet {
    const c = this.src[this.pos++];
    if (c === undefined) throw new RegexError('invalid', 'pattern ends with "\\"', at);
    const one = (code: number): CharSet => [[code, code]];
    switch (c) {
      case 'd':
        return DIGIT;
      case 'D':
        return complement(DIGIT);
      case 'w':
        return WORD;
      case 'W':
        return complement(WORD);
      case 's':
        return SPACE;
      case 'S':
        return complement(SPACE);
      case 't':
        return one(9);
      case 'n':
        return one(10);
      case 'v':
        return one(11);
      case 'f':
        return one(12);
      case 'r':
        return one(13);
      case '0':
        if (!/[0-9]/.test(this.peek() ?? '')) return one(0);
        break;
      case 'x': {
        const hex = /^[0-9A-Fa-f]{2}/.exec(this.src.slice(this.pos));
        if (!hex) throw new RegexError('invalid', '"\\x" needs two hex digits', at);
        this.pos += 2;
        return one(parseInt(hex[0], 16));
      }
      case 'u': {
        const hex = /^[0-9A-Fa-f]{4}/.exec(this.src.slice(this.pos));
        if (!hex) throw new RegexError('invalid', '"\\u" needs four hex digits', at);
        this.pos += 4;
        return one(parseInt(hex[0], 16));
      }
      case 'b':
      case 'B':
        if (inClass && c === 'b') return one(8);
        throw new RegexError('unsupported', `word boundary "\\${c}" is not supported`, at);
      case 'k':
        throw new RegexError('unsupported', 'backreferences are not supported', at, 'a backreference needs backtracking; match the text itself');
      case 'p':
      case 'P':
        throw new RegexError('unsupported', 'Unicode property escapes are not supported', at, 'use a character class such as [A-Za-z]');
      case 'c':
        throw new RegexError('unsupported', 'control-character escapes "\\c" are not supported', at, 'use \\xHH');
    }
    if (/[1-9]/.test(c)) {
      throw new RegexError('unsupported', 'backreferences are not supported', at, 'a backreference needs backtracking; match the text itself');
    }
    if (/[A-Za-z0-9]/.test(c)) throw new RegexError('invalid', `unknown escape "\\${c}"`, at);
    // Any other escaped character stands for itself (\. \/ \- \[ ...).
    return one(c.charCodeAt(0));
  }
}

export function parseRegex(pattern: string): RegexNode {
  return new Parser(pattern).parse();
}
