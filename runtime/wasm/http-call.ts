// proxy_http_call's way out: the dispatcher interface the host calls, and an
// implementation on node:http(s) that the sidecar (upstream = a mesh service,
// sent over its mTLS pool) and standalone `meshc proxy` (upstream = host:port)
// configure with a resolver.
//
// In:  an upstream name, a request as proxy-wasm header/trailer lists and a body.
// Out: the response (headers with `:status`, body, trailers), or a rejection
//      (timeout, connect failure, oversized body) that the host reports to the
//      filter as a failed call (zero headers).
import { Buffer } from 'node:buffer';
import http from 'node:http';
import https from 'node:https';
import type { HeaderList } from './stream.ts';

export interface HttpCallResponse {
  headers: HeaderList;
  body: Uint8Array;
  trailers: HeaderList;
}

export interface HttpCallDispatcher {
  /** Whether `upstream` names something this dispatcher can reach; false → the call is refused with BadArgument. */
  knows(upstream: string): boolean;
  dispatch(upstream: string, headers: HeaderList, body: Uint8Array, trailers: HeaderList, timeoutMs: number): Promise<HttpCallResponse>;
}

/** Where a resolved upstream is sent. */
export interface CallTarget {
  protocol: 'http:' | 'https:';
  host: string;
  port: number;
  agent: http.Agent;
}

/** Responses larger than this fail the call instead of filling the sidecar's memory. */
export const MAX_CALL_RESPONSE_BYTES = 4 * 1024 * 1024;

const plainAgent = new http.Agent({ keepAlive: true });

/** Standalone resolver: `host:port` (IPv6 in brackets) over plain HTTP. */
export function hostPortTarget(upstream: string): CallTarget | undefined {
  const m = /^\[?([^\]]+?)\]?:(\d{1,5})$/.exec(upstream);
  if (!m || Number(m[2]) > 65535) return undefined;
  return { protocol: 'http:', host: m[1]!, port: Number(m[2]), agent: plainAgent };
}

export function nodeHttpDispatcher(resolve: (upstream: string) => CallTarget | undefined): HttpCallDispatcher {
  return {
    knows: (upstream) => resolve(upstream) !== undefined,
    dispatch: (upstream, headers, body, trailers, timeoutMs) => {
      const target = resolve(upstream);
      if (!target) return Promise.reject(new Error(`unknown upstream ${upstream}`));
      return send(target, headers, body, trailers, timeoutMs);
    },
  };
}

function pseudo(list: HeaderList, name: string): string | undefined {
  for (const [k, v] of list) if (k === name) return v;
  return undefined;
}

function send(t: CallTarget, headers: HeaderList, body: Uint8Array, trailers: HeaderList, timeoutMs: number): Promise<HttpCallResponse> {
  return new Promise((resolve, reject) => {
    const raw: string[] = ['host', pseudo(headers, ':authority') ?? ''];
    for (const [k, v] of headers) if (!k.startsWith(':') && k !== 'host' && k !== 'content-length') raw.push(k, v);
    // With trailers the body must go chunked; otherwise its length is known.
    if (trailers.length === 0) raw.push('content-length', String(body.length));
    const req = (t.protocol === 'https:' ? https : http).request({
      protocol: t.protocol,
      host: t.host,
      port: t.port,
      agent: t.agent,
      method: pseudo(headers, ':method'),
      path: pseudo(headers, ':path'),
      headers: raw,
    });
    const timer = setTimeout(() => req.destroy(new Error(`http call timed out after ${timeoutMs} ms`)), timeoutMs);
    timer.unref();
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_CALL_RESPONSE_BYTES) req.destroy(new Error(`http call response exceeds ${MAX_CALL_RESPONSE_BYTES} bytes`));
        else chunks.push(c);
      });
      res.on('error', () => {}); // req's error handler reports it
      res.on('end', () => {
        clearTimeout(timer);
        const out: HeaderList = [[':status', String(res.statusCode ?? 0)]];
        for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) out.push([res.rawHeaders[i]!.toLowerCase(), res.rawHeaders[i + 1]!]);
        const tr: HeaderList = [];
        for (let i = 0; i + 1 < res.rawTrailers.length; i += 2) tr.push([res.rawTrailers[i]!.toLowerCase(), res.rawTrailers[i + 1]!]);
        resolve({ headers: out, body: new Uint8Array(Buffer.concat(chunks)), trailers: tr });
      });
    });
    if (trailers.length > 0) req.addTrailers(trailers.map(([k, v]) => [k, v] as [string, string]));
    req.end(body);
  });
}
