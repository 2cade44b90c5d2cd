// The sidecar's log sink: one JSON object per line on stdout, buffered and
// written at most every FLUSH_MS (or at once past MAX_PENDING), the way
// Envoy flushes its access log files on an interval: a busy proxy makes one
// write per interval instead of one per request, and a quiet one (a request
// per event-loop turn) no longer pays a write per request either.
//
// In:  log entries (events; access-log lines come as text, runtime/access-log.ts).
// Out: JSON lines on fd 1;
//      whatever is pending is written synchronously when the process exits.
//      logTime(): the current time as an ISO string, computed once per millisecond.
import { writeSync } from 'node:fs';

let pending = '';
let timer: NodeJS.Timeout | undefined;
/** Flush at once past this size, so a burst cannot grow the buffer without bound. */
const MAX_PENDING = 64 * 1024;
/** Longest a line waits in the buffer. */
const FLUSH_MS = 50;

function flush(): void {
  if (timer) {
    clearTimeout(timer);
    timer = undefined;
  }
  if (pending === '') return;
  const out = pending;
  pending = '';
  process.stdout.write(out);
}

process.once('exit', () => {
  if (pending === '') return;
  try {
    writeSync(1, pending);
  } catch {
    // stdout is gone; nothing left to tell.
  }
  pending = '';
});

export function jsonLineLog(entry: Record<string, unknown>): void {
  writeLogLine(JSON.stringify(entry));
}

/** Appends one line of JSON text (without its newline) to the log. */
export function writeLogLine(line: string): void {
  pending += line + '\n';
  if (pending.length > MAX_PENDING) flush();
  else if (!timer) {
    timer = setTimeout(flush, FLUSH_MS);
    // A pending line never keeps the process alive; 'exit' writes it.
    timer.unref();
  }
}

let isoMs = -1;
let iso = '';

/** `new Date().toISOString()` for log lines, formatted once per millisecond (it costs about a microsecond). */
export function logTime(): string {
  const now = Date.now();
  if (now !== isoMs) {
    isoMs = now;
    iso = new Date(now).toISOString();
  }
  return iso;
}
