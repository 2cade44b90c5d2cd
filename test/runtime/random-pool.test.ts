// The pool every random id and filter draw comes from: ranges handed out never
// overlap, and a refill replaces the bytes before any are handed out again.
import { describe, expect, it } from 'vitest';
import { randomPool, takeRandom } from '../../runtime/random-pool.ts';

describe('takeRandom', () => {
  it('hands out each byte once, refilling when the pool runs out', () => {
    let last = -1;
    let refills = 0;
    let firstAtZero: string | undefined;
    for (let i = 0; i < 2 * (randomPool.length / 24); i++) {
      const at = takeRandom(24);
      expect(at + 24).toBeLessThanOrEqual(randomPool.length);
      if (at <= last) {
        refills++;
        // The range starts again at 0 after a refill, with fresh bytes where old ones were.
        expect(at).toBe(0);
        expect(randomPool.toString('hex', 0, 24)).not.toBe(firstAtZero);
      }
      if (at === 0) firstAtZero ??= randomPool.toString('hex', 0, 24);
      last = at;
    }
    expect(refills).toBeGreaterThanOrEqual(1);
  });
});
