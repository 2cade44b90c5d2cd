// PLACEHOLDER (being written): registers this part's meshc subcommands.
import type { Command } from 'commander';

export function registerControllerCommands(_program: Command): void {}
