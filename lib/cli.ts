#!/usr/bin/env node
// The repopt command line: each command is a thin layer over the public API (lib/commands/).
import { Command } from 'commander';
import { addCheckpointCommands } from './commands/checkpoint';
import { addDemoCommand } from './commands/demo';
import { cliMessage } from './commands/flags';
import { addInfoCommand } from './commands/info';
import { addLaunchCommand } from './commands/launch';
import { addQuantizeCommand } from './commands/quantize';
import { addScalesCommand } from './commands/scales';
import { addTrainCommands } from './commands/train';
import { stopWhenLauncherExits } from './distributed/launch';

export function buildProgram(): Command {
  const program = new Command('repopt')
    .description('RepOptimizer training on libtorch: hyper-search the scales, train RepOpt-VGG, compare with RepVGG and VGG')
    .showHelpAfterError()
    .addHelpText(
      'after',
      '\nExit status: 0 on success, 1 on any error (the message says what to change), 130 when Ctrl-C stopped a run (with a checkpoint).',
    );
  addInfoCommand(program);
  addDemoCommand(program);
  addTrainCommands(program);
  addCheckpointCommands(program);
  addQuantizeCommand(program);
  addScalesCommand(program);
  addLaunchCommand(program, __filename);
  return program;
}

if (require.main === module) {
  stopWhenLauncherExits();
  buildProgram()
    .parseAsync(process.argv)
    .catch((e: Error) => {
      const message = cliMessage(e);
      process.stderr.write(`${message.startsWith('repopt: ') ? '' : 'repopt: '}${message}\n`);
      process.exit(1);
    });
}
