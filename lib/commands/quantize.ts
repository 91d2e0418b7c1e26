// `repopt quantize`: INT8 post-training quantization (and optional QAT) of a checkpoint.
import { type Command, Option } from 'commander';
import { quantize } from '../api';
import { QUANTIZE_DEFAULTS, TRAIN_DEFAULTS } from '../defaults';
import { formatPercent } from '../report';
import { integer, real, threadsFlag } from './values';

export function addQuantizeCommand(program: Command): void {
  const d = QUANTIZE_DEFAULTS;
  program
    .command('quantize')
    .description(
      'INT8: fold a checkpoint, calibrate, compare float vs simulated vs real int8 accuracy; optionally fine-tune with QAT; export',
    )
    .requiredOption('--checkpoint <dir>', 'checkpoint folder, or a run folder (its newest checkpoint)')
    .option('--calib-batches <n>', 'training batches for calibration', integer(1), d.calibBatches)
    .option('--batch-size <n>', 'calibration batch size', integer(1), d.batchSize)
    .addOption(new Option('--observer <kind>', 'activation range observer').choices(['minmax', 'percentile']).default(d.observer))
    .option('--percentile <p>', 'percentile observer: upper percentile in (50, 100]', real(50), d.percentile)
    .option('--qat-epochs <k>', 'quantization-aware fine-tuning epochs (target and vgg runs; GradMults stay on)', integer(0), d.qatEpochs)
    .option('--qat-lr <x>', `QAT learning rate for batch 256 (default: the run's x ${d.qatLrFactor})`, real(0))
    .option('--threads <n>', 'torch threads (at most the cores)', threadsFlag, TRAIN_DEFAULTS.threads)
    .option('--out <dir>', 'output folder (default <run>/int8)')
    .action(
      async (o: {
        checkpoint: string;
        calibBatches: number;
        batchSize: number;
        observer: 'minmax' | 'percentile';
        percentile: number;
        qatEpochs: number;
        qatLr?: number;
        threads: number;
        out?: string;
      }) => {
        const r = await quantize(o);
        for (const row of r.rows) {
          process.stdout.write(
            `${row.name.padEnd(16)} float32 ${formatPercent(row.float.accuracy)}  int8 simulated ` +
              `${formatPercent(row.simulated.accuracy)}  int8 QNNPACK ${formatPercent(row.int8.accuracy)}\n`,
          );
        }
        process.stdout.write(`report: ${r.report}\nint8 model: ${r.int8Model}\n`);
      },
    );
}
