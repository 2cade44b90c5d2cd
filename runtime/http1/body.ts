// HTTP/1.1 message bodies on the wire: decoders that take connection bytes
// and hand payload chunks (and trailers) to a sink, and the chunked encoder.
//
// In:  raw bytes as they arrive from a socket (any split), the framing the
//      head announced (length, chunked, until-close).
// Out: sink.data(payload) per piece, sink.end(trailers) once; MeshError with
//      reason bad-chunk / upstream-protocol-error on malformed framing.
//
// Payload chunks are subarrays of the socket's buffers: no copy is made.
import { Buffer } from 'node:buffer';
import { MeshError } from '../errors.ts';
import type { HeaderList } from '../wasm/stream.ts';
import { CRLFCRLF, parseTrailers, type HeadLimits } from './parse.ts';

export interface BodySink {
  data(chunk: Buffer): void;
  end(trailers: HeaderList | undefined): void;
}

export interface BodyDecoder {
  readonly done: boolean;
  /** Consumes what belongs to this body from buf[pos..]; returns the index after the last byte used. */
  feed(buf: Buffer, pos: number, sink: BodySink): number;
  /** The connection ended (EOF): ends an until-close body, or throws for a truncated one. */
  eof(sink: BodySink): void;
}

export class LengthDecoder implements BodyDecoder {
  private remaining: number;
  done = false;
  private readonly isRequest: boolean;

  constructor(length: number, isRequest: boolean) {
    this.remaining = length;
    this.isRequest = isRequest;
  }

  /** For a zero-length body: ends the sink at once. */
  start(sink: BodySink): void {
    if (this.remaining === 0) {
      this.done = true;
      sink.end(undefined);
    }
  }

  feed(buf: Buffer, pos: number, sink: BodySink): number {
    const n = Math.min(this.remaining, buf.length - pos);
    if (n > 0) {
      this.remaining -= n;
      sink.data(pos === 0 && n === buf.length ? buf : buf.subarray(pos, pos + n));
    }
    if (this.remaining === 0 && !this.done) {
      this.done = true;
      sink.end(undefined);
    }
    return pos + n;
  }

  eof(): void {
    if (this.done) return;
    throw new MeshError(this.isRequest ? 'malformed-request' : 'upstream-reset', `connection closed ${this.remaining} bytes before the end of the body`);
  }
}

/** Response bodies without a length: everything until the upstream closes. */
export class CloseDecoder implements BodyDecoder {
  done = false;

  feed(buf: Buffer, pos: number, sink: BodySink): number {
    if (pos < buf.length) sink.data(pos === 0 ? buf : buf.subarray(pos));
    return buf.length;
  }

  eof(sink: BodySink): void {
    if (this.done) return;
    this.done = true;
    sink.end(undefined);
  }
}

const SIZE = 0;
const DATA = 1;
const DATA_END = 2;
const TRAILERS = 3;
const DONE = 4;

/** Longest chunk-size line (size + extensions) accepted. */
const MAX_CHUNK_LINE = 4096;

/** Trailer fields that must not be acted on (RFC 9110 6.5.1): framing, routing, authentication. */
const FORBIDDEN_TRAILERS = new Set(['content-length', 'transfer-encoding', 'host', 'connection', 'te', 'trailer', 'keep-alive', 'upgrade', 'authorization', 'cookie', 'set-cookie', 'content-type', 'content-encoding']);

export class ChunkedDecoder implements BodyDecoder {
  private state = SIZE;
  private remaining = 0;
  /** Partial chunk-size line or trailer section carried across reads. */
  private carry: Buffer | undefined;
  private readonly limits: HeadLimits;
  private readonly isRequest: boolean;

  constructor(limits: HeadLimits, isRequest: boolean) {
    this.limits = limits;
    this.isRequest = isRequest;
  }

  get done(): boolean {
    return this.state === DONE;
  }

  feed(input: Buffer, pos: number, sink: BodySink): number {
    let buf = input;
    if (this.carry) {
      // Only the line-oriented states carry bytes; join them with the new data once.
      buf = Buffer.concat([this.carry, input.subarray(pos)]);
      pos = 0;
      this.carry = undefined;
      const used = this.run(buf, pos, sink);
      if (this.carry) return input.length;
      return input.length - (buf.length - used);
    }
    return this.run(buf, pos, sink);
  }

