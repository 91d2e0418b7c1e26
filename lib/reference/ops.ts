// The differentiable ops of the networks, with PyTorch's semantics. Sums run in float64 and each
// result is stored once in the inputs' precision (one rounding per op in float32).
import { BN_EPS, BN_MOMENTUM } from '../spec';
import type { Precision } from '../spec';
import { Variable, accumulateGrad } from './autograd';
import { type FloatArray, allocate, formatShape, sameShape } from './numeric';

function commonPrecision(op: string, inputs: readonly Variable[]): Precision {
  const precision = inputs[0].precision;
  for (const v of inputs) {
    if (v.precision !== precision) throw new TypeError(`${op}: inputs mix float32 and float64`);
  }
  return precision;
}

function expectRank(op: string, what: string, v: Variable, rank: number): void {
  if (v.shape.length !== rank) throw new RangeError(`${op}: ${what} must have ${rank} dimensions, got shape ${formatShape(v.shape)}`);
}

/** Stores float64 accumulators in the precision (the op's single rounding). */
function stored(precision: Precision, values: Float64Array): FloatArray {
  if (precision === 'float64') return values;
  const out = allocate(precision, values.length);
  out.set(values);
  return out;
}

export function conv2dOutputSize(size: number, kernel: number, stride: number, padding: number): number {
  return Math.floor((size + 2 * padding - kernel) / stride) + 1;
}

export interface Conv2dOptions {
  readonly stride?: number;
  readonly padding?: number;
  readonly groups?: number;
}

/** torch.nn.functional.conv2d without bias: x [N, C, H, W], w [O, C/groups, kH, kW]. */
export function conv2d(x: Variable, w: Variable, options: Conv2dOptions = {}): Variable {
  const { stride = 1, padding = 0, groups = 1 } = options;
  const precision = commonPrecision('conv2d', [x, w]);
  expectRank('conv2d', 'input', x, 4);
  expectRank('conv2d', 'weight', w, 4);
  const [N, C, H, W] = x.shape;
  const [O, groupChannels, KH, KW] = w.shape;
  if (!Number.isInteger(stride) || stride < 1) throw new RangeError(`conv2d: stride must be a positive integer, got ${stride}`);
  if (!Number.isInteger(padding) || padding < 0) throw new RangeError(`conv2d: padding must be a non-negative integer, got ${padding}`);
  if (!Number.isInteger(groups) || groups < 1 || C % groups !== 0 || O % groups !== 0) {
    throw new RangeError(`conv2d: groups ${groups} must divide both ${C} input and ${O} output channels`);
  }
  if (groupChannels * groups !== C) {
    throw new RangeError(
      `conv2d: weight ${formatShape(w.shape)} expects ${groupChannels * groups} input channels with groups ${groups}, input has ${C}`,
    );
  }
  const HO = conv2dOutputSize(H, KH, stride, padding);
  const WO = conv2dOutputSize(W, KW, stride, padding);
  if (HO < 1 || WO < 1) throw new RangeError(`conv2d: input ${H}x${W} is smaller than the kernel ${KH}x${KW} (padding ${padding})`);
  const outputsPerGroup = O / groups;
  const xd = x.data;
  const wd = w.data;

  // Calls visit(xIndex, wIndex, outIndex) for every product of the convolution.
  const forEachProduct = (visit: (xIndex: number, wIndex: number, outIndex: number) => void): void => {
    for (let n = 0; n < N; n++) {
      for (let o = 0; o < O; o++) {
        const group = Math.floor(o / outputsPerGroup);
        const outBase = (n * O + o) * HO * WO;
        for (let cg = 0; cg < groupChannels; cg++) {
          const xBase = (n * C + group * groupChannels + cg) * H * W;
          const wBase = (o * groupChannels + cg) * KH * KW;
          for (let ky = 0; ky < KH; ky++) {
            for (let kx = 0; kx < KW; kx++) {
              const wIndex = wBase + ky * KW + kx;
              for (let oy = 0; oy < HO; oy++) {
                const iy = oy * stride - padding + ky;
                if (iy < 0 || iy >= H) continue;
                for (let ox = 0; ox < WO; ox++) {
                  const ix = ox * stride - padding + kx;
                  if (ix < 0 || ix >= W) continue;
                  visit(xBase + iy * W + ix, wIndex, outBase + oy * WO + ox);
                }
              }
            }
          }
        }
      }
    }
  };

  const out = new Float64Array(N * O * HO * WO);
  forEachProduct((xi, wi, oi) => {
    out[oi] += xd[xi] * wd[wi];
  });
  return Variable.result(stored(precision, out), [N, O, HO, WO], [x, w], (gradOut) => {
    const gx = x.requiresGrad ? new Float64Array(x.size) : null;
    const gw = w.requiresGrad ? new Float64Array(w.size) : null;
    forEachProduct((xi, wi, oi) => {
      const g = gradOut[oi];
      if (gx !== null) gx[xi] += g * wd[wi];
      if (gw !== null) gw[wi] += g * xd[xi];
    });
    if (gx !== null) accumulateGrad(x, stored(precision, gx));
    if (gw !== null) accumulateGrad(w, stored(precision, gw));
  });
}

