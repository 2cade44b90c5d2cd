// The abstract syntax tree of .meshpolicy files, as written (not yet checked).
// In: produced by compiler/syntax/to-ast.ts. Out: read by compiler/check/ and
// compiler/format/. Every node carries the span it was written at. Values keep
// their source text where the checker needs it for messages; names (constants,
// match blocks) are not resolved yet.
import type { SourceSpan } from '../protocol/bundle.ts';

export interface PolicyFile {
  path: string;
  imports: ImportDecl[];
  consts: ConstDecl[];
  matches: MatchDecl[];
  meshes: MeshDecl[];
  services: ServiceDecl[];
}

export interface Name {
  text: string;
  span: SourceSpan;
}

export interface StringLit {
  value: string;
  span: SourceSpan;
}

export interface NumberLit {
  text: string;
  value: number;
  span: SourceSpan;
}

/** A duration literal as written, e.g. `250ms`: number and unit split. */
export interface DurationLit {
  text: string;
  amount: number;
  unit: string;
  span: SourceSpan;
}

/** A value as written: literals, a bare name (a constant, a method, an option word) or a list. */
export type Value =
  | { type: 'string'; value: string; span: SourceSpan }
  | { type: 'number'; value: number; text: string; span: SourceSpan }
  | { type: 'duration'; lit: DurationLit; span: SourceSpan }
  | { type: 'name'; text: string; span: SourceSpan }
  | { type: 'list'; items: Value[]; span: SourceSpan };

/** `import "other.meshpolicy"`: the other file's constants and match blocks become visible here. */
export interface ImportDecl {
  path: StringLit;
  span: SourceSpan;
}

/** `const NAME = value`. */
export interface ConstDecl {
  name: Name;
  value: Value;
  span: SourceSpan;
}

/** `match NAME { condition }`: a reusable condition, referenced as `match NAME`. */
export interface MatchDecl {
  name: Name;
  condition: Condition;
  span: SourceSpan;
}

/** `mesh { rules }`: defaults for every service. */
export interface MeshDecl {
  rules: RuleDecl[];
  span: SourceSpan;
  keyword: SourceSpan;
}

export interface ServiceDecl {
  name: Name;
  /** `service NAME dry_run {`: the whole filter runs in dry-run mode. */
  dryRun?: SourceSpan;
  rules: RuleDecl[];
  span: SourceSpan;
}

/** `<kind> [<name>] { clauses }`; the kind is any identifier until checked. */
export interface RuleDecl {
  kind: Name;
  name?: Name;
  clauses: Clause[];
  span: SourceSpan;
}

export type SettingsKeyword = 'retry' | 'retry_budget' | 'load_balancer' | 'connection_limits' | 'outlier_detection' | 'rewrite' | 'redirect' | 'respond' | 'mirror';

export type Clause =
  | { type: 'when'; condition: Condition; span: SourceSpan }
  | { type: 'to'; targets: RouteTarget[]; span: SourceSpan }
  | { type: 'delay'; duration: DurationLit; percent?: NumberLit; span: SourceSpan }
  | { type: 'abort'; status: NumberLit; grpc: boolean; percent?: NumberLit; span: SourceSpan }
  | { type: 'between'; start: StringLit; end: StringLit; daily: boolean; span: SourceSpan }
  | { type: 'from'; sources: Value[]; span: SourceSpan }
  | { type: 'key'; word: Name; arg?: StringLit; span: SourceSpan }
  | { type: 'rate'; amount: NumberLit; unit: Name; burst?: NumberLit; span: SourceSpan }
  | { type: 'dry_run'; span: SourceSpan }
  | { type: 'timeout'; duration: DurationLit; span: SourceSpan }
  | { type: 'request_header' | 'response_header'; op: 'set' | 'add' | 'remove'; name: StringLit; value?: StringLit; span: SourceSpan }
  | { type: SettingsKeyword; items: Value[]; span: SourceSpan };

export type ClauseType = Clause['type'];

export interface RouteTarget {
  version: Name;
  weight?: NumberLit;
  span: SourceSpan;
}

export type Field =
  | 'method'
  | 'path'
  | 'host'
  | 'port'
  | 'header'
  | 'query'
  | 'claim'
  | 'grpc-service'
  | 'grpc-method'
  | 'source'
  | 'source-namespace'
  | 'source-account'
  | 'source-ip';

/** What a comparison looks at; `name` for header, query and claim. */
export interface Subject {
  field: Field;
  name?: StringLit;
  span: SourceSpan;
}

export type CompareOp = 'eq' | 'ne' | 'prefix' | 'suffix' | 'contains' | 'regex' | 'matches' | 'in' | 'present' | 'absent';

export type Condition =
  | { type: 'and'; left: Condition; right: Condition; span: SourceSpan }
  | { type: 'or'; left: Condition; right: Condition; span: SourceSpan }
  | { type: 'not'; operand: Condition; span: SourceSpan }
  | { type: 'bool'; value: boolean; span: SourceSpan }
  /** `match NAME`. */
  | { type: 'ref'; name: Name; span: SourceSpan }
  /** `subject op operand`; `in` has a list (or a name); present/absent have none. */
  | { type: 'compare'; subject: Subject; op: CompareOp; opSpan: SourceSpan; operand?: Value; span: SourceSpan };
