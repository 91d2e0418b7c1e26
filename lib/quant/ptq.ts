// Post-training INT8 quantization of a trained network: fold it into the deploy form (one conv3x3 +
// bias per block), calibrate the activation ranges on training batches, and evaluate the float,
// fake-quantized (simulated) and real int8 (libtorch's QNNPACK kernels) networks side by side.
import type { HostTensor } from '../backend';
import { foldToDeploy } from '../fold';
import type { EpochMetrics, NativeDataset, QuantOptions, QuantParams } from '../native';
import { NativeBackendNetwork } from '../native-backend';
import { TRAIN_DEFAULTS } from '../defaults';
import { OptionError } from '../option-error';
import type { NetworkSpec } from '../spec';

export interface CalibrationOptions extends QuantOptions {
  /** Training batches the observers see (at least 1). */
  readonly batches: number;
  readonly batchSize: number;
  /** Seed of the calibration batches' order (the training set's permutation of epoch 0). */
  readonly seed: number;
}

export interface PtqResult {
  /** The deploy network (float32) with its quantization ranges. */
  readonly deploy: NativeBackendNetwork;
  readonly params: QuantParams;
  readonly float: EpochMetrics;
  readonly simulated: EpochMetrics;
  readonly int8: EpochMetrics;
}

/** The caller's parameter names for the calibration's batch count and batch size, named in errors. */
export interface CalibrationNames {
  readonly batches: string;
  readonly batchSize: string;
}

/** Throws unless `batches` whole batches of `batchSize` fit in a training set of `count` images. */
export function checkCalibrationBatches(count: number, batches: number, batchSize: number, names: CalibrationNames): void {
  if (!(Number.isInteger(batches) && batches >= 1))
    throw new OptionError(names.batches, `${names.batches} must be a positive integer, got ${batches}`);
  const available = Math.floor(count / batchSize);
  if (batches > available) {
    throw new OptionError(
      names.batches,
      `${names.batches} ${batches} is more than the training set holds: its ${count} images make ${available} ` +
        `batch(es) of ${names.batchSize} ${batchSize}; lower ${names.batches} or ${names.batchSize}`,
      [names.batches, names.batchSize],
    );
  }
}

/** Calibrates `network`'s quantization ranges on the first `batches` batches of the data set's epoch-0
 * order for `seed` (off the JS thread). */
export async function calibrate(
  network: NativeBackendNetwork,
  data: NativeDataset,
  options: CalibrationOptions,
  names: CalibrationNames = { batches: 'calibBatches', batchSize: 'batchSize' },
): Promise<QuantParams> {
  const { batches, batchSize, seed, ...observer } = options;
  checkCalibrationBatches(data.count, batches, batchSize, names);
  const order = data.permutation(seed, 0);
  try {
    return await network.calibrate(data, order, batchSize, batches, observer);
  } finally {
    order.dispose();
  }
}

/** The ranges of quantization parameters, as checkpoints and quantization.json keep them. */
export function rangesOf(p: QuantParams): QuantOptions & { points: { name: string; min: number; max: number }[] } {
  return {
    observer: p.observer,
    percentile: p.percentile,
    activations: p.activations,
    points: p.points.map(({ name, min, max }) => ({ name, min, max })),
  };
}

/** The deploy network of a trained repvgg or target network. */
export function deployNetwork(spec: NetworkSpec, state: ReadonlyMap<string, HostTensor>): NativeBackendNetwork {
  const folded = foldToDeploy(spec, state);
  const deploy = new NativeBackendNetwork(folded.spec, 'float32');
  deploy.loadStateDict(folded.state);
  return deploy;
}

/** Calibrates `deploy` on `calibration` (or takes `ranges`, e.g. a QAT model's) and evaluates the float,
 * simulated and real int8 networks on `test`, off the JS thread. */
export async function quantizeDeploy(
  deploy: NativeBackendNetwork,
  calibration: NativeDataset,
  test: NativeDataset,
  options: CalibrationOptions,
  ranges?: QuantParams,
  evalBatchSize: number = TRAIN_DEFAULTS.evalBatchSize,
): Promise<PtqResult> {
  const float = await deploy.evaluate(test, evalBatchSize);
  const params = ranges ? deploy.setQuantRanges(ranges) : await calibrate(deploy, calibration, options);
  deploy.setFakeQuant(true);
  const simulated = await deploy.evaluate(test, evalBatchSize);
  deploy.setFakeQuant(false);
  const int8 = params.activations === 'uint8' ? await deploy.evaluateInt8(test, evalBatchSize) : { count: 0, loss: NaN, accuracy: NaN };
  return { deploy, params, float, simulated, int8 };
}
