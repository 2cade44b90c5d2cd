// The .meshpolicy grammar: a chevrotain CstParser.
// In: tokens from tokens.ts. Out: a CST (read by to-ast.ts) and parse errors.
// A file is split into top-level items and block rules by brace matching in
// to-ast.ts, which parses each item header and each rule on its own: an error
// in one rule never cascades into the next, so one run reports one error per
// broken rule. Within a rule chevrotain's own recovery is on, but only its
// first error is reported.
// Grammar (EBNF):
//   file        = item*                                          (structure: to-ast.ts)
//   item        = "import" STRING | "const" NAME "=" value | "match" NAME "{" or "}"
//               | "mesh" "{" rule* "}" | "service" NAME "dry_run"? "{" rule* "}"
//   value       = STRING | NUMBER | DURATION | NAME | "[" (scalar ("," scalar)*)? "]"
//   rule        = NAME(kind) NAME? "{" clause* "}"
//   clause      = "when" or | "to" target ("," target)* | "delay" DURATION ("percent" NUMBER)?
//               | "abort" "grpc"? NUMBER ("percent" NUMBER)? | "between" STRING "and" STRING "daily"?
//               | "from" scalar ("," scalar)* | "key" NAME STRING? | "rate" NUMBER "/" NAME ("burst" NUMBER)?
//               | "dry_run" | "timeout" DURATION
//               | ("request_header" | "response_header") ("set" | "add") STRING STRING
//               | ("request_header" | "response_header") "remove" STRING
//               | SETTINGS_KEYWORD value*        (retry, retry_budget, load_balancer, connection_limits,
//                                                 outlier_detection, rewrite, redirect, respond, mirror;
//                                                 the words run to the next clause keyword or "}")
//   target      = (NAME | STRING) NUMBER?
//   or          = and ("or" and)*        and = unary ("and" unary)*
//   unary       = "not" unary | "(" or ")" | "match" NAME | "true" | "false" | subject test
//   subject     = "method" | "path" | "host" | "port" | ("header" | "query" | "claim") STRING
//               | "grpc" ("service" | "method") | "source" ("namespace" | "account" | "ip")?
//   test        = ("==" | "!=" | "prefix" | "suffix" | "contains" | "regex" | "matches") scalar
//               | "in" ("[" scalar ("," scalar)* "]" | NAME) | "present" | "absent"
import { CstParser, type CstNode, type IParserErrorMessageProvider, type IToken, type TokenType } from 'chevrotain';
import * as T from './tokens.ts';

/**
 * Parse errors carry a JSON payload instead of prose so that to-ast.ts can
 * build the MP1003 message and a "did you mean" hint from the expected tokens.
 */
export interface ParseErrorPayload {
  expected: string[];
  found: string;
}

const CLAUSE_LABELS = T.CLAUSE_KEYWORDS.map((t) => labelOf(t));
const CLAUSE_TOKEN_NAMES = new Set(T.CLAUSE_KEYWORDS.map((t) => t.name));
const SETTINGS_KEYWORDS = [T.Retry, T.RetryBudget, T.LoadBalancer, T.ConnectionLimits, T.OutlierDetection, T.Rewrite, T.Redirect, T.Respond, T.Mirror];

function labelOf(t: TokenType): string {
  return t.LABEL ?? t.name;
}

function foundText(token: IToken): string {
  return token.tokenType.name === 'EOF' ? 'the end of the file' : `'${token.image}'`;
}

const errorPayloads: IParserErrorMessageProvider = {
  buildMismatchTokenMessage({ expected, actual, ruleName }) {
    // A rule body ends with "}", but what the writer most likely missed is a clause keyword.
    const labels = ruleName === 'rule' && expected === T.RCurly ? [...CLAUSE_LABELS, '}'] : [labelOf(expected)];
    return JSON.stringify({ expected: labels, found: foundText(actual) } satisfies ParseErrorPayload);
  },
  buildNotAllInputParsedMessage({ firstRedundant }) {
    return JSON.stringify({ expected: ['a new rule or }'], found: foundText(firstRedundant) } satisfies ParseErrorPayload);
  },
  buildNoViableAltMessage({ expectedPathsPerAlt, actual }) {
    const firsts = expectedPathsPerAlt.flat().map((path) => (path[0] ? labelOf(path[0]) : ''));
    return JSON.stringify({ expected: [...new Set(firsts)].filter(Boolean), found: foundText(actual[0]!) } satisfies ParseErrorPayload);
  },
  buildEarlyExitMessage({ expectedIterationPaths, actual }) {
    const firsts = expectedIterationPaths.map((path) => (path[0] ? labelOf(path[0]) : ''));
    return JSON.stringify({ expected: [...new Set(firsts)].filter(Boolean), found: foundText(actual[0]!) } satisfies ParseErrorPayload);
  },
};

