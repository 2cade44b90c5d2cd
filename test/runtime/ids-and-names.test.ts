// Hot-path shortcuts that must not change results: request ids built from
// the pooled random bytes are valid, distinct version-4 UUIDs; field names that
// match the codec's shared common names come out exactly as lower-casing them
// would; the field reader, which checks bytes and slices text, reads a head
// anywhere in a buffer and refuses what the text-based reader refused.
import { describe, expect, it } from 'vitest';
import { DEFAULT_LIMITS, keptHeadBytes, parseRequestHead, parseResponseHead, parseTrailers } from '../../runtime/http1/parse.ts';
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

describe('the field reader', () => {
  /** `text` placed after `before` bytes of other traffic (a pipelined request, a previous response), with more after it. */
  const at = (before: string, text: string) => {
    const buf = Buffer.from(`${before}${text}\r\n\r\nNEXT`, 'latin1');
    return { buf, start: before.length, end: before.length + text.length };
  };

  it('reads a head anywhere in its buffer', () => {
    const req = at('GET /first HTTP/1.1\r\nHost: a\r\n\r\n', 'POST /second HTTP/1.1\r\nHost: b\r\nContent-Length: 3\r\nX-Val: \t spaced\tout \t');
    const h = parseRequestHead(req.buf, req.start, req.end, DEFAULT_LIMITS);
    expect([h.method, h.target, h.host, h.contentLength]).toEqual(['POST', '/second', 'b', 3]);
    expect(h.headers).toEqual([['host', 'b'], ['content-length', '3'], ['x-val', 'spaced\tout']]);

    const res = at('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok', 'HTTP/1.1 404 Not Found\r\nConnection: keep-alive\r\nContent-Length: 0\r\nServer: s');
    const r = parseResponseHead(res.buf, res.start, res.end, DEFAULT_LIMITS);
    expect([r.status, r.reason, r.contentLength]).toEqual([404, 'Not Found', 0]);
    expect(keptHeadBytes(r.wire!).toString('latin1')).toBe('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nServer: s\r\n\r\n');

    const trailers = at('0\r\n', 'Grpc-Status: 0\r\nX-T: t');
    expect(parseTrailers(trailers.buf, trailers.start, trailers.end, DEFAULT_LIMITS, false)).toEqual([['grpc-status', '0'], ['x-t', 't']]);
  });

  it('keeps obs-text in values and refuses every control character but tab', () => {
    const ok = at('', 'GET / HTTP/1.1\r\nHost: a\r\nX-Latin: caf\xe9');
    expect(parseRequestHead(ok.buf, ok.start, ok.end, DEFAULT_LIMITS).headers[1]).toEqual(['x-latin', 'caf\xe9']);
    for (const [value, message] of [
      ['a\rb', /bare CR or LF in the value of x-a/],
      ['a\nb', /bare CR or LF in the value of x-a/],
      ['a\u0000b', /control character 0x0 in the value of x-a/],
      ['a\u007fb', /control character 0x7f in the value of x-a/],
      ['ends in CR\r', /bare CR or LF in the value of x-a/],
    ] as const) {
      const bad = at('GET / HTTP/1.1\r\nHost: z\r\n\r\n', `GET / HTTP/1.1\r\nHost: a\r\nX-A: ${value}`);
      expect(() => parseRequestHead(bad.buf, bad.start, bad.end, DEFAULT_LIMITS)).toThrow(message);
    }
  });

  it('names what is wrong with a field line', () => {
    const cases = [
      ['No-Colon', /a field line without a colon/],
      ['No-Colon\r\nHost: a', /a field line without a colon/],
      ['X-A : 1', /whitespace between a field name and the colon/],
      [' X-A: 1', /obs-fold/],
      [': 1', /empty or invalid field name/],
      ['X(A): 1', /invalid character 0x28 in a field name/],
      ['X-A\r: 1', /bare CR or LF in the header section/],
    ] as const;
    for (const [line, message] of cases) {
      const bad = at('', `GET / HTTP/1.1\r\nHost: a\r\n${line}`);
      expect(() => parseRequestHead(bad.buf, bad.start, bad.end, DEFAULT_LIMITS)).toThrow(message);
    }
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
