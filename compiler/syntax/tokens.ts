// The .meshpolicy lexer (chevrotain).
// In: source text. Out: tokens; comments and whitespace are skipped.
// Keywords are also Identifiers (token category), so rule and service names
// may be words like `default` or `source`.
import { createToken, Lexer, type TokenType } from 'chevrotain';

export const WhiteSpace = createToken({ name: 'WhiteSpace', pattern: /\s+/, group: Lexer.SKIPPED });
export const Comment = createToken({ name: 'Comment', pattern: /(?:\/\/|#)[^\n\r]*/, group: Lexer.SKIPPED });

export const StringLiteral = createToken({ name: 'StringLiteral', pattern: /"(?:[^"\\\n\r]|\\.)*"/, label: 'a string' });
/**
 * A string missing its closing quote. In the StringLiteral category so the
 * parser goes on as if it were closed; to-ast.ts reports it as MP1002.
 */
export const UnterminatedString = createToken({
  name: 'UnterminatedString',
  pattern: /"(?:[^"\\\n\r]|\\.)*/,
  categories: [StringLiteral],
  label: 'a string',
});
/** A number with a unit suffix, e.g. 250ms; the checker validates the unit. */
export const Duration = createToken({ name: 'Duration', pattern: /\d+(?:\.\d+)?[A-Za-z]+/, label: 'a duration' });
export const NumberLiteral = createToken({ name: 'NumberLiteral', pattern: /\d+(?:\.\d+)?/, label: 'a number' });
export const Identifier = createToken({ name: 'Identifier', pattern: /[A-Za-z_][A-Za-z0-9_-]*/, label: 'a name' });

function keyword(word: string): TokenType {
  return createToken({ name: `Kw_${word}`, pattern: new RegExp(word), longer_alt: Identifier, categories: [Identifier], label: word });
}

export const Service = keyword('service');
export const When = keyword('when');
export const To = keyword('to');
export const Delay = keyword('delay');
export const Abort = keyword('abort');
export const Percent = keyword('percent');
export const From = keyword('from');
export const Key = keyword('key');
export const Rate = keyword('rate');
export const Burst = keyword('burst');
export const And = keyword('and');
export const Or = keyword('or');
export const Not = keyword('not');
export const Method = keyword('method');
export const Path = keyword('path');
export const Header = keyword('header');
export const Source = keyword('source');
export const In = keyword('in');
export const Prefix = keyword('prefix');
export const Present = keyword('present');
export const Absent = keyword('absent');
export const Matches = keyword('matches');
export const None = keyword('none');

export const KEYWORDS = [
  Service, When, To, Delay, Abort, Percent, From, Key, Rate, Burst, And, Or, Not,
  Method, Path, Header, Source, In, Prefix, Present, Absent, Matches, None,
];

export const EqEq = createToken({ name: 'EqEq', pattern: /==/, label: '==' });
export const LCurly = createToken({ name: 'LCurly', pattern: /\{/, label: '{' });
export const RCurly = createToken({ name: 'RCurly', pattern: /\}/, label: '}' });
export const LParen = createToken({ name: 'LParen', pattern: /\(/, label: '(' });
export const RParen = createToken({ name: 'RParen', pattern: /\)/, label: ')' });
export const LBracket = createToken({ name: 'LBracket', pattern: /\[/, label: '[' });
export const RBracket = createToken({ name: 'RBracket', pattern: /\]/, label: ']' });
export const Comma = createToken({ name: 'Comma', pattern: /,/, label: ',' });
export const Slash = createToken({ name: 'Slash', pattern: /\//, label: '/' });

// Order matters: comments before Slash, Duration before NumberLiteral,
// keywords before Identifier, the closed string before the unterminated one.
export const ALL_TOKENS: TokenType[] = [
  WhiteSpace, Comment, StringLiteral, UnterminatedString, Duration, NumberLiteral,
  ...KEYWORDS, Identifier,
  EqEq, LCurly, RCurly, LParen, RParen, LBracket, RBracket, Comma, Slash,
];

export const policyLexer = new Lexer(ALL_TOKENS, { positionTracking: 'full', ensureOptimizations: false });
