// gRPC through a sidecar pair with @grpc/grpc-js on both ends: the client
// speaks h2c to web's outbound listener, the sidecars carry the calls over
// their HTTP/1.1 mTLS connection (chunked bodies, trailers, full duplex), and
// catalog's sidecar speaks HTTP/2 to the grpc-js server. Unary, server
// streaming, client streaming and bidi keep their messages, metadata, status
// and trailers; a compiled policy's deny reaches the client as
// PERMISSION_DENIED with the deciding rule, a rate limit as UNAVAILABLE, and a
// mesh failure as UNAVAILABLE.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { echoClient, grpc, policyBundle, startGrpcApp, startPair, type GrpcApp, type H2Mesh, type Msg } from './support.ts';

const POLICY = `
service catalog {
  deny guests-no-unary {
    when path prefix "/mesh.test.Echo/Unary" and header "x-role" == "guest"
  }
  rate_limit streams {
    key source
    rate 1/m burst 1
    when path prefix "/mesh.test.Echo/ServerStream" and header "x-limited" present
  }
}
`;

let app: GrpcApp;
let mesh: H2Mesh;
let client: ReturnType<typeof echoClient>;

beforeAll(async () => {
  app = await startGrpcApp();
  mesh = await startPair(app.port, { bundle: await policyBundle(POLICY) });
  client = echoClient(mesh.outbound);
});

afterAll(async () => {
  client?.close();
  await mesh?.stop();
  await app?.close();
});

interface UnaryResult {
  err: grpc.ServiceError | null;
  reply: Msg | undefined;
  head: grpc.Metadata | undefined;
  status: grpc.StatusObject | undefined;
}

function unary(text: string, md: Record<string, string> = {}): Promise<UnaryResult> {
  const metadata = new grpc.Metadata();
  for (const [k, v] of Object.entries(md)) metadata.set(k, v);
  return new Promise((resolve) => {
    const r: UnaryResult = { err: null, reply: undefined, head: undefined, status: undefined };
    const call = client.Unary({ text }, metadata, { deadline: Date.now() + 10_000 }, (err: grpc.ServiceError | null, reply: Msg) => {
      r.err = err;
      r.reply = reply;
    }) as grpc.ClientUnaryCall;
    call.on('metadata', (m: grpc.Metadata) => (r.head = m));
    call.on('status', (s: grpc.StatusObject) => {
      r.status = s;
      resolve(r);
    });
  });
}

