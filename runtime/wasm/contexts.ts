// The stream contexts of one VM by context id. Ids are handed out in
// sequence and most streams end within a few requests of starting, so a ring
// of slots indexed by id holds them; a stream whose slot is still taken by an
// older, long-lived one goes to a Map. A Map alone cost a set, a get and a
// delete per request, with its rehashing, on the decision path.
//
// In:  context ids (positive integers) and their streams.
// Out: lookups; `values` for the rare walk over every stream.
import type { HttpStream } from './stream.ts';

const SLOTS = 1024;
const MASK = SLOTS - 1;

export class StreamContexts {
  private readonly ids: number[] = new Array<number>(SLOTS).fill(0);
  private readonly slots: Array<HttpStream | undefined> = new Array<HttpStream | undefined>(SLOTS).fill(undefined);
  private readonly overflow = new Map<number, HttpStream>();

  set(id: number, stream: HttpStream): void {
    const i = id & MASK;
    if (this.slots[i] === undefined) {
      this.slots[i] = stream;
      this.ids[i] = id;
    } else {
      this.overflow.set(id, stream);
    }
  }

  get(id: number): HttpStream | undefined {
    const i = id & MASK;
    if (this.ids[i] === id && this.slots[i] !== undefined) return this.slots[i];
    return this.overflow.size > 0 ? this.overflow.get(id) : undefined;
  }

  delete(id: number): void {
    const i = id & MASK;
    if (this.ids[i] === id && this.slots[i] !== undefined) {
      this.slots[i] = undefined;
      this.ids[i] = 0;
    } else if (this.overflow.size > 0) {
      this.overflow.delete(id);
    }
  }

  *values(): IterableIterator<HttpStream> {
    for (const s of this.slots) if (s !== undefined) yield s;
    yield* this.overflow.values();
  }

  clear(): void {
    this.slots.fill(undefined);
    this.ids.fill(0);
    this.overflow.clear();
  }
}
