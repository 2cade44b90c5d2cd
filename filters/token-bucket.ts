// Token buckets for rate limits, kept in the filter's linear memory (one VM per
// filter per sidecar, so the limit is per sidecar). One BucketSet per
// rate_limit rule, keyed as the rule says. The number of keys is capped: past
// the cap the oldest key is evicted, so memory stays bounded.
// In: a key and the current time. Out: allowed, or the seconds to wait.

export const MAX_KEYS_PER_RULE: i32 = 10000;

class Bucket {
  tokens: f64;
  updatedNs: i64;
  constructor(tokens: f64, updatedNs: i64) {
    this.tokens = tokens;
    this.updatedNs = updatedNs;
  }
}

export class BucketSet {
  ratePerSecond: f64;
  burst: f64;
  buckets: Map<string, Bucket> = new Map<string, Bucket>();
  // Ring of keys in insertion order; the slot about to be overwritten is the oldest.
  ring: StaticArray<string | null> = new StaticArray<string | null>(MAX_KEYS_PER_RULE);
  nextSlot: i32 = 0;

  constructor(ratePerSecond: f64, burst: f64) {
    this.ratePerSecond = ratePerSecond;
    this.burst = burst;
  }

  /** Takes one token for `key`. Returns 0 when allowed, else the seconds until a token is due (> 0). */
  take(key: string, nowNs: i64): f64 {
    let bucket: Bucket;
    if (this.buckets.has(key)) {
      bucket = this.buckets.get(key);
      const elapsedSeconds = <f64>(nowNs - bucket.updatedNs) / 1e9;
      if (elapsedSeconds > 0) {
        bucket.tokens = Math.min(this.burst, bucket.tokens + elapsedSeconds * this.ratePerSecond);
        bucket.updatedNs = nowNs;
      }
    } else {
      bucket = new Bucket(this.burst, nowNs);
      this.remember(key, bucket);
    }
    if (bucket.tokens >= 1.0) {
      bucket.tokens -= 1.0;
      return 0;
    }
    return (1.0 - bucket.tokens) / this.ratePerSecond;
  }

  private remember(key: string, bucket: Bucket): void {
    const evicted = this.ring[this.nextSlot];
    if (evicted !== null) this.buckets.delete(evicted);
    this.ring[this.nextSlot] = key;
    this.nextSlot = (this.nextSlot + 1) % MAX_KEYS_PER_RULE;
    this.buckets.set(key, bucket);
  }
}
