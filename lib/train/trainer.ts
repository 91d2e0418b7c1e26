// The training loop: TypeScript drives, one native step per call, each off the JS thread (the event
// loop stays free for timers, I/O and listeners). Loss and accuracy accumulate on the device and are
// read every `logEvery` steps; the lr follows the official schedule per iteration.
import { createHash } from 'crypto';
import * as path from 'path';
import { networkSpec } from '../configs';
import {
  checkAgreed,
  createProcessGroup,
  distributedError,
  gatherBytes,
  type Rendezvous,
  rendezvousFromEnv,
  shardPermutation,
  sumOverRanks,
} from '../distributed/worker';
import { type BackendBatchOptions, NativeBackendNetwork, type NativeBackendOptimizer } from '../native-backend';
import { OptionError } from '../option-error';
import type { EpochMetrics, NativeDataset, NativeProcessGroup } from '../native';
import { IMAGE_STREAM_DEFAULTS, type SkippedImage, type StreamAugment, type StreamBatch } from '../data/image-stream';
import { parseRandAugment } from '../data/randaugment';
import { Tensor } from '../tensor';
import { calibrate, rangesOf } from '../quant/ptq';
import { applyInitRule, repConvsOf } from '../repopt';
import { writeJsonl } from '../report';
import { useThreads } from '../runtime';
import { loadScales, scaleValueWarnings } from '../scales';
import type { NetworkSpec } from '../spec';
import { type Checkpoint, damagedCheckpointWarning, readLatestCheckpoint, saveCheckpoint } from './checkpoint';
import { blockMode, type TrainConfig } from './config';
import { channelStats, isStreamed, loadData, type Normalization, type TrainTestData, uploadDataset } from './data';
import { checkpointAt } from './load';
import { officialParamGroups } from './param-groups';
import { type ConfigChange, checkResumedConfig, describeChanges, takeRunFolder } from './run-folder';
import type { Emit, EpochEvent } from './run';
import { mixDraw, mixes } from './mixup';
import { lrAt } from './schedule';
import { StreamData, uploadBatch } from './stream-data';

export type EpochRecord = EpochEvent;

/** The part of an epoch done so far: sums over its steps (what its epoch record is made of). */
export interface EpochProgress {
  lossSum: number;
  correct: number;
  seen: number;
  seconds: number;
}

/** What a training checkpoint keeps besides weights, optimizer state and config. */
export interface TrainCheckpointExtra {
  readonly history: EpochRecord[];
  /** A checkpoint within an epoch: the epoch's progress, which a resumed run continues. */
  readonly epochProgress?: EpochProgress;
  /** The training set's per-channel mean and std (what evaluation and quantization normalise with).
   * Absent in checkpoints written before it was kept. */
  readonly normalization?: Normalization;
  /** Data parallel: every rank's augmentation generator state (base64). */
  readonly rngStates?: string[];
  readonly worldSize?: number;
  /** QAT: the int8 ranges. */
  readonly quant?: ReturnType<typeof rangesOf>;
}

export type TrainCheckpoint = Checkpoint<TrainConfig, TrainCheckpointExtra>;

export interface TrainResult {
  /** 'completed': every epoch ran; 'stopped': stopAfterSteps was reached; 'aborted': the AbortSignal
   * fired. In every case the last step is in `checkpoint` (empty only when a fresh run was aborted
   * before its first step), and `resume: true` continues from it. */
  readonly status: 'completed' | 'stopped' | 'aborted';
  readonly config: TrainConfig;
  readonly spec: NetworkSpec;
  /** The trained network (dispose() it when done). */
  readonly network: NativeBackendNetwork;
  readonly history: EpochRecord[];
  readonly test: EpochMetrics;
  readonly steps: number;
  readonly trainSeconds: number;
  readonly imagesPerSecond: number;
  readonly peakRssBytes: number;
  readonly parameterCount: number;
  readonly checkpoint: string;
  /** Steps skipped for non-finite values (skipNonFinite). */
  readonly skippedSteps: number;
  /** This process's rank and the number of processes (0 and 1 without data parallelism). */
  readonly rank: number;
  readonly worldSize: number;
  /** With config.ema: the EMA of the weights (dispose() it when done) and its test metrics. */
  readonly ema?: { readonly network: NativeBackendNetwork; readonly test: EpochMetrics };
}

