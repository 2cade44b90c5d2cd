// Writes leave in batches. A socket passed to holdForBatch() is corked
// and uncorked when its batch ends; each socket then gets one writev with
// everything written to it meanwhile. When a batch ends follows the traffic:
//
// - Busy (gathering): at the end of the event-loop turn (setImmediate: the
//   check phase follows the poll phase), after every I/O callback of the turn,
//   so the kernel wakes each peer once for a burst of responses instead of
//   once per response. Under load that is worth a fifth of the proxy's CPU
//   per request (docs/runtime.md, Performance).
// - Quiet (prompt): right after the callback that wrote (a microtask of a
//   settled promise). A quiet proxy has one request per turn, and the
//   immediate's own trip into JavaScript cost ~12% of a request's
//   instructions at a low rate. Not process.nextTick: its tick object has
//   computed (symbol) keys, and with our calls added to Node's own V8 kept
//   building it in the runtime, ~10k instructions a request (docs/runtime.md).
//
// Gathering turns that each held one socket, QUIET_TURNS in a row, make the
// batches prompt; in prompt mode every PROBE_EVERY batches one immediate
// counts the batches of its turn, and two or more make them gather again.
//
// Work that need not delay a response (a finished request's log entry, metric
// and filter callbacks) is passed to afterBatch and runs once the batch's
// writes have left, so the peer is not kept waiting for it.
import type { Socket } from 'node:net';

/** Work to run after the writes of the pending batch. */
export interface AfterBatch {
  afterBatch(): void;
}

/** Consecutive one-socket gathering turns after which batches become prompt. */
const QUIET_TURNS = 8;
/** In prompt mode, one turn in this many batches is checked for other batches. */
const PROBE_EVERY = 16;

/** Settled once: `.then` on it queues a microtask, the cheapest way to run after the current callback. */
const SETTLED = Promise.resolve();

const held: Socket[] = [];
let deferred: AfterBatch[] = [];
let flushScheduled = false;
let gathering = true;
let quietTurns = 0;
let sinceProbe = 0;
let probing = false;
/** Prompt batches since the probe was scheduled (its own included). */
let probedBatches = 0;

function uncorkHeld(): number {
  flushScheduled = false;
  // Uncorking may run write callbacks that hold sockets again: those join the next batch.
  const sockets = held.splice(0);
  for (let i = 0; i < sockets.length; i++) sockets[i]!.uncork();
  if (deferred.length > 0) runDeferred();
  return sockets.length;
}

function runDeferred(): void {
  // Work deferred while these tasks run belongs to the next batch (or runs at once when none is pending).
  const tasks = deferred;
  deferred = [];
  for (let i = 0; i < tasks.length; i++) {
    try {
      tasks[i]!.afterBatch();
    } catch (err) {
      // One failing task must not cost the others theirs; the error still surfaces as uncaught.
      queueMicrotask(() => {
        throw err;
      });
    }
  }
}

function endGatheredBatch(): void {
  const sockets = uncorkHeld();
  if (sockets > 1) {
    quietTurns = 0;
  } else if (++quietTurns >= QUIET_TURNS) {
    quietTurns = 0;
    gathering = false;
  }
}

function endPromptBatch(): void {
  uncorkHeld();
  if (probing) {
    probedBatches++;
  } else if (++sinceProbe >= PROBE_EVERY) {
    sinceProbe = 0;
    probing = true;
    probedBatches = 1;
    setImmediate(probeTurn);
  }
}

/** End of a probed turn: other batches in it mean the proxy is busy again. */
function probeTurn(): void {
  probing = false;
  if (probedBatches > 1) gathering = true;
}

/** Corks `socket` until its batch ends (one matching uncork each time it is called). */
export function holdForBatch(socket: Socket): void {
  socket.cork();
  held.push(socket);
  if (!flushScheduled) {
    flushScheduled = true;
    if (gathering) setImmediate(endGatheredBatch);
    else void SETTLED.then(endPromptBatch);
  }
}

/** Runs `task` after the pending batch's writes have left, or now when no batch is pending. */
export function afterBatch(task: AfterBatch): void {
  if (flushScheduled) deferred.push(task);
  else task.afterBatch();
}

/** Whether batches wait for the end of the turn (tests). */
export function gatheringWrites(): boolean {
  return gathering;
}
