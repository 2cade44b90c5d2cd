// Summaries of repeated measurements, shared by the suites that run rounds.

/** The middle value (the upper middle of an even count). */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** "lo–hi" of the values, formatted by `fmt`; one value when they are all equal. */
export function range(xs: number[], fmt: (x: number) => string = String): string {
  const lo = fmt(Math.min(...xs));
  const hi = fmt(Math.max(...xs));
  return lo === hi ? lo : `${lo}–${hi}`;
}
