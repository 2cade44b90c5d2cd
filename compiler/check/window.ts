// Fault time windows: `between "2026-12-01T10:00Z" and "2026-12-01T12:00Z"`
// (two instants) or `between "22:00" and "02:00" daily` (UTC times of day; a
// daily window may wrap past midnight).
// In: the two strings and the daily flag. Out: milliseconds since the epoch, or
// minutes of the UTC day, or an error message for MP2040.

export type Window = { kind: 'absolute'; startMs: number; endMs: number } | { kind: 'daily'; startMinute: number; endMinute: number };

const INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?(Z|[+-]\d{2}:\d{2})$/;
const TIME_OF_DAY = /^([01]\d|2[0-3]):([0-5]\d)$/;

export function parseWindow(start: string, end: string, daily: boolean): Window | { error: string } {
  if (daily) {
    const a = TIME_OF_DAY.exec(start);
    const b = TIME_OF_DAY.exec(end);
    if (!a) return { error: `${JSON.stringify(start)} is not a time of day HH:MM` };
    if (!b) return { error: `${JSON.stringify(end)} is not a time of day HH:MM` };
    const startMinute = Number(a[1]) * 60 + Number(a[2]);
    const endMinute = Number(b[1]) * 60 + Number(b[2]);
    if (startMinute === endMinute) return { error: 'a daily window needs different start and end times' };
    return { kind: 'daily', startMinute, endMinute };
  }
  const startMs = INSTANT.test(start) ? Date.parse(start) : NaN;
  const endMs = INSTANT.test(end) ? Date.parse(end) : NaN;
  if (Number.isNaN(startMs)) return { error: `${JSON.stringify(start)} is not an instant with a time zone, e.g. "2026-12-01T10:00Z"` };
  if (Number.isNaN(endMs)) return { error: `${JSON.stringify(end)} is not an instant with a time zone, e.g. "2026-12-01T12:00Z"` };
  if (endMs <= startMs) return { error: 'the window ends before it starts' };
  return { kind: 'absolute', startMs, endMs };
}

/** Is `nowMs` inside the window? Absolute: [start, end). Daily: [start, end) in UTC minutes, wrapping. */
export function inWindow(w: Window, nowMs: number): boolean {
  if (w.kind === 'absolute') return nowMs >= w.startMs && nowMs < w.endMs;
  const minute = Math.floor((((nowMs % 86_400_000) + 86_400_000) % 86_400_000) / 60_000);
  return w.startMinute < w.endMinute ? minute >= w.startMinute && minute < w.endMinute : minute >= w.startMinute || minute < w.endMinute;
}
