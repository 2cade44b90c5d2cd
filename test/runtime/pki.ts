// A throwaway mesh CA for runtime tests: ECDSA P-256 via @peculiar/x509 and
// WebCrypto. Leaf certificates carry the SPIFFE ID as their URI SAN, like the
// controller's CA issues them.
//
// In:  a trust domain and workload names. Out: PEM certificates, PKCS#8 keys
//      and the CertificatePayload a Sidecar takes.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';
import type { CertificatePayload } from '../../protocol/wire.ts';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

type KeyPair = webcrypto.CryptoKeyPair;

const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export interface TestCa {
  certPem: string;
  keys: KeyPair;
  cert: x509.X509Certificate;
}

export interface IssuedCert {
  spiffeId: string;
  certPem: string;
  keyPem: string;
  payload: CertificatePayload;
}

let serial = 1;

export async function createCa(name = 'meshc test CA'): Promise<TestCa> {
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as KeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: (serial++).toString(16).padStart(2, '0'),
    name: `CN=${name}`,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 24 * 3600_000),
    keys,
    signingAlgorithm: alg,
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true)],
  });
  return { certPem: cert.toString('pem'), keys, cert };
}

export function spiffeIdFor(name: string, trustDomain = 'mesh.local'): string {
  return `spiffe://${trustDomain}/ns/default/sa/${name}`;
}

/** Issues a leaf for `spiffe://mesh.local/ns/default/sa/<name>` (or a given SPIFFE ID). */
export async function issueLeaf(ca: TestCa, name: string, spiffeId = spiffeIdFor(name)): Promise<IssuedCert> {
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as KeyPair;
  const notAfter = new Date(Date.now() + 3600_000);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: (serial++).toString(16).padStart(2, '0'),
    subject: `CN=${name}`,
    issuer: ca.cert.subject,
    notBefore: new Date(Date.now() - 60_000),
    notAfter,
    signingKey: ca.keys.privateKey,
    publicKey: keys.publicKey,
    signingAlgorithm: alg,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: spiffeId }]),
    ],
  });
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  const keyPem = x509.PemConverter.encode(pkcs8, 'PRIVATE KEY');
  const certPem = cert.toString('pem');
  return {
    spiffeId,
    certPem,
    keyPem,
    payload: { spiffeId, certChainPem: certPem, caBundlePem: ca.certPem, notAfter: notAfter.toISOString() },
  };
}
