// The controller process: config source -> reconciler -> distribution stream,
// plus its HTTP face (GET /status, GET /healthz) on the stream's listener.
//
// In:  ControllerOptions (a policy directory or any ConfigSource, listen address,
//      state dir for the CA, optional bundle signing key).
// Out: a running Controller; `stop()` closes everything it opened.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { KeyObject } from 'node:crypto';
import { WIRE_PATH } from '../protocol/wire.ts';
import { CertificateAuthority } from './ca/authority.ts';
import { loadPolicyCompiler, type PolicyCompiler } from './compile.ts';
import { createLogger, type LogSink } from './log.ts';
import { Reconciler, type MeshState } from './reconcile.ts';
import { DirectoryConfigSource, type ConfigSource } from './source.ts';
import { DistributionServer, type SidecarStatus } from './stream.ts';
import { formatTopologyError } from './topology.ts';

export interface ControllerOptions {
  /** A directory of *.meshpolicy files and topology.yaml (file mode). */
  dir?: string;
  /** Any other source of truth; takes precedence over `dir`. */
  source?: ConfigSource;
  listen?: { host: string; port: number };
  /** Where the CA root is kept; without one the root lives in memory only. */
  stateDir?: string;
  signKey?: KeyObject;
  logSink?: LogSink;
  /** Replaces the real compiler (tests). */
  compiler?: () => Promise<PolicyCompiler>;
  debounceMs?: number;
  leafLifetimeMs?: number;
  renewCheckMs?: number;
}

export interface ControllerStatus {
  source: string;
  policy: {
    /** Version of the bundle sidecars should hold (the last good one). */
    version: string | null;
    lastGoodDigest: string | null;
    currentDigest: string | null;
    /** False when the newest sources do not compile and the last good bundle is still served. */
    current: boolean;
    generation: number;
    diagnostics: MeshState['diagnostics'];
  };
  topology: { services: number; instances: number; errors: (MeshState['topologyErrors'][number] & { text: string })[] } | null;
  lastError: MeshState['lastError'] | null;
  sidecars: SidecarStatus[];
}

export interface Controller {
  /** ws://host:port of the stream (what `meshc proxy --controller` takes). */
  readonly url: string;
  /** http://host:port, serving /status and /healthz. */
  readonly httpUrl: string;
  readonly reconciler: Reconciler;
  status(): ControllerStatus;
  stop(): Promise<void>;
}

export async function startController(options: ControllerOptions): Promise<Controller> {
  const log = createLogger('controller', options.logSink);
  const source = options.source ?? (options.dir ? new DirectoryConfigSource(options.dir) : undefined);
  if (!source) throw new Error('startController needs a policy directory (dir) or a config source');

  const ca = await CertificateAuthority.open({
    ...(options.stateDir ? { stateDir: options.stateDir } : {}),
    ...(options.leafLifetimeMs ? { leafLifetimeMs: options.leafLifetimeMs } : {}),
  });
  const distribution = new DistributionServer({ ca, log: log.child('stream'), ...(options.renewCheckMs ? { renewCheckMs: options.renewCheckMs } : {}) });
  const reconciler = new Reconciler({
    source,
    compiler: options.compiler ?? loadPolicyCompiler,
    log: log.child('reconcile'),
    onState: (state) => distribution.update({ ...(state.topology ? { topology: state.topology } : {}), ...(state.bundle ? { bundle: state.bundle } : {}) }),
    ...(options.signKey ? { signKey: options.signKey } : {}),
    ...(options.debounceMs !== undefined ? { debounceMs: options.debounceMs } : {}),
  });

  const status = (): ControllerStatus => {
    const s = reconciler.state();
    return {
      source: source.description,
      policy: {
        version: s.bundle?.version ?? null,
        lastGoodDigest: s.lastGoodDigest ?? null,
        currentDigest: s.currentDigest ?? null,
        current: s.currentDigest !== undefined && s.currentDigest === s.lastGoodDigest,
        generation: s.generation,
        diagnostics: s.diagnostics,
      },
      topology: s.topology || s.topologyErrors.length
        ? {
            services: s.topology ? Object.keys(s.topology.services).length : 0,
            instances: s.topology ? Object.keys(s.topology.instances).length : 0,
            errors: s.topologyErrors.map((e) => ({ ...e, text: formatTopologyError(e) })),
          }
        : null,
      lastError: s.lastError ?? null,
      sidecars: distribution.status(),
    };
  };

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && path === '/status') return sendJson(res, 200, status());
    if (req.method === 'GET' && path === '/healthz') return sendJson(res, 200, { ok: true });
    sendJson(res, 404, { error: 'NOT_FOUND', message: `no ${req.method} ${path}; try GET /status, GET /healthz or the stream at ${WIRE_PATH}` });
  });
  distribution.attach(server);
  const listen = options.listen ?? { host: '127.0.0.1', port: 15010 };
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const hostPort = `${listen.host}:${addr.port}`;
  log.info('controller listening', { stream: `ws://${hostPort}${WIRE_PATH}`, status: `http://${hostPort}/status`, source: source.description });
  reconciler.start();

  return {
    url: `ws://${hostPort}`,
    httpUrl: `http://${hostPort}`,
    reconciler,
    status,
    async stop() {
      await reconciler.stop();
      await distribution.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      log.info('controller stopped');
    },
  };
}

function sendJson(res: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body, null, 2);
  res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