export interface RunContext {
  /** Data already in memory (e.g. shared by the demo's runs); loaded from config.data otherwise. */
  readonly data?: TrainTestData;
  readonly signal?: AbortSignal;
  readonly emit: Emit;
}

/** SHA-256 of the parameters (not the buffers), for the replica check. */
function parameterDigest(network: NativeBackendNetwork): Uint8Array {
  const hash = createHash('sha256');
  const names = new Set(network.parameters().map((p) => p.name));
  for (const [name, t] of network.stateTensors())
    if (names.has(name)) hash.update(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  return new Uint8Array(hash.digest());
}

function peakRss(current: number): number {
  return Math.max(current, process.memoryUsage().rss);
}

/** Runs a checked config to its end (or its signal); see TrainingRun for the public form. */
export async function runTraining(config: TrainConfig, context: RunContext): Promise<TrainResult> {
  useThreads(config.threads, 'threads', (message) => context.emit('warning', { message }));
  const rendezvous = rendezvousFromEnv();
  if (rendezvous && config.batchSize % rendezvous.worldSize !== 0) {
    throw new OptionError(
      'batchSize',
      `batchSize ${config.batchSize} (the global batch) is not divisible by the number of processes (${rendezvous.worldSize})`,
    );
  }
  if (rendezvous && (config.accumulate ?? 1) > 1)
    throw new OptionError(
      'accumulate',
      `accumulate ${config.accumulate}: gradient accumulation does not run data-parallel (${rendezvous.worldSize} processes); ` +
        'drop accumulate, or give each process a smaller batch by using more of them',
      ['batchSize'],
    );
  // Rank 0 alone writes, so it alone owns the run folder: taken before anything is read or written.
  const folder = (rendezvous?.rank ?? 0) === 0 ? takeRunFolder(config, context.emit) : undefined;
  try {
    // Joined first, so that an unreachable store is reported before data loading.
    const pg = rendezvous
      ? createProcessGroup(rendezvous, config.distributed, process.env, {
          onWaiting: (message) => context.emit('warning', { message }),
          timeoutOption: 'distributed.connectTimeoutMs',
        })
      : undefined;
    try {
      return await trainWith(config, context, rendezvous, pg);
    } catch (e) {
      throw rendezvous ? distributedError(e, rendezvous) : e;
    } finally {
      pg?.dispose();
    }
  } finally {
    folder?.release();
  }
}

/** Where a run's images come from: data sets in memory (uploaded to the device once), or an image folder
 * read batch by batch. */
type RunData =
  | { readonly memory: TrainTestData; readonly stream?: undefined }
  | { readonly stream: StreamData; readonly memory?: undefined };

/** The network, its optimizer and the device data of a run, fresh or from its newest checkpoint. */
interface Setup {
  readonly spec: NetworkSpec;
  readonly network: NativeBackendNetwork;
  readonly optimizer: NativeBackendOptimizer;
  /** In-memory data only (a streamed run uploads each batch). */
  readonly trainSet?: NativeDataset;
  readonly testSet?: NativeDataset;
  readonly normalization: Normalization;
  readonly resumed: TrainCheckpoint | undefined;
  /** Settings the resumed run changed (allowConfigChange). */
  readonly configChanges: ConfigChange[];
  /** config.ema: the EMA of the weights. */
  readonly ema?: NativeBackendNetwork;
}

/** The EMA network of a run: the resumed checkpoint's EMA, else a copy of the weights trained from. */
function emaNetwork(
  spec: NetworkSpec,
  network: NativeBackendNetwork,
  device: string,
  channelsLast: boolean,
  resumed: TrainCheckpoint | undefined,
  emit: Emit,
): NativeBackendNetwork {
  const ema = new NativeBackendNetwork(spec, 'float32');
  if (device !== 'cpu') ema.to(device);
  if (channelsLast) ema.setChannelsLast(true);
  if (resumed && !resumed.ema) emit('warning', { message: `${resumed.dir} keeps no EMA of the weights: the EMA starts from its weights` });
  ema.loadStateTensors(resumed?.ema ?? network.stateTensors());
  return ema;
}

async function setUp(config: TrainConfig, data: RunData, device: string, rank: number, worldSize: number, emit: Emit): Promise<Setup> {
  const checkpointsDir = path.join(config.outDir, 'checkpoints');
  const spec = networkSpec(config.arch, {
    mode: blockMode(config.mode),
    numClasses: data.memory ? data.memory.train.numClasses : data.stream.numClasses,
    inChannels: data.memory ? data.memory.train.channels : 3,
    ...(config.strides ? { strides: config.strides } : {}),
  });
  const network = new NativeBackendNetwork(spec, 'float32', config.seed);
  if (device !== 'cpu') network.to(device);
  const channelsLast = config.channelsLast ?? device.startsWith('cuda');
  if (channelsLast) network.setChannelsLast(true);

  // Weights: a resumed run's, a fine-tuning start, or fresh (after the init rule for mode target).
  const resumed = config.resume
    ? readLatestCheckpoint<TrainConfig, TrainCheckpointExtra>(checkpointsDir, {
        onDamaged: (damaged) => emit('warning', { message: damagedCheckpointWarning(damaged) }),
      })
    : undefined;
  const configChanges = resumed ? checkResumedConfig(config, resumed) : [];
  const scales = config.mode === 'target' ? loadScales(config.scales!, 'scales') : undefined;
  if (scales && rank === 0) for (const message of scaleValueWarnings(scales, config.scales!)) emit('warning', { message });
  const repConvs = scales ? repConvsOf(spec, scales) : undefined;
  if (resumed) {
    network.loadStateTensors(resumed.model);
  } else if (config.finetune) {
    // A repopt checkpoint, or an official checkpoint file of this architecture.
    network.loadStateTensors(checkpointAt(config.finetune, undefined, { arch: config.arch }).model);
  } else if (repConvs) {
    network.loadStateDict(
      applyInitRule(network.stateDict(), repConvs, { identityInit: config.identityInit ?? 'trained', seed: config.seed }),
    );
  }
  const optimizer = network.createOptimizer({
    type: 'sgd',
    lr: config.lr,
    momentum: config.momentum,
    nesterov: config.nesterov,
    groups: officialParamGroups(network.parameters(), config.weightDecay),
    ...(repConvs ? { repConvs } : {}),
  });
  if (resumed) optimizer.loadStateBytes(resumed.optimizer);
  if (config.batchNorm === 'frozen') network.setBatchNormMode('frozen');
  const ema = config.ema ? emaNetwork(spec, network, device, channelsLast, resumed, emit) : undefined;

  // A resumed run normalises as it did (the checkpoint keeps the statistics).
  const normalization =
    resumed?.meta.extra?.normalization ?? (data.memory ? channelStats(data.memory.train) : await data.stream.normalization(config.seed));
  if (!data.memory) return { spec, network, optimizer, normalization, resumed, configChanges, ema };
  // Each rank its own augmentation stream (rank 0: the one-process stream).
  const trainSet = uploadDataset(data.memory.train, normalization, device, config.seed + 1000 * rank);
  const testSet = uploadDataset(data.memory.test, normalization, device, config.seed);
  if (resumed) {
    const states = resumed.meta.extra?.rngStates;
    const state = states && states.length === worldSize ? states[rank] : rank === 0 ? resumed.meta.rngState : undefined;
    if (state) {
      const bytes = new Uint8Array(Buffer.from(state, 'base64'));
      // The generator's state size depends on the device type (CPU: mt19937; CUDA: Philox).
      const expected = trainSet.rngState().length;
      if (bytes.length !== expected)
        throw new Error(
          `${resumed.dir}: its augmentation generator state holds ${bytes.length} bytes where this run's ${device} ` +
            `generator takes ${expected}: the checkpoint is damaged or was written on another device type`,
        );
      trainSet.setRngState(bytes);
    }
  }
  return { spec, network, optimizer, trainSet, testSet, normalization, resumed, configChanges, ema };
}

async function trainWith(
  config: TrainConfig,
  context: RunContext,
  rendezvous: Rendezvous | undefined,
  pg: NativeProcessGroup | undefined,
): Promise<TrainResult> {
  const { emit, signal } = context;
  const rank = rendezvous?.rank ?? 0;
  const worldSize = rendezvous?.worldSize ?? 1;
  // Rank 0 alone writes checkpoints and metrics.
  const lead = rank === 0;
  const localBatch = config.batchSize / worldSize;
  // Data parallel on CUDA: one GPU per process on each host (--device cuda -> cuda:LOCAL_RANK).
  const device = rendezvous && config.device === 'cuda' ? `cuda:${rendezvous.localRank}` : config.device;
  // Gloo reduces host tensors, NCCL device tensors.
  const collectives = pg?.backend === 'nccl' ? device : 'cpu';
  const data: RunData =
    !context.data && isStreamed(config.data)
      ? { stream: StreamData.open(config.data, config.seed) }
      : { memory: context.data ?? (await loadData(config.data, config.seed)) };
  const checkpointsDir = path.join(config.outDir, 'checkpoints');

  let setup: Setup;
  try {
    setup = await setUp(config, data, device, rank, worldSize, emit);
  } catch (e) {
    data.stream?.close();
    throw e;
  }
  const { spec, network, optimizer, trainSet, testSet, normalization, resumed, configChanges, ema } = setup;
  const stream = data.stream;
  // Unreadable images of a streamed folder: each named once, counted per epoch.
  const reportedImages = new Set<string>();
  let skippedImages = 0;
  const onSkipped = (skipped: readonly SkippedImage[]) => {
    skippedImages += skipped.length;
    const fresh = skipped.filter((s) => !reportedImages.has(s.file));
    for (const s of fresh) reportedImages.add(s.file);
    if (fresh.length && lead)
      emit('warning', {
        message: `skipped ${fresh.length} unreadable image(s): ${fresh.map((s) => s.message).join('; ')}`,
      });
  };
  const precision = { autocast: config.autocast ?? (device.startsWith('cuda') ? 'bf16' : 'none') } as const;
  if (pg) {
    // Every rank must continue from the same checkpoint (the run folder on every node).
    checkAgreed(
      pg,
      collectives,
      resumed?.meta.step ?? -1,
      `the step to resume from (-1: no checkpoint found in ${checkpointsDir}; to resume, every node needs the run folder)`,
    );
    network.attach(pg, {
      syncBatchNorm: config.batchNorm === 'sync',
      ...(config.distributed?.bucketCapMb ? { bucketCapMb: config.distributed.bucketCapMb } : {}),
    });
  }
  if (config.quant) {
    const saved = resumed?.meta.extra?.quant;
    const { calibBatches, ...observer } = config.quant;
    if (saved) network.setQuantRanges(saved);
    else
      await calibrate(
        network,
        trainSet!, // checkConfig refuses quant with a streamed folder
        { ...observer, batches: calibBatches, batchSize: config.batchSize, seed: config.seed },
        { batches: 'quant.calibBatches', batchSize: 'batchSize' },
      );
    network.setFakeQuant(true);
  }

  const trainCount = trainSet ? trainSet.count : stream!.train.count;
  const stepsPerEpoch = Math.floor(trainCount / config.batchSize);
  if (stepsPerEpoch === 0)
    throw new OptionError('batchSize', `batchSize ${config.batchSize} is larger than the training set (${trainCount} images)`);
  const totalSteps = stepsPerEpoch * config.epochs;
  const schedule = { baseLr: config.lr, batchSize: config.batchSize, totalSteps, warmupSteps: stepsPerEpoch * config.warmupEpochs };
  const history: EpochRecord[] = resumed?.meta.extra?.history ?? [];
  const metricsLog = lead ? writeJsonl(path.join(config.outDir, 'metrics.jsonl')) : { file: '', append() {}, close() {} };
  if (lead && configChanges.length) {
    emit('warning', { message: `resumed with settings that differ from the checkpoint's: ${describeChanges(configChanges)}` });
    metricsLog.append({ type: 'config-change', step: resumed!.meta.step, changes: configChanges });
  }
  const parameterCount = network.parameters().reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);

  const startStep = resumed?.meta.step ?? 0;
  let step = startStep;
  const stopAt = Math.min(totalSteps, config.stopAfterSteps ?? totalSteps);
  let rss = process.memoryUsage().rss;
  let trainSeconds = 0;
  let lastCheckpoint = resumed?.dir ?? '';
  let skippedSteps = 0;
  // A run resumed mid-epoch carries on the epoch's training loss, accuracy and time.
  let carried = step % stepsPerEpoch !== 0 ? resumed?.meta.extra?.epochProgress : undefined;
  const save = (epoch: number, epochProgress?: EpochProgress) => {
    // Every rank's augmentation state (a collective), so that a resumed run continues each stream.
    // (A streamed run draws its augmentations from (seed, epoch, image): it has no generator state.)
    const rngStates =
      pg && trainSet ? gatherBytes(pg, trainSet.rngState(), collectives).map((b) => Buffer.from(b).toString('base64')) : undefined;
    if (!lead) return;
    const extra: TrainCheckpointExtra = {
      history,
      normalization,
      ...(epochProgress ? { epochProgress } : {}),
      ...(rngStates ? { rngStates, worldSize } : {}),
      ...(config.quant ? { quant: rangesOf(network.quantParams()!) } : {}),
    };
    lastCheckpoint = saveCheckpoint(checkpointsDir, {
      step,
      epoch,
      config,
      rngState: trainSet ? trainSet.rngState() : new Uint8Array(0),
      model: network.stateTensors(),
      optimizer: optimizer.stateBytes(),
      ...(ema ? { ema: ema.stateTensors() } : {}),
      extra,
    });
    emit('checkpoint', { step, epoch, dir: lastCheckpoint });
  };
  // Evaluation sees rank 0's BatchNorm statistics on every rank (per-process statistics differ).
  // The EMA network (net) is not attached to the process group: each rank averages its own weights.
  const evaluate = (net = network) => {
    if (pg && net === network) network.broadcastState(pg);
    const skipped = net === network ? { onSkipped } : {};
    if (stream) return stream.evaluate(net, { batchSize: config.evalBatchSize, normalization, device, precision, ...skipped });
    return net.evaluate(testSet!, config.evalBatchSize, precision);
  };
  // A streamed folder's crop, flip and RandAugment (checked by checkConfig), the same every epoch.
  const streamAugment: StreamAugment = {
    scale: config.augment.cropScale ?? IMAGE_STREAM_DEFAULTS.augment.scale,
    ratio: config.augment.cropRatio ?? IMAGE_STREAM_DEFAULTS.augment.ratio,
    flip: config.augment.flip,
    ...(config.augment.randAugment ? { randAugment: parseRandAugment(config.augment.randAugment) } : {}),
  };
  // Mixup / CutMix: each step's draw from (seed, step), for images of this size.
  const [imageHeight, imageWidth] = trainSet ? [trainSet.shape[1]!, trainSet.shape[2]!] : [stream!.spec.size, stream!.spec.size];
  // Aborting: in one process right after the step; with data parallelism at the next log step or
  // epoch end, once every rank has agreed (a rank that stopped alone would leave the others waiting
  // in a collective).
  const localAbort = () => (signal?.aborted ? 1 : 0);
  const agreedAbort = () => (pg ? sumOverRanks(pg, collectives, [localAbort()])[0]! > 0 : localAbort() > 0);
  const takeMetrics = (): { metrics: EpochMetrics; abort: boolean } => {
    const m = network.takeTrainMetrics();
    if (!pg) return { metrics: m, abort: localAbort() > 0 };
    const mine = m.count > 0 ? [m.loss * m.count, m.accuracy * m.count, m.count] : [0, 0, 0];
    const [loss, correct, count, skipped, abort] = sumOverRanks(pg, collectives, [...mine, m.skipped ?? 0, localAbort()]) as [
      number,
      number,
      number,
      number,
      number,
    ];
    return {
      metrics: { count, loss: count > 0 ? loss / count : NaN, accuracy: count > 0 ? correct / count : NaN, skipped },
      abort: abort > 0,
    };
  };

  emit('start', { step, stopAt, stepsPerEpoch, rank, worldSize });
  let aborted = agreedAbort();
  // The last evaluation, while no step has run since (the result reuses the final epoch's).
  let lastTest: EpochMetrics | undefined;
  let lastTestEma: EpochMetrics | undefined;
  try {
    while (step < stopAt && !aborted) {
      const epoch = Math.floor(step / stepsPerEpoch);
      const full = trainSet?.permutation(config.seed, epoch);
      const permutation: Tensor | undefined = full && pg ? shardPermutation(full, rank, worldSize, config.batchSize) : full;
      if (full && pg) full.dispose();
      const streamBatches = stream?.trainBatches({
        seed: config.seed,
        epoch,
        batchSize: localBatch,
        startBatch: step - epoch * stepsPerEpoch,
        augment: streamAugment,
        ...(pg ? { shard: { rank, worldSize, batchSize: config.batchSize } } : {}),
      });
      const epochStart = process.hrtime.bigint();
      let intervalStart = epochStart;
      let intervalSteps = 0;
      let lr = 0;
      const progress: EpochProgress = { lossSum: 0, correct: 0, seen: 0, seconds: 0, ...carried };
      carried = undefined;
      const epochEnd = Math.min(stopAt, (epoch + 1) * stepsPerEpoch);
      while (step < epochEnd) {
        lr = lrAt(step, schedule);
        optimizer.setLr(lr);
        const stepOptions = {
          labelSmoothing: config.labelSmoothing,
          clipNorm: config.clipNorm,
          skipNonFinite: config.skipNonFinite ?? false,
          ...precision,
          ...((config.accumulate ?? 1) > 1 ? { accumulate: config.accumulate } : {}),
          ...(ema ? { ema: { network: ema, decay: config.ema!.decay } } : {}),
          ...(mixes(config.mixup) ? { mix: [mixDraw(config.mixup, config.seed, step, imageHeight, imageWidth)] } : {}),
        };
        if (streamBatches)
          await trainStreamBatch(network, optimizer, streamBatches, stepOptions, normalization, device, onSkipped, step, pg);
        else
          await network.trainBatch(optimizer, trainSet!, permutation!, step - epoch * stepsPerEpoch, localBatch, {
            ...config.augment,
            ...stepOptions,
          });
        step++;
        intervalSteps++;
        lastTest = undefined;
        lastTestEma = undefined;
        // Stops after the step in flight; the checkpoint below keeps it.
        if (!pg) aborted = localAbort() > 0;
        if (pg && config.distributed?.checkReplicas) {
          const digests = gatherBytes(pg, parameterDigest(network), collectives);
          const differ = digests.findIndex((d) => Buffer.compare(Buffer.from(d), Buffer.from(digests[0]!)) !== 0);
          if (differ > 0) throw new Error(`replica check: rank ${differ}'s parameters differ from rank 0's after step ${step}`);
          metricsLog.append({ type: 'replicas', step, ranks: worldSize, identical: true });
        }
        if (step % config.logEvery === 0 || step === epochEnd || aborted) {
          const { metrics: m, abort } = takeMetrics();
          aborted = aborted || abort;
          skippedSteps += m.skipped ?? 0;
          if (m.count > 0 && !Number.isFinite(m.loss)) {
            throw new OptionError(
              'lr',
              `lr ${config.lr}: training diverged, the loss read at step ${step} is ${m.loss}; ` +
                (lastCheckpoint
                  ? `continue from the last good checkpoint ${lastCheckpoint} with resume, allowConfigChange and a lower lr`
                  : 'no checkpoint was written yet: start again with a lower lr') +
                (config.skipNonFinite ? '' : ', or pass skipNonFinite to skip such steps'),
              ['lr', 'resume', 'allowConfigChange', 'skipNonFinite'],
            );
          }
          if (m.count > 0) {
            progress.lossSum += m.loss * m.count;
            progress.correct += m.accuracy * m.count;
            progress.seen += m.count;
          }
          const now = process.hrtime.bigint();
          const imagesPerSecond = (intervalSteps * config.batchSize) / Math.max(Number(now - intervalStart) / 1e9, 1e-9);
          metricsLog.append({ type: 'train', step, epoch, lr, loss: m.loss, accuracy: m.accuracy, skipped: m.skipped ?? 0 });
          emit('step', { step, epoch, lr, loss: m.loss, accuracy: m.accuracy, skipped: m.skipped ?? 0, imagesPerSecond });
          intervalStart = now;
          intervalSteps = 0;
          rss = peakRss(rss);
        }
        // A listener may have aborted on this step's event.
        if (!pg) aborted = aborted || localAbort() > 0;
        if (aborted) break;
      }
      permutation?.dispose();
      await streamBatches?.return();
      const seconds = Number(process.hrtime.bigint() - epochStart) / 1e9;
      progress.seconds += seconds;
      trainSeconds += seconds;
      if (step === (epoch + 1) * stepsPerEpoch) {
        const test = await evaluate();
        lastTest = test;
        const testEma = ema ? await evaluate(ema) : undefined;
        lastTestEma = testEma;
        const record: EpochRecord = {
          epoch: epoch + 1,
          step,
          lr,
          trainLoss: progress.lossSum / progress.seen,
          trainAccuracy: progress.correct / progress.seen,
          testLoss: test.loss,
          testAccuracy: test.accuracy,
          ...(testEma ? { testLossEma: testEma.loss, testAccuracyEma: testEma.accuracy } : {}),
          seconds: progress.seconds,
          ...(stream ? { skippedImages } : {}),
        };
        skippedImages = 0;
        history.push(record);
        metricsLog.append({ type: 'eval', ...record });
        emit('epoch', record);
        save(epoch + 1);
        // A listener may abort on the epoch's result (early stopping): the checkpoint is written.
        aborted = aborted || agreedAbort();
      } else {
        save(epoch, progress);
      }
    }
    const test = lastTest ?? (await evaluate());
    const testEma = ema ? (lastTestEma ?? (await evaluate(ema))) : undefined;
    if (pg) {
      pg.barrier();
      network.detach(pg);
    }
    return {
      status: step >= totalSteps ? 'completed' : aborted ? 'aborted' : 'stopped',
      config,
      spec,
      network,
      history,
      test,
      steps: step,
      trainSeconds,
      imagesPerSecond: ((step - startStep) * config.batchSize) / Math.max(trainSeconds, 1e-9),
      rank,
      worldSize,
      peakRssBytes: peakRss(rss),
      parameterCount,
      checkpoint: lastCheckpoint,
      skippedSteps,
      ...(ema && testEma ? { ema: { network: ema, test: testEma } } : {}),
    };
  } catch (e) {
    network.dispose();
    ema?.dispose();
    throw e;
  } finally {
    metricsLog.close();
    optimizer.dispose();
    trainSet?.dispose();
    testSet?.dispose();
    stream?.close();
  }
}

