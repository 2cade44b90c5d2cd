// The HTTP/1.1 codec edge on node:http: turns a downstream request into an
// HttpStream, runs the filter chain (FilterRun), forwards to the upstream the
// listener's role picks, streams bodies both ways, and writes exactly one
// response, access-log line and metric record per request.
//
// In:  a ListenerRole (outbound, inbound or standalone: facts, chain, routing)
//      and a node:http request/response pair.
// Out: the proxied (or locally answered, or errored) response.
//
// Kept apart from the routing and filter logic so a faster codec can replace it.
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import { randomUUID } from 'node:crypto';
import { RULE_HEADER } from '../protocol/properties.ts';
import type { FilterChain } from './chain.ts';
import { MeshError, REASONS, sendMeshError, toMeshError } from './errors.ts';
import { FilterRun, type StepOutcome } from './filter-run.ts';
import type { SidecarMetrics } from './metrics.ts';
import { HttpStream, getHeader, type HeaderList, type LocalResponse, type StreamFacts } from './wasm/stream.ts';

/** Where one request goes. */
export interface UpstreamTarget {
  protocol: 'http:' | 'https:';
  host: string;
  port: number;
  agent: http.Agent;
  /** The version (subset) of the destination, for logs and metrics. */
  version: string;
  /** Instance name or URL, for the access log. */
  endpoint: string;
}

/** What differs between listeners: who the peer is, which chain, where requests go. */
export interface ListenerRole {
  readonly name: 'inbound' | 'outbound' | 'standalone';
  readonly reporter: 'source' | 'destination';
  /** Connection and mesh facts for a new request; throws MeshError to refuse it (e.g. no-certificate, unknown-service). */
  facts(req: IncomingMessage): StreamFacts;
  chain(): FilterChain | undefined;
  /** Picks the upstream after the request filters ran (they may have set mesh.route.version); throws MeshError. */
  route(stream: HttpStream): UpstreamTarget;
  sourceWorkload(stream: HttpStream): string;
  /** Version label for metrics when no upstream was chosen. */
  ownVersion(): string;
}

export interface ProxyDeps {
  metrics: SidecarMetrics;
  log: (entry: Record<string, unknown>) => void;
  upstreamTimeoutMs: number;
  /** Called when a request starts and ends (graceful stop waits for zero). */
  track(delta: 1 | -1): void;
}

// RFC 9110 7.6.1 connection-specific headers, never forwarded.
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/** Request headers as a proxy-wasm map: pseudo-headers first (as Envoy presents them), lowercase names, no hop-by-hop. */
export function requestHeaderList(req: IncomingMessage, scheme: string): HeaderList {
  const list: HeaderList = [
    [':method', req.method ?? 'GET'],
    [':path', req.url ?? '/'],
    [':authority', req.headers.host ?? ''],
    [':scheme', scheme],
  ];
  appendRaw(list, req.rawHeaders, connectionTokens(req.headers));
  return list;
}

function appendRaw(list: HeaderList, raw: string[], extraHop: Set<string>): void {
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (name === 'host' || HOP_BY_HOP.has(name) || extraHop.has(name)) continue;
    list.push([name, raw[i + 1]!]);
  }
}

/** Headers named in `Connection:` are hop-by-hop too. */
function connectionTokens(headers: IncomingHttpHeaders): Set<string> {
  const c = headers.connection;
  if (!c) return new Set();
  return new Set(c.split(',').map((t) => t.trim().toLowerCase()).filter(Boolean));
}

function toOutgoing(list: HeaderList): Array<[string, string]> {
  return list.filter(([k]) => !k.startsWith(':'));
}

function flatten(list: Array<[string, string]>): string[] {
  const out: string[] = [];
  for (const [k, v] of list) out.push(k, v);
  return out;
}

function hasBody(req: IncomingMessage): boolean {
  const len = req.headers['content-length'];
  if (req.headers['transfer-encoding'] !== undefined) return true;
  return len !== undefined && len !== '0';
}

function exportsAny(run: FilterRun, chain: FilterChain | undefined, service: string, callback: string): boolean {
  if (!chain || run.empty) return false;
  return chain.filtersFor(service).some((f) => f.vm.hasExport(callback));
}

