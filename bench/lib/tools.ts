// External programs the benchmarks measure against (Debian packages), found or
// explained: a benchmark that cannot run says which package to install.
import { execFileSync } from 'node:child_process';

const PACKAGES: Record<string, string> = { wrk: 'wrk', haproxy: 'haproxy', nginx: 'nginx', h2load: 'nghttp2-client', valgrind: 'valgrind', callgrind_control: 'valgrind' };

export function requireTools(names: string[]): void {
  const missing = names.filter((name) => !which(name));
  if (missing.length > 0) {
    const pkgs = missing.map((m) => PACKAGES[m] ?? m).join(' ');
    throw new Error(`benchmark needs ${missing.join(', ')}: install with  apt-get install -y ${pkgs}`);
  }
}

export function which(name: string): string | undefined {
  try {
    return execFileSync('sh', ['-c', `command -v ${name} || ls /usr/sbin/${name} 2>/dev/null`], { encoding: 'utf8' }).trim().split('\n')[0] || undefined;
  } catch {
    return undefined;
  }
}
