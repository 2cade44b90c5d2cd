// The distribution stream: pushes each sidecar's desired resources over a
// WebSocket and records what it acknowledges (protocol/wire.ts).
//
// In:  WebSocket upgrades on WIRE_PATH; new MeshState from the reconciler.
// Out: Update messages (only resources whose version differs from what the
//      sidecar holds or was last sent), per-sidecar status for /status.
//
// Per resource type the sidecar is sent a version once; a NACK is recorded and
// the version is not resent until the desired version changes (as xDS does).
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import type { WireBundle } from '../protocol/bundle.ts';
import { WIRE_PATH, WIRE_SUBPROTOCOL, decodeSidecarMessage, encode, type CertificatePayload, type Hello, type ResourceType, type Update } from '../protocol/wire.ts';
import { CertificateError, csrPublicKeyDigest, type CertificateAuthority, type IssuedCertificate } from './ca/authority.ts';
import { deriveResources, type DesiredResources, type VersionedResource } from './derive.ts';
import type { Logger } from './log.ts';
import type { MeshTopology } from './topology.ts';

/** Close codes (4000-4999 are the application's). */
export const CloseCode = {
  BadMessage: 4400,
  WrongIdentity: 4403,
  UnknownInstance: 4404,
  HelloTimeout: 4408,
  Replaced: 4409,
  Removed: 4410,
  ShuttingDown: 1001,
} as const;

/** Certificates go first (so mTLS works when endpoints arrive), the bundle last. */
const SEND_ORDER: ResourceType[] = ['certificate', 'endpoints', 'bundle'];
const HELLO_TIMEOUT_MS = 10_000;

export interface SidecarStatus {
  instance: string;
  service: string;
  version: string;
  connected: boolean;
  remote?: string;
  connectedAt?: string;
  disconnectedAt?: string;
  /** Versions the sidecar has acknowledged (or reported holding in its Hello). */
  acked: Partial<Record<ResourceType, string>>;
  /** Last version sent per resource and whether an ACK/NACK is still awaited. */
  sent: Partial<Record<ResourceType, { version: string; nonce: string; pending: boolean }>>;
  lastNack?: { resource: ResourceType; version: string; error: string; at: string };
  certificate?: { serial: string; notAfter: string; spiffeId: string };
}

interface Session {
  ws: WebSocket;
  instance: string;
  csrPem: string;
  status: SidecarStatus;
}

interface IssuedEntry {
  issued: IssuedCertificate;
  renewAt: number;
}

export interface DistributionOptions {
  ca: CertificateAuthority;
  log: Logger;
  /** How often to look for certificates due for renewal. */
  renewCheckMs?: number;
}

export interface DistributionInputs {
  topology?: MeshTopology;
  bundle?: VersionedResource<WireBundle>;
}

export class DistributionServer {
  private readonly options: DistributionOptions;
  private readonly log: Logger;
  private readonly wss: WebSocketServer;
  private readonly sessions = new Map<string, Session>();
  private readonly statuses = new Map<string, SidecarStatus>();
  private readonly certificates = new Map<string, IssuedEntry>();
  private inputs: DistributionInputs = {};
  private desired = new Map<string, DesiredResources>();
  private readonly renewTimer: NodeJS.Timeout;

  constructor(options: DistributionOptions) {
    this.options = options;
    this.log = options.log;
    this.wss = new WebSocketServer({
      noServer: true,
      handleProtocols: (protocols) => (protocols.has(WIRE_SUBPROTOCOL) ? WIRE_SUBPROTOCOL : false),
    });
    this.renewTimer = setInterval(() => void this.renewDue(), options.renewCheckMs ?? 30_000);
    this.renewTimer.unref();
  }

