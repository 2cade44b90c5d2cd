// The mesh certificate authority: an ECDSA P-256 root that signs sidecar CSRs.
//
// In:  a state directory (root key + cert are created there on first start and
//      reused after), a sidecar's PEM CSR and the identity the topology assigns.
// Out: a leaf certificate for the CSR's key with the URI SAN
//      spiffe://<trustDomain>/ns/<ns>/sa/<sa>, as a wire CertificatePayload.
//
// Why ECDSA P-256 with webcrypto + @peculiar/x509 rather than node-forge: forge
// signs only RSA in pure JS (~34 ms a certificate) and P-256 handshakes are
// ~1.7x cheaper than RSA-2048 on the sidecars' hot path (docs/controller.md).
import { webcrypto, createHash } from 'node:crypto';
import { mkdir, readFile, writeFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
// @peculiar/x509 resolves its algorithms through tsyringe, which needs the Reflect metadata polyfill loaded first.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import type { CertificatePayload } from '../../protocol/wire.ts';
import { CodedError } from '../../protocol/errors.ts';

x509.cryptoProvider.set(webcrypto as Parameters<typeof x509.cryptoProvider.set>[1]);
type CryptoKey = webcrypto.CryptoKey;

const EC_P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGNING = { name: 'ECDSA', hash: 'SHA-256' } as const;
const ROOT_LIFETIME_MS = 10 * 365 * 24 * 3600_000;
/** Leaves are valid from a little before issuance, so a peer's slightly slow clock still accepts them. */
const CLOCK_SKEW_MS = 5 * 60_000;
export const DEFAULT_LEAF_LIFETIME_MS = 24 * 3600_000;
const ROOT_KEY_FILE = 'root-key.pem';
const ROOT_CERT_FILE = 'root-cert.pem';

export class CertificateError extends CodedError {}

export interface LeafIdentity {
  spiffeId: string;
  /** Goes in the subject CN, for humans reading the certificate. */
  instance: string;
}

export interface IssuedCertificate {
  payload: CertificatePayload;
  /** Hex serial number: also the certificate's resource version on the stream. */
  serial: string;
  notBefore: Date;
  notAfter: Date;
  /** sha256 of the leaf's SubjectPublicKeyInfo: tells whether a later CSR is for the same key. */
  publicKeyDigest: string;
}

export class CertificateAuthority {
  readonly rootPem: string;
  readonly leafLifetimeMs: number;
  private readonly rootCert: x509.X509Certificate;
  private readonly rootKey: CryptoKey;

  private constructor(rootCert: x509.X509Certificate, rootKey: CryptoKey, leafLifetimeMs: number) {
    this.rootCert = rootCert;
    this.rootKey = rootKey;
    this.rootPem = rootCert.toString('pem');
    this.leafLifetimeMs = leafLifetimeMs;
  }

  /**
   * Loads the root from `<stateDir>/ca/` or creates it there. Without a state
   * dir the root lives only in memory (tests, throwaway meshes).
   */
  static async open(options: { stateDir?: string; leafLifetimeMs?: number } = {}): Promise<CertificateAuthority> {
    const lifetime = options.leafLifetimeMs ?? DEFAULT_LEAF_LIFETIME_MS;
    const dir = options.stateDir ? join(options.stateDir, 'ca') : undefined;
    if (dir) {
      const loaded = await loadRoot(dir);
      if (loaded) return new CertificateAuthority(loaded.cert, loaded.key, lifetime);
    }
    const keys = (await webcrypto.subtle.generateKey(EC_P256, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    const now = Date.now();
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      name: 'CN=meshc root CA, O=meshc',
      keys,
      signingAlgorithm: SIGNING,
      notBefore: new Date(now - CLOCK_SKEW_MS),
      notAfter: new Date(now + ROOT_LIFETIME_MS),
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    if (dir) {
      const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
      await mkdir(dir, { recursive: true, mode: 0o700 });
      await writeAtomic(join(dir, ROOT_KEY_FILE), x509.PemConverter.encode(pkcs8, 'PRIVATE KEY'), 0o600);
      await writeAtomic(join(dir, ROOT_CERT_FILE), cert.toString('pem') + '\n', 0o644);
    }
    return new CertificateAuthority(cert, keys.privateKey, lifetime);
  }

  /**
   * Signs a CSR after checking its signature (proof the sidecar holds the key)
   * and key type. The identity comes from the caller (the topology), never from
   * what the CSR asks for.
   */
  async issue(csrPem: string, identity: LeafIdentity, now: Date = new Date()): Promise<IssuedCertificate> {
    let csr: x509.Pkcs10CertificateRequest;
    try {
      csr = new x509.Pkcs10CertificateRequest(csrPem);
    } catch (err) {
      throw new CertificateError('CSR_INVALID', `the CSR is not a PEM PKCS#10 request: ${(err as Error).message}`);
    }
    const alg = csr.publicKey.algorithm as webcrypto.EcKeyAlgorithm;
    if (alg.name !== 'ECDSA' || alg.namedCurve !== 'P-256') {
      throw new CertificateError('CSR_KEY_TYPE', `the CSR key is ${alg.name}${alg.namedCurve ? ' ' + alg.namedCurve : ''}; the mesh issues only ECDSA P-256 leaves`);
    }
    if (!(await csr.verify())) throw new CertificateError('CSR_SIGNATURE', 'the CSR signature does not verify: the requester does not hold the key');

    const notBefore = new Date(now.getTime() - CLOCK_SKEW_MS);
    const notAfter = new Date(now.getTime() + this.leafLifetimeMs);
    const leaf = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerial(),
      subject: `CN=${identity.instance}`,
      issuer: this.rootCert.subject,
      notBefore,
      notAfter,
      signingKey: this.rootKey,
      publicKey: csr.publicKey,
      signingAlgorithm: SIGNING,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
        // SPIFFE: the URI SAN is the identity; the subject carries nothing the mesh trusts.
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: identity.spiffeId }], true),
        await x509.SubjectKeyIdentifierExtension.create(csr.publicKey),
        await x509.AuthorityKeyIdentifierExtension.create(this.rootCert.publicKey),
      ],
    });
    const leafPem = leaf.toString('pem');
    return {
      serial: leaf.serialNumber,
      notBefore,
      notAfter,
      publicKeyDigest: publicKeyDigest(csr.publicKey.rawData),
      payload: {
        spiffeId: identity.spiffeId,
        certChainPem: leafPem + '\n',
        caBundlePem: this.rootPem + '\n',
        notAfter: notAfter.toISOString(),
      },
    };
  }
}

