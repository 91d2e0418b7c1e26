// `repopt demo`: the main job end to end, with a report folder.
import type { Command } from 'commander';
import { OUT_DIRS, TRAIN_DEFAULTS } from '../defaults';
import { demo } from '../demo';
import { formatPercent } from '../report';
import { integer, threadsFlag } from './values';

export function addDemoCommand(program: Command): void {
  program
    .command('demo')
    .description('the main job: hyper-search, then RepOpt-VGG vs RepVGG (folded) vs VGG on Fashion-MNIST, with a report')
    .option('--quick', 'a 2-minute run on a subset (for tests)')
    .option('--out <dir>', 'report folder', OUT_DIRS.demo)
    .option('--seed <n>', 'seed', integer(0), TRAIN_DEFAULTS.seed)
    .option('--threads <n>', 'torch threads (at most the cores)', threadsFlag, TRAIN_DEFAULTS.threads)
    .option('--device <name>', "'cpu' or 'cuda[:n]'", TRAIN_DEFAULTS.device)
    .option('--data-dir <dir>', 'Fashion-MNIST folder (IDX files)')
    .action(async (o: { quick?: boolean; out: string; seed: number; threads: number; device: string; dataDir?: string }) => {
      const result = await demo({
        quick: !!o.quick,
        out: o.out,
        seed: o.seed,
        threads: o.threads,
        device: o.device,
        ...(o.dataDir ? { dataDir: o.dataDir } : {}),
      });
      for (const r of result.rows) process.stdout.write(`${r.name.padEnd(12)} test accuracy ${formatPercent(r.testAccuracy)}\n`);
      process.stdout.write(`report: ${result.report}\n`);
    });
}
