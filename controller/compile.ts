// The controller's view of the compiler: the slice of compiler/index.ts it uses,
// loaded lazily (asc is heavy), and replaceable in tests by a fake.
//
// In:  policy sources, the topology in the compiler's terms, an optional signing key.
// Out: diagnostics and, when there is no error, a bundle.
import type { KeyObject } from 'node:crypto';
import type { Bundle, SourceSpan } from '../protocol/bundle.ts';
import type { PolicySource } from './source.ts';

export interface PolicyDiagnostic {
  code: string;
  severity: 'error' | 'warning';
  message: string;
  hint?: string;
  span: SourceSpan;
}

export interface PolicyCompileResult {
  diagnostics: PolicyDiagnostic[];
  bundle?: Bundle;
}

export interface PolicyCompiler {
  compile(files: PolicySource[], topology: { services: Record<string, { versions: string[] }> }, signKey?: KeyObject): Promise<PolicyCompileResult>;
  format(d: PolicyDiagnostic): string;
  shutdown(): Promise<void>;
}

/** The real compiler (compiler/index.ts), imported on first use. */
export async function loadPolicyCompiler(): Promise<PolicyCompiler> {
  const mod = await import('../compiler/index.ts');
  return {
    compile: (files, topology, signKey) => mod.compilePolicies(files, signKey ? { topology, signKey } : { topology }),
    format: (d) => mod.formatDiagnostic(d),
    shutdown: () => mod.shutdownCompiler(),
  };
}
