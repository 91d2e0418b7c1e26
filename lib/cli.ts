#!/usr/bin/env node
import { Command } from 'commander';
import { info } from './runtime';

function formatInfo(i: ReturnType<typeof info>): string {
  const rows: [string, string][] = [
    ['libtorch', i.torchVersion],
    ['CUDA', i.cuda ? `yes, ${i.deviceCount} device(s)` : 'no'],
    ['cuDNN', i.cudnnVersion === null ? '-' : String(i.cudnnVersion)],
    ['threads', `${i.threads} intra-op, ${i.interopThreads} inter-op`],
    ['C++11 ABI', String(i.cxx11Abi)],
    ['binary', `${i.binary} (${i.binaryPath})`],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n');
}

export function buildProgram(): Command {
  const program = new Command('repopt').description('RepOptimizer training on libtorch').showHelpAfterError();
  program
    .command('info')
    .description('print the libtorch runtime: version, CUDA, threads, which binary is loaded')
    .option('--json', 'print JSON')
    .action((opts: { json?: boolean }) => {
      const i = info();
      process.stdout.write(opts.json ? JSON.stringify(i, null, 2) + '\n' : formatInfo(i) + '\n');
    });
  return program;
}

if (require.main === module) {
  buildProgram()
    .parseAsync(process.argv)
    .catch((e: Error) => {
      process.stderr.write(`repopt: ${e.message}\n`);
      process.exit(1);
    });
}
