// The coarse timer wheel behind per-request timeouts: never fires early,
// fires once, forgets removed items, re-arms for an earlier deadline, and
// takes items added while it fires.
import { describe, expect, it } from 'vitest';
import { DeadlineWheel, type Expiring } from '../../runtime/traffic/deadlines.ts';

function item(onExpire: () => void = () => {}): Expiring & { at: number[] } {
  const at: number[] = [];
  return {
    at,
    expired() {
      at.push(performance.now());
      onExpire();
    },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until `done()` or gives up after `ms`. */
async function until(done: () => boolean, ms = 3_000): Promise<void> {
  const end = performance.now() + ms;
  while (!done() && performance.now() < end) await sleep(5);
}

describe('DeadlineWheel', () => {
  it('fires each item once, never before its deadline', async () => {
    const wheel = new DeadlineWheel(10);
    const start = performance.now();
    const items = [0, 15, 40, 95].map((ms) => ({ ms, it: item() }));
    for (const { ms, it } of items) wheel.add(it, ms);
    await until(() => items.every(({ it }) => it.at.length > 0));
    await sleep(50);
    for (const { ms, it } of items) {
      expect(it.at).toHaveLength(1);
      expect(it.at[0]! - start).toBeGreaterThanOrEqual(ms);
    }
  });

  it('an earlier deadline added after a later one fires on time (the timer re-arms for it)', async () => {
    const wheel = new DeadlineWheel(10);
    const late = item();
    const early = item();
    const start = performance.now();
    const lateSlot = wheel.add(late, 5_000);
    wheel.add(early, 30);
    await until(() => early.at.length > 0, 1_000);
    expect(early.at).toHaveLength(1);
    expect(early.at[0]! - start).toBeGreaterThanOrEqual(30);
    expect(late.at).toEqual([]);
    wheel.remove(late, lateSlot);
  });

  it('does not fire removed items; the others still fire', async () => {
    const wheel = new DeadlineWheel(10);
    const gone = item();
    const kept = item();
    const slot = wheel.add(gone, 20);
    wheel.add(kept, 20);
    wheel.remove(gone, slot);
    await until(() => kept.at.length > 0);
    await sleep(50);
    expect(gone.at).toEqual([]);
    expect(kept.at).toHaveLength(1);
  });

  it('fires an item added from another item’s expiry, even with no delay', async () => {
    const wheel = new DeadlineWheel(10);
    const second = item();
    const first = item(() => wheel.add(second, 0));
    wheel.add(first, 5);
    await until(() => second.at.length > 0);
    expect(first.at).toHaveLength(1);
    expect(second.at).toHaveLength(1);
    expect(second.at[0]!).toBeGreaterThanOrEqual(first.at[0]!);
  });

  it('runs again after it went idle', async () => {
    const wheel = new DeadlineWheel(10);
    const a = item();
    wheel.add(a, 1);
    await until(() => a.at.length > 0);
    const x = item();
    const slot = wheel.add(x, 1_000);
    wheel.remove(item(), slot); // never scheduled: a no-op
    wheel.remove(x, slot); // empty again: the armed timer finds nothing
    const b = item();
    const start = performance.now();
    wheel.add(b, 30);
    await until(() => b.at.length > 0);
    expect(b.at).toHaveLength(1);
    expect(b.at[0]! - start).toBeGreaterThanOrEqual(30);
  });
});
