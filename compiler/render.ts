// Diagnostics shown in their source: each line of the file, and under a line
// with a finding, `~` under the span and the message (the format of the golden
// files in test/golden/, after TypeScript's error baselines).
// In: a file's text and its diagnostics. Out: the annotated text.
import type { Diagnostic } from './diagnostics.ts';

export function renderInSource(path: string, text: string, diagnostics: Diagnostic[]): string {
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  const errors = diagnostics.filter((d) => d.severity === 'error').length;
  const out = [`==== ${path} (${errors} error(s), ${diagnostics.length - errors} warning(s)) ====`];
  lines.forEach((line, i) => {
    out.push(`    ${line}`);
    for (const d of diagnostics.filter((x) => x.span.line === i + 1)) {
      // Multi-line spans are underlined to the end of their first line.
      const end = d.span.endLine === d.span.line ? d.span.endCol : line.length + 1;
      out.push(`    ${' '.repeat(d.span.col - 1)}${'~'.repeat(Math.max(1, end - d.span.col))}`);
      out.push(`!!! ${d.severity} ${d.code}: ${d.message}`);
      if (d.hint) out.push(`!!!   hint: ${d.hint}`);
    }
  });
  // Findings past the last line (an unclosed block at the end of the file).
  for (const d of diagnostics.filter((x) => x.span.line > lines.length)) out.push(`!!! ${d.severity} ${d.code} (end of file): ${d.message}`);
  return out.join('\n') + '\n';
}
