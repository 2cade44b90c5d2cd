// The abstract syntax tree of .meshpolicy files, as written (not yet checked).
// In: produced by compiler/syntax/to-ast.ts. Out: read by compiler/check/.
// Every node carries the span it was written at. Values keep their source text
// where the checker needs it for messages.
import type { SourceSpan } from '../protocol/bundle.ts';

export interface PolicyFile {
  path: string;
  services: ServiceDecl[];
}

export interface Name {
  text: string;
  span: SourceSpan;
}

export interface ServiceDecl {
  name: Name;
  rules: RuleDecl[];
  span: SourceSpan;
}

/** `<kind> <name> { clauses }`; the kind is any identifier until checked. */
export interface RuleDecl {
  kind: Name;
  name: Name;
  clauses: Clause[];
  span: SourceSpan;
}

export type Clause = WhenClause | ToClause | DelayClause | AbortClause | FromClause | KeyClause | RateClause;

export interface WhenClause {
  type: 'when';
  condition: Condition;
  span: SourceSpan;
}

export interface NumberLit {
  text: string;
  value: number;
  span: SourceSpan;
}

export interface RouteTarget {
  version: Name;
  weight?: NumberLit;
  span: SourceSpan;
}

export interface ToClause {
  type: 'to';
  targets: RouteTarget[];
  span: SourceSpan;
}

/** A duration literal as written, e.g. `250ms`: number and unit split. */
export interface DurationLit {
  text: string;
  amount: number;
  unit: string;
  span: SourceSpan;
}

export interface DelayClause {
  type: 'delay';
  duration: DurationLit;
  percent?: NumberLit;
  span: SourceSpan;
}

export interface AbortClause {
  type: 'abort';
  status: NumberLit;
  percent?: NumberLit;
  span: SourceSpan;
}

export interface StringLit {
  value: string;
  span: SourceSpan;
}

export interface FromClause {
  type: 'from';
  sources: StringLit[];
  span: SourceSpan;
}

export type RateKey = { kind: 'none' } | { kind: 'source' } | { kind: 'header'; name: StringLit };

export interface KeyClause {
  type: 'key';
  key: RateKey;
  span: SourceSpan;
}

export interface RateClause {
  type: 'rate';
  amount: NumberLit;
  unit: Name;
  burst?: NumberLit;
  span: SourceSpan;
}

export type Condition =
  | { type: 'and'; left: Condition; right: Condition; span: SourceSpan }
  | { type: 'or'; left: Condition; right: Condition; span: SourceSpan }
  | { type: 'not'; operand: Condition; span: SourceSpan }
  | { type: 'method'; methods: Name[]; span: SourceSpan }
  | { type: 'path'; op: 'eq' | 'prefix'; value: StringLit; span: SourceSpan }
  | { type: 'header'; name: StringLit; op: 'eq' | 'prefix'; value: StringLit; span: SourceSpan }
  | { type: 'header'; name: StringLit; op: 'present' | 'absent'; span: SourceSpan }
  | { type: 'source'; op: 'eq' | 'matches'; value: StringLit; span: SourceSpan };