describe('gRPC through a sidecar pair', () => {
  it('unary: reply, request metadata to the server, header metadata and trailers back', async () => {
    const r = await unary('hello', { 'x-client': 'abc' });
    expect(r.err).toBeNull();
    expect(r.reply).toEqual({ text: 'echo: hello' });
    expect(app.lastMetadata?.get('x-client')).toEqual(['abc']);
    // The sidecars' hop header is not metadata the server sees.
    expect(app.lastMetadata?.get('x-mesh-orig-proto')).toEqual([]);
    expect(r.head?.get('x-head')).toEqual(['from-server']);
    expect(r.status?.code).toBe(grpc.status.OK);
    expect(r.status?.metadata.get('x-trailer')).toEqual(['from-server']);
    // Both sidecars log the call as HTTP/2 with its gRPC status.
    const out = mesh.webLogs.entries.filter((e) => e.direction === 'outbound' && e.path === '/mesh.test.Echo/Unary').at(-1);
    const inn = mesh.catalogLogs.entries.filter((e) => e.direction === 'inbound' && e.path === '/mesh.test.Echo/Unary').at(-1);
    expect(out).toMatchObject({ protocol: 'HTTP/2', grpc_status: '0', status: 200 });
    expect(inn).toMatchObject({ protocol: 'HTTP/2', grpc_status: '0', status: 200 });
  });

  it('unary: an error status, its message and trailers pass unchanged', async () => {
    const r = await unary('fail');
    expect(r.status?.code).toBe(grpc.status.NOT_FOUND);
    expect(r.status?.details).toBe('no such thing');
    expect(r.status?.metadata.get('x-trailer')).toEqual(['from-server']);
    expect(mesh.webLogs.entries.filter((e) => e.path === '/mesh.test.Echo/Unary').at(-1)).toMatchObject({ grpc_status: String(grpc.status.NOT_FOUND) });
  });

  it('server streaming: every message in order, then the trailers', async () => {
    const got: Msg[] = [];
    const status = await new Promise<grpc.StatusObject>((resolve, reject) => {
      const call = client.ServerStream({ text: 'item', n: 50 }) as grpc.ClientReadableStream<Msg>;
      call.on('data', (m: Msg) => got.push(m));
      call.on('status', resolve);
      call.on('error', (e: grpc.ServiceError) => (e.code === grpc.status.OK ? undefined : reject(e)));
    });
    expect(status.code).toBe(grpc.status.OK);
    expect(got.map((m) => m.n)).toEqual([...Array(50).keys()]);
    expect(got[49]?.text).toBe('item 49');
    expect(status.metadata.get('x-trailer')).toEqual(['from-server']);
  });

  it('client streaming: many messages up, one reply', async () => {
    const reply = await new Promise<Msg>((resolve, reject) => {
      const call = client.ClientStream((err: grpc.ServiceError | null, m: Msg) => (err ? reject(err) : resolve(m))) as grpc.ClientWritableStream<Msg>;
      for (let i = 0; i < 20; i++) call.write({ text: `p${i}` });
      call.end();
    });
    expect(reply.n).toBe(20);
    expect(reply.text).toBe([...Array(20).keys()].map((i) => `p${i}`).join('+'));
  });

  it('bidi: full duplex (each reply arrives before the next message is sent)', async () => {
    const call = client.Bidi() as grpc.ClientDuplexStream<Msg, Msg>;
    const replies: string[] = [];
    const next = (): Promise<Msg> => new Promise((resolve) => call.once('data', resolve));
    for (let i = 0; i < 5; i++) {
      const reply = next();
      call.write({ text: `m${i}` });
      // The request stream is still open: only a full-duplex path delivers this reply now.
      replies.push((await reply).text);
    }
    const status = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
    call.end();
    expect(replies).toEqual(['echo: m0', 'echo: m1', 'echo: m2', 'echo: m3', 'echo: m4']);
    const s = await status;
    expect(s.code).toBe(grpc.status.OK);
    expect(s.metadata.get('x-trailer')).toEqual(['from-server']);
  });

  it('a compiled deny of a gRPC method is PERMISSION_DENIED (7) with the deciding rule, and the server never sees it', async () => {
    const before = app.lastMetadata;
    const r = await unary('secret', { 'x-role': 'guest' });
    expect(r.status?.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(r.status?.metadata.get('x-mesh-rule')).toEqual(['catalog/deny/guests-no-unary']);
    expect(app.lastMetadata).toBe(before);
    const log = mesh.catalogLogs.entries.filter((e) => e.direction === 'inbound' && e.path === '/mesh.test.Echo/Unary').at(-1);
    expect(log).toMatchObject({ status: 200, rule: 'catalog/deny/guests-no-unary', grpc_status: '7' });
    // Istio's request metrics carry the protocol and the gRPC status on both sides.
    const inbound = await mesh.catalog.metrics.registry.metrics();
    expect(inbound).toMatch(/istio_requests_total\{reporter="destination",source_workload="web",destination_service="catalog",destination_version="v1",response_code="200",response_flags="-",request_protocol="grpc",grpc_response_status="7"\} 1\n/);
    const outbound = await mesh.web.metrics.registry.metrics();
    expect(outbound).toMatch(/istio_requests_total\{reporter="source",[^}]*request_protocol="grpc",grpc_response_status="0"\} [1-9]/);
    // Other callers of the same method are served.
    expect((await unary('fine', { 'x-role': 'admin' })).status?.code).toBe(grpc.status.OK);
  });

  it('a rate-limited call is UNAVAILABLE (14), as Envoy answers gRPC rate limits', async () => {
    const call = (): Promise<grpc.StatusObject> =>
      new Promise((resolve) => {
        const md = new grpc.Metadata();
        md.set('x-limited', '1');
        const c = client.ServerStream({ text: 'x', n: 1 }, md) as grpc.ClientReadableStream<Msg>;
        c.on('data', () => {});
        c.on('error', () => {});
        c.on('status', resolve);
      });
    expect((await call()).code).toBe(grpc.status.OK);
    const limited = await call();
    expect(limited.code).toBe(grpc.status.UNAVAILABLE);
    expect(limited.metadata.get('x-mesh-rule')).toEqual(['catalog/rate_limit/streams']);
  });

  it('a failure of the mesh (unknown service) is UNAVAILABLE (14) with the reason', async () => {
    const other = echoClient(mesh.outbound, 'nowhere');
    try {
      const status = await new Promise<grpc.StatusObject>((resolve) => {
        const c = other.Unary({ text: 'x' }, () => {}) as grpc.ClientUnaryCall;
        c.on('status', resolve);
      });
      expect(status.code).toBe(grpc.status.UNAVAILABLE);
      expect(status.metadata.get('x-mesh-reason')).toEqual(['unknown-service']);
      expect(status.details).toContain('unknown-service');
    } finally {
      other.close();
    }
  });
});

describe('gRPC and the request timeout', () => {
  let slowApp: GrpcApp;
  let pair: H2Mesh;
  let c: ReturnType<typeof echoClient>;
  beforeAll(async () => {
    slowApp = await startGrpcApp();
    pair = await startPair(slowApp.port, { sidecar: { upstreamTimeoutMs: 400 } });
    c = echoClient(pair.outbound);
  });
  afterAll(async () => {
    c?.close();
    await pair?.stop();
    await slowApp?.close();
  });

  it('bounds the wait for the response head: a unary call slower than the timeout is UNAVAILABLE (upstream-timeout)', async () => {
    const status = await new Promise<grpc.StatusObject>((resolve) => {
      const call = c.Unary({ text: 'x', ms: 1_500 }, () => {}) as grpc.ClientUnaryCall;
      call.on('status', resolve);
    });
    expect(status.code).toBe(grpc.status.UNAVAILABLE);
    expect(status.metadata.get('x-mesh-reason')).toEqual(['upstream-timeout']);
  });

  it('lets a stream whose head arrived outlive the timeout (its deadline is the client\'s)', async () => {
    const got: number[] = [];
    const status = await new Promise<grpc.StatusObject>((resolve) => {
      const call = c.ServerStream({ text: 'tick', n: 6, ms: 150 }) as grpc.ClientReadableStream<Msg>;
      call.on('data', (m: Msg) => got.push(m.n ?? -1));
      call.on('error', () => {});
      call.on('status', resolve);
    });
    // 6 messages 150 ms apart: about 750 ms, well past the 400 ms request timeout.
    expect(status.code).toBe(grpc.status.OK);
    expect(got).toEqual([0, 1, 2, 3, 4, 5]);
  });
});
