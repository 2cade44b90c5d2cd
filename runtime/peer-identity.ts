// Mesh identity of a TLS peer: the SPIFFE ID in a certificate's URI SAN, and
// the check an outbound mTLS connection makes on the server it reached.
//
// In:  Node's `subjectaltname` string; the SPIFFE ID an endpoint must present.
// Out: the ID; a `checkServerIdentity` function for tls.connect.
import type { PeerCertificate } from 'node:tls';

/** The URI SAN (SPIFFE ID) of a certificate, from Node's `subjectaltname` string. */
export function uriSan(subjectaltname: string | undefined): string {
  if (!subjectaltname) return '';
  for (const part of subjectaltname.split(', ')) if (part.startsWith('URI:')) return part.slice(4);
  return '';
}

/**
 * For tls.connect: Node verifies the chain against the mesh CA; identity is the
 * SPIFFE URI SAN, not the host name (endpoints are addressed by IP). A mismatch
 * fails the connection with code MESH_IDENTITY_MISMATCH.
 */
export function expectSpiffeId(expected: string, instance: string): (host: string, cert: PeerCertificate) => Error | undefined {
  return (_host, cert) => {
    const got = uriSan(cert.subjectaltname);
    if (got === expected) return undefined;
    const err = new Error(`upstream ${instance} presented ${got || 'no SPIFFE ID'}, expected ${expected}`) as NodeJS.ErrnoException;
    err.code = 'MESH_IDENTITY_MISMATCH';
    return err;
  };
}
