// The fuel meter is inserted by binaryen in a child process (runtime/wasm/
// metering-process.ts), which ends when idle and so gives its memory back.
// A metering process that dies fails the loads it had not answered with
// FILTER_METERING, and the next load starts a new one.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { meteringProcessPid, prepareModule, shutdownMeteringProcess } from '../../runtime/wasm/module-cache.ts';

/** A minimal module (one empty function, one page of memory) made distinct by a custom section holding `tag`. */
function moduleTagged(tag: number): Uint8Array {
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version 1
    0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: () -> ()
    0x03, 0x02, 0x01, 0x00, // function section: one function of type 0
    0x05, 0x03, 0x01, 0x00, 0x01, // memory section: min 1 page
    0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // code section: an empty body
    0x00, 0x03, 0x01, 0x74, tag, // custom section "t" with one byte
  ]);
}

const limits = { memoryMaxBytes: 1 << 20, fuelPerCallback: 1_000 };

afterAll(() => shutdownMeteringProcess());

describe('the metering process', () => {
  it('instruments in a child process; a crash fails the pending load and the next load starts a new process', async () => {
    const first = await prepareModule(moduleTagged(1), limits);
    expect(first.metered).toBe(true);
    const pid = meteringProcessPid();
    expect(pid).toBeGreaterThan(0);
    expect(pid).not.toBe(process.pid);

    // Stopped first, so it cannot answer between the request and the kill (it would on a busy machine).
    process.kill(pid!, 'SIGSTOP');
    const pending = prepareModule(moduleTagged(2), limits);
    process.kill(pid!, 'SIGKILL');
    await expect(pending).rejects.toMatchObject({ code: 'FILTER_METERING', message: expect.stringMatching(/metering process exited \(SIGKILL\)/) });

    const again = await prepareModule(moduleTagged(3), limits);
    expect(again.metered).toBe(true);
    expect(meteringProcessPid()).toBeGreaterThan(0);
    expect(meteringProcessPid()).not.toBe(pid);

    await shutdownMeteringProcess();
    expect(meteringProcessPid()).toBeUndefined();
  });

  it('an idle metering process neither keeps its parent alive nor leaves a shutdown waiting forever', async () => {
    // A process of its own: under vitest something else always keeps the event loop alive.
    const cache = fileURLToPath(new URL('../../runtime/wasm/module-cache.ts', import.meta.url));
    const script = `
      import { prepareModule, meteringProcessPid, shutdownMeteringProcess } from ${JSON.stringify(cache)};
      const bytes = new Uint8Array(${JSON.stringify([...moduleTagged(9)])});
      await prepareModule(bytes, ${JSON.stringify(limits)});
      const pid = meteringProcessPid();
      await shutdownMeteringProcess();
      console.log(JSON.stringify({ pid, after: meteringProcessPid() ?? null }));
    `;
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { timeout: 20_000 });
    const out = JSON.parse(stdout) as { pid: number; after: number | null };
    expect(out.pid).toBeGreaterThan(0);
    expect(out.after).toBeNull();
    // The metering process is gone with it.
    expect(() => process.kill(out.pid, 0)).toThrow();
  });
});
