// The proxy-wasm network (L4) callbacks for one opaque TCP connection: the
// filters of a chain that apply to the destination service decide whether the
// connection may open (proxy_on_new_connection), and hear of its end
// (proxy_on_downstream_connection_close, proxy_on_upstream_connection_close,
// then proxy_on_done / proxy_on_log / proxy_on_delete). Where a filter
// exports proxy_on_downstream_data / proxy_on_upstream_data, the relay passes
// the connection's bytes through it (ConnectionSession.data); otherwise the
// bytes never meet the filters.
//
// A filter decides by closing the downstream (proxy_close_stream with the
// downstream stream type; the compiled policies set property
// mesh.connection.rule to the deciding rule first) or lets the connection on
// (Continue, or Pause then proxy_continue_stream). A trap, exhausted fuel or
// memory, a filter left unavailable by an earlier trap, or a filter whose
// manifest lists authorization rules but that does not export
// proxy_on_new_connection (built by a compiler that predates connection
// authorization) gets the filter's failure policy, as on the HTTP path:
// closed and reload refuse the connection, open (and any dry-run filter)
// bypasses it. A dry-run filter's close is recorded, not enforced.
//
// In:  the chain (undefined: no bundle yet), the destination service, the
//      connection facts, failure hooks.
// Out: a verdict: allowed (with a session to end when the connection
//      closes), denied by a filter and rule, or refused because a filter failed.
import { Buffer } from 'node:buffer';
import type { FailurePolicy, SourceSpan } from '../../protocol/bundle.ts';
import { CONNECTION_RULE } from '../../protocol/properties.ts';
import type { ChainFilter, FilterChain } from '../chain.ts';
import { Action } from './abi.ts';
import { ConnectionStream, type StreamFacts } from './stream.ts';
import { FilterTrapError, type FilterVm } from './vm.ts';

export const NEW_CONNECTION = 'proxy_on_new_connection';
const DOWNSTREAM_DATA = 'proxy_on_downstream_data';
const UPSTREAM_DATA = 'proxy_on_upstream_data';
/** Callbacks that need a connection's context kept after it is admitted. */
const LATER_CALLBACKS = [DOWNSTREAM_DATA, UPSTREAM_DATA, 'proxy_on_downstream_connection_close', 'proxy_on_upstream_connection_close', 'proxy_on_done', 'proxy_on_log', 'proxy_on_delete'];
/** The spec's PeerType: who closed the connection. */
export const PeerType = { Unknown: 0, Local: 1, Remote: 2 } as const;
/** Longest a filter may keep a new connection paused before it counts as a failure. */
export const DEFAULT_CONNECTION_PAUSE_MS = 10_000;

export interface ConnectionHooks {
  /** A filter failed for this connection; `policy` says what was applied. */
  onFilterFailure(filter: string, policy: FailurePolicy, error: string): void;
}

export type ConnectionVerdict =
  | { kind: 'allow'; session: ConnectionSession }
  /** A filter closed the connection; `rule` is its mesh.connection.rule ('' when it set none). */
  | { kind: 'deny'; filter: string; rule: string }
  /** A filter failed under a closing failure policy. */
  | { kind: 'filter-failed'; filter: string; error: string };

/**
 * Whether a manifest's rule map holds authorization rules (ids
 * `<service or mesh>/allow|deny/<name>`, compiler/lower.ts): such a filter
 * must decide connections, so a module without proxy_on_new_connection fails.
 */
export function hasAuthorizationRules(rules: Record<string, SourceSpan> | undefined): boolean {
  if (!rules) return false;
  for (const id of Object.keys(rules)) {
    const kind = id.split('/')[1];
    if (kind === 'allow' || kind === 'deny') return true;
  }
  return false;
}

interface Open {
  filter: ChainFilter;
  vm: FilterVm;
  contextId: number;
  /** Failed after the connection was admitted, under a policy that goes on without it. */
  skipped?: boolean;
  /** Bytes a data callback paused on (called again with more), per direction. */
  held?: { downstream: Buffer[]; upstream: Buffer[] };
}

/** Which way bytes flow: from the client (downstream) or from the app (upstream). */
export type DataSide = 'downstream' | 'upstream';

