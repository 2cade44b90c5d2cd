// Runs one request through the filters of a chain that apply to its
// destination service: request callbacks in chain order, response callbacks
// in reverse order (as Envoy does), pauses awaited, traps turned into the
// filter's failure policy, dry-run decisions recorded instead of enforced, and
// a filter's local response passed back through the response callbacks of the
// filters that saw the request. Knows nothing of sockets or HTTP framing.
//
// In:  the chain (already acquired), the destination service, an HttpStream.
// Out: per phase, a StepOutcome; body phases also return the (possibly
//      changed or buffered) bytes to pass on; trailer phases leave the
//      (possibly changed) trailers in stream.requestTrailers/responseTrailers.
import { Buffer } from 'node:buffer';
import type { FailurePolicy } from '../protocol/bundle.ts';
import { RULE_HEADER } from '../protocol/properties.ts';
import { Action } from './wasm/abi.ts';
import type { ChainFilter, FilterChain } from './chain.ts';
import { getHeader, type HeaderList, type HttpStream, type LocalResponse } from './wasm/stream.ts';
import { FilterTrapError, type FilterVm } from './wasm/vm.ts';

export type StepOutcome =
  | { kind: 'continue' }
  | { kind: 'local-response'; response: LocalResponse; filter: string }
  | { kind: 'close'; filter: string }
  | { kind: 'filter-failed'; filter: string };

export interface FilterRunHooks {
  /** A filter failed for this request (it trapped, or it is unavailable after an earlier trap); `policy` says what was applied. */
  onFilterFailure(filter: string, policy: FailurePolicy, error: string): void;
}

interface Active {
  filter: ChainFilter;
  vm: FilterVm | undefined;
  contextId: number;
  skipped: boolean;
  /** Body bytes a filter asked to buffer (returned Pause from a body callback before end of stream); created on first use. */
  heldRequestBody: Buffer[] | undefined;
  heldResponseBody: Buffer[] | undefined;
}

type Phase = 'request' | 'response';

const CONTINUE: StepOutcome = { kind: 'continue' };

// Callbacks that return without pausing are the common case: step() then
// answers synchronously and callers await only a real Promise (a pause), so a
// request does not pay one Promise and its microtasks per filter per phase.
type Stepped = StepOutcome | Promise<StepOutcome>;

export class FilterRun {
  readonly stream: HttpStream;
  private readonly active: Active[] = [];
  private readonly hooks: FilterRunHooks;
  private readonly pending: readonly ChainFilter[];

  constructor(chain: FilterChain, service: string, stream: HttpStream, hooks: FilterRunHooks) {
    this.stream = stream;
    this.hooks = hooks;
    this.pending = chain.filtersFor(service);
  }

  /** True when no filter applies: callers may skip body work entirely. */
  get empty(): boolean {
    return this.pending.length === 0;
  }

  /** Request headers through every filter, in chain order; synchronous unless a filter pauses or is still loading. */
  requestHeaders(endOfStream: boolean): Stepped {
    return this.requestHeadersFrom(0, endOfStream);
  }

  private requestHeadersFrom(first: number, endOfStream: boolean): Stepped {
    const pending = this.pending;
    for (let i = first; i < pending.length; i++) {
      const a: Active = { filter: pending[i]!, vm: undefined, contextId: 0, skipped: false, heldRequestBody: undefined, heldResponseBody: undefined };
      this.active.push(a);
      const vm = a.filter.instance();
      const out = vm instanceof Promise ? vm.then((loaded) => this.requestHeadersOf(a, loaded, endOfStream)) : this.requestHeadersOf(a, vm, endOfStream);
      if (out instanceof Promise) return out.then((o) => (o.kind === 'continue' ? this.requestHeadersFrom(i + 1, endOfStream) : o));
      if (out.kind !== 'continue') return out;
    }
    return CONTINUE;
  }

  /** One filter's request-headers callback; a local response it makes goes back through the response callbacks (requestPhaseEnd). */
  private requestHeadersOf(a: Active, vm: FilterVm | undefined, endOfStream: boolean): Stepped {
    if (!vm) return this.fail(a, 'filter unavailable after an earlier trap') ?? CONTINUE;
    a.vm = vm;
    const out = this.step(a, () => {
      a.contextId = vm.createStream(this.stream);
      return vm.onStream('proxy_on_request_headers', a.contextId, this.stream.requestHeaders.length, endOfStream ? 1 : 0);
    });
    if (out instanceof Promise) return out.then((o) => (o.kind === 'continue' ? o : this.requestPhaseEnd(a, o)));
    return out.kind === 'continue' ? out : this.requestPhaseEnd(a, out);
  }

