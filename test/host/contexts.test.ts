// StreamContexts: the per-VM table of stream contexts by id (a ring of slots
// with a Map for ids whose slot is still held by an older stream).
import { describe, expect, it } from 'vitest';
import { StreamContexts } from '../../runtime/wasm/contexts.ts';
import { HttpStream } from '../../runtime/wasm/stream.ts';

const facts = { direction: 0, sourcePrincipal: '', sourceAddress: '', sourcePort: 0, destinationAddress: '', destinationPort: 0, destinationService: 's', peerUriSan: '', requestId: '', scheme: 'http', protocol: 'HTTP/1.1' };
const stream = (): HttpStream => new HttpStream(facts, []);

describe('stream contexts', () => {
  it('keeps a long-lived stream while thousands of later ids reuse its slot', () => {
    const table = new StreamContexts();
    const old = stream();
    table.set(2, old);
    const live = new Map<number, HttpStream>();
    for (let id = 3; id < 5000; id++) {
      const s = stream();
      table.set(id, s);
      live.set(id, s);
      // Streams end a few ids after they start, some much later.
      if (id % 7 !== 0 && live.has(id - 3)) {
        table.delete(id - 3);
        live.delete(id - 3);
      }
    }
    expect(table.get(2)).toBe(old);
    for (const [id, s] of live) expect(table.get(id)).toBe(s);
    for (let id = 3; id < 5000; id++) if (!live.has(id)) expect(table.get(id)).toBeUndefined();
    expect([...table.values()].length).toBe(live.size + 1);
    table.delete(2);
    expect(table.get(2)).toBeUndefined();
    // An id sharing slot 2 after it was freed goes in the slot, not confused with the old one.
    const next = stream();
    table.set(2 + 1024 * 10, next);
    expect(table.get(2 + 1024 * 10)).toBe(next);
    expect(table.get(2)).toBeUndefined();
    table.clear();
    expect([...table.values()]).toEqual([]);
  });
});