class PolicyParser extends CstParser {
  constructor() {
    super(T.ALL_TOKENS, { recoveryEnabled: true, errorMessageProvider: errorPayloads, maxLookahead: 3, nodeLocationTracking: 'full' });
    this.performSelfAnalysis();
  }

  importDecl = this.RULE('importDecl', () => {
    this.CONSUME(T.Import);
    this.CONSUME(T.StringLiteral);
  });

  constDecl = this.RULE('constDecl', () => {
    this.CONSUME(T.Const);
    this.CONSUME(T.Identifier, { LABEL: 'name' });
    this.CONSUME(T.Assign);
    this.SUBRULE(this.value);
  });

  matchDecl = this.RULE('matchDecl', () => {
    this.CONSUME(T.MatchKw);
    this.CONSUME(T.Identifier, { LABEL: 'name' });
    this.CONSUME(T.LCurly);
    this.SUBRULE(this.orExpr);
    this.CONSUME(T.RCurly);
  });

  blockHeader = this.RULE('blockHeader', () => {
    this.OR([
      {
        ALT: () => {
          this.CONSUME(T.Service);
          this.CONSUME(T.Identifier, { LABEL: 'name' });
          this.OPTION(() => this.CONSUME(T.DryRun));
        },
      },
      { ALT: () => this.CONSUME(T.MeshKw) },
    ]);
    this.CONSUME(T.LCurly);
  });

  rule = this.RULE('rule', () => {
    this.CONSUME1(T.Identifier, { LABEL: 'kind' });
    this.OPTION(() => this.CONSUME2(T.Identifier, { LABEL: 'name' }));
    this.CONSUME(T.LCurly);
    this.MANY(() => this.SUBRULE(this.clause));
    this.CONSUME(T.RCurly);
  });

  clause = this.RULE('clause', () => {
    this.OR([
      { ALT: () => this.SUBRULE(this.whenClause) },
      { ALT: () => this.SUBRULE(this.toClause) },
      { ALT: () => this.SUBRULE(this.delayClause) },
      { ALT: () => this.SUBRULE(this.abortClause) },
      { ALT: () => this.SUBRULE(this.betweenClause) },
      { ALT: () => this.SUBRULE(this.fromClause) },
      { ALT: () => this.SUBRULE(this.keyClause) },
      { ALT: () => this.SUBRULE(this.rateClause) },
      { ALT: () => this.SUBRULE(this.dryRunClause) },
      { ALT: () => this.SUBRULE(this.timeoutClause) },
      { ALT: () => this.SUBRULE(this.headerClause) },
      { ALT: () => this.SUBRULE(this.settingsClause) },
    ]);
  });

  whenClause = this.RULE('whenClause', () => {
    this.CONSUME(T.When);
    this.SUBRULE(this.orExpr);
  });

  toClause = this.RULE('toClause', () => {
    this.CONSUME(T.To);
    this.AT_LEAST_ONE_SEP({ SEP: T.Comma, DEF: () => this.SUBRULE(this.target) });
  });

  target = this.RULE('target', () => {
    this.OR([
      { ALT: () => this.CONSUME(T.Identifier, { LABEL: 'version' }) },
      { ALT: () => this.CONSUME(T.StringLiteral, { LABEL: 'version' }) },
    ]);
    this.OPTION(() => this.CONSUME(T.NumberLiteral, { LABEL: 'weight' }));
  });

  delayClause = this.RULE('delayClause', () => {
    this.CONSUME(T.Delay);
    this.CONSUME(T.Duration);
    this.OPTION(() => {
      this.CONSUME(T.Percent);
      this.CONSUME(T.NumberLiteral, { LABEL: 'percent' });
    });
  });

  abortClause = this.RULE('abortClause', () => {
    this.CONSUME(T.Abort);
    this.OPTION1(() => this.CONSUME(T.Grpc));
    this.CONSUME1(T.NumberLiteral, { LABEL: 'status' });
    this.OPTION2(() => {
      this.CONSUME(T.Percent);
      this.CONSUME2(T.NumberLiteral, { LABEL: 'percent' });
    });
  });

