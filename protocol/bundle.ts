// The bundle: what `meshc build` writes and what sidecars load.
//
// In:  compiled proxy-wasm modules plus their metadata.
// Out: a directory (manifest.json, one .wasm per policy, optional manifest.sig)
//      or the same content as a JSON-safe object for the controller stream.
//
// Shared by the compiler (writes), the controller (writes and ships) and the
// sidecar (verifies and loads). Nothing here compiles or runs Wasm.
import { Buffer } from 'node:buffer';
import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ServiceTraffic } from './traffic.ts';
import { CodedError } from './errors.ts';

export const BUNDLE_FORMAT = 1;
export const PROXY_WASM_ABI = 'proxy_abi_version_0_2_1';
export const MANIFEST_FILE = 'manifest.json';
export const SIGNATURE_FILE = 'manifest.sig';

/** A source span, 1-based lines and columns, end exclusive. */
export interface SourceSpan {
  file: string;
  line: number;
  col: number;
  endLine: number;
  endCol: number;
}

/**
 * What the host does when a filter traps (or runs out of fuel or memory):
 * closed answers 503 while the filter is broken, open bypasses it, reload
 * fails the request that trapped and gives later requests a fresh instance.
 */
export type FailurePolicy = 'closed' | 'open' | 'reload';

export interface BundleFilter {
  /** Unique name in the bundle, e.g. the policy's service name. */
  name: string;
  /** File name of the module inside the bundle. */
  file: string;
  /** Hex sha256 of the module bytes. */
  sha256: string;
  size: number;
  /** The destination service this filter governs, or "*" for every service. */
  service: string;
  rootId: string;
  /** Plugin configuration handed to proxy_on_configure. */
  configuration: string;
  failurePolicy: FailurePolicy;
  source: { path: string; sha256: string };
  /** Rule id -> where the rule is written. */
  rules: Record<string, SourceSpan>;
  /** Dry-run: the host logs and counts the filter's local responses but does not send them. */
  dryRun?: boolean;
  /** Resource limits for this filter's instances; the sidecar's defaults apply to what is left out. */
  limits?: { memoryMaxBytes?: number; fuelPerCallback?: number };
  /** The router's policy for this filter's service (timeouts, retries, load balancing, limits). */
  traffic?: ServiceTraffic;
}

export interface BundleManifest {
  format: typeof BUNDLE_FORMAT;
  abiVersion: typeof PROXY_WASM_ABI;
  compiler: { name: string; version: string };
  /** Filters in chain order. */
  filters: BundleFilter[];
}

/** A bundle in memory. `signature` is base64 Ed25519 over the exact manifest bytes. */
export interface Bundle {
  manifestBytes: Uint8Array;
  manifest: BundleManifest;
  modules: Map<string, Uint8Array>;
  signature?: string;
}

/** JSON-safe form for the controller stream. */
export interface WireBundle {
  manifest: string;
  signature?: string;
  modules: Record<string, string>;
}

export class BundleError extends CodedError {}

export function sha256Hex(bytes: Uint8Array | string): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Builds a bundle from modules; the manifest is serialised once, deterministically. */
export function makeBundle(manifest: BundleManifest, modules: Map<string, Uint8Array>, signKey?: KeyObject): Bundle {
  const manifestBytes = new TextEncoder().encode(JSON.stringify(manifest, null, 2) + '\n');
  const bundle: Bundle = { manifest, manifestBytes, modules };
  if (signKey) bundle.signature = sign(null, manifestBytes, signKey).toString('base64');
  return bundle;
}

/** A stable identity for a bundle: the digest of its manifest (which pins every module digest). */
export function bundleVersion(bundle: Bundle): string {
  return sha256Hex(bundle.manifestBytes).slice(0, 16);
}

export async function writeBundle(dir: string, bundle: Bundle): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const entry of await readdir(dir)) {
    if (entry.endsWith('.wasm') || entry === MANIFEST_FILE || entry === SIGNATURE_FILE) await rm(join(dir, entry));
  }
  for (const [file, bytes] of bundle.modules) await writeFile(join(dir, file), bytes);
  await writeFile(join(dir, MANIFEST_FILE), bundle.manifestBytes);
  if (bundle.signature) await writeFile(join(dir, SIGNATURE_FILE), bundle.signature + '\n');
}

