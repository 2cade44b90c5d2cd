// Two hot-path shortcuts that must not change results: request ids built from
// the pooled random bytes are valid, distinct version-4 UUIDs; field names that
// match the codec's shared common names come out exactly as lower-casing them would.
import { describe, expect, it } from 'vitest';
import { DEFAULT_LIMITS, keptHeadBytes, parseRequestHead, parseResponseHead } from '../../runtime/http1/parse.ts';
import { newRequestId } from '../../runtime/trace.ts';

describe('newRequestId', () => {
  it('gives distinct RFC 9562 version-4 UUIDs across pool refills', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 10_000; i++) {
      const id = newRequestId();
      expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      seen.add(id);
    }
    expect(seen.size).toBe(10_000);
  });
});

describe('field names', () => {
  const head = (fields: string[]) => Buffer.from(`GET / HTTP/1.1\r\n${fields.join('\r\n')}\r\n\r\n`, 'latin1');

  it('are lower-cased whether or not they are common names, values untouched', () => {
    const fields = ['HoSt: a.example', 'Content-Type: Text/Plain', 'X-Request-ID: ABC', 'TRACEPARENT: 00-x', 'X-Custom-Thing: V', 'Hostx: 1', 'Hos: 2', 'Accept-Encodinz: 3', 'te: trailers'];
    const buf = head(fields);
    const h = parseRequestHead(buf, 0, buf.length - 4, DEFAULT_LIMITS);
    expect(h.headers).toEqual(fields.map((f) => {
      const i = f.indexOf(':');
      return [f.slice(0, i).toLowerCase(), f.slice(i + 1).trim()];
    }));
    expect(h.host).toBe('a.example');
  });

  it('still drive framing when written in any case', () => {
    const buf = Buffer.from('HTTP/1.1 200 OK\r\nCONTENT-LENGTH: 5\r\nConnection: Close\r\n\r\n', 'latin1');
    const r = parseResponseHead(buf, 0, buf.length - 4, DEFAULT_LIMITS);
    expect(r.contentLength).toBe(5);
    expect(r.keepAlive).toBe(false);
    const dup = Buffer.from('POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\ncontent-LENGTH: 1\r\n\r\n', 'latin1');
    expect(() => parseRequestHead(dup, 0, dup.length - 4, DEFAULT_LIMITS)).toThrow(/more than one Content-Length/);
  });
});

describe('Connection and Content-Length values', () => {
  const request = (fields: string[]) => {
    const buf = Buffer.from(`GET / HTTP/1.1\r\nHost: a\r\n${fields.join('\r\n')}\r\n\r\n`, 'latin1');
    return parseRequestHead(buf, 0, buf.length - 4, DEFAULT_LIMITS);
  };

  it.each([
    [['Connection: keep-alive'], ['keep-alive'], true],
    [['Connection: Keep-Alive'], ['keep-alive'], true],
    [['Connection: close'], ['close'], false],
    [['Connection: CLOSE'], ['close'], false],
    [['Connection: keep-alive, Upgrade', 'Upgrade: websocket'], ['keep-alive', 'upgrade'], true],
    [['Connection: ,  TE ,, close'], ['te', 'close'], false],
    [['Connection: x-a', 'Connection: X-B, x-c'], ['x-a', 'x-b', 'x-c'], true],
    [['Connection:'], [], true],
  ])('%j lists %j (keep-alive %s)', (fields, tokens, keepAlive) => {
    const h = request(fields);
    expect(h.connection).toEqual(tokens);
    expect(h.keepAlive).toBe(keepAlive);
  });

  it('reads Content-Length digits exactly, leading zeros and 15 digits included', () => {
    expect(request(['Content-Length: 13']).contentLength).toBe(13);
    expect(request(['Content-Length: 0013']).contentLength).toBe(13);
    expect(request(['Content-Length: 999999999999999']).contentLength).toBe(999_999_999_999_999);
    for (const bad of ['1e3', '-1', '+1', '0x10', '1 3', '1234567890123456']) {
      expect(() => request([`Content-Length: ${bad}`])).toThrow(/Content-Length/);
    }
  });
});

describe('a response head kept for forwarding as received', () => {
  const parse = (text: string) => {
    const buf = Buffer.from(text, 'latin1');
    return { buf, head: parseResponseHead(buf, 0, buf.indexOf('\r\n\r\n'), DEFAULT_LIMITS) };
  };
  /** The kept bytes: the head less its hop-by-hop lines, as the proxy writes them; the body after it untouched. */
  const kept = (text: string): string | undefined => {
    const { buf, head } = parse(text);
    const wire = head.wire;
    if (!wire) return undefined;
    const body = buf.toString('latin1', wire.end);
    const bytes = keptHeadBytes(wire);
    expect(bytes.byteOffset + bytes.length).toBe(buf.byteOffset + wire.end);
    expect(buf.toString('latin1', wire.end)).toBe(body);
    return bytes.toString('latin1');
  };

  it('marks exactly the hop-by-hop lines, in any case and position', () => {
    expect(kept('HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok')).toBe('HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 2\r\n\r\n');
    expect(kept('HTTP/1.1 200 OK\r\nKEEP-ALIVE: timeout=5\r\nDate: d\r\nConnection: Keep-Alive\r\nProxy-Authenticate: Basic\r\nX: 1\r\n\r\n')).toBe('HTTP/1.1 200 OK\r\nDate: d\r\nX: 1\r\n\r\n');
    expect(kept('HTTP/1.1 204 No Content\r\n\r\n')).toBe('HTTP/1.1 204 No Content\r\n\r\n');
    // Adjacent dropped lines, first and last field lines dropped, every field dropped.
    expect(kept('HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nA: 1\r\nTE: x\r\nB: 2\r\nTrailer: y\r\n\r\nbody')).toBe('HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n');
    expect(kept('HTTP/1.1 200 OK\r\nConnection: close\r\nKeep-Alive: timeout=5\r\n\r\n')).toBe('HTTP/1.1 200 OK\r\n\r\n');
  });

  it('is not kept for HTTP/1.0, or when Connection names other fields (their lines would go too)', () => {
    expect(kept('HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n')).toBeUndefined();
    expect(kept('HTTP/1.1 200 OK\r\nConnection: x-private\r\nX-Private: 1\r\n\r\n')).toBeUndefined();
    expect(kept('HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n')).toBe('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n');
  });
});