  betweenClause = this.RULE('betweenClause', () => {
    this.CONSUME(T.Between);
    this.CONSUME1(T.StringLiteral, { LABEL: 'start' });
    this.CONSUME(T.And);
    this.CONSUME2(T.StringLiteral, { LABEL: 'end' });
    this.OPTION(() => this.CONSUME(T.Daily));
  });

  fromClause = this.RULE('fromClause', () => {
    this.CONSUME(T.From);
    this.AT_LEAST_ONE_SEP({ SEP: T.Comma, DEF: () => this.SUBRULE(this.scalar) });
  });

  keyClause = this.RULE('keyClause', () => {
    this.CONSUME(T.Key);
    this.CONSUME(T.Identifier, { LABEL: 'word' });
    this.OPTION(() => this.CONSUME(T.StringLiteral, { LABEL: 'arg' }));
  });

  rateClause = this.RULE('rateClause', () => {
    this.CONSUME(T.Rate);
    this.CONSUME1(T.NumberLiteral, { LABEL: 'amount' });
    this.CONSUME(T.Slash);
    this.CONSUME(T.Identifier, { LABEL: 'unit' });
    this.OPTION(() => {
      this.CONSUME(T.Burst);
      this.CONSUME2(T.NumberLiteral, { LABEL: 'burst' });
    });
  });

  dryRunClause = this.RULE('dryRunClause', () => {
    this.CONSUME(T.DryRun);
  });

  timeoutClause = this.RULE('timeoutClause', () => {
    this.CONSUME(T.Timeout);
    this.CONSUME(T.Duration);
  });

  headerClause = this.RULE('headerClause', () => {
    this.OR1([{ ALT: () => this.CONSUME(T.RequestHeader, { LABEL: 'which' }) }, { ALT: () => this.CONSUME(T.ResponseHeader, { LABEL: 'which' }) }]);
    this.OR2([
      {
        ALT: () => {
          this.OR3([{ ALT: () => this.CONSUME(T.Set, { LABEL: 'op' }) }, { ALT: () => this.CONSUME(T.Add, { LABEL: 'op' }) }]);
          this.CONSUME1(T.StringLiteral, { LABEL: 'name' });
          this.CONSUME2(T.StringLiteral, { LABEL: 'value' });
        },
      },
      {
        ALT: () => {
          this.CONSUME(T.Remove, { LABEL: 'op' });
          this.CONSUME3(T.StringLiteral, { LABEL: 'name' });
        },
      },
    ]);
  });

  settingsClause = this.RULE('settingsClause', () => {
    this.OR(SETTINGS_KEYWORDS.map((k) => ({ ALT: () => this.CONSUME(k, { LABEL: 'keyword' }) })));
    this.MANY({
      GATE: () => !CLAUSE_TOKEN_NAMES.has(this.LA(1).tokenType.name),
      DEF: () => this.SUBRULE(this.value, { LABEL: 'items' }),
    });
  });

  value = this.RULE('value', () => {
    this.OR([
      { ALT: () => this.SUBRULE(this.scalar) },
      {
        ALT: () => {
          this.CONSUME(T.LBracket);
          this.MANY_SEP({ SEP: T.Comma, DEF: () => this.SUBRULE2(this.scalar, { LABEL: 'items' }) });
          this.CONSUME(T.RBracket);
        },
      },
    ]);
  });

  scalar = this.RULE('scalar', () => {
    this.OR([
      { ALT: () => this.CONSUME(T.StringLiteral) },
      { ALT: () => this.CONSUME(T.NumberLiteral) },
      { ALT: () => this.CONSUME(T.Duration) },
      { ALT: () => this.CONSUME(T.Identifier) },
    ]);
  });

  orExpr = this.RULE('orExpr', () => {
    this.SUBRULE1(this.andExpr, { LABEL: 'operands' });
    this.MANY(() => {
      this.CONSUME(T.Or);
      this.SUBRULE2(this.andExpr, { LABEL: 'operands' });
    });
  });

  andExpr = this.RULE('andExpr', () => {
    this.SUBRULE1(this.unaryExpr, { LABEL: 'operands' });
    this.MANY(() => {
      this.CONSUME(T.And);
      this.SUBRULE2(this.unaryExpr, { LABEL: 'operands' });
    });
  });

