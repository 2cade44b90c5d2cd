// The .meshpolicy lexer (chevrotain).
// In: source text. Out: tokens; comments and whitespace are skipped.
// Keywords are also Identifiers (token category), so rule and service names
// may be words like `default` or `source`.
import { createToken, Lexer, type TokenType } from 'chevrotain';

export const WhiteSpace = createToken({ name: 'WhiteSpace', pattern: /\s+/, group: Lexer.SKIPPED });
/** Comments go to their own group (lexed.groups.comments): the parser never sees them, `meshc fmt` keeps them. */
export const Comment = createToken({ name: 'Comment', pattern: /(?:\/\/|#)[^\n\r]*/, group: 'comments' });

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
  // Anchored on a word boundary in the sense of Identifier: longer_alt makes
  // `paths` an Identifier, not `path` + `s`.
  return createToken({ name: `Kw_${word}`, pattern: new RegExp(word), longer_alt: Identifier, categories: [Identifier], label: word });
}

// Top-level items.
export const Service = keyword('service');
export const MeshKw = keyword('mesh');
export const Import = keyword('import');
export const Const = keyword('const');
export const MatchKw = keyword('match');
// Clause keywords: each starts a clause inside a rule (and nothing else does).
export const When = keyword('when');
export const To = keyword('to');
export const Delay = keyword('delay');
export const Abort = keyword('abort');
export const Between = keyword('between');
export const From = keyword('from');
export const Key = keyword('key');
export const Rate = keyword('rate');
export const DryRun = keyword('dry_run');
export const Timeout = keyword('timeout');
export const RequestHeader = keyword('request_header');
export const ResponseHeader = keyword('response_header');
export const Retry = keyword('retry');
export const RetryBudget = keyword('retry_budget');
export const LoadBalancer = keyword('load_balancer');
export const ConnectionLimits = keyword('connection_limits');
export const OutlierDetection = keyword('outlier_detection');
export const Rewrite = keyword('rewrite');
export const Redirect = keyword('redirect');
export const Respond = keyword('respond');
export const Mirror = keyword('mirror');
// Words inside clauses and conditions.
export const Percent = keyword('percent');
export const Burst = keyword('burst');
export const Daily = keyword('daily');
export const And = keyword('and');
export const Or = keyword('or');
export const Not = keyword('not');
export const True = keyword('true');
export const False = keyword('false');
export const Method = keyword('method');
export const Path = keyword('path');
export const Host = keyword('host');
export const Port = keyword('port');
export const Header = keyword('header');
export const Query = keyword('query');
export const Claim = keyword('claim');
export const Grpc = keyword('grpc');
export const Source = keyword('source');
export const Namespace = keyword('namespace');
export const Account = keyword('account');
export const Ip = keyword('ip');
export const In = keyword('in');
export const Prefix = keyword('prefix');
export const Suffix = keyword('suffix');
export const Contains = keyword('contains');
export const Regex = keyword('regex');
export const Present = keyword('present');
export const Absent = keyword('absent');
export const Matches = keyword('matches');
export const Set = keyword('set');
export const Add = keyword('add');
export const Remove = keyword('remove');

/** Keywords that begin a clause; a settings clause's words stop at the next one. */
export const CLAUSE_KEYWORDS = [
  When, To, Delay, Abort, Between, From, Key, Rate, DryRun, Timeout, RequestHeader, ResponseHeader,
  Retry, RetryBudget, LoadBalancer, ConnectionLimits, OutlierDetection, Rewrite, Redirect, Respond, Mirror,
];

/** Keywords that begin a top-level item. */
export const TOP_LEVEL_KEYWORDS = [Service, MeshKw, Import, Const, MatchKw];

export const KEYWORDS = [
  ...TOP_LEVEL_KEYWORDS,
  ...CLAUSE_KEYWORDS,
  Percent, Burst, Daily, And, Or, Not, True, False, Method, Path, Host, Port, Header, Query, Claim, Grpc,
  Source, Namespace, Account, Ip, In, Prefix, Suffix, Contains, Regex, Present, Absent, Matches, Set, Add, Remove,
];

export const EqEq = createToken({ name: 'EqEq', pattern: /==/, label: '==' });
export const NotEq = createToken({ name: 'NotEq', pattern: /!=/, label: '!=' });
export const Assign = createToken({ name: 'Assign', pattern: /=/, label: '=' });
export const LCurly = createToken({ name: 'LCurly', pattern: /\{/, label: '{' });
export const RCurly = createToken({ name: 'RCurly', pattern: /\}/, label: '}' });
export const LParen = createToken({ name: 'LParen', pattern: /\(/, label: '(' });
export const RParen = createToken({ name: 'RParen', pattern: /\)/, label: ')' });
export const LBracket = createToken({ name: 'LBracket', pattern: /\[/, label: '[' });
export const RBracket = createToken({ name: 'RBracket', pattern: /\]/, label: ']' });
export const Comma = createToken({ name: 'Comma', pattern: /,/, label: ',' });
export const Slash = createToken({ name: 'Slash', pattern: /\//, label: '/' });

// Order matters: comments before Slash, Duration before NumberLiteral,
// keywords before Identifier (a keyword that is a prefix of another, like
// `retry` of `retry_budget`, comes after it), the closed string before the
// unterminated one, == and != before =.
export const ALL_TOKENS: TokenType[] = [
  WhiteSpace, Comment, StringLiteral, UnterminatedString, Duration, NumberLiteral,
  ...[...KEYWORDS].sort((a, b) => (b.LABEL ?? '').length - (a.LABEL ?? '').length), Identifier,
  EqEq, NotEq, Assign, LCurly, RCurly, LParen, RParen, LBracket, RBracket, Comma, Slash,
];

export const policyLexer = new Lexer(ALL_TOKENS, { positionTracking: 'full', ensureOptimizations: false });