  /** Passes a request body chunk through the filters; returns the bytes to forward now. */
  async requestBody(chunk: Buffer, endOfStream: boolean): Promise<{ outcome: StepOutcome; data: Buffer }> {
    this.stream.requestBodySize += chunk.length;
    return this.body(this.active, chunk, endOfStream, 'request');
  }

  /** Request trailers, in chain order; the data path forwards stream.requestTrailers afterwards. */
  async requestTrailers(trailers: HeaderList): Promise<StepOutcome> {
    this.stream.requestTrailers = trailers;
    return this.trailers(this.active, 'request');
  }

  async responseHeaders(endOfStream: boolean): Promise<StepOutcome> {
    for (let i = this.active.length - 1; i >= 0; i--) {
      let out = this.responseHeadersOf(this.active[i]!, endOfStream);
      if (out instanceof Promise) out = await out;
      if (out.kind !== 'continue') return out;
    }
    return CONTINUE;
  }

  async responseBody(chunk: Buffer, endOfStream: boolean): Promise<{ outcome: StepOutcome; data: Buffer }> {
    this.stream.responseBodySize += chunk.length;
    return this.body([...this.active].reverse(), chunk, endOfStream, 'response');
  }

  /** Response trailers, in reverse chain order; the data path sends stream.responseTrailers afterwards. */
  async responseTrailers(trailers: HeaderList): Promise<StepOutcome> {
    this.stream.responseTrailers = trailers;
    return this.trailers([...this.active].reverse(), 'response');
  }

  /** Ends every filter context (on_done, on_log, on_delete). Never throws. */
  finish(): void {
    for (const a of this.active) {
      const vm = a.vm;
      if (!vm || a.contextId === 0 || vm.broken) continue;
      try {
        vm.finishStream(a.contextId);
      } catch (err) {
        a.filter.onTrap(vm);
        this.hooks.onFilterFailure(a.filter.name, a.filter.failurePolicy, (err as Error).message);
      }
    }
  }

  private responseHeadersOf(a: Active, endOfStream: boolean): Stepped {
    const vm = a.vm;
    if (a.skipped || !vm) return CONTINUE;
    return this.step(a, () => vm.onStream('proxy_on_response_headers', a.contextId, this.stream.responseHeaders.length, endOfStream ? 1 : 0));
  }

  private async trailers(order: Active[], phase: Phase): Promise<StepOutcome> {
    const callback = phase === 'request' ? 'proxy_on_request_trailers' : 'proxy_on_response_trailers';
    for (const a of order) {
      const vm = a.vm;
      if (a.skipped || !vm || !vm.hasExport(callback)) continue;
      const list = phase === 'request' ? this.stream.requestTrailers : this.stream.responseTrailers;
      let out = this.step(a, () => vm.onStream(callback, a.contextId, list.length));
      if (out instanceof Promise) out = await out;
      if (out.kind !== 'continue') return phase === 'request' ? this.requestPhaseEnd(a, out) : out;
    }
    return CONTINUE;
  }

  private async body(order: Active[], chunk: Buffer, endOfStream: boolean, phase: Phase): Promise<{ outcome: StepOutcome; data: Buffer }> {
    let data = chunk;
    const callback = phase === 'request' ? 'proxy_on_request_body' : 'proxy_on_response_body';
    for (const a of order) {
      const vm = a.vm;
      if (a.skipped || !vm) continue;
      const held = phase === 'request' ? a.heldRequestBody : a.heldResponseBody;
      const input = held?.length ? Buffer.concat([...held, data]) : data;
      if (held) held.length = 0;
      if (!vm.hasExport(callback)) {
        data = input;
        continue;
      }
      this.setBody(phase, input);
      let action = 0;
      let out = this.step(a, () => {
        action = vm.onStream(callback, a.contextId, input.length, endOfStream ? 1 : 0);
        // Pause before the end means "buffer and call me again with more"; do not wait.
        return endOfStream ? action : Action.Continue;
      });
      if (out instanceof Promise) out = await out;
      if (out.kind !== 'continue') {
        this.setBody(phase, undefined);
        return { outcome: phase === 'request' ? await this.requestPhaseEnd(a, out) : out, data: Buffer.alloc(0) };
      }
      const current = this.getBody(phase) ?? input;
      if (action === Action.Pause && !endOfStream) {
        if (phase === 'request') (a.heldRequestBody ??= []).push(current);
        else (a.heldResponseBody ??= []).push(current);
        data = Buffer.alloc(0);
      } else {
        data = current;
      }
    }
    this.setBody(phase, undefined);
    return { outcome: CONTINUE, data };
  }

