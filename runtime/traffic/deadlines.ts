// Request deadlines in coarse slots instead of a Node timer per request:
// adding and removing a deadline is a Map lookup and a Set insert/delete, and
// one timer, armed for the earliest slot that holds anything, fires whatever
// fell due, at most one slot late and never early. Requests usually finish
// long before their deadline, so that timer rarely runs: about once per
// timeout length, however many requests pass (an interval ticking every slot
// woke an idle-ish proxy 100 times a second).
//
// In:  add(item, ms) / remove(item, slot) from the request path.
// Out: item.expired() once its deadline passed, unless removed before.

export interface Expiring {
  expired(): void;
}

export class DeadlineWheel {
  private readonly slotMs: number;
  /** Slot number -> items due at the end of that slot. */
  private readonly slots = new Map<number, Set<Expiring>>();
  /** Every slot before this one has been fired. */
  private nextSlot = 0;
  private timer: NodeJS.Timeout | undefined;
  /** The slot the timer is armed for. */
  private armedFor = Number.POSITIVE_INFINITY;

  constructor(slotMs: number) {
    this.slotMs = slotMs;
  }

  /** Schedules `item` to expire in `ms`; returns the slot to pass to remove(). */
  add(item: Expiring, ms: number): number {
    const now = performance.now();
    if (this.slots.size === 0 && this.timer === undefined) this.nextSlot = Math.floor(now / this.slotMs);
    // The first slot ending at or after the deadline (never early), and never
    // one that fire() has taken already (an expired() callback may add).
    const slot = Math.max(Math.ceil((now + ms) / this.slotMs), this.nextSlot + 1);
    let set = this.slots.get(slot);
    if (!set) {
      set = new Set();
      this.slots.set(slot, set);
    }
    set.add(item);
    if (slot < this.armedFor) this.arm(slot, now);
    return slot;
  }

  /** Forgets `item`; the timer stays armed (it finds the slot empty, or re-arms for the next). */
  remove(item: Expiring, slot: number): void {
    const set = this.slots.get(slot);
    if (set?.delete(item) && set.size === 0) this.slots.delete(slot);
  }

  /** Fires every slot that ended by now, then arms for the earliest one left. */
  fire(): void {
    this.timer = undefined;
    this.armedFor = Number.POSITIVE_INFINITY;
    const now = performance.now();
    const current = Math.floor(now / this.slotMs);
    for (; this.nextSlot <= current; this.nextSlot++) {
      const set = this.slots.get(this.nextSlot);
      if (!set) continue;
      this.slots.delete(this.nextSlot);
      for (const item of set) item.expired();
    }
    let earliest = Number.POSITIVE_INFINITY;
    for (const slot of this.slots.keys()) if (slot < earliest) earliest = slot;
    if (earliest !== Number.POSITIVE_INFINITY && earliest < this.armedFor) this.arm(earliest, performance.now());
  }

  private arm(slot: number, now: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.armedFor = slot;
    // Slot `slot` ends at slot * slotMs; fire() runs at or after that moment.
    this.timer = setTimeout(fireWheel, Math.max(0, Math.ceil(slot * this.slotMs - now)), this);
    this.timer.unref();
  }
}

function fireWheel(wheel: DeadlineWheel): void {
  wheel.fire();
}
