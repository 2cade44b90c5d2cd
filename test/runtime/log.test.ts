// The stdout log sink in a real process: lines in order and intact across
// buffer-full flushes, the 50 ms timer, a line larger than the buffer,
// multi-byte characters, entries written later (logLater) among lines
// written at once, more of them than wait unwritten, one larger than the
// buffer, and the synchronous write at exit.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it, vi } from 'vitest';

const logModule = fileURLToPath(new URL('../../runtime/log.ts', import.meta.url));

const script = `
import { jsonLineLog, logLater, writeLogLine } from ${JSON.stringify(logModule)};
// Entries written later as their JSON text (at most 3 bytes of UTF-8 per UTF-16 unit).
const later = {
  maxBytes: (entry) => JSON.stringify(entry).length * 3,
  write: (entry, buf, at) => at + buf.write(JSON.stringify(entry), at, 'utf8'),
};
for (let i = 0; i < 3000; i++) {
  const entry = { i, text: i % 7 === 0 ? 'ünï ✓ 😀' : 'plain' };
  if (i % 3 === 0 || (i >= 1000 && i < 1500)) logLater(entry, later);
  else jsonLineLog(entry);
}
await new Promise((r) => setTimeout(r, 120)); // the timer flushes what is pending
writeLogLine(JSON.stringify({ i: 3000, big: 'x'.repeat(40000) })); // larger than the buffer's worst case
for (let i = 3001; i < 3100; i++) writeLogLine(JSON.stringify({ i, text: 'é'.repeat(i % 50) }));
for (let i = 3100; i < 3400; i++) logLater({ i, text: i === 3200 ? 'y'.repeat(30000) : 'é'.repeat(i % 50) }, later); // 3200: more than the buffer holds
// Pending at exit, lines and entries not yet formatted: written synchronously.
`;

describe('jsonLineLog / writeLogLine / logLater', () => {
  it('writes every line once, in order, intact, including at exit', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { maxBuffer: 16 * 1024 * 1024 });
    const lines = stdout.split('\n');
    expect(lines.pop()).toBe('');
    expect(lines).toHaveLength(3400);
    lines.forEach((line, i) => {
      const entry = JSON.parse(line) as { i: number; text?: string; big?: string };
      expect(entry.i).toBe(i);
      if (i < 3000) expect(entry.text).toBe(i % 7 === 0 ? 'ünï ✓ 😀' : 'plain');
      else if (i === 3000) expect(entry.big).toHaveLength(40000);
      else if (i === 3200) expect(entry.text).toBe('y'.repeat(30000));
      else expect(entry.text).toBe('é'.repeat(i % 50));
    });
  });
});

describe('logTime', () => {
  it('is new Date().toISOString(), across milliseconds, seconds, days and years', async () => {
    const { logTime } = await import('../../runtime/log.ts');
    const instants = [
      Date.UTC(2026, 11, 6, 21, 59, 59, 999),
      Date.UTC(2026, 11, 6, 22, 0, 0, 0),
      Date.UTC(2026, 11, 6, 22, 0, 0, 7),
      Date.UTC(2026, 11, 6, 22, 0, 0, 7), // the same millisecond again
      Date.UTC(2026, 11, 6, 22, 0, 0, 70),
      Date.UTC(2026, 11, 31, 23, 59, 59, 500),
      Date.UTC(2027, 0, 1, 0, 0, 0, 1),
      Date.UTC(2028, 1, 29, 12, 30, 45, 123),
    ];
    const spy = vi.spyOn(Date, 'now');
    try {
      for (const t of instants) {
        spy.mockReturnValue(t);
        expect(logTime()).toBe(new Date(t).toISOString());
      }
    } finally {
      spy.mockRestore();
    }
  });
});