/** One training step on the next batch of a streamed folder (uploaded, normalised on the device; the crop and
 * flip were done by the loader). */
async function trainStreamBatch(
  network: NativeBackendNetwork,
  optimizer: NativeBackendOptimizer,
  batches: AsyncGenerator<StreamBatch, void, undefined>,
  options: BackendBatchOptions,
  normalization: Normalization,
  device: string,
  onSkipped: (skipped: readonly SkippedImage[]) => void,
  step: number,
  pg: NativeProcessGroup | undefined,
): Promise<void> {
  const next = await batches.next();
  if (next.done) throw new Error(`step ${step + 1}: the image stream ended before the epoch did`);
  const b = next.value;
  if (b.skipped.length) onSkipped(b.skipped);
  if (b.count === 0) {
    // Every rank must take part in each step's collectives: a rank cannot leave one out.
    if (pg) throw new Error(`step ${step + 1}: none of the ${b.skipped.length} images of this rank's batch could be read`);
    return;
  }
  const ds = uploadBatch(b, normalization, device);
  const order = Tensor.fromArray(BigInt64Array.from({ length: b.count }, (_, i) => BigInt(i)));
  // A batch shortened by unreadable images: as many micro-batches as still divide it.
  let accumulate = options.accumulate ?? 1;
  while (b.count % accumulate !== 0) accumulate--;
  try {
    await network.trainBatch(optimizer, ds, order, 0, b.count, { ...options, accumulate });
  } finally {
    order.dispose();
    ds.dispose();
  }
}