  private run(buf: Buffer, pos: number, sink: BodySink): number {
    while (pos < buf.length && this.state !== DONE) {
      switch (this.state) {
        case SIZE: {
          const eol = buf.indexOf(0x0a, pos);
          if (eol === -1) {
            if (buf.length - pos > MAX_CHUNK_LINE) throw this.bad('chunk-size line too long');
            this.carry = Buffer.from(buf.subarray(pos));
            return buf.length;
          }
          if (eol - pos > MAX_CHUNK_LINE) throw this.bad('chunk-size line too long');
          if (eol === pos || buf[eol - 1] !== 0x0d) throw this.bad('chunk-size line not ended by CRLF');
          this.remaining = chunkSize(buf, pos, eol - 1, this);
          pos = eol + 1;
          this.state = this.remaining === 0 ? TRAILERS : DATA;
          break;
        }
        case DATA: {
          const n = Math.min(this.remaining, buf.length - pos);
          sink.data(buf.subarray(pos, pos + n));
          this.remaining -= n;
          pos += n;
          if (this.remaining === 0) this.state = DATA_END;
          break;
        }
        case DATA_END: {
          // Exactly CRLF after the chunk data.
          if (buf.length - pos < 2) {
            if (buf[pos] !== 0x0d) throw this.bad('chunk data not followed by CRLF');
            this.carry = Buffer.from(buf.subarray(pos));
            return buf.length;
          }
          if (buf[pos] !== 0x0d || buf[pos + 1] !== 0x0a) throw this.bad('chunk data not followed by CRLF');
          pos += 2;
          this.state = SIZE;
          break;
        }
        case TRAILERS: {
          // Either an empty line right away, or field lines up to CRLFCRLF.
          if (buf.length - pos >= 2 && buf[pos] === 0x0d && buf[pos + 1] === 0x0a) {
            this.state = DONE;
            sink.end(undefined);
            return pos + 2;
          }
          const end = buf.indexOf(CRLFCRLF, pos);
          if (end === -1) {
            if (buf.length - pos > this.limits.maxHeaderBytes) throw this.bad('trailer section too large');
            this.carry = Buffer.from(buf.subarray(pos));
            return buf.length;
          }
          const fields = parseTrailers(buf, pos, end, this.limits, this.isRequest);
          this.state = DONE;
          sink.end(fields.filter(([k]) => !FORBIDDEN_TRAILERS.has(k)));
          return end + 4;
        }
      }
    }
    return pos;
  }

  eof(): void {
    if (this.state !== DONE) {
      throw new MeshError(this.isRequest ? 'malformed-request' : 'upstream-reset', 'connection closed inside a chunked body');
    }
  }

  bad(message: string): MeshError {
    return new MeshError(this.isRequest ? 'bad-chunk' : 'upstream-protocol-error', message);
  }
}

/** chunk-size [ chunk-ext ] between start and end (the CR); hex digits only, at most 13 of them. */
function chunkSize(buf: Buffer, start: number, end: number, d: ChunkedDecoder): number {
  let size = 0;
  let i = start;
  for (; i < end; i++) {
    const c = buf[i]!;
    const v = c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x61 && c <= 0x66 ? c - 0x57 : c >= 0x41 && c <= 0x46 ? c - 0x37 : -1;
    if (v === -1) break;
    size = size * 16 + v;
  }
  if (i === start) throw d.bad('chunk size is not a hex number');
  if (i - start > 13) throw d.bad('chunk size too large');
  // chunk-ext: BWS ";" ... ; only checked for characters, never interpreted.
  let j = i;
  while (j < end && (buf[j] === 0x20 || buf[j] === 0x09)) j++;
  if (j < end && buf[j] !== 0x3b) throw d.bad('invalid character after the chunk size');
  for (; j < end; j++) {
    const c = buf[j]!;
    if (c !== 0x09 && (c < 0x20 || c === 0x7f)) throw d.bad('control character in a chunk extension');
  }
  return size;
}

const CRLF = Buffer.from('\r\n');
const LAST_CHUNK = Buffer.from('0\r\n\r\n');

/** Writes one chunk (size line, data, CRLF) as one writev. Empty data writes nothing (it would end the body). */
export function writeChunk(socket: { cork(): void; uncork(): void; write(d: Buffer | string, enc?: BufferEncoding): boolean }, data: Buffer): boolean {
  if (data.length === 0) return true;
  socket.cork();
  socket.write(data.length.toString(16) + '\r\n', 'latin1');
  socket.write(data);
  const ok = socket.write(CRLF);
  socket.uncork();
  return ok;
}

/** The last chunk and the trailer section. */
export function lastChunk(trailers: HeaderList | undefined): Buffer | string {
  if (!trailers || trailers.length === 0) return LAST_CHUNK;
  let s = '0\r\n';
  for (const [k, v] of trailers) s += `${k}: ${v}\r\n`;
  return s + '\r\n';
}
