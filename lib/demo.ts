// `repopt demo`: on Fashion-MNIST, hyper-search a small RepOpt-VGG, then train RepOpt-VGG (target
// blocks + RepOptSGD with the searched scales), RepVGG (three branches, then folded) and plain VGG
// with the same budget and seed, evaluate them, and write a report folder.
import * as fs from 'fs';
import * as path from 'path';
import { hyperSearch, train } from './api';
import { ARCHS } from './configs';
import { DEMO_DEFAULTS, TRAIN_DEFAULTS } from './defaults';
import { plotScales, scaleTable } from './hypersearch';
import { info } from './runtime';
import { deployNetwork, type PtqResult, quantizeDeploy, spreadTable, weightSpread } from './quant';
import { formatBytes, formatCount, formatDuration, formatPercent, histogramPlot, linePlot, markdownTable } from './report';
import type { TrainMode, TrainOptions } from './train/config';
import { channelStats, loadData, uploadDataset } from './train/data';
import { showProgress } from './train/progress';
import { makeOutDir } from './train/run-folder';
import type { TrainResult } from './train/trainer';

export interface DemoOptions {
  readonly out: string;
  readonly quick: boolean;
  readonly seed: number;
  readonly threads: number;
  readonly device: string;
  readonly dataDir?: string;
}

/** The demo's budget (DEMO_DEFAULTS): full or --quick. */
export function demoPlan(quick: boolean) {
  return { ...(quick ? DEMO_DEFAULTS.quick : DEMO_DEFAULTS.full), lr: DEMO_DEFAULTS.lr };
}

const MODELS: { mode: TrainMode; name: string }[] = [
  { mode: 'target', name: 'RepOpt-VGG' },
  { mode: 'repvgg', name: 'RepVGG' },
  { mode: 'vgg', name: 'VGG' },
];

export interface DemoResult {
  readonly report: string;
  readonly rows: {
    name: string;
    testAccuracy: number;
    int8Accuracy: number;
    trainSeconds: number;
    imagesPerSecond: number;
    peakRssBytes: number;
    parameters: number;
  }[];
}

