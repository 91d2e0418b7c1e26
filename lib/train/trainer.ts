// The training loop: TypeScript drives, one native call per step. Loss and accuracy accumulate on the
// device and are read every `logEvery` steps; the lr follows the official schedule per iteration.
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import type { OptimizerSpec } from '../backend';
import { networkSpec } from '../configs';
import { checkAgreed, createProcessGroup, distributedError, gatherBytes, GroupSettings, Rendezvous, rendezvousFromEnv, shardPermutation, sumOverRanks } from '../distributed/worker';
import { NativeBackendNetwork, NativeBackendOptimizer } from '../native-backend';
import { native, EpochMetrics, NativeProcessGroup, Tensor } from '../native';
import { calibrate, rangesOf } from '../quant/ptq';
import { applyInitRule, gradMultOf, repConvsOf } from '../repopt';
import { createProgress, writeJsonl } from '../report';
import { setNumThreads } from '../runtime';
import { loadScales } from '../scales';
import type { BlockMode, NetworkSpec } from '../spec';
import { readCheckpoint, readLatestCheckpoint, saveCheckpoint } from './checkpoint';
import { channelStats, DataSpec, loadData, TrainTestData, uploadDataset } from './data';
import { officialParamGroups } from './param-groups';
import { lrAt } from './schedule';

/** What is trained: target (RepOpt-VGG: target blocks + RepOptSGD from scales), vgg (target blocks,
 * plain SGD), repvgg (three-branch blocks), hs (hyper-search: trainable scales). */
export type TrainMode = 'target' | 'vgg' | 'repvgg' | 'hs';

export interface TrainConfig {
  readonly arch: string;
  readonly mode: TrainMode;
  readonly data: DataSpec;
  readonly epochs: number;
  readonly batchSize: number;
  /** lr for batch 256 (scaled linearly). */
  readonly lr: number;
  readonly momentum: number;
  readonly nesterov: boolean;
  readonly weightDecay: number;
  readonly warmupEpochs: number;
  readonly labelSmoothing: number;
  readonly augment: { readonly pad: number; readonly flip: boolean; readonly resizedCrop?: boolean };
  /** Gradient-norm clipping (0: none). Refused with a RepOptimizer unless forceClip. */
  readonly clipNorm: number;
  readonly forceClip?: boolean;
  /** Scale file (JSON or .pth) for mode target. */
  readonly scales?: string;
  readonly identityInit?: 'trained' | 'one';
  readonly strides?: readonly [number, number, number, number, number];
  readonly seed: number;
  readonly device: string;
  /** Channels-last conv weights and inputs. Default: on for CUDA; off on CPU, where it helps wide
   * networks (RepOpt-VGG-A0: ~8 % faster) and slows narrow ones (RepOpt-VGG-S: ~10 % slower). */
  readonly channelsLast?: boolean;
  /** bf16 autocast of the forward pass. Default: 'bf16' on CUDA, 'none' on CPU. */
  readonly autocast?: 'bf16' | 'none';
  readonly threads: number;
  readonly outDir: string;
  readonly logEvery: number;
  readonly evalBatchSize: number;
  /** Stop after this many steps (with a checkpoint), e.g. to split a run. */
  readonly stopAfterSteps?: number;
  /** Skip steps whose loss or gradients are not finite (counted) instead of stopping. */
  readonly skipNonFinite?: boolean;
  /** Continue from the newest complete checkpoint in outDir/checkpoints. */
  readonly resume?: boolean;
  /** Start from this checkpoint's weights (no init rule), e.g. to fine-tune. */
  readonly finetune?: string;
  /** Quantization-aware training (target and vgg): calibrate the int8 ranges on this many training
   * batches, then train the fake-quantized network (ranges follow the batches; GradMults stay on). */
  readonly quant?: { readonly calibBatches: number; readonly observer?: 'minmax' | 'percentile'; readonly percentile?: number };
  /** BatchNorm in training: per-process batch statistics ('batch', the default, also under data
   * parallelism), the running statistics ('frozen': eval-mode BN, statistics not updated), or
   * statistics over all processes ('sync': SyncBatchNorm; the same as 'batch' in one process). */
  readonly batchNorm?: 'batch' | 'frozen' | 'sync';
  /** Data parallelism: the rendezvous comes from RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT (set by
   * `repopt train --nproc` / `repopt launch` / torchrun); batchSize is the global batch, split evenly. */
  readonly distributed?: GroupSettings & {
    /** Gradient bucket size for the all-reduces (c10d Reducer), MB. */
    readonly bucketCapMb?: number;
    /** Checks after every step that all ranks hold bit-identical parameters (costs a collective). */
    readonly checkReplicas?: boolean;
  };
}

