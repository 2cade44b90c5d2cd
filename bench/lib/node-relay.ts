// One half of a bare Node.js TLS relay pair, the floor under the sidecar pair:
// the same two processes, sockets and mutual TLS, and no HTTP at all (bytes
// are piped as they come, one outgoing connection per accepted one).
//   node bench/lib/node-relay.ts front <listen port> <back port> <pki dir>
//   node bench/lib/node-relay.ts back <listen port> <upstream port> <pki dir>
// front: plain listener, mTLS client to back. back: mTLS listener (client
// certificate required), plain client to the upstream.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';

const [role, listenArg, nextArg, pkiDir] = process.argv.slice(2);
const listenPort = Number(listenArg);
const nextPort = Number(nextArg);
const pem = (name: string) => readFileSync(`${pkiDir}/${name}`);

/** Pipes both ways; either side's end or error closes the other. */
function relay(a: net.Socket, b: net.Socket): void {
  a.pipe(b).on('error', () => a.destroy());
  b.pipe(a).on('error', () => b.destroy());
  a.on('error', () => b.destroy());
  a.on('close', () => b.destroy());
  b.on('close', () => a.destroy());
}

if (role === 'front') {
  const ca = pem('ca.pem');
  const cert = pem('client.crt');
  const key = pem('client.key');
  net
    .createServer({ noDelay: true }, (down) => {
      // The bench certificates carry only a SPIFFE URI, no host name: the chain is checked, the name is not.
      const up = tls.connect({ host: '127.0.0.1', port: nextPort, ca, cert, key, checkServerIdentity: () => undefined });
      up.setNoDelay(true);
      relay(down, up);
    })
    .listen(listenPort, '127.0.0.1');
} else if (role === 'back') {
  tls
    .createServer({ ca: pem('ca.pem'), cert: pem('server.crt'), key: pem('server.key'), requestCert: true, rejectUnauthorized: true }, (down) => {
      down.setNoDelay(true);
      relay(down, net.connect({ host: '127.0.0.1', port: nextPort, noDelay: true }));
    })
    .listen(listenPort, '127.0.0.1');
} else {
  throw new Error(`unknown role ${String(role)}: front or back`);
}
process.once('SIGTERM', () => process.exit(0));
