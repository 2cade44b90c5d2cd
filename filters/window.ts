// Time windows for faults, on the host's wall clock
// (proxy_get_current_time_nanoseconds). In: the window bounds. Out: whether
// now is inside. Absolute windows are [start, end) in epoch milliseconds;
// daily windows are [start, end) in minutes of the UTC day and may wrap past
// midnight. Mirrors compiler/check/window.ts.
import { nowNanoseconds } from "./hostcalls";

export function inAbsoluteWindow(startMs: i64, endMs: i64): bool {
  const now = nowNanoseconds() / 1000000;
  return now >= startMs && now < endMs;
}

export function inDailyWindow(startMinute: i32, endMinute: i32): bool {
  const ms = nowNanoseconds() / 1000000;
  const dayMs = ((ms % 86400000) + 86400000) % 86400000;
  const minute = <i32>(dayMs / 60000);
  if (startMinute < endMinute) return minute >= startMinute && minute < endMinute;
  return minute >= startMinute || minute < endMinute;
}