/** Handles one request end to end. Never throws; every failure becomes a response. */
export function handleRequest(role: ListenerRole, deps: ProxyDeps, req: IncomingMessage, res: ServerResponse): void {
  const started = performance.now();
  deps.track(1);
  const log: Record<string, unknown> = {
    time: new Date().toISOString(),
    direction: role.name,
    method: req.method,
    path: req.url,
    authority: req.headers.host ?? '',
  };
  let chain: FilterChain | undefined;
  let run: FilterRun | undefined;
  let stream: HttpStream | undefined;
  let target: UpstreamTarget | undefined;
  let reason = '';
  let bytesOut = 0;
  let finished = false;

  const finish = (): void => {
    if (finished) return;
    finished = true;
    if (run) run.finish();
    if (chain) chain.release();
    const status = res.statusCode;
    const durationMs = performance.now() - started;
    const service = stream?.facts.destinationService ?? '';
    deps.metrics.record({
      reporter: role.reporter,
      sourceWorkload: stream ? role.sourceWorkload(stream) : '',
      destinationService: service,
      destinationVersion: target?.version ?? (role.name === 'inbound' ? role.ownVersion() : ''),
      status,
      responseFlags: reason ? (REASONS[reason as keyof typeof REASONS]?.flag ?? '-') : '-',
      durationMs,
    });
    Object.assign(log, {
      destination_service: service,
      version: target?.version,
      endpoint: target?.endpoint,
      status,
      duration_ms: Math.round(durationMs * 100) / 100,
      bytes_sent: bytesOut,
      reason: reason || undefined,
    });
    deps.log(log);
    deps.track(-1);
  };
  res.on('close', finish);

  const fail = (err: unknown): void => {
    const e = toMeshError(err);
    reason = e.reason;
    if (e.reason === 'internal-error') log.error = e.message;
    sendMeshError(res, e);
  };

  const answerLocally = (r: LocalResponse, filter: string): void => {
    const rule = getHeader(r.headers, RULE_HEADER) ?? (r.details || '');
    log.rule = rule;
    log.filter = filter;
    deps.metrics.localResponse(rule);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const headers = flatten(r.headers.filter(([k]) => !k.startsWith(':') && !HOP_BY_HOP.has(k) && k !== 'content-length'));
    headers.push('content-length', String(r.body.length));
    res.writeHead(r.status, headers);
    bytesOut += r.body.length;
    res.end(r.body);
  };

  /** Non-continue outcomes end the request here; returns true when it did. */
  const ended = (out: StepOutcome): boolean => {
    if (out.kind === 'continue') return false;
    if (out.kind === 'local-response') answerLocally(out.response, out.filter);
    else if (out.kind === 'close') {
      reason = 'filter-closed-stream';
      log.filter = out.filter;
      res.destroy();
    } else {
      log.filter = out.filter;
      fail(new MeshError('filter-failed', `filter ${out.filter} failed`, { 'x-mesh-filter': out.filter }));
    }
    return true;
  };

  const main = async (): Promise<void> => {
    const facts = role.facts(req);
    const scheme = facts.scheme;
    stream = new HttpStream(facts, requestHeaderList(req, scheme));
    if (getHeader(stream.requestHeaders, 'x-request-id') === undefined) stream.requestHeaders.push(['x-request-id', facts.requestId]);
    chain = role.chain();
    chain?.acquire();
    run = chain ? new FilterRun(chain, facts.destinationService, stream, {
      onFilterFailure: (filter, policy, error) => {
        deps.metrics.filterFailure(filter, policy);
        deps.log({ event: 'filter-failure', filter, policy, error });
      },
    }) : undefined;
    const bodyExpected = hasBody(req);
    if (run && ended(await run.requestHeaders(!bodyExpected))) return;
    target = role.route(stream);
    await forward(stream, target, bodyExpected);
  };

  const forward = (s: HttpStream, t: UpstreamTarget, bodyExpected: boolean): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      const filterBody = bodyExpected && run !== undefined && exportsAny(run, chain, s.facts.destinationService, 'proxy_on_request_body');
      // Filters may change the body's length: send it chunked instead of trusting the original length.
      const h = filterBody ? s.requestHeaders.filter(([k]) => k !== 'content-length') : s.requestHeaders;
      const options: http.RequestOptions = {
        protocol: t.protocol,
        host: t.host,
        port: t.port,
        agent: t.agent,
        method: getHeader(h, ':method') ?? 'GET',
        path: getHeader(h, ':path') ?? '/',
        headers: flatten([['host', getHeader(h, ':authority') ?? ''], ...toOutgoing(h)]),
        // The timer below covers the whole exchange; no socket-level timeout on pooled sockets.
      };
      const upstream = (t.protocol === 'https:' ? https : http).request(options);
      const timer = setTimeout(() => {
        upstream.destroy(new MeshError('upstream-timeout', `no response from ${t.endpoint} within ${deps.upstreamTimeoutMs} ms`));
      }, deps.upstreamTimeoutMs);
      timer.unref();
      res.on('close', () => {
        clearTimeout(timer);
        if (!res.writableFinished) upstream.destroy();
      });
      upstream.on('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(upstreamError(err, t));
      });
      upstream.on('response', (ures) => {
        onUpstreamResponse(s, ures).then(
          () => {
            clearTimeout(timer);
            resolve();
          },
          (err: unknown) => {
            clearTimeout(timer);
            reject(err);
          },
        );
      });
      sendRequestBody(upstream, bodyExpected, filterBody).catch((err: unknown) => {
        upstream.destroy();
        reject(err);
      });
    });

  const sendRequestBody = async (upstream: http.ClientRequest, bodyExpected: boolean, filterBody: boolean): Promise<void> => {
    if (!bodyExpected) {
      upstream.end();
      return;
    }
    if (!run || !filterBody) {
      req.pipe(upstream);
      return;
    }
    for await (const chunk of req) {
      const { outcome, data } = await run.requestBody(chunk as Buffer, false);
      if (ended(outcome)) return;
      if (data.length && !upstream.write(data)) await new Promise((r) => upstream.once('drain', r));
    }
    const { outcome, data } = await run.requestBody(Buffer.alloc(0), true);
    if (ended(outcome)) return;
    upstream.end(data);
  };

  const onUpstreamResponse = async (s: HttpStream, ures: IncomingMessage): Promise<void> => {
    const list: HeaderList = [[':status', String(ures.statusCode ?? 502)]];
    appendRaw(list, ures.rawHeaders, connectionTokens(ures.headers));
    s.responseHeaders = list;
    const noBody = ures.headers['content-length'] === '0' || ures.statusCode === 204 || ures.statusCode === 304 || req.method === 'HEAD';
    if (run && ended(await run.responseHeaders(noBody))) {
      ures.resume();
      return;
    }
    const filterBody = run !== undefined && exportsAny(run, chain, s.facts.destinationService, 'proxy_on_response_body');
    const out = s.responseHeaders.filter(([k]) => !k.startsWith(':') && (!filterBody || k !== 'content-length'));
    const status = Number(getHeader(s.responseHeaders, ':status') ?? ures.statusCode ?? 502);
    res.writeHead(status, flatten(out));
    if (!filterBody || !run) {
      ures.on('data', (c: Buffer) => (bytesOut += c.length));
      ures.pipe(res);
      await new Promise<void>((resolve, reject) => {
        ures.on('end', resolve);
        ures.on('error', reject);
        ures.on('aborted', () => reject(new MeshError('upstream-reset', 'upstream closed the response early')));
      });
      return;
    }
    for await (const chunk of ures) {
      const { outcome, data } = await run.responseBody(chunk as Buffer, false);
      if (ended(outcome)) return;
      bytesOut += data.length;
      if (data.length && !res.write(data)) await new Promise((r) => res.once('drain', r));
    }
    const { outcome, data } = await run.responseBody(Buffer.alloc(0), true);
    if (ended(outcome)) return;
    bytesOut += data.length;
    res.end(data);
  };

  main().catch(fail);
}

function upstreamError(err: NodeJS.ErrnoException, t: UpstreamTarget): MeshError {
  if (err instanceof MeshError) return err;
  if (err.code === 'MESH_IDENTITY_MISMATCH') return new MeshError('upstream-identity-mismatch', err.message);
  if (err.code === 'ECONNRESET' || err.code === 'EPIPE') {
    return new MeshError('upstream-reset', `connection to ${t.endpoint} was reset: ${err.message}`);
  }
  return new MeshError('upstream-connect-failed', `cannot reach ${t.endpoint}: ${err.message}`);
}

export function newRequestId(): string {
  return randomUUID();
}
