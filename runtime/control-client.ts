// The sidecar's side of the controller stream (protocol/wire.ts).
//
// In:  a sidecar to configure, the controller URL, a state directory and the
//      sidecar's NodeInfo.
// Out: the sidecar kept up to date: Updates are applied in order and answered
//      with ACK or NACK (with the error); the last good bundle, endpoints and
//      certificate are persisted so a restart while the controller is down still
//      serves; the private key is generated once, kept in the state dir, and only
//      its CSR leaves the process. Reconnects with capped exponential backoff + jitter.
import process from 'node:process';
import { generateKeyPairSync, createPrivateKey, createPublicKey, webcrypto } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
// @peculiar/x509 resolves its algorithms through tsyringe, which needs the Reflect metadata polyfill loaded first.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import WebSocket from 'ws';
import { fromWire, type WireBundle } from '../protocol/bundle.ts';
import {
  WIRE_PATH,
  WIRE_SUBPROTOCOL,
  decodeControllerMessage,
  encode,
  type CertificatePayload,
  type EndpointsPayload,
  type NodeInfo,
  type ResourceType,
  type Update,
} from '../protocol/wire.ts';
import type { Bundle } from '../protocol/bundle.ts';

x509.cryptoProvider.set(webcrypto as Parameters<typeof x509.cryptoProvider.set>[1]);

/** What the control client needs from a sidecar (runtime/sidecar.ts's Sidecar provides it). */
export interface ConfigurableSidecar {
  applyBundle(bundle: Bundle): Promise<void>;
  applyEndpoints(payload: EndpointsPayload): void;
  applyCertificate(cert: CertificatePayload, keyPem: string): void;
}

export interface ControlClientOptions {
  /** ws://host:port of the controller (the stream path is added when the URL has none). */
  url: string;
  /** Directory where the key and the last good configuration and certificate are persisted. */
  stateDir: string;
  node: NodeInfo;
  /** Structured log sink; defaults to JSON lines on stderr. */
  log?: (entry: Record<string, unknown>) => void;
  /** Upper bound of the reconnect backoff. */
  maxBackoffMs?: number;
}

export interface ControlClientStatus {
  connected: boolean;
  /** Versions currently applied to the sidecar. */
  have: Partial<Record<ResourceType, string>>;
  lastError?: string;
}

export interface ControlClient {
  /** Resolves once the persisted state (if any) has been applied to the sidecar. */
  readonly restored: Promise<void>;
  status(): ControlClientStatus;
  close(): Promise<void>;
}

const KEY_FILE = 'key.pem';
const RESOURCE_FILES: Record<ResourceType, string> = { certificate: 'certificate.json', endpoints: 'endpoints.json', bundle: 'bundle.json' };
/** Applied from disk in this order, the same order the controller sends. */
const RESTORE_ORDER: ResourceType[] = ['certificate', 'endpoints', 'bundle'];
const BACKOFF_BASE_MS = 200;
/** A connection that lived this long resets the backoff (a controller that closes at once must not cause a tight loop). */
const STABLE_CONNECTION_MS = 2_000;

interface Persisted<P> {
  version: string;
  payload: P;
}