/** A batch-norm layer's buffers; training updates them in place. */
export interface BatchNormStats {
  readonly runningMean: FloatArray;
  readonly runningVar: FloatArray;
  numBatchesTracked: number;
}

export interface BatchNormOptions {
  /** Batch statistics (and a running-statistics update) instead of the running statistics. */
  readonly training: boolean;
  readonly momentum?: number;
  readonly eps?: number;
}

/** torch.nn.BatchNorm2d (affine, track_running_stats). Training normalises with the biased batch
 * variance and updates running_var with the unbiased one. */
export function batchNorm2d(x: Variable, weight: Variable, bias: Variable, stats: BatchNormStats, options: BatchNormOptions): Variable {
  const { training, momentum = BN_MOMENTUM, eps = BN_EPS } = options;
  const precision = commonPrecision('batch_norm', [x, weight, bias]);
  expectRank('batch_norm', 'input', x, 4);
  const [N, C, H, W] = x.shape;
  for (const [what, length] of [
    ['weight', weight.size],
    ['bias', bias.size],
    ['running_mean', stats.runningMean.length],
    ['running_var', stats.runningVar.length],
  ] as const) {
    if (length !== C) throw new RangeError(`batch_norm: ${what} has ${length} values for ${C} channels`);
  }
  const plane = H * W;
  const count = N * plane;
  if (training && count <= 1) {
    throw new RangeError(`batch_norm: expected more than 1 value per channel when training, got input size ${formatShape(x.shape)}`);
  }
  const xd = x.data;
  const mean = new Float64Array(C);
  const invStd = new Float64Array(C);
  for (let c = 0; c < C; c++) {
    if (training) {
      let sum = 0;
      for (let n = 0; n < N; n++) for (let i = 0, base = (n * C + c) * plane; i < plane; i++) sum += xd[base + i];
      const m = sum / count;
      let squares = 0;
      for (let n = 0; n < N; n++) {
        for (let i = 0, base = (n * C + c) * plane; i < plane; i++) squares += (xd[base + i] - m) ** 2;
      }
      const biasedVar = squares / count;
      mean[c] = m;
      invStd[c] = 1 / Math.sqrt(biasedVar + eps);
      stats.runningMean[c] = momentum * m + (1 - momentum) * stats.runningMean[c];
      stats.runningVar[c] = momentum * (squares / (count - 1)) + (1 - momentum) * stats.runningVar[c];
    } else {
      mean[c] = stats.runningMean[c];
      invStd[c] = 1 / Math.sqrt(stats.runningVar[c] + eps);
    }
  }
  if (training) stats.numBatchesTracked += 1;

  const normalized = new Float64Array(x.size);
  const out = new Float64Array(x.size);
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      const base = (n * C + c) * plane;
      for (let i = 0; i < plane; i++) {
        const xhat = (xd[base + i] - mean[c]) * invStd[c];
        normalized[base + i] = xhat;
        out[base + i] = xhat * weight.data[c] + bias.data[c];
      }
    }
  }
  return Variable.result(stored(precision, out), x.shape, [x, weight, bias], (gradOut) => {
    const sumGrad = new Float64Array(C);
    const sumGradXhat = new Float64Array(C);
    for (let n = 0; n < N; n++) {
      for (let c = 0; c < C; c++) {
        const base = (n * C + c) * plane;
        for (let i = 0; i < plane; i++) {
          sumGrad[c] += gradOut[base + i];
          sumGradXhat[c] += gradOut[base + i] * normalized[base + i];
        }
      }
    }
    if (x.requiresGrad) {
      const gx = new Float64Array(x.size);
      for (let n = 0; n < N; n++) {
        for (let c = 0; c < C; c++) {
          const base = (n * C + c) * plane;
          const scale = weight.data[c] * invStd[c];
          for (let i = 0; i < plane; i++) {
            // Training: the batch statistics depend on x too.
            gx[base + i] = training
              ? scale * (gradOut[base + i] - sumGrad[c] / count - (normalized[base + i] * sumGradXhat[c]) / count)
              : scale * gradOut[base + i];
          }
        }
      }
      accumulateGrad(x, stored(precision, gx));
    }
    accumulateGrad(weight, stored(precision, sumGradXhat));
    accumulateGrad(bias, stored(precision, sumGrad));
  });
}

