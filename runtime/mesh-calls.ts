// proxy_http_call in the sidecar: the upstream a filter names is a mesh
// service, reached like any outbound request — an endpoint from the service's
// router, sent on the pooled mTLS connections of runtime/http1/client.
//
// In:  the service name, the call as proxy-wasm header/trailer lists and a body.
// Out: the response (headers with :status, body, trailers), or a rejection
//      (unknown service, timeout, connect failure, oversized response) that
//      the host turns into a failed call.
import { Buffer } from 'node:buffer';
import { MeshError } from './errors.ts';
import type { UpstreamPool, ResponseHandler } from './http1/client.ts';
import type { ResponseHead } from './http1/parse.ts';
import { MAX_CALL_RESPONSE_BYTES, type HttpCallDispatcher, type HttpCallResponse } from './wasm/http-call.ts';
import type { HeaderList } from './wasm/stream.ts';

/** What the dispatcher needs from the sidecar. */
export interface MeshCallTargets {
  knows(service: string): boolean;
  /** A pool to one endpoint of the service (throws MeshError when there is none). */
  pool(service: string): UpstreamPool;
}

const NOT_SENT = new Set(['content-length', 'transfer-encoding', 'connection', 'keep-alive', 'te', 'upgrade', 'host']);

export function meshCallDispatcher(targets: MeshCallTargets): HttpCallDispatcher {
  return {
    knows: (upstream) => targets.knows(upstream),
    dispatch: (upstream, headers, body, trailers, timeoutMs) => call(targets.pool(upstream), upstream, headers, body, trailers, timeoutMs),
  };
}

function call(pool: UpstreamPool, service: string, headers: HeaderList, body: Uint8Array, trailers: HeaderList, timeoutMs: number): Promise<HttpCallResponse> {
  let method = 'GET';
  let path = '/';
  let authority = service;
  let fields = '';
  for (const [k, v] of headers) {
    if (k === ':method') method = v;
    else if (k === ':path') path = v;
    else if (k === ':authority') authority = v;
    else if (!k.startsWith(':') && !NOT_SENT.has(k.toLowerCase())) fields += `${k}: ${v}\r\n`;
  }
  // Trailers need chunked framing; otherwise the body goes with its length.
  const chunked = trailers.length > 0;
  const length = chunked ? -1 : body.length;
  let head = `${method} ${path} HTTP/1.1\r\nhost: ${authority}\r\n${fields}`;
  if (chunked) head += 'transfer-encoding: chunked\r\n';
  else if (body.length > 0) head += `content-length: ${body.length}\r\n`;
  head += '\r\n';
  return new Promise<HttpCallResponse>((resolve, reject) => {
    let status = 0;
    let responseHeaders: HeaderList = [];
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const settle = (err: Error | undefined, value?: HttpCallResponse): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(value!);
    };
    const handler: ResponseHandler = {
      response: (h: ResponseHead) => {
        status = h.status;
        responseHeaders = h.headers;
      },
      data: (chunk) => {
        size += chunk.length;
        if (size > MAX_CALL_RESPONSE_BYTES) {
          exchange.abort();
          settle(new Error(`response from ${service} larger than ${MAX_CALL_RESPONSE_BYTES} bytes`));
          return;
        }
        chunks.push(chunk);
      },
      end: (t) => settle(undefined, { headers: [[':status', String(status)], ...responseHeaders], body: Buffer.concat(chunks), trailers: t ?? [] }),
      failed: (err: MeshError) => settle(err),
    };
    const exchange = pool.request(head, { method, length: length === 0 ? 0 : length, upgrade: false }, handler);
    const timer = setTimeout(() => {
      exchange.abort();
      settle(new MeshError('upstream-timeout', `no response from ${service} within ${timeoutMs} ms`));
    }, timeoutMs);
    if (length !== 0) {
      exchange.write(Buffer.from(body));
      exchange.finish(chunked ? trailers : undefined);
    }
  });
}
