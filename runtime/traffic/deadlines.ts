// Request deadlines on one coarse timer wheel instead of a Node timer per
// request: adding and removing a deadline is a Map lookup and a Set
// insert/delete, and one interval (running while deadlines exist, stopped by
// the first tick that finds none) fires whatever fell due, at most one tick
// late and never early.
//
// In:  add(item, ms) / remove(item, slot) from the request path.
// Out: item.expired() once its deadline passed, unless removed before.

export interface Expiring {
  expired(): void;
}

export class DeadlineWheel {
  private readonly tickMs: number;
  /** Tick number -> items due at the end of that tick. */
  private readonly slots = new Map<number, Set<Expiring>>();
  private size = 0;
  /** Every tick before this one has been fired. */
  private nextTick = 0;
  private interval: NodeJS.Timeout | undefined;

  constructor(tickMs: number) {
    this.tickMs = tickMs;
  }

  /** Schedules `item` to expire in `ms`; returns the slot to pass to remove(). */
  add(item: Expiring, ms: number): number {
    const now = performance.now();
    if (!this.interval) {
      this.nextTick = Math.floor(now / this.tickMs);
      this.interval = setInterval(fire, this.tickMs, this);
      this.interval.unref();
    }
    // The first slot ending at or after the deadline (never early), and never
    // one that tick() has taken already (an expired() callback may add).
    const slot = Math.max(Math.ceil((now + ms) / this.tickMs), this.nextTick + 1);
    let set = this.slots.get(slot);
    if (!set) {
      set = new Set();
      this.slots.set(slot, set);
    }
    const had = set.size;
    set.add(item);
    this.size += set.size - had;
    return slot;
  }

  remove(item: Expiring, slot: number): void {
    const set = this.slots.get(slot);
    if (set?.delete(item)) {
      this.size--;
      if (set.size === 0) this.slots.delete(slot);
      // The interval stops at the next tick that finds nothing, not here: one
      // request at a time would otherwise start and clear a timer per request.
    }
  }

  /** Fires every slot that ended by now. */
  tick(): void {
    const current = Math.floor(performance.now() / this.tickMs);
    for (; this.nextTick <= current; this.nextTick++) {
      const set = this.slots.get(this.nextTick);
      if (!set) continue;
      this.slots.delete(this.nextTick);
      this.size -= set.size;
      for (const item of set) item.expired();
    }
    if (this.size === 0) this.stop();
  }

  private stop(): void {
    if (this.interval) clearInterval(this.interval);
    this.interval = undefined;
  }
}

function fire(wheel: DeadlineWheel): void {
  wheel.tick();
}
