// Test program run inside a network namespace by the interception tests.
//
//   node probe.ts server PORT [HOST]   answers each connection with one JSON line
//        {"originalDst":{...}|null,"error":CODE|null,"local":"a:p","remote":"a:p"}
//        read through runtime/interception/original-dst.ts, then echoes what it
//        receives; prints {"event":"listening","port":P} on stdout once bound.
//   node probe.ts echo PORT [HOST]     a plain echo server that first writes
//        {"echo":"local a:p","remote":"a:p"} (what a server outside the pod sees).
//   node probe.ts http PORT [HOST]     an HTTP server answering every request with
//        {"http":"local a:p","remote":"a:p","method":M,"url":U,"headers":{...}}.
//   node probe.ts client HOST PORT TEXT   connects, sends TEXT, half-closes and
//        prints everything received; exit 1 on a connection error.
import http from 'node:http';
import net from 'node:net';
import { originalDestination } from '../../runtime/interception/original-dst.ts';

const [mode, a, b, c] = process.argv.slice(2);

function serve(port: number, host: string, greet: (socket: net.Socket) => string): void {
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    socket.write(greet(socket) + '\n');
    socket.pipe(socket);
    socket.on('error', () => socket.destroy());
  });
  server.listen(port, host, () => process.stdout.write(JSON.stringify({ event: 'listening', port }) + '\n'));
  process.once('SIGTERM', () => process.exit(0));
}

const where = (address: string | undefined, port: number | undefined): string => `${address}:${port}`;

if (mode === 'server') {
  serve(Number(a), b ?? '0.0.0.0', (socket) => {
    let originalDst = null;
    let error = null;
    try {
      originalDst = originalDestination(socket);
    } catch (err) {
      error = (err as { code?: string }).code ?? String(err);
    }
    return JSON.stringify({ originalDst, error, local: where(socket.localAddress, socket.localPort), remote: where(socket.remoteAddress, socket.remotePort) });
  });
} else if (mode === 'echo') {
  serve(Number(a), b ?? '0.0.0.0', (socket) => JSON.stringify({ echo: where(socket.localAddress, socket.localPort), remote: where(socket.remoteAddress, socket.remotePort) }));
} else if (mode === 'http') {
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const s = req.socket;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ http: where(s.localAddress, s.localPort), remote: where(s.remoteAddress, s.remotePort), method: req.method, url: req.url, headers: req.headers }));
    });
  });
  server.listen(Number(a), b ?? '0.0.0.0', () => process.stdout.write(JSON.stringify({ event: 'listening', port: Number(a) }) + '\n'));
  process.once('SIGTERM', () => process.exit(0));
} else if (mode === 'client') {
  const socket = net.connect({ host: a!, port: Number(b) }, () => socket.end(c ?? ''));
  socket.setTimeout(10_000, () => {
    process.stderr.write('client: timeout\n');
    process.exit(1);
  });
  socket.pipe(process.stdout);
  socket.on('error', (err) => {
    process.stderr.write(`client: ${(err as NodeJS.ErrnoException).code ?? err.message}\n`);
    process.exit(1);
  });
} else {
  process.stderr.write('usage: probe.ts server|echo|http PORT [HOST] | client HOST PORT TEXT\n');
  process.exit(2);
}
