// `repopt eval`, `repopt convert`, `repopt export`: a run's checkpoint evaluated, folded, exported.
import { type Command, Option } from 'commander';
import { convert, evaluate, exportOnnx, exportWeights } from '../api';
import { ARCHS } from '../configs';
import { EVALUATE_DEFAULTS, EXPORT_ONNX_DEFAULTS, IMAGE_FOLDER_DEFAULTS } from '../defaults';
import { formatPercent } from '../report';
import type { DataSpec } from '../train/data';
import { dataSpec } from './train';
import { integer, threadsFlag } from './values';

interface EvalFlags {
  checkpoint: string;
  threads: number;
  batchSize: number;
  json?: boolean;
  arch?: string;
  dataset?: DataSpec['kind'];
  dataDir?: string;
  imageSize: number;
  trainSubset?: number;
  testSubset?: number;
}

export function addCheckpointCommands(program: Command): void {
  program
    .command('eval')
    .description("evaluate a checkpoint on its data set's test split")
    .requiredOption('--checkpoint <dir>', 'checkpoint folder, a run folder (its newest checkpoint), or an official .pth checkpoint')
    .option('--threads <n>', 'torch threads (at most the cores)', threadsFlag, EVALUATE_DEFAULTS.threads)
    .option('--batch-size <n>', 'evaluation batch size', integer(1), EVALUATE_DEFAULTS.batchSize)
    .option('--json', 'print JSON (checkpoint, data, accuracy, loss, count, warnings) instead')
    .addOption(
      new Option('--arch <name>', 'official .pth: its architecture (default: the one its weights fit)').choices(Object.keys(ARCHS)),
    )
    .addOption(
      new Option('--dataset <name>', 'official .pth: the data set to evaluate on').choices([
        'fashion-mnist',
        'cifar10',
        'cifar100',
        'folder',
      ]),
    )
    .option('--data-dir <dir>', 'official .pth: data set folder (default for fashion-mnist: /usr/share/datasets/fashion-mnist)')
    .option('--image-size <n>', 'official .pth, image folder: resize + centre-crop size', integer(1), IMAGE_FOLDER_DEFAULTS.size)
    .option('--train-subset <n>', 'official .pth: normalise by a class-balanced subset of n training images', integer(1))
    .option('--test-subset <n>', 'official .pth: evaluate on a class-balanced subset of n images', integer(1))
    .action(async (flags: EvalFlags) => {
      const { json, dataset, dataDir, imageSize, trainSubset, testSubset, ...options } = flags;
      const data = dataset ? dataSpec({ dataset, dataDir, imageSize, trainSubset, testSubset }) : undefined;
      const m = await evaluate({ ...options, data });
      if (json) {
        const { checkpoint, data, accuracy, loss, count, warnings } = m;
        process.stdout.write(JSON.stringify({ checkpoint, data, accuracy, loss, count, warnings }, null, 2) + '\n');
        return;
      }
      for (const w of m.warnings) process.stderr.write(`warning: ${w}\n`);
      process.stdout.write(`${m.checkpoint}: test accuracy ${formatPercent(m.accuracy)}, loss ${m.loss.toFixed(4)} on ${m.count} images\n`);
    });
  program
    .command('convert')
    .description('fold a trained repvgg, RepOpt-VGG or VGG checkpoint into the deploy network (one conv3x3 + bias per block)')
    .requiredOption('--checkpoint <dir>', 'checkpoint of a repvgg, target or vgg run, or an official .pth checkpoint')
    .requiredOption('--out <file>', 'output: *.pth (torch.load reads it) or *.safetensors')
    .addOption(
      new Option('--arch <name>', 'official .pth: its architecture (default: the one its weights fit)').choices(Object.keys(ARCHS)),
    )
    .action((o: { checkpoint: string; out: string; arch?: string }) => {
      const r = convert(o);
      process.stdout.write(`${r.out}: ${r.blocks} folded blocks\n`);
    });
  program
    .command('export')
    .description(
      "write a checkpoint's weights as a PyTorch state_dict (.pth, official key names) or safetensors, or its deploy network as ONNX",
    )
    .requiredOption(
      '--checkpoint <dir>',
      "checkpoint folder, or a run folder (its newest checkpoint); onnx-int8: quantize's output folder, or a run (its int8/)",
    )
    .requiredOption('--out <file>', 'output file: *.pth, *.safetensors or *.onnx')
    .addOption(
      new Option(
        '--format <format>',
        'onnx: the float deploy network; onnx-int8: QDQ, from quantize (default: the extension of --out)',
      ).choices(['onnx', 'onnx-int8']),
    )
    .addOption(
      new Option(
        '--normalization <where>',
        'ONNX input: graph (pixels in [0, 1], normalised in the graph) or none (normalised by the caller)',
      )
        .choices(['graph', 'none'])
        .default(EXPORT_ONNX_DEFAULTS.normalization),
    )
    .action(async (o: { checkpoint: string; out: string; format?: 'onnx' | 'onnx-int8'; normalization: 'graph' | 'none' }) => {
      if (o.format || o.out.endsWith('.onnx')) {
        const r = await exportOnnx({
          checkpoint: o.checkpoint,
          out: o.out,
          int8: o.format === 'onnx-int8',
          normalization: o.normalization,
        });
        process.stdout.write(`${r.out}: ONNX ${r.int8 ? 'INT8 QDQ' : 'float'} model (${r.bytes} bytes) from ${r.source}\n`);
        return;
      }
      const r = exportWeights(o);
      process.stdout.write(`${r.out}: ${r.tensors} tensors from ${r.checkpoint}\n`);
    });
}
