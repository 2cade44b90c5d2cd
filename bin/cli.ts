// Command dispatch. Each part registers its own subcommands and loads its heavy
// modules only inside the action, so `meshc --help` stays fast.
import { Command } from 'commander';
import { registerCompilerCommands } from '../compiler/cli.ts';
import { registerRuntimeCommands } from '../runtime/cli.ts';
import { registerControllerCommands } from '../controller/cli.ts';
import { readFileSync } from 'node:fs';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };

const program = new Command('meshc')
  .description('Service mesh policy as code: compile .meshpolicy files to proxy-wasm filters and run the mesh.')
  .version(pkg.version)
  .showHelpAfterError();

registerCompilerCommands(program);
registerRuntimeCommands(program);
registerControllerCommands(program);

await program.parseAsync(process.argv);