/** What a data callback leaves: the bytes to forward now, or a close (`reason` a stable code). */
export type DataOutcome = { data: Buffer; close?: undefined } | { close: { reason: 'filter-closed-stream' | 'filter-failed'; filter: string; message: string } };

const EMPTY = Buffer.alloc(0);

/** An allowed connection's filter contexts; end() once, when the connection has closed. */
export class ConnectionSession {
  private readonly chain: FilterChain | undefined;
  private readonly open: Open[];
  private readonly hooks: ConnectionHooks;
  private readonly stream: ConnectionStream | undefined;
  private ended = false;

  constructor(chain: FilterChain | undefined, open: Open[], hooks: ConnectionHooks, stream?: ConnectionStream) {
    this.chain = chain;
    this.open = open;
    this.hooks = hooks;
    this.stream = stream;
  }

  /** Whether a filter reads the bytes: the relay must then pass them through data(). */
  get inspectsData(): boolean {
    return !this.ended && this.open.some((o) => o.vm.hasExport(DOWNSTREAM_DATA) || o.vm.hasExport(UPSTREAM_DATA));
  }

  /**
   * Passes a chunk through the data callbacks of the filters that export
   * them: downstream bytes in chain order, upstream bytes in reverse (as
   * Envoy's read and write filters). A filter may replace the bytes
   * (proxy_set_buffer_bytes), return Pause to have them held and be called
   * again with more (before the end), or close the connection. A trap gets
   * the filter's failure policy; a dry-run filter's close is recorded only.
   */
  data(side: DataSide, chunk: Buffer, endOfStream: boolean): DataOutcome {
    const s = this.stream!;
    const callback = side === 'downstream' ? DOWNSTREAM_DATA : UPSTREAM_DATA;
    const order = side === 'downstream' ? this.open : [...this.open].reverse();
    let data = chunk;
    for (const o of order) {
      if (o.skipped || o.vm.broken || !o.vm.hasExport(callback)) continue;
      const held = o.held?.[side];
      const input = held && held.length > 0 ? Buffer.concat([...held.splice(0), data]) : data;
      if (side === 'downstream') s.requestBody = input;
      else s.responseBody = input;
      let action: number;
      try {
        action = o.vm.onStream(callback, o.contextId, input.length, endOfStream ? 1 : 0);
      } catch (err) {
        if (!(err instanceof FilterTrapError)) throw err;
        o.filter.onTrap(o.vm);
        o.skipped = true;
        if (fail(o.filter, err.message, this.hooks)) return { close: { reason: 'filter-failed', filter: o.filter.name, message: err.message } };
        data = input;
        continue;
      }
      const out = (side === 'downstream' ? s.requestBody : s.responseBody) ?? input;
      s.requestBody = s.responseBody = undefined;
      if (s.closed) {
        const rule = ruleOf(s);
        if (!o.filter.dryRun) return { close: { reason: 'filter-closed-stream', filter: o.filter.name, message: rule ? `closed by ${rule}` : `closed by filter ${o.filter.name}` } };
        o.filter.recordDryRun(rule, 0, 'close');
        s.closed = false;
      }
      if (action === Action.Pause && !endOfStream) {
        ((o.held ??= { downstream: [], upstream: [] })[side]).push(out);
        data = EMPTY;
      } else {
        data = out;
      }
    }
    return { data };
  }

  /** Tells each filter the connection closed (`closedBy` the downstream or upstream side first), ends its context, releases the chain. Never throws. */
  end(closedBy: number = PeerType.Remote): void {
    if (this.ended) return;
    this.ended = true;
    for (const o of this.open) {
      if (o.vm.broken) continue;
      try {
        o.vm.onStream('proxy_on_downstream_connection_close', o.contextId, closedBy);
        o.vm.onStream('proxy_on_upstream_connection_close', o.contextId, closedBy);
        o.vm.finishStream(o.contextId);
      } catch (err) {
        if (!(err instanceof FilterTrapError)) throw err;
        o.filter.onTrap(o.vm);
        this.hooks.onFilterFailure(o.filter.name, o.filter.failurePolicy, err.message);
      }
    }
    this.chain?.release();
  }
}