  unaryExpr = this.RULE('unaryExpr', () => {
    this.OR([
      {
        ALT: () => {
          this.CONSUME(T.Not);
          this.SUBRULE1(this.unaryExpr, { LABEL: 'negated' });
        },
      },
      {
        ALT: () => {
          this.CONSUME(T.LParen);
          this.SUBRULE(this.orExpr, { LABEL: 'inner' });
          this.CONSUME(T.RParen);
        },
      },
      {
        ALT: () => {
          this.CONSUME(T.MatchKw);
          this.CONSUME(T.Identifier, { LABEL: 'ref' });
        },
      },
      { ALT: () => this.CONSUME(T.True, { LABEL: 'bool' }) },
      { ALT: () => this.CONSUME(T.False, { LABEL: 'bool' }) },
      {
        ALT: () => {
          this.SUBRULE(this.subject);
          this.SUBRULE(this.test);
        },
      },
    ]);
  });

  subject = this.RULE('subject', () => {
    this.OR([
      { ALT: () => this.CONSUME(T.Method, { LABEL: 'field' }) },
      { ALT: () => this.CONSUME(T.Path, { LABEL: 'field' }) },
      { ALT: () => this.CONSUME(T.Host, { LABEL: 'field' }) },
      { ALT: () => this.CONSUME(T.Port, { LABEL: 'field' }) },
      {
        ALT: () => {
          this.OR2([
            { ALT: () => this.CONSUME(T.Header, { LABEL: 'field' }) },
            { ALT: () => this.CONSUME(T.Query, { LABEL: 'field' }) },
            { ALT: () => this.CONSUME(T.Claim, { LABEL: 'field' }) },
          ]);
          this.CONSUME(T.StringLiteral, { LABEL: 'name' });
        },
      },
      {
        ALT: () => {
          this.CONSUME(T.Grpc, { LABEL: 'field' });
          this.OR3([{ ALT: () => this.CONSUME(T.Service, { LABEL: 'part' }) }, { ALT: () => this.CONSUME2(T.Method, { LABEL: 'part' }) }]);
        },
      },
      {
        ALT: () => {
          this.CONSUME(T.Source, { LABEL: 'field' });
          this.OPTION(() =>
            this.OR4([
              { ALT: () => this.CONSUME(T.Namespace, { LABEL: 'part' }) },
              { ALT: () => this.CONSUME(T.Account, { LABEL: 'part' }) },
              { ALT: () => this.CONSUME(T.Ip, { LABEL: 'part' }) },
            ]),
          );
        },
      },
    ]);
  });

  test = this.RULE('test', () => {
    this.OR([
      {
        ALT: () => {
          this.OR2([
            { ALT: () => this.CONSUME(T.EqEq, { LABEL: 'op' }) },
            { ALT: () => this.CONSUME(T.NotEq, { LABEL: 'op' }) },
            { ALT: () => this.CONSUME(T.Prefix, { LABEL: 'op' }) },
            { ALT: () => this.CONSUME(T.Suffix, { LABEL: 'op' }) },
            { ALT: () => this.CONSUME(T.Contains, { LABEL: 'op' }) },
            { ALT: () => this.CONSUME(T.Regex, { LABEL: 'op' }) },
            { ALT: () => this.CONSUME(T.Matches, { LABEL: 'op' }) },
          ]);
          this.SUBRULE1(this.scalar, { LABEL: 'operand' });
        },
      },
      {
        ALT: () => {
          this.CONSUME(T.In, { LABEL: 'op' });
          this.OR3([
            {
              ALT: () => {
                this.CONSUME(T.LBracket);
                this.AT_LEAST_ONE_SEP({ SEP: T.Comma, DEF: () => this.SUBRULE2(this.scalar, { LABEL: 'items' }) });
                this.CONSUME(T.RBracket);
              },
            },
            { ALT: () => this.CONSUME(T.Identifier, { LABEL: 'ref' }) },
          ]);
        },
      },
      { ALT: () => this.CONSUME(T.Present, { LABEL: 'op' }) },
      { ALT: () => this.CONSUME(T.Absent, { LABEL: 'op' }) },
    ]);
  });
}

let instance: PolicyParser | undefined;

/**
 * One parser instance, reused (chevrotain parsers are built once and fed new
 * input). Built on first use: its grammar analysis takes a noticeable part of
 * a second, which a build served from the cache never needs.
 */
export function policyParser(): PolicyParser {
  return (instance ??= new PolicyParser());
}

export type EntryRule = 'importDecl' | 'constDecl' | 'matchDecl' | 'blockHeader' | 'rule';

export function parseWith(entry: EntryRule, tokens: IToken[]): CstNode {
  const parser = policyParser();
  parser.input = tokens;
  return parser[entry]();
}