/** sha256 hex of a SubjectPublicKeyInfo (DER). */
export function publicKeyDigest(spki: ArrayBuffer): string {
  return createHash('sha256').update(new Uint8Array(spki)).digest('hex');
}

/** sha256 of the public key inside a PEM CSR, or undefined when it does not parse. */
export function csrPublicKeyDigest(csrPem: string): string | undefined {
  try {
    return publicKeyDigest(new x509.Pkcs10CertificateRequest(csrPem).publicKey.rawData);
  } catch {
    return undefined;
  }
}

function randomSerial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0] ?? 0) & 0x7f; // positive INTEGER
  return Buffer.from(bytes).toString('hex');
}

async function loadRoot(dir: string): Promise<{ cert: x509.X509Certificate; key: CryptoKey } | undefined> {
  let keyPem: string;
  let certPem: string;
  try {
    keyPem = await readFile(join(dir, ROOT_KEY_FILE), 'utf8');
    certPem = await readFile(join(dir, ROOT_CERT_FILE), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    const key = await webcrypto.subtle.importKey('pkcs8', x509.PemConverter.decodeFirst(keyPem), EC_P256, false, ['sign']);
    return { cert: new x509.X509Certificate(certPem), key };
  } catch (err) {
    throw new CertificateError('CA_STATE_CORRUPT', `cannot load the CA root from ${dir}: ${(err as Error).message}; move the directory away to create a new root`);
  }
}

async function writeAtomic(path: string, text: string, mode: number): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, text, { mode });
  await rename(tmp, path);
}
