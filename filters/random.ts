// Randomness for weighted splits and fault percentages, from WASI random_get
// (never Math.random, which would import env.seed).
// In: a percentage or a weight table. Out: a decision.
import { random_get } from "./host";

const RANDOM_BUFFER: usize = memory.data(4);

export function randomU32(): u32 {
  store<u32>(RANDOM_BUFFER, 0);
  random_get(RANDOM_BUFFER, 4);
  return load<u32>(RANDOM_BUFFER);
}

/** True with probability percent/100 (percent in 0..100). */
export function chance(percent: f64): bool {
  if (percent >= 100.0) return true;
  if (percent <= 0.0) return false;
  return (<f64>randomU32() / 4294967296.0) * 100.0 < percent;
}

/** An index into `weights` drawn with probability weight/total; weights are positive. */
export function pickWeighted(weights: StaticArray<u32>): i32 {
  let total: u64 = 0;
  for (let i = 0; i < weights.length; i++) total += <u64>weights[i];
  let draw = <u64>randomU32() % total;
  for (let i = 0; i < weights.length; i++) {
    const w = <u64>weights[i];
    if (draw < w) return i;
    draw -= w;
  }
  return weights.length - 1;
}
