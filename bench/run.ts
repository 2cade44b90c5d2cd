// `npm run bench`: runs every benchmark suite (or those named with --suite),
// prints each table and writes it to bench/results/<suite>.md and .json.
//   npm run bench -- --suite http-hop --seconds 5
import { parseArgs } from 'node:util';
import { renderMarkdown, writeReport, type Table } from './lib/report.ts';

export interface SuiteOptions {
  /** Length of each timed run, where a suite has timed runs. */
  seconds: number;
  connections: number;
}

export interface SuiteResult {
  tables: Table[];
  raw: unknown;
}

/** Every suite, in the order `npm run bench` runs them. Each module exports `run(options)`. */
const SUITES: Record<string, () => Promise<{ run(options: SuiteOptions): Promise<SuiteResult> }>> = {
  'http-hop': () => import('./http-hop.ts'),
  dataplane: () => import('./dataplane.ts'),
  'request-path': () => import('./request-path.ts'),
  instructions: () => import('./instructions.ts'),
  tcp: () => import('./tcp.ts'),
  h2: () => import('./h2.ts'),
  host: () => import('./host.ts'),
  decisions: () => import('./decisions.ts'),
  connections: () => import('./connections.ts'),
  compile: () => import('./compile.ts'),
};

const { values } = parseArgs({
  options: {
    suite: { type: 'string', multiple: true },
    seconds: { type: 'string', default: '10' },
    connections: { type: 'string', default: '50' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

if (values.help) {
  process.stdout.write(
    'usage: npm run bench [-- --suite NAME ...] [--seconds N] [--connections N]\n' +
      `  --suite        run only these suites (repeatable): ${Object.keys(SUITES).join(', ')}\n` +
      '  --seconds      length of each timed run (default 10)\n' +
      '  --connections  concurrent connections of the closed-loop runs (default 50)\n' +
      'Tables are printed and written to bench/results/<suite>.md and .json.\n',
  );
  process.exit(0);
}

const names = values.suite ?? Object.keys(SUITES);
const unknown = names.filter((n) => !(n in SUITES));
if (unknown.length > 0) {
  process.stderr.write(`unknown suite ${unknown.join(', ')}; suites: ${Object.keys(SUITES).join(', ')}\n`);
  process.exit(2);
}

const options: SuiteOptions = { seconds: Number(values.seconds), connections: Number(values.connections) };
for (const name of names) {
  process.stderr.write(`\n# ${name}\n`);
  const suite = await SUITES[name]!();
  const result = await suite.run(options);
  for (const table of result.tables) process.stdout.write('\n' + renderMarkdown(table));
  await writeReport(name, result.tables, result.raw);
  process.stderr.write(`written to bench/results/${name}.md\n`);
}
