// The compiler's name and version (package.json), kept apart so that the
// build cache can be consulted without loading the compiler itself.
import { readFileSync } from 'node:fs';

export const COMPILER_NAME = 'meshc';
export const COMPILER_VERSION: string = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