export function relu(x: Variable): Variable {
  const out = allocate(x.precision, x.size);
  for (let i = 0; i < out.length; i++) {
    const v = x.data[i];
    out[i] = v > 0 || Number.isNaN(v) ? v : 0;
  }
  return Variable.result(out, x.shape, [x], (gradOut) => {
    // torch's threshold_backward: the gradient passes where the result is positive.
    const gx = allocate(x.precision, x.size);
    for (let i = 0; i < gx.length; i++) gx[i] = out[i] > 0 ? gradOut[i] : 0;
    accumulateGrad(x, gx);
  });
}

/** x [N, C, H, W] times a per-channel vector w [C] (the official ScaleLayer: x * w.view(1, C, 1, 1)). */
export function channelScale(x: Variable, w: Variable): Variable {
  const precision = commonPrecision('channel_scale', [x, w]);
  expectRank('channel_scale', 'input', x, 4);
  const [N, C, H, W] = x.shape;
  if (w.shape.length !== 1 || w.size !== C)
    throw new RangeError(`channel_scale: scale shape ${formatShape(w.shape)} does not match ${C} channels`);
  const plane = H * W;
  const out = allocate(precision, x.size);
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      const base = (n * C + c) * plane;
      for (let i = 0; i < plane; i++) out[base + i] = x.data[base + i] * w.data[c];
    }
  }
  return Variable.result(out, x.shape, [x, w], (gradOut) => {
    const gx = x.requiresGrad ? allocate(precision, x.size) : null;
    const gw = new Float64Array(C);
    for (let n = 0; n < N; n++) {
      for (let c = 0; c < C; c++) {
        const base = (n * C + c) * plane;
        for (let i = 0; i < plane; i++) {
          if (gx !== null) gx[base + i] = gradOut[base + i] * w.data[c];
          gw[c] += gradOut[base + i] * x.data[base + i];
        }
      }
    }
    if (gx !== null) accumulateGrad(x, gx);
    accumulateGrad(w, stored(precision, gw));
  });
}

/** x [N, C, H, W] plus a per-channel bias b [C] (a conv's bias). */
export function channelBias(x: Variable, b: Variable): Variable {
  const precision = commonPrecision('channel_bias', [x, b]);
  expectRank('channel_bias', 'input', x, 4);
  const [N, C, H, W] = x.shape;
  if (b.shape.length !== 1 || b.size !== C)
    throw new RangeError(`channel_bias: bias shape ${formatShape(b.shape)} does not match ${C} channels`);
  const plane = H * W;
  const out = allocate(precision, x.size);
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      const base = (n * C + c) * plane;
      for (let i = 0; i < plane; i++) out[base + i] = x.data[base + i] + b.data[c];
    }
  }
  return Variable.result(out, x.shape, [x, b], (gradOut) => {
    const gb = new Float64Array(C);
    for (let n = 0; n < N; n++) {
      for (let c = 0; c < C; c++) {
        const base = (n * C + c) * plane;
        for (let i = 0; i < plane; i++) gb[c] += gradOut[base + i];
      }
    }
    if (x.requiresGrad) accumulateGrad(x, gradOut.slice());
    accumulateGrad(b, stored(precision, gb));
  });
}

/** Elementwise a + b (same shapes, no broadcasting). */
export function add(a: Variable, b: Variable): Variable {
  const precision = commonPrecision('add', [a, b]);
  if (!sameShape(a.shape, b.shape)) throw new RangeError(`add: shapes ${formatShape(a.shape)} and ${formatShape(b.shape)} differ`);
  const out = allocate(precision, a.size);
  for (let i = 0; i < out.length; i++) out[i] = a.data[i] + b.data[i];
  return Variable.result(out, a.shape, [a, b], (gradOut) => {
    accumulateGrad(a, gradOut.slice());
    accumulateGrad(b, gradOut.slice());
  });
}

/** Mean over H and W: [N, C, H, W] -> [N, C] (AdaptiveAvgPool2d(1) then flatten). */
export function globalAvgPool(x: Variable): Variable {
  expectRank('global_avg_pool', 'input', x, 4);
  const [N, C, H, W] = x.shape;
  const plane = H * W;
  const out = new Float64Array(N * C);
  for (let nc = 0; nc < N * C; nc++) {
    let sum = 0;
    for (let i = 0; i < plane; i++) sum += x.data[nc * plane + i];
    out[nc] = sum / plane;
  }
  return Variable.result(stored(x.precision, out), [N, C], [x], (gradOut) => {
    const gx = allocate(x.precision, x.size);
    for (let nc = 0; nc < N * C; nc++) {
      const g = gradOut[nc] / plane;
      for (let i = 0; i < plane; i++) gx[nc * plane + i] = g;
    }
    accumulateGrad(x, gx);
  });
}

