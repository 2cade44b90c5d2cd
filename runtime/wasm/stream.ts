// Per-request state every filter of a chain sees through the proxy-wasm host:
// header maps, the body buffer of the current body callback, properties, a
// local response a filter sent, and the pause/resume handshake.
//
// In:  the request as the HTTP codec parsed it (headers with pseudo-headers,
//      the connection facts as StreamFacts).
// Out: the same object, mutated by filters; the chain reads it to decide what
//      to forward or answer.

import { Buffer } from 'node:buffer';
export type HeaderList = Array<[string, string]>;

/** Values filters set on every request (route versions and ids) repeat: the last few decoded, by content. */
const recentTexts: Array<{ bytes: Uint8Array; text: string }> = [];
const RECENT_TEXTS = 16;
const RECENT_TEXT_BYTES = 64;

/** `bytes` as UTF-8 text; a short value seen recently comes back as the same string, with no decoding. */
function textOf(bytes: Uint8Array): string {
  const n = bytes.length;
  if (n > RECENT_TEXT_BYTES) return Buffer.from(bytes.buffer, bytes.byteOffset, n).toString('utf8');
  next: for (let k = 0; k < recentTexts.length; k++) {
    const r = recentTexts[k]!;
    if (r.bytes.length !== n) continue;
    for (let i = 0; i < n; i++) if (r.bytes[i] !== bytes[i]) continue next;
    return r.text;
  }
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, n).toString('utf8');
  if (recentTexts.length >= RECENT_TEXTS) recentTexts.shift();
  recentTexts.push({ bytes: bytes.slice(), text });
  return text;
}

export interface LocalResponse {
  status: number;
  details: string;
  body: Uint8Array;
  headers: HeaderList;
}

/** Facts about the connection and the mesh that filters read as properties. */
export interface StreamFacts {
  /** protocol/properties.ts Direction value. */
  direction: number;
  sourcePrincipal: string;
  sourceAddress: string;
  sourcePort: number;
  destinationAddress: string;
  destinationPort: number;
  destinationService: string;
  /** Peer certificate URI SAN; empty when the connection is not mTLS. */
  peerUriSan: string;
  requestId: string;
  scheme: string;
  protocol: string;
  /** Optional connection facts (Envoy's connection.* attributes); absent → NotFound. */
  connectionId?: number;
  mtls?: boolean;
  tlsVersion?: string;
  requestedServerName?: string;
  /** The sidecar's own certificate URI SAN on this connection. */
  localUriSan?: string;
}

/** What ended a pause: a filter continued, answered locally, or closed the stream. */
export type ResumeOutcome = 'continue' | 'local-response' | 'close';

export class HttpStream {
  readonly facts: StreamFacts;
  requestHeaders: HeaderList;
  requestTrailers: HeaderList = [];
  responseHeaders: HeaderList = [];
  responseTrailers: HeaderList = [];
  /** The body chunk the current body callback works on (readable and replaceable by the filter). */
  requestBody: Buffer | undefined;
  responseBody: Buffer | undefined;
  /** Values set by filters with proxy_set_property, keyed by dotted path (created on first use: most requests set none). */
  get setProperties(): Map<string, Uint8Array> {
    return (this.properties ??= new Map());
  }
  /** Whether any filter set a property (without creating the map). */
  get hasSetProperties(): boolean {
    return this.properties !== undefined && this.properties.size > 0;
  }

  /** A property a filter set, as UTF-8 text; undefined when none set it. */
  propertyText(path: string): string | undefined {
    const bytes = this.properties?.get(path);
    return bytes === undefined ? undefined : textOf(bytes);
  }
  localResponse: LocalResponse | undefined;
  closed = false;
  /** When the request started (epoch ms), for request.time and request.duration. */
  readonly startedAt = Date.now();
  /** Body bytes seen so far, for request.size / response.size (FilterRun counts them). */
  requestBodySize = 0;
  responseBodySize = 0;
  /** The chosen upstream `ip:port`, set by the data path once routed (upstream.address). */
  upstreamAddress: string | undefined;
  /** The VM whose callback paused this stream, so a trap in that VM can wake it. */
  pausedBy: object | undefined;
  private properties: Map<string, Uint8Array> | undefined;
  private resumeWaiter: ((outcome: ResumeOutcome) => void) | undefined;
  private resumeRequested = false;

  constructor(facts: StreamFacts, requestHeaders: HeaderList) {
    this.facts = facts;
    this.requestHeaders = requestHeaders;
  }

  /** Called by proxy_continue_stream and friends; wakes a paused chain. */
  resume(outcome: ResumeOutcome): void {
    const waiter = this.resumeWaiter;
    if (waiter) {
      this.resumeWaiter = undefined;
      waiter(outcome);
    } else {
      // Continue called before the filter returned Pause (e.g. from inside the callback).
      this.resumeRequested = true;
    }
  }

  /** Resolves when a paused filter lets the stream go on, answers, or closes it. */
  waitForResume(): Promise<ResumeOutcome> {
    if (this.localResponse) return Promise.resolve('local-response');
    if (this.closed) return Promise.resolve('close');
    if (this.resumeRequested) {
      this.resumeRequested = false;
      return Promise.resolve('continue');
    }
    return new Promise((resolve) => {
      this.resumeWaiter = resolve;
    });
  }

  /** Forget a continue that arrived while the filter was not paused. */
  clearResumeRequest(): void {
    this.resumeRequested = false;
  }
}

/**
 * The context of one opaque TCP connection (runtime/wasm/network.ts): the
 * connection facts as properties, no header maps. proxy_close_stream and
 * proxy_continue_stream with the downstream/upstream stream types act on it;
 * the bytes of a data callback are its requestBody (DOWNSTREAM_DATA, from the
 * client) and responseBody (UPSTREAM_DATA, from the app).
 */
export class ConnectionStream extends HttpStream {
  constructor(facts: StreamFacts) {
    super(facts, []);
  }
}

/** A header's value (repeated headers joined with ","); `name` lower-case. Indexed loop: this runs per host call. */
export function getHeader(list: HeaderList, name: string): string | undefined {
  let found: string | undefined;
  const n = name.length;
  for (let i = 0; i < list.length; i++) {
    const pair = list[i]!;
    // The length test first: most names differ in length, and it spares a call to V8's string comparison.
    const key = pair[0];
    if (key.length === n && key === name) found = found === undefined ? pair[1] : `${found},${pair[1]}`;
  }
  return found;
}

export function removeHeader(list: HeaderList, name: string): HeaderList {
  return list.filter(([k]) => k !== name);
}
