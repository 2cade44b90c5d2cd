// tierUpEarly() (runtime/wasm/webassembly.ts): a proxy process lowers V8's
// Wasm tiering budget so a filter leaves the baseline compiler (Liftoff) after
// a few hundred calls. Checked in child processes with V8's own introspection
// (--allow-natives-syntax), against a control child without the call.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const webassembly = fileURLToPath(new URL('../../runtime/wasm/webassembly.ts', import.meta.url));

// (func (export "f") (param $n i32) (result i32): the sum 0 + 1 + … + n-1 in a loop.
const MODULE = 'AGFzbQEAAAABBgFgAX8BfwMCAQAHBQEBZgAACiYBJAECfwJAA0AgASAATw0BIAIgAWohAiABQQFqIQEMAAsACyACCw==';

/** Calls f(100) 300 times, then up to 100 more (10 ms apart) while waiting for TurboFan; reports the tier. */
async function tierAfterCalls(early: boolean): Promise<{ liftoff: boolean; turbofan: boolean }> {
  const script = `
import { tierUpEarly } from ${JSON.stringify(webassembly)};
if (${early}) tierUpEarly();
const { instance } = await WebAssembly.instantiate(Buffer.from(${JSON.stringify(MODULE)}, 'base64'));
const f = instance.exports.f;
for (let i = 0; i < 300; i++) f(100);
for (let t = 0; t < 100 && !%IsTurboFanFunction(f); t++) {
  f(100);
  await new Promise((r) => setTimeout(r, 10));
}
console.log(JSON.stringify({ liftoff: %IsLiftoffFunction(f), turbofan: %IsTurboFanFunction(f) }));
`;
  const { stdout } = await promisify(execFile)(process.execPath, ['--allow-natives-syntax', '--input-type=module', '-e', script]);
  return JSON.parse(stdout) as { liftoff: boolean; turbofan: boolean };
}

describe('tierUpEarly', () => {
  it('moves a Wasm function to TurboFan after a few hundred calls; V8\'s default keeps it on Liftoff', async () => {
    const [early, control] = await Promise.all([tierAfterCalls(true), tierAfterCalls(false)]);
    expect(early).toEqual({ liftoff: false, turbofan: true });
    expect(control).toEqual({ liftoff: true, turbofan: false });
  });
});
