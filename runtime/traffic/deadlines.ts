// Request deadlines without a Node timer, a Map or a Set per request. Items
// with the same timeout length join one doubly-linked list (the item is the
// list node), so each list is in deadline order; one timer per list is armed
// for its head. Adding links an item at the tail, removing unlinks it: no
// allocation on the request path. The timer is not moved when its head is
// removed: it fires, finds the new head not yet due and re-arms for it, so
// under steady traffic a list's timer runs about once per timeout length.
//
// In:  add(item, ms) / remove(item) from the request path.
// Out: item.expired() once its deadline passed (never early), unless removed before.

import { performance } from 'node:perf_hooks';
/** Something with a deadline. Extend it: the links live on the item itself. */
export abstract class Expiring {
  /** performance.now() at which the item expires. */
  deadlineAt = 0;
  deadlinePrev: Expiring | undefined = undefined;
  deadlineNext: Expiring | undefined = undefined;
  /** The list the item is on, or undefined. */
  deadlineList: DeadlineList | undefined = undefined;
  abstract expired(): void;
}

/** The items of one timeout length, oldest (earliest deadline) first. */
class DeadlineList {
  head: Expiring | undefined;
  tail: Expiring | undefined;
  private timer: NodeJS.Timeout | undefined;

  add(item: Expiring): void {
    item.deadlineList = this;
    item.deadlinePrev = this.tail;
    item.deadlineNext = undefined;
    if (this.tail) this.tail.deadlineNext = item;
    else this.head = item;
    this.tail = item;
    if (!this.timer) this.arm(item.deadlineAt - performance.now());
  }

  remove(item: Expiring): void {
    const prev = item.deadlinePrev;
    const next = item.deadlineNext;
    if (prev) prev.deadlineNext = next;
    else this.head = next;
    if (next) next.deadlinePrev = prev;
    else this.tail = prev;
    item.deadlineList = undefined;
    item.deadlinePrev = undefined;
    item.deadlineNext = undefined;
  }

  /** Expires every item due by now (items added meanwhile join the tail and wait), then re-arms for the next. */
  fire(): void {
    this.timer = undefined;
    const now = performance.now();
    let item = this.head;
    while (item && item.deadlineAt <= now) {
      this.remove(item);
      item.expired();
      item = this.head;
    }
    if (item && !this.timer) this.arm(item.deadlineAt - performance.now());
  }

  private arm(ms: number): void {
    // Node timers have millisecond resolution: round up, and fire() re-checks against performance.now().
    this.timer = setTimeout(fireList, Math.max(1, Math.ceil(ms)), this);
    this.timer.unref();
  }
}

function fireList(list: DeadlineList): void {
  list.fire();
}

export class Deadlines {
  /** One list per timeout length in use (route timeouts are few: the lists are kept). */
  private readonly lists = new Map<number, DeadlineList>();

  /** Schedules `item` to expire in `ms`. An item is on one list at a time: add it again only after remove(). */
  add(item: Expiring, ms: number): void {
    let list = this.lists.get(ms);
    if (!list) {
      list = new DeadlineList();
      this.lists.set(ms, list);
    }
    item.deadlineAt = performance.now() + ms;
    list.add(item);
  }

  /** Forgets `item`; a no-op when it is not scheduled. */
  remove(item: Expiring): void {
    item.deadlineList?.remove(item);
  }
}
