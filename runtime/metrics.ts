// The sidecar's Prometheus registry: Istio-compatible request and TCP
// connection metrics plus the mesh's own counters (local responses by rule,
// filter failures, chain reloads).
// Filter-defined metrics (proxy_define_metric) land in the same registry.
//
// In:  one record() call per finished request, one tcpOpened()/tcpClosed()
//      pair per listener connection, events from the chain.
// Out: /metrics text and /stats JSON via `registry`.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export interface RequestRecord {
  reporter: 'source' | 'destination';
  sourceWorkload: string;
  destinationService: string;
  destinationVersion: string;
  status: number;
  responseFlags: string;
  durationMs: number;
}

/** Labels of one listener connection, fixed when it opens. */
// A type alias, not an interface: prom-client wants an indexable label record.
export type TcpLabels = {
  reporter: 'source' | 'destination';
  source_workload: string;
  destination_service: string;
};

export class SidecarMetrics {
  readonly registry = new Registry();
  private readonly requests: Counter;
  private readonly duration: Histogram;
  private readonly localResponses: Counter;
  private readonly filterFailures: Counter;
  private readonly reloads: Counter;
  private readonly chainInfo: Gauge;
  private readonly tcpOpenedTotal: Counter;
  private readonly tcpClosedTotal: Counter;
  private readonly tcpSent: Counter;
  private readonly tcpReceived: Counter;

  constructor() {
    const labelNames = ['reporter', 'source_workload', 'destination_service', 'destination_version', 'response_code', 'response_flags'];
    const registers = [this.registry];
    this.requests = new Counter({ name: 'istio_requests_total', help: 'Requests handled by this sidecar', labelNames, registers });
    this.duration = new Histogram({
      name: 'istio_request_duration_milliseconds',
      help: 'Request duration in milliseconds',
      labelNames,
      buckets: [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000],
      registers,
    });
    this.localResponses = new Counter({
      name: 'meshc_local_responses_total',
      help: 'Responses a filter sent itself, by deciding rule',
      labelNames: ['rule'],
      registers,
    });
    this.filterFailures = new Counter({
      name: 'meshc_filter_failures_total',
      help: 'Filter traps, by filter and the failure policy applied',
      labelNames: ['filter', 'policy'],
      registers,
    });
    this.reloads = new Counter({
      name: 'meshc_chain_reloads_total',
      help: 'Filter chain reloads, by result (applied or refused)',
      labelNames: ['result'],
      registers,
    });
    const tcpLabels = ['reporter', 'source_workload', 'destination_service'];
    this.tcpOpenedTotal = new Counter({ name: 'istio_tcp_connections_opened_total', help: 'Connections opened on this sidecar\'s listeners', labelNames: tcpLabels, registers });
    this.tcpClosedTotal = new Counter({ name: 'istio_tcp_connections_closed_total', help: 'Connections closed on this sidecar\'s listeners', labelNames: tcpLabels, registers });
    this.tcpSent = new Counter({ name: 'istio_tcp_sent_bytes_total', help: 'Bytes written to listener connections (counted when they close)', labelNames: tcpLabels, registers });
    this.tcpReceived = new Counter({ name: 'istio_tcp_received_bytes_total', help: 'Bytes read from listener connections (counted when they close)', labelNames: tcpLabels, registers });
    this.chainInfo = new Gauge({ name: 'meshc_chain_info', help: 'The filter chain version in use (value 1)', labelNames: ['version'], registers });
  }

  record(r: RequestRecord): void {
    const labels = {
      reporter: r.reporter,
      source_workload: r.sourceWorkload || 'unknown',
      destination_service: r.destinationService || 'unknown',
      destination_version: r.destinationVersion || 'unknown',
      response_code: String(r.status),
      response_flags: r.responseFlags,
    };
    this.requests.inc(labels);
    this.duration.observe(labels, r.durationMs);
  }

  tcpOpened(labels: TcpLabels): void {
    this.tcpOpenedTotal.inc(labels);
  }

  /** Once per connection, at close: bytes from socket.bytesRead/bytesWritten, not per chunk. */
  tcpClosed(labels: TcpLabels, received: number, sent: number): void {
    this.tcpClosedTotal.inc(labels);
    if (received > 0) this.tcpReceived.inc(labels, received);
    if (sent > 0) this.tcpSent.inc(labels, sent);
  }

  localResponse(rule: string): void {
    this.localResponses.inc({ rule: rule || 'unknown' });
  }

  filterFailure(filter: string, policy: string): void {
    this.filterFailures.inc({ filter, policy });
  }

  chainReload(result: 'applied' | 'refused', version?: string): void {
    this.reloads.inc({ result });
    if (result === 'applied' && version) {
      this.chainInfo.reset();
      this.chainInfo.set({ version }, 1);
    }
  }
}
