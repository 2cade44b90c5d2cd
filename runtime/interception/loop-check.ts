// The start-up check of a transparent sidecar: are its own connections being
// redirected back to it? That happens when it runs as another uid/gid than
// the one `meshc init --proxy-uid/--proxy-gid` exempted, and every upstream
// connection would then loop through the sidecar until it runs out of sockets.
//
// In:  the sidecar's (listening) outbound server.
// Out: resolves when no loop is seen; rejects with InterceptionError
//      INTERCEPTION_LOOP when the probe connection came back to that server.
//
// The probe dials 192.0.2.1:9 (TEST-NET-1, RFC 5737: never routed on the
// internet) the way any upstream connection is dialed. Redirected, it is
// accepted by our own outbound listener within milliseconds; otherwise it
// fails (no route) or waits for an answer that never comes, and the check
// ends after `timeoutMs`. Destinations excluded from capture (--outbound-cidrs,
// --exclude-outbound-cidrs) hide a loop from this probe.
import process from 'node:process';
import net from 'node:net';
import { InterceptionError } from './original-dst.ts';
import { plain } from './transparent.ts';

export const LOOP_PROBE = { host: '192.0.2.1', port: 9 } as const;

export function checkNoLoop(server: net.Server, timeoutMs = 500): Promise<void> {
  return new Promise((resolve, reject) => {
    const probe = net.connect({ host: LOOP_PROBE.host, port: LOOP_PROBE.port });
    const onConnection = (socket: net.Socket): void => {
      // Read here, not earlier: by now the probe's connect() has bound its local port.
      if (socket.remotePort !== probe.localPort || plain(socket.remoteAddress ?? '') !== plain(probe.localAddress ?? '')) return;
      socket.destroy();
      done(
        new InterceptionError(
          'INTERCEPTION_LOOP',
          `this sidecar's own connections are redirected back to it (uid ${process.getuid?.()}, gid ${process.getgid?.()}): run it as the uid or gid given to \`meshc init --proxy-uid/--proxy-gid\``,
        ),
      );
    };
    const done = (err?: InterceptionError): void => {
      clearTimeout(timer);
      server.off('connection', onConnection);
      probe.destroy();
      if (err) reject(err);
      else resolve();
    };
    const timer = setTimeout(() => done(), timeoutMs);
    server.on('connection', onConnection);
    // No route, refused, reset: the probe left the pod, so there is no loop.
    probe.on('error', () => done());
  });
}
