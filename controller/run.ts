// `meshc controller`: parses the CLI options, starts the controller, and stops
// it cleanly on SIGINT/SIGTERM.
import { readFile } from 'node:fs/promises';
import { loadSigningKey } from '../protocol/bundle.ts';
import { startController } from './server.ts';
import { parseHostPort } from './topology.ts';

export async function runControllerCommand(opts: { dir: string; listen: string; stateDir: string; signKey?: string }): Promise<void> {
  const listen = parseHostPort(opts.listen, true);
  if (!listen) {
    process.stderr.write(`meshc controller: --listen must be HOST:PORT, got "${opts.listen}"\n`);
    process.exit(2);
  }
  let signKey;
  if (opts.signKey) {
    try {
      signKey = loadSigningKey(await readFile(opts.signKey, 'utf8'));
    } catch (err) {
      process.stderr.write(`meshc controller: cannot load the signing key ${opts.signKey}: ${(err as Error).message}\n`);
      process.exit(2);
    }
  }
  const controller = await startController({ dir: opts.dir, listen, stateDir: opts.stateDir, ...(signKey ? { signKey } : {}) });
  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    controller.stop().then(
      () => process.exit(0),
      (err: Error) => {
        process.stderr.write(`meshc controller: error while stopping: ${err.message}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
