// Opaque TCP through two proxies with mTLS between them, in one run: direct;
// a haproxy pair (mode tcp); the meshc sidecar pair (a per-upstream port on
// the outbound sidecar, one mTLS connection per TCP connection to the inbound
// sidecar). Measures bulk throughput (one connection), short-connection rate
// (connect + 1 KiB echo + close: the per-connection handshake cost) and
// round-trip latency on a long-lived connection, plus the proxies' CPU during
// the bulk run. Client and servers run in their own process (bench/tcp-load.ts).
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createInterface } from 'node:readline';
import { makePki, startProcess, startSidecarProcesses, stopProcess, type Pki } from './lib/pairs.ts';
import { cpuSeconds, rssMiB } from './lib/procstat.ts';
import { freePort } from './lib/servers.ts';
import { requireTools, which } from './lib/tools.ts';
import type { Table } from './lib/report.ts';
import type { SuiteOptions, SuiteResult } from './run.ts';

const execFileAsync = promisify(execFile);
const LOAD = new URL('./tcp-load.ts', import.meta.url).pathname;
const BULK_MIB = 512;
const SHORT_CONNECTIONS = 2_000;
const SHORT_PARALLEL = 16;
const ROUNDS = 5_000;

interface Target {
  name: string;
  /** Client-facing port to the echo server and to the sink. */
  echo: number;
  sink: number;
  pids(): number[];
  stop(): Promise<void>;
}

interface Row {
  mibPerSec: number;
  bulkCpuPercent: number;
  connsPerSec: number;
  connP50: number;
  connP99: number;
  connErrors: number;
  rttP50: number;
  rttP99: number;
  rssMiB: number;
}

async function load(args: string[]): Promise<Record<string, number>> {
  const { stdout } = await execFileAsync(process.execPath, [LOAD, ...args], { timeout: 300_000, maxBuffer: 1 << 20 });
  return JSON.parse(stdout) as Record<string, number>;
}

