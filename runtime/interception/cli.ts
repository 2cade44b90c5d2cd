// `meshc init`: what a pod's init container runs to turn on transparent
// interception (iptables nat rules in the pod's network namespace).
//
// In:  the flags below (see runtime/interception/iptables.ts for their meaning).
// Out: the rules applied (or, with --dry-run, the rules that would be) as
//      iptables-restore scripts on stdout (with --ipv6 an ip6tables-restore one
//      too); --clean removes them. Exit 2 with
//      `meshc init: CODE: message` on stderr for bad flags (INIT_ARGS) or a
//      failing iptables command (IPTABLES_FAILED).
import process from 'node:process';
import type { Command } from 'commander';
import type { InitFlags } from './iptables.ts';

interface Flags extends InitFlags {
  dryRun?: boolean;
  clean?: boolean;
}

export function registerInitCommand(program: Command): void {
  program
    .command('init')
    .description("install the iptables rules of transparent interception in this network namespace (a pod's init container; needs NET_ADMIN)")
    .option('--inbound-port <port>', "the sidecar's inbound capture port", '15006')
    .option('--outbound-port <port>', "the sidecar's outbound capture port", '15001')
    .option('--proxy-uid <ids>', 'uids (or user names) of the sidecar, comma-separated: their traffic is never redirected')
    .option('--proxy-gid <ids>', 'gids (or group names) of the sidecar, comma-separated')
    .option('--inbound-ports <ports>', "inbound ports to redirect: '*' (all) or a list; empty: none", '*')
    .option('--exclude-inbound-ports <ports>', 'inbound ports never redirected (with --inbound-ports *), e.g. the admin port')
    .option('--exclude-outbound-ports <ports>', 'outbound destination ports never redirected')
    .option('--outbound-cidrs <cidrs>', "outbound destinations to redirect: '*' (all) or CIDRs", '*')
    .option('--exclude-outbound-cidrs <cidrs>', 'outbound destinations (CIDRs) never redirected')
    .option('--ipv6', "also redirect the pod's IPv6 TCP (ip6tables; the sidecar then listens on ::)")
    .option('--dry-run', 'print the rules, change nothing')
    .option('--clean', 'remove the rules and chains of an earlier run')
    .action(async (flags: Flags) => {
      const { InitError, applyRules, cleanRules, parseInitOptions, renderDryRun } = await import('./iptables.ts');
      try {
        if (flags.clean) {
          if (flags.dryRun) throw new InitError('INIT_ARGS', '--clean and --dry-run do not go together');
          process.stdout.write(cleanRules() || '# no interception rules were installed\n');
          return;
        }
        const options = parseInitOptions(flags);
        process.stdout.write(flags.dryRun ? renderDryRun(options) : applyRules(options));
      } catch (err) {
        const e = err as Error & { code?: string };
        process.stderr.write(`meshc init: ${e.code ? `${e.code}: ` : ''}${e.message}\n`);
        process.exitCode = 2;
      }
    });
}