  private setBody(phase: Phase, value: Buffer | undefined): void {
    if (phase === 'request') this.stream.requestBody = value;
    else this.stream.responseBody = value;
  }

  private getBody(phase: Phase): Buffer | undefined {
    return phase === 'request' ? this.stream.requestBody : this.stream.responseBody;
  }

  /** Runs one callback; waits out a Pause; maps local responses, closes and traps to outcomes. */
  private step(a: Active, call: () => number): Stepped {
    const s = this.stream;
    const vm = a.vm!;
    let action: number;
    try {
      s.clearResumeRequest();
      action = call();
    } catch (err) {
      if (!(err instanceof FilterTrapError)) throw err;
      a.filter.onTrap(vm);
      return this.fail(a, err.message) ?? CONTINUE;
    }
    if (s.localResponse) return this.decided(a, 'local-response');
    if (s.closed) return this.decided(a, 'close');
    return action === Action.Pause ? this.paused(a, vm) : CONTINUE;
  }

  /** Waits until the filter that paused the stream resumes, answers or closes it. */
  private async paused(a: Active, vm: FilterVm): Promise<StepOutcome> {
    const s = this.stream;
    s.pausedBy = vm;
    const resumed = await s.waitForResume();
    s.pausedBy = undefined;
    if (resumed === 'local-response' && s.localResponse) return this.decided(a, 'local-response');
    if (resumed === 'close') return this.decided(a, 'close');
    if (vm.broken) return this.fail(a, 'trapped while the stream was paused') ?? CONTINUE;
    return CONTINUE;
  }

  /** A filter answered or closed the stream: enforced, or under dry-run recorded and forgotten. */
  private decided(a: Active, kind: 'local-response' | 'close'): StepOutcome {
    const s = this.stream;
    if (a.filter.dryRun) {
      const r = s.localResponse;
      a.filter.recordDryRun(r ? (getHeader(r.headers, RULE_HEADER) ?? r.details) : '', r?.status ?? 0, kind);
      s.localResponse = undefined;
      s.closed = false;
      return CONTINUE;
    }
    if (kind === 'close') return { kind: 'close', filter: a.filter.name };
    return { kind: 'local-response', response: s.localResponse!, filter: a.filter.name };
  }

  /**
   * A request-phase callback ended the request. A local response then goes
   * through the response callbacks of the filters that saw the request (the
   * sender included, in reverse order), as Envoy encodes a local reply.
   */
  private async requestPhaseEnd(sender: Active, out: StepOutcome): Promise<StepOutcome> {
    if (out.kind !== 'local-response') return out;
    const s = this.stream;
    const r = out.response;
    s.localResponse = undefined;
    s.responseHeaders = [[':status', String(r.status)], ...r.headers];
    const upTo = this.active.indexOf(sender);
    const order = this.active.slice(0, upTo + 1).reverse();
    for (const a of order) {
      let next = this.responseHeadersOf(a, r.body.length === 0);
      if (next instanceof Promise) next = await next;
      // A second local response (or a failure) replaces this one as is.
      if (next.kind !== 'continue') return next;
    }
    let body: Buffer = Buffer.from(r.body);
    if (body.length > 0) {
      const { outcome, data } = await this.body(order, body, true, 'response');
      if (outcome.kind !== 'continue') return outcome;
      body = data;
    }
    const status = Number(getHeader(s.responseHeaders, ':status') ?? r.status);
    const headers = s.responseHeaders.filter(([k]) => !k.startsWith(':'));
    return { kind: 'local-response', response: { status, details: r.details, body, headers }, filter: out.filter };
  }

  /** Applies the failure policy: closed and reload end the request, open (and any dry-run filter) skips this filter. */
  private fail(a: Active, error: string): StepOutcome | undefined {
    const policy = a.filter.failurePolicy;
    this.hooks.onFilterFailure(a.filter.name, policy, error);
    a.skipped = true;
    if (policy === 'open' || a.filter.dryRun) {
      a.filter.recordBypass();
      return undefined;
    }
    return { kind: 'filter-failed', filter: a.filter.name };
  }
}
