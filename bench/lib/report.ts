// Prints a benchmark's table and writes it (Markdown and JSON) to bench/results/.
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';

export interface Table {
  title: string;
  columns: string[];
  rows: (string | number)[][];
  notes?: string[];
}

export function renderMarkdown(table: Table): string {
  const fmt = (v: string | number) => (typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(2)) : v);
  const lines = [`## ${table.title}`, '', `| ${table.columns.join(' | ')} |`, `| ${table.columns.map(() => '---').join(' | ')} |`];
  for (const row of table.rows) lines.push(`| ${row.map(fmt).join(' | ')} |`);
  if (table.notes?.length) lines.push('', ...table.notes.map((n) => `- ${n}`));
  return lines.join('\n') + '\n';
}

export async function writeReport(name: string, tables: Table[], raw: unknown): Promise<string> {
  const dir = new URL('../results/', import.meta.url).pathname;
  await mkdir(dir, { recursive: true });
  const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
  const header = `# ${name}\n\nRun ${new Date().toISOString()} on ${machine}.\n\n`;
  const md = header + tables.map(renderMarkdown).join('\n');
  await writeFile(join(dir, `${name}.md`), md);
  await writeFile(join(dir, `${name}.json`), JSON.stringify({ name, machine, at: new Date().toISOString(), raw }, null, 2) + '\n');
  return md;
}