export interface EpochRecord {
  readonly epoch: number;
  readonly step: number;
  readonly lr: number;
  readonly trainLoss: number;
  readonly trainAccuracy: number;
  readonly testLoss: number;
  readonly testAccuracy: number;
  readonly seconds: number;
}

export interface TrainResult {
  readonly config: TrainConfig;
  readonly spec: NetworkSpec;
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
}

export const TRAIN_DEFAULTS = {
  momentum: 0.9,
  nesterov: true,
  weightDecay: 4e-5,
  warmupEpochs: 0,
  labelSmoothing: 0.1,
  clipNorm: 0,
  seed: 0,
  device: 'cpu',
  threads: 2,
  logEvery: 20,
  evalBatchSize: 500,
  augment: { pad: 0, flip: false },
} as const;

function blockMode(mode: TrainMode): BlockMode {
  return mode === 'vgg' ? 'target' : mode;
}

/** Checks a config before anything runs; throws an Error saying what to change. */
export function checkConfig(c: TrainConfig): void {
  const positive = (v: number) => Number.isInteger(v) && v > 0;
  if (!positive(c.epochs)) throw new RangeError(`epochs must be a positive integer, got ${c.epochs}`);
  if (!positive(c.batchSize)) throw new RangeError(`batch size must be a positive integer, got ${c.batchSize}`);
  if (!(c.lr > 0)) throw new RangeError(`lr must be positive, got ${c.lr}`);
  if (!(c.clipNorm >= 0)) throw new RangeError(`clip norm must be >= 0, got ${c.clipNorm}`);
  if (c.mode === 'target' && !c.scales) throw new Error('mode target (RepOpt-VGG) needs --scales: a scale file from `repopt hyper-search` or an official RepOpt-VGG-*-scales.pth');
  if (c.mode !== 'target' && c.scales) throw new Error(`--scales only applies to mode target, not ${c.mode}`);
  if (c.mode === 'target' && c.clipNorm > 0 && !c.forceClip) {
    throw new Error('gradient clipping breaks the RepOptimizer equivalence (the GradMult update is no longer the CSLA update); drop --clip-norm or pass --force-clip');
  }
  if (c.resume && c.finetune) throw new Error('--resume and --finetune exclude each other');
  if (c.quant && c.mode !== 'target' && c.mode !== 'vgg') throw new Error(`quantization-aware training fine-tunes plain networks (target, vgg), not ${c.mode}`);
  if (c.quant && !positive(c.quant.calibBatches)) throw new RangeError(`QAT calibration needs at least 1 batch, got ${c.quant.calibBatches}`);
  if (c.batchNorm !== undefined && !['batch', 'frozen', 'sync'].includes(c.batchNorm)) throw new RangeError(`batch norm must be batch, frozen or sync, got ${c.batchNorm}`);
}

