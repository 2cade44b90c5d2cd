// Small listener helpers shared by the sidecar and the standalone proxy.
//
// In:  a net/tls/http server and an Address. Out: a bound server, its address.
import type { AddressInfo, Server } from 'node:net';

export interface Address {
  host: string;
  /** 0 = ephemeral */
  port: number;
}

export function listen(server: Server, addr: Address): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(addr.port, addr.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** The address a server actually bound (the real port when 0 was asked for). */
export function bound(server: Server): Address {
  const a = server.address() as AddressInfo | null;
  return a ? { host: a.address, port: a.port } : { host: '', port: 0 };
}

export function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}
