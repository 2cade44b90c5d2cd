// Request deadlines (one linked list per timeout length, one timer each):
// never fires early, fires once, forgets removed items (the head included),
// keeps several lengths apart, and takes items added while it fires.
import { describe, expect, it } from 'vitest';
import { Deadlines, Expiring } from '../../runtime/traffic/deadlines.ts';

class Item extends Expiring {
  readonly at: number[] = [];
  private readonly onExpire: () => void;
  constructor(onExpire: () => void = () => {}) {
    super();
    this.onExpire = onExpire;
  }
  expired(): void {
    this.at.push(performance.now());
    this.onExpire();
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until `done()` or gives up after `ms`. */
async function until(done: () => boolean, ms = 3_000): Promise<void> {
  const end = performance.now() + ms;
  while (!done() && performance.now() < end) await sleep(5);
}

describe('Deadlines', () => {
  it('fires each item once, never before its deadline', async () => {
    const deadlines = new Deadlines();
    const start = performance.now();
    const items = [0, 15, 40, 95, 15, 40].map((ms) => ({ ms, it: new Item() }));
    for (const { ms, it } of items) deadlines.add(it, ms);
    await until(() => items.every(({ it }) => it.at.length > 0));
    await sleep(50);
    for (const { ms, it } of items) {
      expect(it.at).toHaveLength(1);
      expect(it.at[0]! - start).toBeGreaterThanOrEqual(ms);
    }
  });

  it('a shorter timeout added after a longer one fires on time (each length has its own timer)', async () => {
    const deadlines = new Deadlines();
    const late = new Item();
    const early = new Item();
    const start = performance.now();
    deadlines.add(late, 5_000);
    deadlines.add(early, 30);
    await until(() => early.at.length > 0, 1_000);
    expect(early.at).toHaveLength(1);
    expect(early.at[0]! - start).toBeGreaterThanOrEqual(30);
    expect(late.at).toEqual([]);
    deadlines.remove(late);
  });

  it('does not fire removed items, the head of a list included; the others still fire in order', async () => {
    const deadlines = new Deadlines();
    const order: string[] = [];
    const head = new Item(() => order.push('head'));
    const middle = new Item(() => order.push('middle'));
    const tail = new Item(() => order.push('tail'));
    const last = new Item(() => order.push('last'));
    for (const it of [head, middle, tail, last]) deadlines.add(it, 20);
    deadlines.remove(head);
    deadlines.remove(tail);
    deadlines.remove(tail); // twice: a no-op
    await until(() => last.at.length > 0);
    await sleep(50);
    expect(order).toEqual(['middle', 'last']);
    expect(head.deadlineList).toBeUndefined();
  });

  it('an item can be scheduled again after it was removed or fired', async () => {
    const deadlines = new Deadlines();
    const it = new Item();
    deadlines.add(it, 1_000);
    deadlines.remove(it);
    deadlines.add(it, 10);
    await until(() => it.at.length > 0);
    deadlines.add(it, 10);
    await until(() => it.at.length > 1);
    expect(it.at).toHaveLength(2);
  });

  it('fires an item added from another item’s expiry, even with no delay', async () => {
    const deadlines = new Deadlines();
    const second = new Item();
    const first = new Item(() => deadlines.add(second, 0));
    deadlines.add(first, 5);
    await until(() => second.at.length > 0);
    expect(first.at).toHaveLength(1);
    expect(second.at).toHaveLength(1);
    expect(second.at[0]!).toBeGreaterThanOrEqual(first.at[0]!);
  });

  it('runs again after it went idle; a removed head leaves the timer armed, which re-arms for the next', async () => {
    const deadlines = new Deadlines();
    const a = new Item();
    deadlines.add(a, 1);
    await until(() => a.at.length > 0);
    const x = new Item();
    deadlines.add(x, 40);
    deadlines.remove(new Item()); // never scheduled: a no-op
    deadlines.remove(x); // empty again: the armed timer finds nothing due
    await sleep(10);
    const b = new Item();
    const start = performance.now();
    deadlines.add(b, 40);
    await until(() => b.at.length > 0);
    expect(b.at).toHaveLength(1);
    expect(b.at[0]! - start).toBeGreaterThanOrEqual(40);
  });
});
