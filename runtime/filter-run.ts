// Runs one request through the filters of a chain that apply to its
// destination service: request callbacks in chain order, response callbacks
// in reverse order (as Envoy does), pauses awaited, traps turned into the
// filter's failure policy. Knows nothing of sockets or HTTP framing.
//
// In:  the chain (already acquired), the destination service, an HttpStream.
// Out: per phase, a StepOutcome; body phases also return the (possibly
//      changed or buffered) bytes to pass on.
import { Action } from './wasm/abi.ts';
import type { ChainFilter, FilterChain } from './chain.ts';
import type { HttpStream, LocalResponse } from './wasm/stream.ts';
import { FilterTrapError, type FilterVm } from './wasm/vm.ts';

export type StepOutcome =
  | { kind: 'continue' }
  | { kind: 'local-response'; response: LocalResponse; filter: string }
  | { kind: 'close'; filter: string }
  | { kind: 'filter-failed'; filter: string };

export interface FilterRunHooks {
  /** A filter trapped; `policy` says what was applied. */
  onFilterFailure(filter: string, policy: 'closed' | 'open', error: string): void;
}

interface Active {
  filter: ChainFilter;
  vm: FilterVm;
  contextId: number;
  skipped: boolean;
  /** Body bytes a filter asked to buffer (returned Pause from a body callback before end of stream). */
  heldRequestBody: Buffer[];
  heldResponseBody: Buffer[];
}

const CONTINUE: StepOutcome = { kind: 'continue' };

export class FilterRun {
  readonly stream: HttpStream;
  private readonly active: Active[] = [];
  private readonly hooks: FilterRunHooks;
  private readonly pending: ChainFilter[];

  constructor(chain: FilterChain, service: string, stream: HttpStream, hooks: FilterRunHooks) {
    this.stream = stream;
    this.hooks = hooks;
    this.pending = [...chain.filtersFor(service)];
  }

  /** True when no filter applies: callers may skip body work entirely. */
  get empty(): boolean {
    return this.pending.length === 0 && this.active.length === 0;
  }

  async requestHeaders(endOfStream: boolean): Promise<StepOutcome> {
    for (const filter of this.pending) {
      const a: Active = { filter, vm: filter.vm, contextId: 0, skipped: false, heldRequestBody: [], heldResponseBody: [] };
      this.active.push(a);
      if (a.vm.broken) {
        filter.replaceBrokenVm();
        const out = this.fail(a, new Error('VM broken by an earlier trap, replacement not ready'));
        if (out) return out;
        continue;
      }
      const out = await this.step(a, () => {
        a.contextId = a.vm.createStream(this.stream);
        return a.vm.onStream('proxy_on_request_headers', a.contextId, countPairs(this.stream.requestHeaders), endOfStream ? 1 : 0);
      });
      if (out.kind !== 'continue') return out;
    }
    return CONTINUE;
  }

  /** Passes a request body chunk through the filters; returns the bytes to forward now. */
  async requestBody(chunk: Buffer, endOfStream: boolean): Promise<{ outcome: StepOutcome; data: Buffer }> {
    return this.body(this.active, chunk, endOfStream, 'request');
  }

  async responseHeaders(endOfStream: boolean): Promise<StepOutcome> {
    for (let i = this.active.length - 1; i >= 0; i--) {
      const a = this.active[i]!;
      if (a.skipped) continue;
      const out = await this.step(a, () =>
        a.vm.onStream('proxy_on_response_headers', a.contextId, countPairs(this.stream.responseHeaders), endOfStream ? 1 : 0),
      );
      if (out.kind !== 'continue') return out;
    }
    return CONTINUE;
  }

  async responseBody(chunk: Buffer, endOfStream: boolean): Promise<{ outcome: StepOutcome; data: Buffer }> {
    return this.body([...this.active].reverse(), chunk, endOfStream, 'response');
  }

  /** Ends every filter context (on_done, on_log, on_delete). Never throws. */
  finish(): void {
    for (const a of this.active) {
      if (a.skipped || a.contextId === 0) continue;
      try {
        a.vm.finishStream(a.contextId);
      } catch (err) {
        a.filter.replaceBrokenVm();
        this.hooks.onFilterFailure(a.filter.name, a.filter.failurePolicy, (err as Error).message);
      }
    }
  }

  private async body(
    order: Active[],
    chunk: Buffer,
    endOfStream: boolean,
    direction: 'request' | 'response',
  ): Promise<{ outcome: StepOutcome; data: Buffer }> {
    let data = chunk;
    const callback = direction === 'request' ? 'proxy_on_request_body' : 'proxy_on_response_body';
    for (const a of order) {
      if (a.skipped) continue;
      const held = direction === 'request' ? a.heldRequestBody : a.heldResponseBody;
      const input = held.length ? Buffer.concat([...held, data]) : data;
      held.length = 0;
      if (!a.vm.hasExport(callback)) {
        data = input;
        continue;
      }
      this.setBody(direction, input);
      let action = 0;
      const out = await this.step(a, () => {
        action = a.vm.onStream(callback, a.contextId, input.length, endOfStream ? 1 : 0);
        // Pause before the end means "buffer and call me again with more"; do not wait.
        return endOfStream ? action : Action.Continue;
      });
      if (out.kind !== 'continue') return { outcome: out, data: Buffer.alloc(0) };
      const current = this.getBody(direction) ?? input;
      if (action === Action.Pause && !endOfStream) {
        held.push(current);
        data = Buffer.alloc(0);
      } else {
        data = current;
      }
    }
    this.setBody(direction, undefined);
    return { outcome: CONTINUE, data };
  }

  private setBody(direction: 'request' | 'response', value: Buffer | undefined): void {
    if (direction === 'request') this.stream.requestBody = value;
    else this.stream.responseBody = value;
  }

  private getBody(direction: 'request' | 'response'): Buffer | undefined {
    return direction === 'request' ? this.stream.requestBody : this.stream.responseBody;
  }

  /** Runs one callback; waits out a Pause; maps local responses, closes and traps to outcomes. */
  private async step(a: Active, call: () => number): Promise<StepOutcome> {
    const s = this.stream;
    let action: number;
    try {
      s.clearResumeRequest();
      action = call();
    } catch (err) {
      if (!(err instanceof FilterTrapError)) throw err;
      a.filter.replaceBrokenVm();
      return this.fail(a, err) ?? CONTINUE;
    }
    if (s.localResponse) return { kind: 'local-response', response: s.localResponse, filter: a.filter.name };
    if (s.closed) return { kind: 'close', filter: a.filter.name };
    if (action === Action.Pause) {
      s.pausedBy = a.vm;
      const resumed = await s.waitForResume();
      s.pausedBy = undefined;
      if (resumed === 'local-response' && s.localResponse) {
        return { kind: 'local-response', response: s.localResponse, filter: a.filter.name };
      }
      if (resumed === 'close') return { kind: 'close', filter: a.filter.name };
      if (a.vm.broken) return this.fail(a, new Error('trapped while the stream was paused')) ?? CONTINUE;
    }
    return CONTINUE;
  }

  /** Applies the failure policy: closed ends the request, open skips this filter for the rest of it. */
  private fail(a: Active, err: Error): StepOutcome | undefined {
    this.hooks.onFilterFailure(a.filter.name, a.filter.failurePolicy, err.message);
    if (a.filter.failurePolicy === 'open') {
      a.skipped = true;
      return undefined;
    }
    a.skipped = true;
    return { kind: 'filter-failed', filter: a.filter.name };
  }
}

function countPairs(list: ReadonlyArray<unknown>): number {
  return list.length;
}
