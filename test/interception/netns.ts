// Test helper: Linux network namespaces and veth pairs that a test creates and
// removes (needs root, as CI and this machine run the tests).
//
// In:  a short tag; namespaces, links and addresses asked for by the test.
// Out: unique names (tag + pid + counter, ≤ 15 chars for links), `exec` inside
//      a namespace, and `cleanup()` that deletes everything created, safe to
//      call twice and after a failure half-way.
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';

/** The namespaces' test servers and client (test/interception/probe.ts). */
export const PROBE = new URL('./probe.ts', import.meta.url).pathname;

let counter = 0;

function sh(args: string[], input?: string): string {
  return execFileSync(args[0]!, args.slice(1), { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
}

export class NetnsLab {
  private readonly namespaces: string[] = [];
  private readonly children = new Set<ChildProcess>();
  private readonly tag: string;

  constructor(tag: string) {
    // Short: link names are limited to 15 characters.
    this.tag = `${tag.slice(0, 3)}${process.pid % 100000}`;
  }

  name(kind: string): string {
    return `${this.tag}${kind}${counter++}`.slice(0, 15);
  }

  /** A namespace with lo up. */
  namespace(kind: string): string {
    const ns = this.name(kind);
    sh(['ip', 'netns', 'add', ns]);
    this.namespaces.push(ns);
    this.exec(ns, ['ip', 'link', 'set', 'lo', 'up']);
    return ns;
  }

  /** A veth pair between two namespaces, each end addressed (`10.1.2.3/24`, `fd00::1/64`) and up. */
  link(a: string, addrA: string, b: string, addrB: string): { ifA: string; ifB: string } {
    const ifA = this.name('a');
    const ifB = this.name('b');
    sh(['ip', 'link', 'add', ifA, 'netns', a, 'type', 'veth', 'peer', 'name', ifB, 'netns', b]);
    // IPv6 addresses skip duplicate address detection: usable at once, not "tentative" for a while.
    const dad = (addr: string): string[] => (addr.includes(':') ? ['nodad'] : []);
    this.exec(a, ['ip', 'addr', 'add', addrA, 'dev', ifA, ...dad(addrA)]);
    this.exec(b, ['ip', 'addr', 'add', addrB, 'dev', ifB, ...dad(addrB)]);
    this.exec(a, ['ip', 'link', 'set', ifA, 'up']);
    this.exec(b, ['ip', 'link', 'set', ifB, 'up']);
    return { ifA, ifB };
  }

  exec(ns: string, args: string[], input?: string): string {
    return sh(['ip', 'netns', 'exec', ns, ...args], input);
  }

  /** A long-running process inside a namespace (killed by cleanup). */
  spawn(ns: string, args: string[], options: SpawnOptions = {}): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', ns, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...options });
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    return child;
  }

  /**
   * Starts `args` in `ns` and resolves once it prints a JSON line whose `event`
   * is `event` (every JSON line it prints goes to `sink`); rejects, with its
   * stderr, if it exits first.
   */
  start(ns: string, args: string[], event: string, sink?: Array<Record<string, unknown>>): Promise<void> {
    const child = this.spawn(ns, args);
    let stderr = '';
    child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
    return new Promise((resolve, reject) => {
      lines(child, (line) => {
        let entry: Record<string, unknown>;
        try {
          entry = JSON.parse(line) as Record<string, unknown>;
        } catch {
          return; // not JSON
        }
        sink?.push(entry);
        if (entry.event === event) resolve();
      });
      child.once('exit', (code) => reject(new Error(`${args.join(' ')} exited with ${code}: ${stderr}`)));
    });
  }

  /** `probe.ts client` from `ns`: the server's first line as JSON, and what came after it. */
  dial(ns: string, host: string, port: number, text = 'ping'): { first: Record<string, unknown>; rest: string } {
    const out = this.exec(ns, ['node', PROBE, 'client', host, String(port), text]);
    const nl = out.indexOf('\n');
    return { first: JSON.parse(out.slice(0, nl)) as Record<string, unknown>, rest: out.slice(nl + 1) };
  }

  async cleanup(): Promise<void> {
    await Promise.all(
      [...this.children].map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve();
            child.once('exit', () => resolve());
            child.kill('SIGTERM');
            setTimeout(() => child.kill('SIGKILL'), 3_000).unref();
          }),
      ),
    );
    // Deleting a namespace deletes the veth ends inside it (and so their peers).
    for (const ns of this.namespaces.splice(0)) {
      try {
        sh(['ip', 'netns', 'del', ns]);
      } catch {
        // already gone
      }
    }
  }
}

/** Lines of a child's stdout as they come, for JSON-line protocols with the test. */
export function lines(child: ChildProcess, onLine: (line: string) => void): void {
  let buf = '';
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (chunk: string) => {
    buf += chunk;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      onLine(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  });
}
