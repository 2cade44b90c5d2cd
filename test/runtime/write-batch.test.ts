// Write batches (runtime/http1/write-batch.ts): a busy proxy keeps corked
// sockets until the end of the event-loop turn; after quiet turns (one socket
// each) a batch ends right after the callback that wrote; a probed turn with
// several batches makes them gather again. Work passed to afterBatch runs once
// the pending batch's sockets are uncorked.
import type { Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { afterBatch, gatheringWrites, holdForBatch } from '../../runtime/http1/write-batch.ts';

class FakeSocket {
  corked = 0;
  uncorks = 0;
  cork(): void {
    this.corked++;
  }
  uncork(): void {
    this.corked--;
    this.uncorks++;
  }
}

const hold = (s: FakeSocket) => holdForBatch(s as unknown as Socket);
const afterCallback = () => new Promise<void>((r) => process.nextTick(r));
const turnEnd = () => new Promise<void>((r) => setImmediate(r));

describe('write batches', () => {
  it('gather until the end of the turn, and turn prompt after quiet turns; a busy probed turn makes them gather again', async () => {
    // Busy: two sockets held in one turn stay corked past their callbacks, until the turn ends.
    const a = new FakeSocket();
    const b = new FakeSocket();
    expect(gatheringWrites()).toBe(true);
    hold(a);
    await afterCallback();
    hold(b);
    await afterCallback();
    expect([a.corked, b.corked]).toEqual([1, 1]);
    await turnEnd();
    expect([a.corked, b.corked]).toEqual([0, 0]);

    // Quiet: turns that each hold one socket.
    for (let i = 0; i < 8; i++) {
      hold(a);
      await turnEnd();
    }
    expect(gatheringWrites()).toBe(false);
    hold(a);
    await afterCallback();
    expect(a.corked).toBe(0);

    // Busy again: several batches per turn; within PROBE_EVERY batches a probe lands in such a turn.
    for (let turn = 0; turn < 12 && !gatheringWrites(); turn++) {
      for (const s of [a, b, a]) {
        hold(s);
        await afterCallback();
      }
      await turnEnd();
    }
    expect(gatheringWrites()).toBe(true);
    expect([a.corked, b.corked]).toEqual([0, 0]);
  });
});

describe('work after a batch', () => {
  it('runs after the pending batch is uncorked, or at once when none is pending; a failing task does not stop the others', async () => {
    const s = new FakeSocket();
    const seen: string[] = [];
    const task = (name: string) => ({ afterBatch: () => seen.push(`${name}: socket corked ${s.corked}`) });

    afterBatch(task('no batch'));
    expect(seen).toEqual(['no batch: socket corked 0']);

    hold(s);
    afterBatch(task('first'));
    afterBatch({
      afterBatch: () => {
        throw new Error('task failed');
      },
    });
    afterBatch(task('after the failure'));
    expect(seen).toHaveLength(1);
    const uncaught = new Promise<unknown>((resolve) => process.once('uncaughtException', resolve));
    await turnEnd();
    expect(seen).toEqual(['no batch: socket corked 0', 'first: socket corked 0', 'after the failure: socket corked 0']);
    // The failure is not swallowed: it surfaces as an uncaught error of its own.
    expect(((await uncaught) as Error).message).toBe('task failed');
  });
});