/**
 * Runs proxy_on_new_connection of every filter for `service` that exports it,
 * in chain order; stops at the first that closes the connection or fails closed.
 */
export async function openConnection(
  chain: FilterChain | undefined,
  service: string,
  facts: StreamFacts,
  hooks: ConnectionHooks,
  pauseMs = DEFAULT_CONNECTION_PAUSE_MS,
): Promise<ConnectionVerdict> {
  if (!chain) return { kind: 'allow', session: new ConnectionSession(undefined, [], hooks) };
  chain.acquire();
  const stream = new ConnectionStream(facts);
  const open: Open[] = [];
  const session = new ConnectionSession(chain, open, hooks, stream);
  const refuse = (verdict: ConnectionVerdict): ConnectionVerdict => {
    // The contexts opened so far end at once: the connection never starts.
    session.end(PeerType.Local);
    return verdict;
  };
  for (const filter of chain.filtersFor(service)) {
    const decides = filter.vm.hasExport(NEW_CONNECTION);
    if (!decides && !filter.connectionPolicy) continue;
    let vm = filter.instance();
    if (vm instanceof Promise) vm = await vm;
    if (!vm) {
      const failed = fail(filter, 'filter unavailable after an earlier trap', hooks);
      if (failed) return refuse(failed);
      continue;
    }
    if (!decides) {
      const failed = fail(filter, `filter ${filter.name} has authorization rules but does not export ${NEW_CONNECTION} (rebuild its bundle)`, hooks);
      if (failed) return refuse(failed);
      continue;
    }
    let action: number;
    let contextId = 0;
    try {
      stream.clearResumeRequest();
      contextId = vm.createStream(stream);
      open.push({ filter, vm, contextId });
      action = vm.onStream(NEW_CONNECTION, contextId);
    } catch (err) {
      if (!(err instanceof FilterTrapError)) throw err;
      if (contextId !== 0) open.pop();
      filter.onTrap(vm);
      const failed = fail(filter, err.message, hooks);
      if (failed) return refuse(failed);
      continue;
    }
    if (!stream.closed && action === Action.Pause) {
      const resumed = await waitForResume(stream, vm, pauseMs);
      if (resumed === 'timeout' || vm.broken) {
        const failed = fail(filter, resumed === 'timeout' ? `kept the connection paused for ${pauseMs} ms` : 'trapped while the connection was paused', hooks);
        if (failed) return refuse(failed);
        continue;
      }
    }
    if (stream.closed) {
      const rule = ruleOf(stream);
      if (!filter.dryRun) return refuse({ kind: 'deny', filter: filter.name, rule });
      filter.recordDryRun(rule, 0, 'close');
      stream.closed = false;
    }
  }
  // No filter wants the bytes or to hear of the end (compiled policies do not): end the contexts
  // now, so a long-lived connection does not keep a retired chain's VMs alive after a reload.
  if (!open.some((o) => LATER_CALLBACKS.some((name) => o.vm.hasExport(name)))) session.end(PeerType.Unknown);
  return { kind: 'allow', session };
}

/** The failure policy for one filter on one connection: a verdict that refuses it, or undefined to go on without the filter. */
function fail(filter: ChainFilter, error: string, hooks: ConnectionHooks): ConnectionVerdict | undefined {
  hooks.onFilterFailure(filter.name, filter.failurePolicy, error);
  if (filter.failurePolicy === 'open' || filter.dryRun) {
    filter.recordBypass();
    return undefined;
  }
  return { kind: 'filter-failed', filter: filter.name, error };
}

async function waitForResume(stream: ConnectionStream, vm: FilterVm, ms: number): Promise<'continue' | 'close' | 'timeout'> {
  stream.pausedBy = vm;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), ms);
  });
  try {
    const outcome = await Promise.race([stream.waitForResume(), timeout]);
    return outcome === 'local-response' ? 'continue' : outcome;
  } finally {
    clearTimeout(timer);
    stream.pausedBy = undefined;
  }
}

function ruleOf(stream: ConnectionStream): string {
  return stream.propertyText(CONNECTION_RULE) ?? '';
}
