// PLACEHOLDER (being written): the sidecar's side of the controller stream.
// import type { Sidecar } from './sidecar.ts';
type Sidecar = unknown;

export interface ControlClientOptions {
  /** ws://host:port of the controller. */
  url: string;
  /** Directory where the last good configuration and certificate are persisted. */
  stateDir: string;
}

export interface ControlClient {
  close(): Promise<void>;
}

export function startControlClient(_sidecar: Sidecar, _options: ControlClientOptions): ControlClient {
  throw new Error('control client not implemented yet');
}
