// The sidecar's log sink: one JSON object per line on stdout, gathered in a
// buffer and written at most every FLUSH_MS (or at once when the buffer is
// full), the way Envoy flushes its access log files on an interval: a busy
// proxy makes one write per interval instead of one per request, and a quiet
// one (a request per event-loop turn) no longer pays a write per request
// either. Lines are encoded into the buffer as they come: appending them to
// one string made a long chain that had to be flattened and encoded again at
// every flush (a few percent of a busy proxy's CPU).
//
// Access-log entries are kept as objects and made into text only when the
// lines before them are written out (logLater): at a low request rate each
// request wakes a cold process, and formatting its line then ran with the
// formatter's code and data out of cache; formatting the interval's entries
// together runs it warm (docs/runtime.md, Ninth round).
//
// In:  log entries (events as objects, lines as text, access-log entries with their formatter).
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
/** Entries given to logLater and not yet formatted, each with its formatter at the same index. */
const laterEntries: unknown[] = [];
const laterFormats: Array<(entry: unknown) => string> = [];

/** Writes what the buffer holds (not the entries waiting to be formatted: see flushAll). */
function flush(): void {
  if (used === 0) return;
  // The stream may keep the bytes until they are written: the next lines go to a new buffer.
  const out = buffer.subarray(0, used);
  buffer = Buffer.allocUnsafe(BUFFER_BYTES);
  used = 0;
  process.stdout.write(out);
}

/** Formats the waiting entries into the buffer, in order. */
function formatLater(): void {
  // appendLine may flush the buffer, never format: nothing joins these lists meanwhile.
  for (let i = 0; i < laterEntries.length; i++) appendLine(laterFormats[i]!(laterEntries[i]));
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
  appendLine(line);
  armTimer();
}

/**
 * Logs `entry` as the line `format(entry)` makes, formatted when the log is
 * next written out (or at once when LATER_MAX are waiting). `entry` must not
 * change afterwards, and `format` must not log.
 */
export function logLater<T>(entry: T, format: (entry: T) => string): void {
  laterEntries.push(entry);
  laterFormats.push(format as (entry: unknown) => string);
  if (laterEntries.length >= LATER_MAX) formatLater();
  armTimer();
}

function appendLine(line: string): void {
  // UTF-8 takes at most 3 bytes per UTF-16 unit: room for the worst case, or flush first.
  const worst = line.length * 3 + 1;
  if (used + worst > buffer.length) {
    flush();
    if (worst > buffer.length) {
      process.stdout.write(line + '\n');
      return;
    }
  }
  used += buffer.write(line, used, 'utf8');
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
