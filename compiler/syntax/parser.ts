// The .meshpolicy grammar: a chevrotain CstParser.
// In: tokens from tokens.ts. Out: a CST (read by to-ast.ts) and parse errors.
// The block structure (service { rule { } ... }) is split by brace matching in
// to-ast.ts, which then parses each service header and each rule on its own:
// an error in one rule never cascades into the next, so one run reports one
// error per broken rule. Within a rule, chevrotain's own recovery is on but
// only its first error is reported.
// Grammar (EBNF):
//   file          = (serviceHeader rule* "}")*          (structure: to-ast.ts)
//   serviceHeader = "service" name "{"
//   rule          = name(kind) name "{" clause* "}"
//   clause    = "when" or | "to" target ("," target)* | "delay" DURATION ("percent" NUMBER)?
//             | "abort" NUMBER ("percent" NUMBER)? | "from" STRING ("," STRING)*
//             | "key" ("source" | "none" | "header" STRING) | "rate" NUMBER "/" name ("burst" NUMBER)?
//   target    = (name | STRING) NUMBER?
//   or        = and ("or" and)*        and = unary ("and" unary)*
//   unary     = "not" unary | "(" or ")" | atom
//   atom      = "method" ("==" name | "in" "[" name ("," name)* "]")
//             | "path" ("==" | "prefix") STRING
//             | "header" STRING (("==" | "prefix") STRING | "present" | "absent")
//             | "source" ("==" | "matches") STRING
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

const CLAUSE_KEYWORDS = [T.When, T.To, T.Delay, T.Abort, T.From, T.Key, T.Rate].map((t) => labelOf(t));

function labelOf(t: TokenType): string {
  return t.LABEL ?? t.name;
}

function foundText(token: IToken): string {
  return token.tokenType.name === 'EOF' ? 'the end of the file' : `'${token.image}'`;
}

const errorPayloads: IParserErrorMessageProvider = {
  buildMismatchTokenMessage({ expected, actual, ruleName }) {
    // A rule body ends with "}", but what the writer most likely missed is a clause keyword.
    const labels = ruleName === 'rule' && expected === T.RCurly ? [...CLAUSE_KEYWORDS, '}'] : [labelOf(expected)];
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
    super(T.ALL_TOKENS, { recoveryEnabled: true, errorMessageProvider: errorPayloads, maxLookahead: 2, nodeLocationTracking: 'full' });
    this.performSelfAnalysis();
  }

  serviceHeader = this.RULE('serviceHeader', () => {
    this.CONSUME(T.Service);
    this.CONSUME(T.Identifier, { LABEL: 'name' });
    this.CONSUME(T.LCurly);
  });

  rule = this.RULE('rule', () => {
    this.CONSUME1(T.Identifier, { LABEL: 'kind' });
    this.CONSUME2(T.Identifier, { LABEL: 'name' });
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
      { ALT: () => this.SUBRULE(this.fromClause) },
      { ALT: () => this.SUBRULE(this.keyClause) },
      { ALT: () => this.SUBRULE(this.rateClause) },
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
    this.CONSUME1(T.NumberLiteral, { LABEL: 'status' });
    this.OPTION(() => {
      this.CONSUME(T.Percent);
      this.CONSUME2(T.NumberLiteral, { LABEL: 'percent' });
    });
  });

  fromClause = this.RULE('fromClause', () => {
    this.CONSUME(T.From);
    this.AT_LEAST_ONE_SEP({ SEP: T.Comma, DEF: () => this.CONSUME(T.StringLiteral) });
  });

  keyClause = this.RULE('keyClause', () => {
    this.CONSUME(T.Key);
    this.OR([
      { ALT: () => this.CONSUME(T.Source) },
      { ALT: () => this.CONSUME(T.None) },
      {
        ALT: () => {
          this.CONSUME(T.Header);
          this.CONSUME(T.StringLiteral);
        },
      },
    ]);
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
      { ALT: () => this.SUBRULE(this.methodAtom) },
      { ALT: () => this.SUBRULE(this.pathAtom) },
      { ALT: () => this.SUBRULE(this.headerAtom) },
      { ALT: () => this.SUBRULE(this.sourceAtom) },
    ]);
  });

  methodAtom = this.RULE('methodAtom', () => {
    this.CONSUME(T.Method);
    this.OR([
      {
        ALT: () => {
          this.CONSUME(T.EqEq);
          this.CONSUME1(T.Identifier, { LABEL: 'methods' });
        },
      },
      {
        ALT: () => {
          this.CONSUME(T.In);
          this.CONSUME(T.LBracket);
          this.AT_LEAST_ONE_SEP({ SEP: T.Comma, DEF: () => this.CONSUME2(T.Identifier, { LABEL: 'methods' }) });
          this.CONSUME(T.RBracket);
        },
      },
    ]);
  });

  pathAtom = this.RULE('pathAtom', () => {
    this.CONSUME(T.Path);
    this.OR([{ ALT: () => this.CONSUME(T.EqEq) }, { ALT: () => this.CONSUME(T.Prefix) }]);
    this.CONSUME(T.StringLiteral);
  });

  headerAtom = this.RULE('headerAtom', () => {
    this.CONSUME(T.Header);
    this.CONSUME1(T.StringLiteral, { LABEL: 'name' });
    this.OR([
      {
        ALT: () => {
          this.OR2([{ ALT: () => this.CONSUME(T.EqEq) }, { ALT: () => this.CONSUME(T.Prefix) }]);
          this.CONSUME2(T.StringLiteral, { LABEL: 'value' });
        },
      },
      { ALT: () => this.CONSUME(T.Present) },
      { ALT: () => this.CONSUME(T.Absent) },
    ]);
  });

  sourceAtom = this.RULE('sourceAtom', () => {
    this.CONSUME(T.Source);
    this.OR([{ ALT: () => this.CONSUME(T.EqEq) }, { ALT: () => this.CONSUME(T.Matches) }]);
    this.CONSUME(T.StringLiteral);
  });
}

/** One parser instance, reused (chevrotain parsers are built once and fed new input). */
export const policyParser = new PolicyParser();

export function parseServiceHeader(tokens: IToken[]): CstNode {
  policyParser.input = tokens;
  return policyParser.serviceHeader();
}

export function parseRule(tokens: IToken[]): CstNode {
  policyParser.input = tokens;
  return policyParser.rule();
}
