// `repopt eval`, `repopt convert`, `repopt export`: a run's checkpoint evaluated, folded, exported.
import type { Command } from 'commander';
import { convert, evaluate, exportWeights } from '../api';
import { EVALUATE_DEFAULTS } from '../defaults';
import { formatPercent } from '../report';
import { integer, threadsFlag } from './values';

export function addCheckpointCommands(program: Command): void {
  program
    .command('eval')
    .description("evaluate a checkpoint on its data set's test split")
    .requiredOption('--checkpoint <dir>', 'checkpoint folder, or a run folder (its newest checkpoint)')
    .option('--threads <n>', 'torch threads (at most the cores)', threadsFlag, EVALUATE_DEFAULTS.threads)
    .option('--batch-size <n>', 'evaluation batch size', integer(1), EVALUATE_DEFAULTS.batchSize)
    .action(async (o: { checkpoint: string; threads: number; batchSize: number }) => {
      const m = await evaluate(o);
      process.stdout.write(`${m.checkpoint}: test accuracy ${formatPercent(m.accuracy)}, loss ${m.loss.toFixed(4)} on ${m.count} images\n`);
    });
  program
    .command('convert')
    .description('fold a trained repvgg, RepOpt-VGG or VGG checkpoint into the deploy network (one conv3x3 + bias per block)')
    .requiredOption('--checkpoint <dir>', 'checkpoint of a repvgg, target or vgg run')
    .requiredOption('--out <file>', 'output: *.pth (torch.load reads it) or *.safetensors')
    .action((o: { checkpoint: string; out: string }) => {
      const r = convert(o);
      process.stdout.write(`${r.out}: ${r.blocks} folded blocks\n`);
    });
  program
    .command('export')
    .description("write a checkpoint's weights as a PyTorch state_dict (.pth, official key names) or safetensors")
    .requiredOption('--checkpoint <dir>', 'checkpoint folder, or a run folder (its newest checkpoint)')
    .requiredOption('--out <file>', 'output file: *.pth or *.safetensors')
    .action((o: { checkpoint: string; out: string }) => {
      const r = exportWeights(o);
      process.stdout.write(`${r.out}: ${r.tensors} tensors from ${r.checkpoint}\n`);
    });
}
