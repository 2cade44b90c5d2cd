// PLACEHOLDER (being written): registers this part's meshc subcommands.
import type { Command } from 'commander';

export function registerCompilerCommands(_program: Command): void {}
