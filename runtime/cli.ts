// PLACEHOLDER (being written): registers this part's meshc subcommands.
import type { Command } from 'commander';

export function registerRuntimeCommands(_program: Command): void {}
