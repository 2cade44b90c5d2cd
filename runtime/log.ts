// The sidecar's log sink: one JSON object per line on stdout, gathered in a
// buffer and written at most every FLUSH_MS (or at once when the buffer is
// full), the way Envoy flushes its access log files on an interval: a busy
// proxy makes one write per interval instead of one per request, and a quiet
// one (a request per event-loop turn) no longer pays a write per request
// either. Lines are encoded into the buffer as they come: appending them to
// one string made a long chain that had to be flattened and encoded again at
// every flush (a few percent of a busy proxy's CPU).
//
// Access-log entries are kept as objects and written into the buffer, as
// bytes, only when the buffer is next written out (logLater): at a low
// request rate each request wakes a cold process, and formatting its line
// then ran with the formatter's code and data out of cache; the interval's
// entries formatted together run it warm (docs/runtime.md, Ninth round).
//
// In:  log entries (events as objects, lines as text, access-log entries with their LineFormat).
// Out: JSON lines on fd 1, in the order they were given;
//      whatever is pending is written synchronously when the process exits.
//      logTime(): the current time as an ISO string, computed once per millisecond.
import { Buffer } from 'node:buffer';
import process from 'node:process';
import { writeSync } from 'node:fs';

/** Bytes gathered before a write; also the most a burst can hold back. */
const BUFFER_BYTES = 64 * 1024;
/** Longest a line waits in the buffer. */
const FLUSH_MS = 50;
/** Entries held for formatting before they are formatted at once: bounds what they keep alive. */
const LATER_MAX = 128;

let buffer = Buffer.allocUnsafe(BUFFER_BYTES);
let used = 0;
let timer: NodeJS.Timeout | undefined;
/** How an entry given to logLater becomes its line. */
export interface LineFormat<T> {
  /** At least the bytes write() will take for `entry` (its newline not counted). */
  maxBytes(entry: T): number;
  /** Writes the line into `buf` from `at` (room for maxBytes is there); returns where it ends. */
  write(entry: T, buf: Buffer, at: number): number;
}

/** Entries given to logLater and not yet written, each with its format at the same index. */
const laterEntries: unknown[] = [];
const laterFormats: Array<LineFormat<unknown>> = [];

/** Writes what the buffer holds (not the entries waiting to be formatted: see flushAll). */
function flush(): void {
  if (used === 0) return;
  // The stream may keep the bytes until they are written: the next lines go to a new buffer.
  const out = buffer.subarray(0, used);
  buffer = Buffer.allocUnsafe(BUFFER_BYTES);
  used = 0;
  process.stdout.write(out);
}

/** Writes the waiting entries into the buffer, in order. */
function formatLater(): void {
  // flush() only writes the buffer out: nothing joins these lists meanwhile.
  for (let i = 0; i < laterEntries.length; i++) append(laterEntries[i], laterFormats[i]!);
  laterEntries.length = 0;
  laterFormats.length = 0;
}

/** The timer's flush: everything given so far goes out. */
function flushAll(): void {
  timer = undefined;
  formatLater();
  flush();
}

function armTimer(): void {
  if (timer) return;
  timer = setTimeout(flushAll, FLUSH_MS);
  // A pending line never keeps the process alive; 'exit' writes it.
  timer.unref();
}

process.once('exit', () => {
  formatLater();
  if (used === 0) return;
  try {
    writeSync(1, buffer.subarray(0, used));
  } catch {
    // stdout is gone; nothing left to tell.
  }
  used = 0;
});

export function jsonLineLog(entry: Record<string, unknown>): void {
  writeLogLine(JSON.stringify(entry));
}

/** Appends one line of JSON text (without its newline) to the log. */
export function writeLogLine(line: string): void {
  if (laterEntries.length > 0) formatLater();
  append(line, TEXT_LINE);
  armTimer();
}

/**
 * Logs `entry` as the line `format` writes, when the log is next written out
 * (or at once when LATER_MAX are waiting). `entry` must not change afterwards.
 */
export function logLater<T>(entry: T, format: LineFormat<T>): void {
  laterEntries.push(entry);
  laterFormats.push(format as LineFormat<unknown>);
  if (laterEntries.length >= LATER_MAX) formatLater();
  armTimer();
}

/** A line given as text: UTF-8 takes at most 3 bytes per UTF-16 unit. */
const TEXT_LINE: LineFormat<string> = {
  maxBytes: (line) => line.length * 3,
  write: (line, buf, at) => at + buf.write(line, at, 'utf8'),
};

/** Writes `entry`'s line and its newline into the buffer, flushing first when it might not fit. */
function append<T>(entry: T, format: LineFormat<T>): void {
  const need = format.maxBytes(entry) + 1;
  if (used + need > buffer.length) flush();
  if (need > buffer.length) {
    // Larger than the buffer: a buffer of its own.
    const own = Buffer.allocUnsafe(need);
    const end = format.write(entry, own, 0);
    own[end] = 0x0a;
    process.stdout.write(own.subarray(0, end + 1));
    return;
  }
  used = format.write(entry, buffer, used);
  buffer[used++] = 0x0a;
}

let isoSecond = -1;
/** `YYYY-MM-DDTHH:MM:SS.` of isoSecond. */
let isoPrefix = '';
let isoMs = -1;
let iso = '';
/** '000' … '999': the millisecond part of a log time. */
const MILLIS = Array.from({ length: 1000 }, (_, i) => String(i).padStart(3, '0'));

/**
 * `new Date().toISOString()` for log lines. toISOString costs about a
 * microsecond (several at a low request rate, when every request sees a new
 * millisecond), so the text up to the seconds is made once per second and
 * the milliseconds are appended from a table.
 */
export function logTime(): string {
  const now = Date.now();
  if (now === isoMs) return iso;
  isoMs = now;
  const second = Math.floor(now / 1000);
  if (second !== isoSecond) {
    isoSecond = second;
    isoPrefix = new Date(second * 1000).toISOString().slice(0, 20);
  }
  iso = isoPrefix + MILLIS[now - second * 1000] + 'Z';
  return iso;
}