export function startControlClient(sidecar: ConfigurableSidecar, options: ControlClientOptions): ControlClient {
  const log = (level: string, msg: string, fields: Record<string, unknown> = {}): void => {
    const entry = { ts: new Date().toISOString(), level, component: 'control-client', instance: options.node.instance, msg, ...fields };
    if (options.log) options.log(entry);
    else process.stderr.write(JSON.stringify(entry) + '\n');
  };
  const maxBackoff = options.maxBackoffMs ?? 5_000;
  const url = streamUrl(options.url);
  const have: Partial<Record<ResourceType, string>> = {};
  let ws: WebSocket | undefined;
  let connected = false;
  let closed = false;
  let attempt = 0;
  let retryTimer: NodeJS.Timeout | undefined;
  let lastError: string | undefined;
  let keyPem = '';
  let csrPem = '';

  const restored = (async () => {
    await mkdir(options.stateDir, { recursive: true, mode: 0o700 });
    keyPem = await loadOrCreateKey(options.stateDir);
    csrPem = await createCsr(keyPem, options.node.instance);
    for (const resource of RESTORE_ORDER) {
      const saved = await readPersisted(options.stateDir, resource);
      if (!saved) continue;
      try {
        await apply(resource, saved.payload);
        have[resource] = saved.version;
        log('info', 'restored from state dir', { resource, version: saved.version });
      } catch (err) {
        log('warn', 'persisted resource does not apply; waiting for the controller', { resource, version: saved.version, error: (err as Error).message });
      }
    }
  })();
  restored.then(
    () => connect(),
    (err: Error) => {
      lastError = err.message;
      log('error', 'cannot prepare the state dir or key; the control client is not running', { stateDir: options.stateDir, error: err.message });
    },
  );

  async function apply(resource: ResourceType, payload: unknown): Promise<void> {
    if (resource === 'bundle') await sidecar.applyBundle(fromWire(payload as WireBundle));
    else if (resource === 'endpoints') sidecar.applyEndpoints(payload as EndpointsPayload);
    else sidecar.applyCertificate(payload as CertificatePayload, keyPem);
  }

  function connect(): void {
    if (closed) return;
    const socket = new WebSocket(url, WIRE_SUBPROTOCOL, { handshakeTimeout: 5_000 });
    ws = socket;
    let openedAt = 0;
    // Updates are applied strictly one after another, in arrival order.
    let queue = Promise.resolve();
    socket.on('open', () => {
      openedAt = Date.now();
      connected = true;
      socket.send(encode({ type: 'hello', node: options.node, have: { ...have }, csrPem }));
      log('info', 'connected to the controller', { url, have });
    });
    socket.on('message', (data) => {
      queue = queue.then(() => onUpdate(socket, data.toString()));
    });
    socket.on('close', (code, reason) => {
      connected = false;
      if (ws === socket) ws = undefined;
      if (closed) return;
      if (openedAt && Date.now() - openedAt >= STABLE_CONNECTION_MS) attempt = 0;
      const text = reason.toString();
      if (text) lastError = `controller closed the stream (${code}): ${text}`;
      const delay = backoff(attempt++, maxBackoff);
      log('warn', 'stream closed; reconnecting', { code, reason: text || undefined, retryInMs: delay });
      retryTimer = setTimeout(connect, delay);
    });
    socket.on('error', (err) => {
      lastError = err.message;
      log('debug', 'stream error', { error: err.message });
    });
  }

  async function onUpdate(socket: WebSocket, text: string): Promise<void> {
    let update: Update;
    try {
      update = decodeControllerMessage(text);
    } catch (err) {
      log('warn', 'ignoring an undecodable message', { error: (err as Error).message });
      return;
    }
    const { resource, version, nonce } = update;
    try {
      await apply(resource, update.payload);
    } catch (err) {
      const error = (err as Error & { code?: string }).code ? `${(err as Error & { code: string }).code}: ${(err as Error).message}` : (err as Error).message;
      log('warn', 'update refused; keeping the last good one', { resource, version, error });
      send(socket, { type: 'nack', resource, version, nonce, error });
      return;
    }
    have[resource] = version;
    try {
      await writePersisted(options.stateDir, resource, { version, payload: update.payload });
    } catch (err) {
      log('error', 'applied but could not persist; a restart without the controller would use older state', { resource, version, error: (err as Error).message });
    }
    log('info', 'update applied', { resource, version });
    send(socket, { type: 'ack', resource, version, nonce });
  }

  function send(socket: WebSocket, msg: Parameters<typeof encode>[0]): void {
    if (socket.readyState === WebSocket.OPEN) socket.send(encode(msg));
  }

  return {
    restored,
    status: () => ({ connected, have: { ...have }, ...(lastError ? { lastError } : {}) }),
    async close() {
      closed = true;
      if (retryTimer) clearTimeout(retryTimer);
      await restored.catch(() => undefined);
      const socket = ws;
      if (!socket || socket.readyState === WebSocket.CLOSED) return;
      await new Promise<void>((resolve) => {
        socket.once('close', () => resolve());
        if (socket.readyState === WebSocket.CONNECTING) socket.terminate();
        else socket.close(1000, 'sidecar shutting down');
        setTimeout(() => {
          socket.terminate();
          resolve();
        }, 1_000).unref();
      });
    },
  };
}

/** Full jitter: uniform in [0, min(cap, base * 2^attempt)], at least 50 ms. */
function backoff(attempt: number, cap: number): number {
  const ceiling = Math.min(cap, BACKOFF_BASE_MS * 2 ** Math.min(attempt, 16));
  return Math.max(50, Math.round(Math.random() * ceiling));
}

function streamUrl(base: string): string {
  const u = new URL(base);
  if (u.pathname === '' || u.pathname === '/') u.pathname = WIRE_PATH;
  return u.toString();
}

async function loadOrCreateKey(stateDir: string): Promise<string> {
  const path = join(stateDir, KEY_FILE);
  try {
    const pem = await readFile(path, 'utf8');
    createPrivateKey(pem); // fail here, with the path, rather than at the TLS handshake
    return pem;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`cannot use the key in ${path}: ${(err as Error).message}`);
  }
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  await writeAtomic(path, pem, 0o600);
  return pem;
}

/** A PKCS#10 request for our key. The controller ignores the subject: identity comes from the topology. */
async function createCsr(keyPem: string, instance: string): Promise<string> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256' };
  const privateKey = await webcrypto.subtle.importKey('pkcs8', createPrivateKey(keyPem).export({ type: 'pkcs8', format: 'der' }), alg, false, ['sign']);
  const publicKey = await webcrypto.subtle.importKey('spki', createPublicKey(keyPem).export({ type: 'spki', format: 'der' }), alg, true, ['verify']);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${instance}`,
    keys: { privateKey, publicKey },
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
  });
  return csr.toString('pem');
}

async function readPersisted(stateDir: string, resource: ResourceType): Promise<Persisted<unknown> | undefined> {
  try {
    const value = JSON.parse(await readFile(join(stateDir, RESOURCE_FILES[resource]), 'utf8')) as Persisted<unknown>;
    return typeof value.version === 'string' && value.payload !== undefined ? value : undefined;
  } catch {
    return undefined;
  }
}

async function writePersisted(stateDir: string, resource: ResourceType, value: Persisted<unknown>): Promise<void> {
  await writeAtomic(join(stateDir, RESOURCE_FILES[resource]), JSON.stringify(value), 0o600);
}

/** Write to a temp file and rename, so a crash never leaves half a file behind. */
async function writeAtomic(path: string, text: string, mode: number): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, text, { mode });
  await rename(tmp, path);
}
