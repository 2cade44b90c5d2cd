// Open-loop HTTP/1.1 load at a fixed rate, in its own process:
//   node bench/lib/open-loop-client.ts <port> <rps> <seconds> <host-header>
// Requests are due at fixed intervals whether or not earlier ones returned
// (no coordinated omission): latency counts from the due time. Keep-alive
// connections are reused when free and opened when none is, up to
// MAX_CONNECTIONS; beyond that a due request waits for the next free
// connection, its wait counted in its latency. (Without the cap, a stall of the
// machine made the client open hundreds of connections, and the TLS handshakes
// they cost the proxies behind them kept the haproxy pair saturated long after
// the stall: the benchmark then measured a handshake storm, not the rate.)
// Prints JSON: { sent, ok, errors, p50, p99, p999, max } in ms.
import net from 'node:net';

const [portArg, rpsArg, secondsArg, host] = process.argv.slice(2);
const port = Number(portArg);
const rps = Number(rpsArg);
const seconds = Number(secondsArg);
const request = Buffer.from(`GET /items/1 HTTP/1.1\r\nHost: ${host}\r\n\r\n`);

interface Conn {
  socket: net.Socket;
  busy: boolean;
  due: number;
  buf: string;
}

const MAX_CONNECTIONS = 32;
const free: Conn[] = [];
/** Due times of requests waiting for a connection, oldest first. */
const waiting: number[] = [];
let connections = 0;
const latencies: number[] = [];
let errors = 0;
let sent = 0;

function open(): Conn {
  const c: Conn = { socket: net.connect(port, '127.0.0.1'), busy: false, due: 0, buf: '' };
  connections++;
  c.socket.setNoDelay(true);
  c.socket.on('data', (d: Buffer) => {
    c.buf += d.toString('latin1');
    const end = c.buf.indexOf('\r\n\r\n');
    if (end === -1) return;
    const m = /content-length: (\d+)/i.exec(c.buf.slice(0, end));
    const need = end + 4 + (m ? Number(m[1]) : 0);
    if (c.buf.length < need) return;
    if (!c.buf.startsWith('HTTP/1.1 200')) errors++;
    else latencies.push(performance.now() - c.due);
    c.buf = c.buf.slice(need);
    c.busy = false;
    const due = waiting.shift();
    if (due === undefined) free.push(c);
    else send(c, due);
  });
  c.socket.on('error', () => undefined);
  c.socket.on('close', () => {
    connections--;
    if (c.busy) errors++;
    c.busy = false;
    const due = waiting.shift();
    if (due !== undefined) send(open(), due);
  });
  return c;
}

function send(c: Conn, due: number): void {
  c.busy = true;
  c.due = due;
  sent++;
  c.socket.write(request);
}

function fire(due: number): void {
  let c = free.pop();
  while (c && c.socket.destroyed) c = free.pop();
  if (c) send(c, due);
  else if (connections < MAX_CONNECTIONS) send(open(), due);
  else waiting.push(due);
}

const interval = 1000 / rps;
const start = performance.now() + 50;
const total = Math.round(rps * seconds);
let next = 0;
function tick(): void {
  const now = performance.now();
  while (next < total && start + next * interval <= now) {
    fire(start + next * interval);
    next++;
  }
  if (next < total) setTimeout(tick, Math.max(0, start + next * interval - performance.now() - 0.2));
  else setTimeout(finish, 2000);
}

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function finish(): void {
  const s = latencies.sort((a, b) => a - b);
  // Requests still waiting for a connection at the end were never answered.
  process.stdout.write(JSON.stringify({ sent, ok: s.length, errors: errors + waiting.length, p50: pct(s, 50), p99: pct(s, 99), p999: pct(s, 99.9), max: s.at(-1) ?? Number.NaN }) + '\n');
  process.exit(0);
}

setTimeout(tick, 50);
