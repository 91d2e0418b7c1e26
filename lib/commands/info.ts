// `repopt info`: the libtorch runtime and which binary is loaded.
import type { Command } from 'commander';
import { info } from '../runtime';

export function addInfoCommand(program: Command): void {
  program
    .command('info')
    .description('print the libtorch runtime: version, CUDA, threads, which binary is loaded')
    .option('--json', 'print JSON')
    .action((opts: { json?: boolean }) => {
      const i = info();
      if (opts.json) {
        process.stdout.write(JSON.stringify(i, null, 2) + '\n');
        return;
      }
      const rows: [string, string][] = [
        ['libtorch', i.torchVersion],
        [
          'CUDA',
          i.cuda
            ? `yes, ${i.deviceCount} device(s)`
            : i.cudaBuild
              ? 'no: built with CUDA, but no device is visible'
              : 'no: CPU-only libtorch',
        ],
        ['cuDNN', i.cudnnVersion === null ? '-' : String(i.cudnnVersion)],
        ['threads', `${i.threads} intra-op, ${i.interopThreads} inter-op`],
        ['C++11 ABI', String(i.cxx11Abi)],
        ['binary', `${i.prebuild ? `prebuild ${i.prebuild}` : i.binary} (${i.binaryPath})`],
      ];
      const width = Math.max(...rows.map(([k]) => k.length));
      process.stdout.write(rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n') + '\n');
    });
}