/** haproxy A (plain in) → TLS with client certificate → haproxy B → upstream, mode tcp, one frontend per upstream. */
async function haproxyPair(upstream: { echo: number; sink: number }, pki: Pki): Promise<Target> {
  const dir = await mkdtemp(join(tmpdir(), 'meshc-bench-tcp-ha-'));
  const ports = { aEcho: await freePort(), aSink: await freePort(), bEcho: await freePort(), bSink: await freePort() };
  const common = 'global\n  nbthread 1\n  maxconn 4096\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n';
  const b = (front: number, to: number, name: string) =>
    `frontend fe_${name}\n  bind 127.0.0.1:${front} ssl crt ${pki.dir}/server.pem ca-file ${pki.dir}/ca.pem verify required\n  default_backend be_${name}\nbackend be_${name}\n  server up 127.0.0.1:${to}\n`;
  const a = (front: number, to: number, name: string) =>
    `frontend fe_${name}\n  bind 127.0.0.1:${front}\n  default_backend be_${name}\nbackend be_${name}\n  server b 127.0.0.1:${to} ssl verify required ca-file ${pki.dir}/ca.pem crt ${pki.dir}/client.pem\n`;
  await writeFile(join(dir, 'b.cfg'), common + b(ports.bEcho, upstream.echo, 'echo') + b(ports.bSink, upstream.sink, 'sink'));
  await writeFile(join(dir, 'a.cfg'), common + a(ports.aEcho, ports.bEcho, 'echo') + a(ports.aSink, ports.bSink, 'sink'));
  const bin = which('haproxy') ?? 'haproxy';
  const pb = await startProcess(bin, ['-f', join(dir, 'b.cfg'), '-db'], ports.bSink);
  const pa = await startProcess(bin, ['-f', join(dir, 'a.cfg'), '-db'], ports.aSink);
  return {
    name: 'haproxy pair (mode tcp)',
    echo: ports.aEcho,
    sink: ports.aSink,
    pids: () => [pa.pid, pb.pid],
    stop: async () => {
      await pa.stop();
      await pb.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Outbound sidecar with two per-upstream ports declared TCP → mTLS → inbound sidecar → echo (its app) or sink (an app TCP port). */
async function sidecarPair(upstream: { echo: number; sink: number }, pki: Pki): Promise<Target> {
  const ports = { echo: await freePort(), sink: await freePort() };
  const local = (port: number) => ({ host: '127.0.0.1', port });
  const p = await startSidecarProcesses(pki, {
    appPort: upstream.echo,
    versions: ['v1'],
    outboundOptions: {
      upstreams: [
        { service: 'bench', port: 0, listen: local(ports.echo), protocol: 'tcp' },
        { service: 'bench', port: upstream.sink, listen: local(ports.sink), protocol: 'tcp' },
      ],
    },
    inboundOptions: { tcp: { appPorts: [upstream.sink] } },
    readyPort: ports.sink,
  });
  return {
    name: 'meshc pair',
    echo: ports.echo,
    sink: ports.sink,
    pids: () => [p.a.pid, p.b.pid],
    stop: async () => {
      await p.a.stop();
      await p.b.stop();
      await rm(p.dir, { recursive: true, force: true });
    },
  };
}

async function measure(t: Target): Promise<Row> {
  await load(['bulk', String(t.sink), '32']); // warm-up (and TLS sessions to resume)
  const ids = t.pids();
  const cpu0 = ids.reduce((a, p) => a + cpuSeconds(p), 0);
  const bulk = await load(['bulk', String(t.sink), String(BULK_MIB)]);
  const cpu = ids.length ? ((ids.reduce((a, p) => a + cpuSeconds(p), 0) - cpu0) / (bulk.ms! / 1000)) * 100 : 0;
  const conns = await load(['conns', String(t.echo), String(SHORT_CONNECTIONS), String(SHORT_PARALLEL)]);
  const rtt = await load(['pingpong', String(t.echo), String(ROUNDS)]);
  const rss = ids.reduce((a, p) => a + rssMiB(p), 0);
  const row: Row = {
    mibPerSec: bulk.mibPerSec!,
    bulkCpuPercent: cpu,
    connsPerSec: conns.perSec!,
    connP50: conns.p50!,
    connP99: conns.p99!,
    connErrors: conns.errors!,
    rttP50: rtt.p50!,
    rttP99: rtt.p99!,
    rssMiB: rss,
  };
  process.stderr.write(`  ${t.name}: ${row.mibPerSec.toFixed(0)} MiB/s, ${row.connsPerSec.toFixed(0)} conn/s, rtt p50 ${row.rttP50.toFixed(3)} ms\n`);
  return row;
}

export async function run(_options: SuiteOptions): Promise<SuiteResult> {
  requireTools(['haproxy']);
  const pki = await makePki();
  const servers = spawn(process.execPath, [LOAD, 'serve'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const first = await new Promise<string>((resolve) => createInterface({ input: servers.stdout! }).once('line', resolve));
  const upstream = JSON.parse(first) as { echo: number; sink: number };
  const rows: Record<string, Row> = {};
  try {
    rows['direct'] = await measure({ name: 'direct', echo: upstream.echo, sink: upstream.sink, pids: () => [], stop: async () => {} });
    for (const start of [haproxyPair, sidecarPair]) {
      const t = await start(upstream, pki);
      try {
        rows[t.name] = await measure(t);
      } finally {
        await t.stop();
      }
    }
  } finally {
    await stopProcess(servers);
    await rm(pki.dir, { recursive: true, force: true });
  }
  const ha = rows['haproxy pair (mode tcp)'];
  const ratio = (v: number, ref: number | undefined) => (ref ? (v / ref).toFixed(2) : '-');
  const table: Table = {
    title: 'Opaque TCP through two proxies with mTLS between them (one TLS connection per TCP connection)',
    columns: ['target', `bulk MiB/s (1 conn, ${BULK_MIB} MiB)`, 'CPU % (both) in bulk', `short conns/s (${SHORT_PARALLEL} parallel)`, 'conn p50 ms', 'conn p99 ms', 'errors', 'RTT p50 ms (64 B)', 'RTT p99 ms', 'RSS MiB (both)', 'bulk × haproxy', 'conns/s × haproxy'],
    rows: Object.entries(rows).map(([name, r]) => [
      name,
      r.mibPerSec,
      name === 'direct' ? '-' : r.bulkCpuPercent,
      r.connsPerSec,
      r.connP50,
      r.connP99,
      r.connErrors,
      r.rttP50,
      r.rttP99,
      name === 'direct' ? '-' : r.rssMiB,
      name === 'direct' ? '-' : ratio(r.mibPerSec, ha?.mibPerSec),
      name === 'direct' ? '-' : ratio(r.connsPerSec, ha?.connsPerSec),
    ]),
    notes: [
      'Client, echo and sink servers run in one separate Node process (bench/tcp-load.ts); all processes share the machine\'s 2 cores.',
      'meshc ports are declared TCP (no detection delay); a short connection costs a full mTLS handshake between the proxies (TLS sessions are resumed on both).',
      'CPU % is the two proxy processes\' user+system time during the bulk run, as a share of one core.',
    ],
  };
  return { tables: [table], raw: rows };
}
