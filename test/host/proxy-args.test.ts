// `meshc proxy` per-filter host options: failure policy (incl. reload),
// dry-run and resource limits, and clear errors for bad values.
import { describe, expect, it } from 'vitest';
import { parseProxyArgs } from '../../runtime/proxy-args.ts';

const base = ['--listen', '127.0.0.1:0', '--upstream', 'http://127.0.0.1:1'];

describe('meshc proxy per-filter host options', () => {
  it('reads --failure-policy reload, --dry-run, --memory-limit and --fuel for the filter they follow', () => {
    const args = parseProxyArgs([...base, '--filter', 'a.wasm', '--failure-policy', 'reload', '--dry-run', '--memory-limit', '16Mi', '--fuel', '1000', '--filter', 'b.wasm']);
    if (args.mode !== 'standalone') throw new Error('expected standalone');
    expect(args.filters[0]).toMatchObject({ file: 'a.wasm', failurePolicy: 'reload', dryRun: true, limits: { memoryMaxBytes: 16 * 1024 * 1024, fuelPerCallback: 1000 } });
    expect(args.filters[1]).toEqual({ file: 'b.wasm', configuration: '', failurePolicy: 'closed' });
  });

  it('refuses bad values with the flag named', () => {
    expect(() => parseProxyArgs([...base, '--filter', 'a.wasm', '--failure-policy', 'maybe'])).toThrow(/closed, open or reload/);
    expect(() => parseProxyArgs([...base, '--filter', 'a.wasm', '--memory-limit', '1Ki'])).toThrow(/--memory-limit/);
    expect(() => parseProxyArgs([...base, '--filter', 'a.wasm', '--fuel', '-5'])).toThrow(/--fuel/);
    expect(() => parseProxyArgs([...base, '--dry-run'])).toThrow(/must follow the --filter/);
  });
});
