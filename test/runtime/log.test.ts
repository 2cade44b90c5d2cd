// The stdout log sink in a real process: lines in order and intact across
// buffer-full flushes, the 50 ms timer, a line larger than the buffer,
// multi-byte characters, and the synchronous write at exit.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const logModule = fileURLToPath(new URL('../../runtime/log.ts', import.meta.url));

const script = `
import { jsonLineLog, writeLogLine } from ${JSON.stringify(logModule)};
for (let i = 0; i < 3000; i++) jsonLineLog({ i, text: i % 7 === 0 ? 'ünï ✓ 😀' : 'plain' });
await new Promise((r) => setTimeout(r, 120)); // the timer flushes what is pending
writeLogLine(JSON.stringify({ i: 3000, big: 'x'.repeat(40000) })); // larger than the buffer's worst case
for (let i = 3001; i < 3100; i++) writeLogLine(JSON.stringify({ i, text: 'é'.repeat(i % 50) }));
// Pending at exit: written synchronously.
`;

describe('jsonLineLog / writeLogLine', () => {
  it('writes every line once, in order, intact, including at exit', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { maxBuffer: 16 * 1024 * 1024 });
    const lines = stdout.split('\n');
    expect(lines.pop()).toBe('');
    expect(lines).toHaveLength(3100);
    lines.forEach((line, i) => {
      const entry = JSON.parse(line) as { i: number; text?: string; big?: string };
      expect(entry.i).toBe(i);
      if (i < 3000) expect(entry.text).toBe(i % 7 === 0 ? 'ünï ✓ 😀' : 'plain');
      else if (i === 3000) expect(entry.big).toHaveLength(40000);
      else expect(entry.text).toBe('é'.repeat(i % 50));
    });
  });
});
