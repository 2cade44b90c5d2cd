// The sidecar's log sink: one JSON object per line on stdout, batched so a
// busy proxy makes one write per event-loop turn instead of one per request.
//
// In:  log entries (access-log lines and events). Out: JSON lines on fd 1;
//      whatever is pending is written synchronously when the process exits.
import { writeSync } from 'node:fs';

let pending = '';
let scheduled = false;
/** Flush at once past this size, so a burst cannot grow the buffer without bound. */
const MAX_PENDING = 64 * 1024;

function flush(): void {
  scheduled = false;
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
  pending += JSON.stringify(entry) + '\n';
  if (pending.length > MAX_PENDING) flush();
  else if (!scheduled) {
    scheduled = true;
    setImmediate(flush);
  }
}