  /** Takes over WebSocket upgrades on WIRE_PATH of an HTTP server. */
  attach(server: Server): void {
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      const path = (req.url ?? '').split('?')[0];
      const offered = String(req.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim());
      if (path !== WIRE_PATH || !offered.includes(WIRE_SUBPROTOCOL)) {
        socket.end(`HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-type: text/plain\r\n\r\nthe stream is at ${WIRE_PATH} with subprotocol ${WIRE_SUBPROTOCOL}\n`);
        return;
      }
      this.wss.handleUpgrade(req, socket, head, (ws) => this.onConnection(ws, req));
    });
  }

  /** New inputs from the reconciler: recompute desired state and push what changed. */
  update(inputs: DistributionInputs): void {
    this.inputs = inputs;
    this.recompute();
    for (const [id, session] of this.sessions) {
      if (!inputs.topology?.instances[id]) {
        session.ws.close(CloseCode.Removed, `instance "${id}" was removed from the topology`);
        continue;
      }
      this.push(session);
    }
  }

  status(): SidecarStatus[] {
    return [...this.statuses.values()].sort((a, b) => a.instance.localeCompare(b.instance));
  }

  async close(): Promise<void> {
    clearInterval(this.renewTimer);
    for (const s of this.sessions.values()) s.ws.close(CloseCode.ShuttingDown, 'controller shutting down');
    for (const ws of this.wss.clients) ws.terminate();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }

  private recompute(): void {
    const certificates = new Map<string, VersionedResource<CertificatePayload>>();
    for (const [id, e] of this.certificates) certificates.set(id, { version: e.issued.serial, payload: e.issued.payload });
    this.desired = this.inputs.topology
      ? deriveResources({ topology: this.inputs.topology, certificates, ...(this.inputs.bundle ? { bundle: this.inputs.bundle } : {}) })
      : new Map();
  }

  private onConnection(ws: WebSocket, req: IncomingMessage): void {
    const remote = `${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? '?'}`;
    let session: Session | undefined;
    const helloTimer = setTimeout(() => ws.close(CloseCode.HelloTimeout, 'no hello within 10 s'), HELLO_TIMEOUT_MS);
    // Messages are handled one at a time, in order (the Hello needs an async CA call).
    let queue = Promise.resolve();
    ws.on('message', (data) => {
      queue = queue.then(async () => {
        let msg;
        try {
          msg = decodeSidecarMessage(data.toString());
        } catch (err) {
          ws.close(CloseCode.BadMessage, truncateReason(`bad message: ${(err as Error).message}`));
          return;
        }
        if (msg.type === 'hello') {
          clearTimeout(helloTimer);
          if (session) {
            ws.close(CloseCode.BadMessage, 'hello sent twice');
            return;
          }
          session = await this.onHello(ws, msg, remote);
          return;
        }
        if (!session) {
          ws.close(CloseCode.BadMessage, `${msg.type} before hello`);
          return;
        }
        const sent = session.status.sent[msg.resource];
        // A reply to anything but the latest update of that type is stale: ignore it.
        if (!sent || sent.nonce !== msg.nonce || sent.version !== msg.version) {
          this.log.debug('stale reply ignored', { instance: session.instance, resource: msg.resource, nonce: msg.nonce });
          return;
        }
        sent.pending = false;
        if (msg.type === 'ack') {
          session.status.acked[msg.resource] = msg.version;
          this.log.info('ack', { instance: session.instance, resource: msg.resource, version: msg.version });
        } else {
          session.status.lastNack = { resource: msg.resource, version: msg.version, error: msg.error, at: new Date().toISOString() };
          this.log.warn('nack: the sidecar refused an update and keeps its last good one', { instance: session.instance, resource: msg.resource, version: msg.version, error: msg.error });
        }
      });
    });
    ws.on('close', () => {
      clearTimeout(helloTimer);
      if (session && this.sessions.get(session.instance) === session) {
        this.sessions.delete(session.instance);
        session.status.connected = false;
        session.status.disconnectedAt = new Date().toISOString();
        this.log.info('sidecar disconnected', { instance: session.instance });
      }
    });
    ws.on('error', (err) => this.log.warn('stream socket error', { remote, error: err.message }));
  }

  private async onHello(ws: WebSocket, hello: Hello, remote: string): Promise<Session | undefined> {
    const id = hello.node?.instance;
    const instance = id ? this.inputs.topology?.instances[id] : undefined;
    if (!instance) {
      const reason = `unknown instance "${String(id)}": not in the topology`;
      this.log.warn('hello refused', { remote, reason });
      ws.close(CloseCode.UnknownInstance, truncateReason(reason));
      return undefined;
    }
    if (hello.node.service !== instance.service) {
      const reason = `instance "${instance.id}" belongs to service "${instance.service}", not "${hello.node.service}"`;
      ws.close(CloseCode.WrongIdentity, truncateReason(reason));
      return undefined;
    }
    try {
      await this.ensureCertificate(instance.id, hello.csrPem, instance.spiffeId);
    } catch (err) {
      const reason = err instanceof CertificateError ? `${err.code}: ${err.message}` : `certificate: ${(err as Error).message}`;
      this.log.warn('hello refused', { instance: instance.id, reason });
      ws.close(CloseCode.BadMessage, truncateReason(reason));
      return undefined;
    }
    if (ws.readyState !== ws.OPEN) return undefined;

    const previous = this.sessions.get(instance.id);
    if (previous) previous.ws.close(CloseCode.Replaced, 'replaced by a newer connection from the same instance');

    const have = hello.have ?? {};
    const status: SidecarStatus = {
      instance: instance.id,
      service: instance.service,
      version: instance.version,
      connected: true,
      remote,
      connectedAt: new Date().toISOString(),
      acked: { ...have },
      sent: {},
    };
    // What the sidecar already holds counts as sent and acknowledged: resumption.
    for (const r of SEND_ORDER) {
      const v = have[r];
      if (v) status.sent[r] = { version: v, nonce: '', pending: false };
    }
    const lastNack = this.statuses.get(instance.id)?.lastNack;
    if (lastNack) status.lastNack = lastNack;
    const session: Session = { ws, instance: instance.id, csrPem: hello.csrPem, status };
    this.sessions.set(instance.id, session);
    this.statuses.set(instance.id, status);
    this.log.info('sidecar connected', { instance: instance.id, remote, have });
    this.push(session);
    return session;
  }

  /** Reuses the current certificate when the CSR is for the same key and it is not due for renewal. */
  private async ensureCertificate(instance: string, csrPem: string, spiffeId: string): Promise<void> {
    const existing = this.certificates.get(instance);
    if (
      existing &&
      existing.issued.payload.spiffeId === spiffeId &&
      existing.issued.publicKeyDigest === csrPublicKeyDigest(csrPem) &&
      Date.now() < existing.renewAt
    ) {
      return;
    }
    await this.issue(instance, csrPem, spiffeId);
  }

  private async issue(instance: string, csrPem: string, spiffeId: string): Promise<void> {
    const issuedAt = Date.now();
    const issued = await this.options.ca.issue(csrPem, { spiffeId, instance }, new Date(issuedAt));
    const lifetime = issued.notAfter.getTime() - issuedAt;
    this.certificates.set(instance, { issued, renewAt: issuedAt + (lifetime * 2) / 3 });
    this.log.info('certificate issued', { instance, spiffeId, serial: issued.serial, notAfter: issued.payload.notAfter });
    this.recompute();
  }

  /** Re-issues (same key, new validity) every connected sidecar's certificate past 2/3 of its lifetime. */
  private async renewDue(): Promise<void> {
    const now = Date.now();
    for (const session of [...this.sessions.values()]) {
      const entry = this.certificates.get(session.instance);
      const instance = this.inputs.topology?.instances[session.instance];
      if (!entry || !instance || now < entry.renewAt) continue;
      try {
        await this.issue(session.instance, session.csrPem, instance.spiffeId);
        this.push(session);
      } catch (err) {
        this.log.error('certificate renewal failed; will retry', { instance: session.instance, error: (err as Error).message });
      }
    }
  }

  private push(session: Session): void {
    const desired = this.desired.get(session.instance);
    if (!desired || session.ws.readyState !== session.ws.OPEN) return;
    const cert = this.certificates.get(session.instance);
    if (cert) session.status.certificate = { serial: cert.issued.serial, notAfter: cert.issued.payload.notAfter, spiffeId: cert.issued.payload.spiffeId };
    for (const resource of SEND_ORDER) {
      const want = desired[resource];
      if (!want || session.status.sent[resource]?.version === want.version) continue;
      const nonce = randomBytes(6).toString('hex');
      const update = { type: 'update', resource, version: want.version, nonce, payload: want.payload } as Update;
      session.ws.send(encode(update));
      session.status.sent[resource] = { version: want.version, nonce, pending: true };
      this.log.info('update sent', { instance: session.instance, resource, version: want.version, nonce });
    }
  }
}

/** WebSocket close reasons are limited to 123 bytes. */
function truncateReason(reason: string): string {
  const bytes = Buffer.from(reason);
  return bytes.length <= 123 ? reason : bytes.subarray(0, 120).toString('utf8') + '...';
}
