// The TCP benchmark's client and servers, in their own process so the bench
// runner's event loop measures nothing of its own:
//   node bench/tcp-load.ts serve                      → prints {"echo":P,"sink":Q}, serves until killed
//   node bench/tcp-load.ts bulk PORT MIB              → one connection sends MIB MiB, the sink answers the count
//   node bench/tcp-load.ts conns PORT COUNT PARALLEL  → COUNT short connections (1 KiB echoed), PARALLEL at a time
//   node bench/tcp-load.ts pingpong PORT ROUNDS       → ROUNDS 64-byte round trips on one connection
// Each client mode prints one JSON line of results (times in ms).
import net from 'node:net';

const [mode, ...rest] = process.argv.slice(2);

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true, noDelay: true });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

async function serve(): Promise<void> {
  const listen = (onSocket: (s: net.Socket) => void): Promise<number> =>
    new Promise((resolve) => {
      const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
        s.on('error', () => {});
        onSocket(s);
      });
      server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port));
    });
  const echo = await listen((s) => s.pipe(s));
  const sink = await listen((s) => {
    let n = 0;
    s.on('data', (d: Buffer) => (n += d.length));
    s.on('end', () => s.end(String(n)));
  });
  process.stdout.write(JSON.stringify({ echo, sink }) + '\n');
}

/** Sends `mib` MiB as fast as the path takes it; the sink's answer (the byte count) ends the clock. */
async function bulk(port: number, mib: number): Promise<void> {
  const chunk = Buffer.alloc(256 * 1024, 0x61);
  const total = mib * 1024 * 1024;
  const s = await connect(port);
  const t0 = performance.now();
  let answer = '';
  const done = new Promise<void>((resolve, reject) => {
    s.on('data', (d: Buffer) => (answer += d.toString()));
    s.on('end', () => resolve());
    s.on('error', reject);
  });
  for (let sent = 0; sent < total; sent += chunk.length) {
    if (!s.write(chunk)) await new Promise((r) => s.once('drain', r));
  }
  s.end();
  await done;
  const ms = performance.now() - t0;
  s.destroy();
  if (Number(answer) !== total) throw new Error(`sink counted ${answer} bytes, sent ${total}`);
  process.stdout.write(JSON.stringify({ bytes: total, ms, mibPerSec: mib / (ms / 1000) }) + '\n');
}

/** One short connection: connect, 1 KiB out, the same back, close; its latency from the connect call. */
async function shortConnection(port: number, payload: Buffer): Promise<number> {
  const t0 = performance.now();
  const s = await connect(port);
  await new Promise<void>((resolve, reject) => {
    let got = 0;
    s.on('data', (d: Buffer) => {
      got += d.length;
      if (got >= payload.length) resolve();
    });
    s.on('error', reject);
    s.write(payload);
  });
  const ms = performance.now() - t0;
  s.destroy();
  return ms;
}

async function conns(port: number, count: number, parallel: number): Promise<void> {
  const payload = Buffer.alloc(1024, 0x62);
  const latencies: number[] = [];
  let next = 0;
  let errors = 0;
  const t0 = performance.now();
  const worker = async (): Promise<void> => {
    while (next < count) {
      next++;
      try {
        latencies.push(await shortConnection(port, payload));
      } catch {
        errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  const ms = performance.now() - t0;
  latencies.sort((a, b) => a - b);
  process.stdout.write(JSON.stringify({ count, errors, perSec: (count / ms) * 1000, p50: percentile(latencies, 50), p99: percentile(latencies, 99) }) + '\n');
}

async function pingpong(port: number, rounds: number): Promise<void> {
  const s = await connect(port);
  const msg = Buffer.alloc(64, 0x63);
  const rtts: number[] = [];
  let got = 0;
  let resolveRound: (() => void) | undefined;
  s.on('data', (d: Buffer) => {
    got += d.length;
    if (got >= msg.length) {
      got -= msg.length;
      resolveRound?.();
    }
  });
  for (let i = 0; i < rounds; i++) {
    const t = performance.now();
    await new Promise<void>((resolve) => {
      resolveRound = resolve;
      s.write(msg);
    });
    rtts.push(performance.now() - t);
  }
  s.destroy();
  rtts.sort((a, b) => a - b);
  process.stdout.write(JSON.stringify({ rounds, p50: percentile(rtts, 50), p99: percentile(rtts, 99) }) + '\n');
}

const n = (i: number): number => Number(rest[i]);
if (mode === 'serve') await serve();
else if (mode === 'bulk') await bulk(n(0), n(1));
else if (mode === 'conns') await conns(n(0), n(1), n(2));
else if (mode === 'pingpong') await pingpong(n(0), n(1));
else {
  process.stderr.write('usage: tcp-load.ts serve | bulk PORT MIB | conns PORT COUNT PARALLEL | pingpong PORT ROUNDS\n');
  process.exit(2);
}