/** torch.nn.functional.linear: x [N, K] W^T + b, with W [J, K], b [J]. */
export function linear(x: Variable, w: Variable, b: Variable): Variable {
  const precision = commonPrecision('linear', [x, w, b]);
  expectRank('linear', 'input', x, 2);
  expectRank('linear', 'weight', w, 2);
  const [N, K] = x.shape;
  const [J, weightK] = w.shape;
  if (weightK !== K) throw new RangeError(`linear: weight ${formatShape(w.shape)} does not take ${K} input features`);
  if (b.shape.length !== 1 || b.size !== J) throw new RangeError(`linear: bias shape ${formatShape(b.shape)} does not match ${J} outputs`);
  const out = new Float64Array(N * J);
  for (let n = 0; n < N; n++) {
    for (let j = 0; j < J; j++) {
      let sum = 0;
      for (let k = 0; k < K; k++) sum += x.data[n * K + k] * w.data[j * K + k];
      out[n * J + j] = sum + b.data[j];
    }
  }
  return Variable.result(stored(precision, out), [N, J], [x, w, b], (gradOut) => {
    if (x.requiresGrad) {
      const gx = new Float64Array(x.size);
      for (let n = 0; n < N; n++)
        for (let j = 0; j < J; j++) for (let k = 0; k < K; k++) gx[n * K + k] += gradOut[n * J + j] * w.data[j * K + k];
      accumulateGrad(x, stored(precision, gx));
    }
    if (w.requiresGrad) {
      const gw = new Float64Array(w.size);
      for (let n = 0; n < N; n++)
        for (let j = 0; j < J; j++) for (let k = 0; k < K; k++) gw[j * K + k] += gradOut[n * J + j] * x.data[n * K + k];
      accumulateGrad(w, stored(precision, gw));
    }
    if (b.requiresGrad) {
      const gb = new Float64Array(J);
      for (let n = 0; n < N; n++) for (let j = 0; j < J; j++) gb[j] += gradOut[n * J + j];
      accumulateGrad(b, stored(precision, gb));
    }
  });
}

/** torch.nn.functional.cross_entropy(logits [N, K], labels, label_smoothing), mean over the batch:
 * (1 - eps) * mean(nll) + eps * mean over samples of mean over classes of -log_softmax. Returns shape []. */
export function crossEntropy(logits: Variable, labels: Int32Array, labelSmoothing = 0): Variable {
  expectRank('cross_entropy', 'logits', logits, 2);
  const [N, K] = logits.shape;
  if (N < 1) throw new RangeError('cross_entropy: empty batch');
  if (labels.length !== N) throw new RangeError(`cross_entropy: ${labels.length} labels for a batch of ${N}`);
  if (!(labelSmoothing >= 0 && labelSmoothing <= 1))
    throw new RangeError(`cross_entropy: label_smoothing must be in [0, 1], got ${labelSmoothing}`);
  for (let n = 0; n < N; n++) {
    if (!(labels[n] >= 0 && labels[n] < K))
      throw new RangeError(`cross_entropy: label ${labels[n]} of sample ${n} is not a class in [0, ${K})`);
  }
  const probabilities = new Float64Array(N * K);
  let nllSum = 0;
  let smoothSum = 0;
  for (let n = 0; n < N; n++) {
    const row = n * K;
    let max = -Infinity;
    for (let k = 0; k < K; k++) max = Math.max(max, logits.data[row + k]);
    let expSum = 0;
    for (let k = 0; k < K; k++) expSum += Math.exp(logits.data[row + k] - max);
    const logSumExp = max + Math.log(expSum);
    let negLogProbSum = 0;
    for (let k = 0; k < K; k++) {
      const logProb = logits.data[row + k] - logSumExp;
      probabilities[row + k] = Math.exp(logProb);
      negLogProbSum -= logProb;
    }
    nllSum -= logits.data[row + labels[n]] - logSumExp;
    smoothSum += negLogProbSum / K;
  }
  const loss = ((1 - labelSmoothing) * nllSum + labelSmoothing * smoothSum) / N;
  const out = allocate(logits.precision, 1);
  out[0] = loss;
  return Variable.result(out, [], [logits], (gradOut) => {
    // d loss / d logit[n, k] = (softmax - (1 - eps) * onehot - eps / K) / N
    const scale = gradOut[0] / N;
    const g = new Float64Array(N * K);
    for (let n = 0; n < N; n++) {
      for (let k = 0; k < K; k++) {
        const target = (k === labels[n] ? 1 - labelSmoothing : 0) + labelSmoothing / K;
        g[n * K + k] = (probabilities[n * K + k] - target) * scale;
      }
    }
    accumulateGrad(logits, stored(logits.precision, g));
  });
}
