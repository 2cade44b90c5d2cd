// Writes of one event-loop turn leave together. A socket passed to
// holdUntilTurnEnd() is corked, and every socket held during the turn is
// uncorked once the turn's I/O callbacks have all run (setImmediate: the check
// phase follows the poll phase). Each socket still gets one writev with
// everything written to it this turn, and the kernel then wakes each peer
// once for a burst of responses instead of once per response: under load that
// cut the proxy's system time per request by a fifth (docs/runtime.md,
// Performance). At low rates a turn carries one request and nothing waits.
import type { Socket } from 'node:net';

const held: Socket[] = [];
let flushScheduled = false;

function flush(): void {
  flushScheduled = false;
  // Uncorking may run write callbacks that hold sockets again: those join the next turn.
  const sockets = held.splice(0);
  for (let i = 0; i < sockets.length; i++) sockets[i]!.uncork();
}

/** Corks `socket` until the end of this event-loop turn (one matching uncork each time it is called). */
export function holdUntilTurnEnd(socket: Socket): void {
  socket.cork();
  held.push(socket);
  if (!flushScheduled) {
    flushScheduled = true;
    setImmediate(flush);
  }
}
