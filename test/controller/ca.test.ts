// The certificate authority: real keys, real CSRs, real TLS handshakes.
import { describe, expect, it } from 'vitest';
import { X509Certificate, generateKeyPairSync, createPrivateKey, createPublicKey, webcrypto } from 'node:crypto';
import { connect, createServer, type TLSSocket } from 'node:tls';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { CertificateAuthority, CertificateError } from '../../controller/ca/authority.ts';
import { tempDir } from './helpers.ts';

async function csrFor(opts: { curve?: 'P-256' | 'P-384'; san?: string } = {}): Promise<{ csrPem: string; keyPem: string }> {
  const namedCurve = opts.curve ?? 'P-256';
  const { privateKey } = generateKeyPairSync('ec', { namedCurve });
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const alg = { name: 'ECDSA', namedCurve };
  const keys = {
    privateKey: await webcrypto.subtle.importKey('pkcs8', createPrivateKey(keyPem).export({ type: 'pkcs8', format: 'der' }), alg, false, ['sign']),
    publicKey: await webcrypto.subtle.importKey('spki', createPublicKey(keyPem).export({ type: 'spki', format: 'der' }), alg, true, ['verify']),
  };
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: 'CN=whoever',
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: opts.san ? [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: opts.san }])] : [],
  });
  return { csrPem: csr.toString('pem'), keyPem };
}

describe('certificate authority', () => {
  it('issues a P-256 leaf that verifies against the root, with the SPIFFE URI SAN, usages and lifetime', async () => {
    const ca = await CertificateAuthority.open({ leafLifetimeMs: 3600_000 });
    const { csrPem } = await csrFor();
    const now = new Date();
    const issued = await ca.issue(csrPem, { spiffeId: 'spiffe://mesh.local/ns/default/sa/catalog', instance: 'catalog-v1-0' }, now);
    const leaf = new X509Certificate(issued.payload.certChainPem);
    const root = new X509Certificate(issued.payload.caBundlePem);
    expect(leaf.verify(root.publicKey)).toBe(true);
    expect(leaf.checkIssued(root)).toBe(true);
    expect(root.ca).toBe(true);
    expect(leaf.ca).toBe(false);
    expect(leaf.subjectAltName).toBe('URI:spiffe://mesh.local/ns/default/sa/catalog');
    expect(leaf.keyUsage).toEqual(expect.arrayContaining(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']));
    expect(leaf.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(new Date(leaf.validTo).getTime()).toBeCloseTo(now.getTime() + 3600_000, -4);
    expect(issued.payload.notAfter).toBe(issued.notAfter.toISOString());
    expect(leaf.serialNumber.toLowerCase()).toBe(issued.serial.toLowerCase());
  });

  it('ignores the identity a CSR asks for and uses the one it is given', async () => {
    const ca = await CertificateAuthority.open();
    const { csrPem } = await csrFor({ san: 'spiffe://mesh.local/ns/kube-system/sa/admin' });
    const issued = await ca.issue(csrPem, { spiffeId: 'spiffe://mesh.local/ns/default/sa/frontend', instance: 'frontend-0' });
    expect(new X509Certificate(issued.payload.certChainPem).subjectAltName).toBe('URI:spiffe://mesh.local/ns/default/sa/frontend');
  });

  it('refuses CSRs that are not P-256, malformed or tampered with', async () => {
    const ca = await CertificateAuthority.open();
    const id = { spiffeId: 'spiffe://mesh.local/ns/default/sa/x', instance: 'x' };
    await expect(ca.issue((await csrFor({ curve: 'P-384' })).csrPem, id)).rejects.toMatchObject({ code: 'CSR_KEY_TYPE' });
    await expect(ca.issue('not a csr', id)).rejects.toBeInstanceOf(CertificateError);
    // Flip the last byte of the signature (the CSR's last byte): the proof of possession fails.
    const der = new Uint8Array(new x509.Pkcs10CertificateRequest((await csrFor()).csrPem).rawData);
    der[der.length - 1] = (der[der.length - 1] ?? 0) ^ 0x01;
    const tampered = x509.PemConverter.encode(der.buffer, 'CERTIFICATE REQUEST');
    await expect(ca.issue(tampered, id)).rejects.toMatchObject({ code: 'CSR_SIGNATURE' });
  });

  it('persists the root in the state dir and reuses it', async () => {
    const dir = await tempDir('ca');
    try {
      const first = await CertificateAuthority.open({ stateDir: dir.path });
      const second = await CertificateAuthority.open({ stateDir: dir.path });
      expect(second.rootPem).toBe(first.rootPem);
      const issued = await second.issue((await csrFor()).csrPem, { spiffeId: 'spiffe://mesh.local/ns/default/sa/a', instance: 'a' });
      expect(new X509Certificate(issued.payload.certChainPem).verify(new X509Certificate(first.rootPem).publicKey)).toBe(true);
    } finally {
      await dir.cleanup();
    }
  });

  it('issues certificates two peers can complete a mutual TLS handshake with', async () => {
    const ca = await CertificateAuthority.open();
    const server = await csrFor();
    const client = await csrFor();
    const serverCert = await ca.issue(server.csrPem, { spiffeId: 'spiffe://mesh.local/ns/default/sa/ratings', instance: 'ratings-0' });
    const clientCert = await ca.issue(client.csrPem, { spiffeId: 'spiffe://mesh.local/ns/default/sa/catalog', instance: 'catalog-0' });
    const srv = createServer({ key: server.keyPem, cert: serverCert.payload.certChainPem, ca: serverCert.payload.caBundlePem, requestCert: true, rejectUnauthorized: true }, (s) => {
      const peer = (s as TLSSocket).getPeerX509Certificate();
      s.end(peer?.subjectAltName ?? 'none');
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    const port = (srv.address() as { port: number }).port;
    try {
      const seen = await new Promise<{ peerSan: string; reply: string }>((resolve, reject) => {
        const sock = connect({
          host: '127.0.0.1',
          port,
          key: client.keyPem,
          cert: clientCert.payload.certChainPem,
          ca: clientCert.payload.caBundlePem,
          // SPIFFE identities are URIs, not host names: check the URI SAN instead.
          checkServerIdentity: () => undefined,
        });
        let reply = '';
        sock.on('data', (d) => (reply += d.toString()));
        sock.on('end', () => resolve({ peerSan: sock.getPeerX509Certificate()?.subjectAltName ?? '', reply }));
        sock.on('error', reject);
      });
      expect(seen.peerSan).toBe('URI:spiffe://mesh.local/ns/default/sa/ratings');
      expect(seen.reply).toBe('URI:spiffe://mesh.local/ns/default/sa/catalog');
    } finally {
      srv.close();
    }
  });
});