/** SHA-256 of the parameters (not the buffers), for the replica check. */
function parameterDigest(network: NativeBackendNetwork): Uint8Array {
  const hash = createHash('sha256');
  const names = new Set(network.parameters().map((p) => p.name));
  for (const [name, t] of network.stateTensors()) if (names.has(name)) hash.update(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  return new Uint8Array(hash.digest());
}

function peakRss(current: number): number {
  return Math.max(current, process.memoryUsage().rss);
}

export async function train(config: TrainConfig, preloaded?: TrainTestData): Promise<TrainResult> {
  checkConfig(config);
  setNumThreads(config.threads);
  const rendezvous = rendezvousFromEnv();
  if (rendezvous && config.batchSize % rendezvous.worldSize !== 0) {
    throw new RangeError(`batch size ${config.batchSize} (the global batch) is not divisible by the number of processes (${rendezvous.worldSize})`);
  }
  // Joined first, so that an unreachable store is reported before data loading.
  const pg = rendezvous ? createProcessGroup(rendezvous, config.distributed) : undefined;
  try {
    return await trainWith(config, preloaded, rendezvous, pg);
  } catch (e) {
    throw rendezvous ? distributedError(e, rendezvous) : e;
  } finally {
    pg?.dispose();
  }
}

async function trainWith(config: TrainConfig, preloaded: TrainTestData | undefined, rendezvous: Rendezvous | undefined, pg: NativeProcessGroup | undefined): Promise<TrainResult> {
  const rank = rendezvous?.rank ?? 0;
  const worldSize = rendezvous?.worldSize ?? 1;
  // Rank 0 alone writes checkpoints, metrics and progress.
  const lead = rank === 0;
  const localBatch = config.batchSize / worldSize;
  // Data parallel on CUDA: one GPU per process on each host (--device cuda -> cuda:LOCAL_RANK).
  const device = rendezvous && config.device === 'cuda' ? `cuda:${rendezvous.localRank}` : config.device;
  // Gloo reduces host tensors, NCCL device tensors.
  const collectives = pg?.backend === 'nccl' ? device : 'cpu';
  const data = preloaded ?? (await loadData(config.data, config.seed));
  const checkpointsDir = path.join(config.outDir, 'checkpoints');
  fs.mkdirSync(config.outDir, { recursive: true });

  const spec = networkSpec(config.arch, {
    mode: blockMode(config.mode),
    numClasses: data.train.numClasses,
    inChannels: data.train.channels,
    ...(config.strides ? { strides: config.strides } : {}),
  });
  const network = new NativeBackendNetwork(spec, 'float32', config.seed);
  const onCuda = device.startsWith('cuda');
  const precision = { autocast: config.autocast ?? (onCuda ? 'bf16' : 'none') } as const;
  if (device !== 'cpu') network.handle.to(device);
  if (config.channelsLast ?? onCuda) network.handle.setChannelsLast(true);

  // Weights: a resumed run's, a fine-tuning start, or fresh (after the init rule for mode target).
  const resumed = config.resume ? readLatestCheckpoint<TrainConfig>(checkpointsDir) : undefined;
  const gradMults = config.mode === 'target' ? repConvsOf(spec, loadScales(config.scales!)) : undefined;
  if (resumed) {
    network.loadStateTensors(resumed.model);
  } else if (config.finetune) {
    network.loadStateTensors(readCheckpoint(config.finetune).model);
  } else if (gradMults) {
    network.loadStateDict(applyInitRule(network.stateDict(), gradMults, { identityInit: config.identityInit ?? 'trained', seed: config.seed }));
  }

  const optimizerSpec: OptimizerSpec = {
    type: 'sgd',
    lr: config.lr,
    momentum: config.momentum,
    nesterov: config.nesterov,
    groups: officialParamGroups(network.parameters(), config.weightDecay),
    ...(gradMults ? { gradMults: gradMults.map((c) => gradMultOf(c)) } : {}),
  };
  const optimizer = network.createOptimizer(optimizerSpec) as NativeBackendOptimizer;
  if (resumed) optimizer.handle.loadStateBytes(resumed.optimizer);
  if (config.batchNorm === 'frozen') native().setBatchNormMode(network.handle, 'frozen');
  if (pg) {
    // Every rank must continue from the same checkpoint (the run folder on every node).
    checkAgreed(pg, collectives, resumed?.meta.step ?? -1, `the step to resume from (-1: no checkpoint found in ${checkpointsDir}; with --resume every node needs the run folder)`);
    pg.attach(network.handle, { syncBatchNorm: config.batchNorm === 'sync', ...(config.distributed?.bucketCapMb ? { bucketCapMb: config.distributed.bucketCapMb } : {}) });
  }

  const stats = channelStats(data.train);
  // Each rank its own augmentation stream (rank 0: the one-process stream).
  const trainSet = uploadDataset(data.train, stats, device, config.seed + 1000 * rank);
  const testSet = uploadDataset(data.test, stats, device, config.seed);
  if (resumed) {
    const states = resumed.meta.extra?.rngStates as string[] | undefined;
    const state = states && states.length === worldSize ? states[rank] : rank === 0 ? resumed.meta.rngState : undefined;
    if (state) trainSet.setRngState(new Uint8Array(Buffer.from(state, 'base64')));
  }
  if (config.quant) {
    const saved = resumed?.meta.extra?.quant as ReturnType<typeof rangesOf> | undefined;
    const { calibBatches, ...observer } = config.quant;
    if (saved) network.handle.setQuantRanges(saved);
    else calibrate(network, trainSet, { ...observer, batches: calibBatches, batchSize: config.batchSize, seed: config.seed });
    network.handle.setFakeQuant(true);
  }

  const stepsPerEpoch = Math.floor(trainSet.count / config.batchSize);
  if (stepsPerEpoch === 0) throw new RangeError(`batch size ${config.batchSize} is larger than the training set (${trainSet.count} images)`);
  const totalSteps = stepsPerEpoch * config.epochs;
  const schedule = { baseLr: config.lr, batchSize: config.batchSize, totalSteps, warmupSteps: stepsPerEpoch * config.warmupEpochs };
  const history: EpochRecord[] = resumed ? ((resumed.meta.extra?.history as EpochRecord[]) ?? []) : [];
  const metricsLog = lead ? writeJsonl(path.join(config.outDir, 'metrics.jsonl')) : { file: '', append() {}, close() {} };
  const parameterCount = network.parameters().reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);

  let step = resumed?.meta.step ?? 0;
  const stopAt = Math.min(totalSteps, config.stopAfterSteps ?? totalSteps);
  let rss = process.memoryUsage().rss;
  let trainSeconds = 0;
  let lastCheckpoint = resumed?.dir ?? '';
  let skippedSteps = 0;
  const save = (epoch: number) => {
    // Every rank's augmentation state (a collective), so that a resumed run continues each stream.
    const rngStates = pg ? gatherBytes(pg, trainSet.rngState(), collectives).map((b) => Buffer.from(b).toString('base64')) : undefined;
    if (!lead) return;
    lastCheckpoint = saveCheckpoint(checkpointsDir, {
      step,
      epoch,
      config,
      rngState: trainSet.rngState(),
      model: network.stateTensors(),
      optimizer: optimizer.handle.stateBytes(),
      extra: { history, ...(rngStates ? { rngStates, worldSize } : {}), ...(config.quant ? { quant: rangesOf(network.handle.quantParams()!) } : {}) },
    });
  };
  // Evaluation sees rank 0's BatchNorm statistics on every rank (per-process statistics differ).
  const evaluate = () => {
    pg?.broadcastState(network.handle);
    return network.handle.evaluate(testSet, config.evalBatchSize, precision);
  };
  const takeMetrics = (): EpochMetrics => {
    const m = network.handle.takeTrainMetrics();
    if (!pg) return m;
    const [loss, correct, count, skipped] = sumOverRanks(pg, collectives, m.count > 0 ? [m.loss * m.count, m.accuracy * m.count, m.count, m.skipped ?? 0] : [0, 0, 0, m.skipped ?? 0]);
    return { count, loss: count > 0 ? loss / count : NaN, accuracy: count > 0 ? correct / count : NaN, skipped };
  };

  const progress = lead ? createProgress({ total: stopAt, label: `${config.mode} ${config.arch}${worldSize > 1 ? ` x${worldSize} processes` : ''}` }) : { update() {}, finish() {} };
  try {
    while (step < stopAt) {
      const epoch = Math.floor(step / stepsPerEpoch);
      const full = trainSet.permutation(config.seed, epoch);
      const permutation: Tensor = pg ? shardPermutation(full, rank, worldSize, config.batchSize) : full;
      if (pg) full.dispose();
      const epochStart = process.hrtime.bigint();
      let lr = 0;
      let last: EpochMetrics = { count: 0, loss: NaN, accuracy: NaN };
      let epochLossSum = 0;
      let epochCorrect = 0;
      let epochSeen = 0;
      const epochEnd = Math.min(stopAt, (epoch + 1) * stepsPerEpoch);
      while (step < epochEnd) {
        lr = lrAt(step, schedule);
        optimizer.handle.setLr(lr);
        network.handle.trainBatch(optimizer.handle, trainSet, permutation, step - epoch * stepsPerEpoch, localBatch, {
          ...config.augment,
          labelSmoothing: config.labelSmoothing,
          clipNorm: config.clipNorm,
          skipNonFinite: config.skipNonFinite ?? false,
          ...precision,
        });
        step++;
        if (pg && config.distributed?.checkReplicas) {
          const digests = gatherBytes(pg, parameterDigest(network), collectives);
          const differ = digests.findIndex((d) => Buffer.compare(Buffer.from(d), Buffer.from(digests[0])) !== 0);
          if (differ > 0) throw new Error(`replica check: rank ${differ}'s parameters differ from rank 0's after step ${step}`);
          metricsLog.append({ type: 'replicas', step, ranks: worldSize, identical: true });
        }
        if (step % config.logEvery === 0 || step === epochEnd) {
          last = takeMetrics();
          skippedSteps += last.skipped ?? 0;
          if (last.count > 0 && !Number.isFinite(last.loss)) {
            throw new Error(
              `training diverged: the loss is ${last.loss} in steps ${step - config.logEvery + 1}..${step}; ` +
                `the last good checkpoint is ${lastCheckpoint || '(none)'}: resume from it with --resume (and a lower lr), or pass --skip-non-finite`,
            );
          }
          if (last.count > 0) {
            epochLossSum += last.loss * last.count;
            epochCorrect += last.accuracy * last.count;
            epochSeen += last.count;
          }
          metricsLog.append({ type: 'train', step, epoch, lr, loss: last.loss, accuracy: last.accuracy, skipped: last.skipped ?? 0 });
          progress.update(step, { loss: last.loss, acc: last.accuracy, lr });
          rss = peakRss(rss);
        }
      }
      permutation.dispose();
      const seconds = Number(process.hrtime.bigint() - epochStart) / 1e9;
      trainSeconds += seconds;
      if (step === (epoch + 1) * stepsPerEpoch) {
        const test = evaluate();
        const record: EpochRecord = {
          epoch: epoch + 1,
          step,
          lr,
          trainLoss: epochLossSum / epochSeen,
          trainAccuracy: epochCorrect / epochSeen,
          testLoss: test.loss,
          testAccuracy: test.accuracy,
          seconds,
        };
        history.push(record);
        metricsLog.append({ type: 'eval', ...record });
        save(epoch + 1);
      } else {
        save(epoch);
      }
    }
  } finally {
    progress.finish();
    metricsLog.close();
  }
  const test = evaluate();
  if (pg) {
    pg.barrier();
    pg.detach(network.handle);
  }
  trainSet.dispose();
  testSet.dispose();
  return {
    config,
    spec,
    network,
    history,
    test,
    steps: step,
    trainSeconds,
    imagesPerSecond: ((step - (resumed?.meta.step ?? 0)) * config.batchSize) / Math.max(trainSeconds, 1e-9),
    rank,
    worldSize,
    peakRssBytes: peakRss(rss),
    parameterCount,
    checkpoint: lastCheckpoint,
    skippedSteps,
  };
}