export async function demo(o: DemoOptions): Promise<DemoResult> {
  const plan = demoPlan(o.quick);
  const arch = DEMO_DEFAULTS.arch;
  const d = TRAIN_DEFAULTS;
  makeOutDir(o.out, 'out');
  const dataSpec = {
    kind: 'fashion-mnist' as const,
    ...(o.dataDir ? { dir: o.dataDir } : {}),
    ...(plan.trainSubset ? { trainSubset: plan.trainSubset, testSubset: plan.testSubset } : {}),
  };
  const data = await loadData(dataSpec, o.seed);
  const common = {
    arch,
    data: dataSpec,
    lr: plan.lr,
    seed: o.seed,
    threads: o.threads,
    device: o.device,
    // A second demo into the same folder replaces the first one's runs (moved aside, each reported).
    overwrite: true,
  } as const satisfies Partial<TrainOptions>;

  const hs = hyperSearch({ ...common, epochs: plan.hsEpochs, outDir: path.join(o.out, 'hyper-search') }, { data });
  showProgress(hs, `hs ${arch}`);
  const search = await hs.result;
  search.train.network.dispose();
  const results = new Map<TrainMode, TrainResult>();
  for (const m of MODELS) {
    const run = train(
      {
        ...common,
        mode: m.mode,
        epochs: plan.epochs,
        outDir: path.join(o.out, m.name),
        ...(m.mode === 'target' ? { scales: search.files.json } : {}),
      },
      { data },
    );
    showProgress(run, `${m.mode} ${arch}`);
    results.set(m.mode, await run.result);
  }

  // Deployment: each model folded into one conv3x3 + bias per block (RepVGG: its three branches;
  // RepOpt-VGG and VGG: their BN), then INT8 post-training quantization of the folded network.
  const stats = channelStats(data.train);
  const trainSet = uploadDataset(data.train, stats, o.device, o.seed);
  const testSet = uploadDataset(data.test, stats, o.device, o.seed);
  const calibration = { batches: plan.calibBatches, batchSize: d.batchSize, seed: o.seed };
  const quantized = new Map<TrainMode, PtqResult>();
  for (const m of MODELS) {
    const r = results.get(m.mode)!;
    quantized.set(m.mode, await quantizeDeploy(deployNetwork(r.spec, r.network.stateDict()), trainSet, testSet, calibration));
  }
  trainSet.dispose();
  testSet.dispose();
  const repvgg = results.get('repvgg')!;
  const folded = quantized.get('repvgg')!;
  const foldedTest = folded.float;

  const rows = MODELS.map((m) => {
    const r = results.get(m.mode)!;
    return {
      name: m.name,
      testAccuracy: r.test.accuracy,
      int8Accuracy: quantized.get(m.mode)!.int8.accuracy,
      trainSeconds: r.trainSeconds,
      imagesPerSecond: r.imagesPerSecond,
      peakRssBytes: r.peakRssBytes,
      parameters: r.parameterCount,
    };
  });
  const deployParams = folded.deploy.parameters().reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
  const spreads = MODELS.map((m) => ({
    name: m.name,
    spread: weightSpread(quantized.get(m.mode)!.deploy.spec, quantized.get(m.mode)!.deploy.stateDict()),
  }));
  // The block whose folded RepVGG kernel spreads widest (max|w| / std), for the histogram.
  const repvggSpread = spreads[1].spread.slice(0, -1);
  const widest = repvggSpread.reduce((a, b) => (b.absMaxOverStd > a.absMaxOverStd ? b : a)).layer;

  const plots = { curves: 'accuracy.png', loss: 'loss.png', scales: 'scales.png', weights: 'weights.png' };
  // One curve per model over epochs, of one field of the epoch history.
  const perEpoch = (file: string, title: string, yLabel: string, y: (h: TrainResult['history'][number]) => number) =>
    linePlot(path.join(o.out, file), {
      title,
      xLabel: 'epoch',
      yLabel,
      series: MODELS.map((m) => ({
        name: m.name,
        x: results.get(m.mode)!.history.map((h) => h.epoch),
        y: results.get(m.mode)!.history.map(y),
      })),
    });
  await perEpoch(plots.curves, 'Fashion-MNIST test accuracy per epoch', 'test accuracy', (h) => h.testAccuracy);
  await perEpoch(plots.loss, 'Training loss (label-smoothed cross-entropy) per epoch', 'train loss', (h) => h.trainLoss);
  await plotScales(path.join(o.out, plots.scales), search.stats);
  await histogramPlot(path.join(o.out, plots.weights), {
    title: `${widest}: deployed 3x3 kernel weights (BN and branches folded in)`,
    xLabel: 'weight',
    bins: 80,
    countScale: 'symlog',
    series: MODELS.map((m) => ({
      name: m.name,
      values: quantized.get(m.mode)!.deploy.stateDict().get(`${widest}.rbr_reparam.weight`)!.data,
    })),
  });

  const runtime = info();
  const table = markdownTable(
    ['model', 'test accuracy', 'INT8 (PTQ)', 'train time', 'images/s', 'peak RSS (process)', 'parameters'],
    [
      ...rows.map((r) => [
        r.name,
        formatPercent(r.testAccuracy),
        formatPercent(r.int8Accuracy),
        formatDuration(r.trainSeconds),
        Math.round(r.imagesPerSecond),
        formatBytes(r.peakRssBytes),
        formatCount(r.parameters),
      ]),
      [
        'RepVGG, folded (deploy)',
        formatPercent(foldedTest.accuracy),
        formatPercent(folded.int8.accuracy),
        '-',
        '-',
        '-',
        formatCount(deployParams),
      ],
    ],
  );
  const int8Table = markdownTable(
    ['model (folded)', 'float32', 'INT8 simulated', 'INT8 (QNNPACK)', 'drop'],
    MODELS.map((m) => {
      const q = quantized.get(m.mode)!;
      return [
        m.name,
        formatPercent(q.float.accuracy),
        formatPercent(q.simulated.accuracy),
        formatPercent(q.int8.accuracy),
        `${((q.float.accuracy - q.int8.accuracy) * 100).toFixed(1)} pt`,
      ];
    }),
  );
  const report = [
    '# repopt demo: RepOpt-VGG vs RepVGG vs VGG on Fashion-MNIST',
    '',
    `Architecture ${arch} (strides ${ARCHS[arch].strides.join(',')}), ${plan.epochs} epochs each (hyper-search: ` +
      `${plan.hsEpochs}), batch ${d.batchSize}, lr ${plan.lr} x ${d.batchSize}/256, cosine per iteration, SGD momentum ` +
      `${d.momentum}${d.nesterov ? ' nesterov' : ''}, weight decay ${d.weightDecay} (official grouping), label smoothing ` +
      `${d.labelSmoothing}, random crop (pad ${d.augment.pad})${d.augment.flip ? ' + flip' : ''}. ` +
      `Data: ${data.train.count} training / ${data.test.count} test ` +
      `images${o.quick ? ` (class-balanced subset, seed ${o.seed})` : ''}. Seed ${o.seed} for every model.`,
    `Machine: libtorch ${runtime.torchVersion}, device ${o.device}, ${o.threads} torch ` +
      `threads${o.quick ? ' (--quick: a short run; accuracies are indicative only)' : ''}.`,
    '',
    table,
    '',
    `The folded RepVGG is the trained RepVGG with each block's three branches merged into one 3x3 conv with bias; its ` +
      `accuracy equals the multi-branch model's up to float rounding (${formatPercent(foldedTest.accuracy)} vs ` +
      `${formatPercent(repvgg.test.accuracy)}).`,
    'RepOpt-VGG and VGG train the same plain network; RepOpt-VGG multiplies conv gradients by the GradMults made from ' +
      "the hyper-searched scales and starts from the init rule. Peak RSS is the process's resident memory sampled " +
      'while each model trained (all models run in one process).',
    '',
    '## INT8 post-training quantization',
    '',
    `Each model folded into its deploy form (one conv3x3 + bias per block), then quantized: weights int8 per output ` +
      `channel (symmetric), activations uint8 per tensor at every conv input and output, min-max ranges from ` +
      `${plan.calibBatches} training batches of ${d.batchSize}. "Simulated": libtorch's fake-quantize ops; "QNNPACK": libtorch's ` +
      `real int8 kernels. \`repopt quantize --checkpoint <model>\` does the same for one run, with QAT and the int8 export.`,
    '',
    int8Table,
    '',
    "For scale: the paper's ImageNet figures are RepOpt-VGG-B1 78.47% → 75.89% INT8 and RepVGG-B1 → 54.55% " +
      '(post-training). Whether a gap of that kind appears depends on how far the folded kernels spread, which this ' +
      "small model on Fashion-MNIST may not reproduce; the numbers above are this run's, measured.",
    '',
    "Weight spread of the deployed kernels (the paper's explanation of RepVGG's INT8 loss: folding adds BN-scaled " +
      "branches, so a few large weights stretch each channel's int8 grid):",
    '',
    spreadTable(spreads),
    '',
    `![weights of ${widest}](${plots.weights})`,
    '',
    `![test accuracy](${plots.curves})`,
    '',
    `![training loss](${plots.loss})`,
    '',
    '## Hyper-searched scales',
    '',
    `From the HS model after ${plan.hsEpochs} epoch(s) (test accuracy ${formatPercent(search.train.test.accuracy)}): ` +
      `\`hyper-search/scales.json\`, \`hyper-search/scales.pth\`.`,
    ...(search.warnings.length ? ['', ...search.warnings.map((w) => `**Warning:** ${w}`)] : []),
    '',
    `![scales](${plots.scales})`,
    '',
    scaleTable(search.stats),
    '',
    'Checkpoints: `<model>/checkpoints/`, metrics per step and epoch: `<model>/metrics.jsonl`.',
    '',
  ].join('\n');
  const reportFile = path.join(o.out, 'report.md');
  fs.writeFileSync(reportFile, report);
  const int8 = Object.fromEntries(
    MODELS.map((m) => [m.name, (({ float, simulated, int8 }) => ({ float, simulated, int8 }))(quantized.get(m.mode)!)]),
  );
  fs.writeFileSync(
    path.join(o.out, 'results.json'),
    JSON.stringify({ rows, folded: foldedTest, int8, spread: spreads, plan, seed: o.seed }, null, 2) + '\n',
  );
  return { report: reportFile, rows };
}