export async function readBundle(dir: string): Promise<Bundle> {
  const manifestBytes = new Uint8Array(await readFile(join(dir, MANIFEST_FILE)));
  const manifest = parseManifest(manifestBytes);
  const modules = new Map<string, Uint8Array>();
  for (const f of manifest.filters) modules.set(f.file, new Uint8Array(await readFile(join(dir, f.file))));
  let signature: string | undefined;
  try {
    signature = (await readFile(join(dir, SIGNATURE_FILE), 'utf8')).trim();
  } catch {
    signature = undefined;
  }
  return signature ? { manifest, manifestBytes, modules, signature } : { manifest, manifestBytes, modules };
}

export function toWire(bundle: Bundle): WireBundle {
  const modules: Record<string, string> = {};
  for (const [file, bytes] of bundle.modules) modules[file] = Buffer.from(bytes).toString('base64');
  const wire: WireBundle = { manifest: Buffer.from(bundle.manifestBytes).toString('utf8'), modules };
  if (bundle.signature) wire.signature = bundle.signature;
  return wire;
}

export function fromWire(wire: WireBundle): Bundle {
  const manifestBytes = new TextEncoder().encode(wire.manifest);
  const manifest = parseManifest(manifestBytes);
  const modules = new Map<string, Uint8Array>();
  for (const [file, b64] of Object.entries(wire.modules)) modules.set(file, new Uint8Array(Buffer.from(b64, 'base64')));
  const bundle: Bundle = { manifest, manifestBytes, modules };
  if (wire.signature) bundle.signature = wire.signature;
  return bundle;
}

function parseManifest(bytes: Uint8Array): BundleManifest {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder().decode(bytes));
  } catch (err) {
    throw new BundleError('BUNDLE_MANIFEST_INVALID', `manifest is not JSON: ${(err as Error).message}`);
  }
  const m = value as Partial<BundleManifest>;
  if (m.format !== BUNDLE_FORMAT) throw new BundleError('BUNDLE_FORMAT', `unsupported bundle format ${String(m.format)}`);
  if (!Array.isArray(m.filters)) throw new BundleError('BUNDLE_MANIFEST_INVALID', 'manifest has no filters array');
  return m as BundleManifest;
}

export interface VerifyOptions {
  /** Trusted Ed25519 public keys (PEM). When non-empty, a valid signature by one of them is required. */
  trustedKeys?: string[];
}

/**
 * Checks a bundle before any module is instantiated: signature (when keys are
 * configured), ABI version and every module digest. Throws BundleError with a
 * stable code and a reason a human can act on.
 */
export function verifyBundle(bundle: Bundle, options: VerifyOptions = {}): void {
  const keys = options.trustedKeys ?? [];
  if (keys.length > 0) {
    if (!bundle.signature) throw new BundleError('BUNDLE_UNSIGNED', 'bundle is not signed but trusted keys are configured');
    const sig = Buffer.from(bundle.signature, 'base64');
    const ok = keys.some((pem) => verify(null, bundle.manifestBytes, createPublicKey(pem), sig));
    if (!ok) throw new BundleError('BUNDLE_SIGNATURE', 'bundle signature does not verify against any trusted key');
  }
  if (bundle.manifest.abiVersion !== PROXY_WASM_ABI) {
    throw new BundleError('BUNDLE_ABI', `bundle ABI ${String(bundle.manifest.abiVersion)} is not ${PROXY_WASM_ABI}`);
  }
  for (const f of bundle.manifest.filters) {
    const bytes = bundle.modules.get(f.file);
    if (!bytes) throw new BundleError('BUNDLE_MODULE_MISSING', `module ${f.file} named by the manifest is missing`);
    const digest = sha256Hex(bytes);
    if (digest !== f.sha256) throw new BundleError('BUNDLE_DIGEST', `module ${f.file} has sha256 ${digest}, manifest says ${f.sha256}`);
  }
}

export function loadSigningKey(pem: string): KeyObject {
  return createPrivateKey(pem);
}
