// `npm run bench`: runs every benchmark suite in one go, prints the tables and
// writes them to bench/results/. `npm run bench -- --seconds 5` shortens runs.
import { parseArgs } from 'node:util';
import { runHttpHop } from './http-hop.ts';
import { renderMarkdown, writeReport } from './lib/report.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    connections: { type: 'string', default: '50' },
  },
});

const seconds = Number(values.seconds);
const connections = Number(values.connections);

process.stderr.write('http-hop: direct, haproxy, sidecar, sidecar + compiled chain\n');
const hop = await runHttpHop({ seconds, connections });
process.stdout.write('\n' + renderMarkdown(hop.table));
const md = await writeReport('http-hop', [hop.table], hop.raw);
process.stderr.write(`\nwritten to bench/results/http-hop.md (${md.length} bytes)\n`);
