// Finite-difference gradient checking (like torch.autograd.gradcheck), for float64 graphs.
import { Variable, backward } from './autograd';
import { Random } from './random';

export interface GradCheckInput {
  readonly data: Float64Array;
  readonly shape: readonly number[];
}

export interface GradCheckOptions {
  /** Central-difference step (default 1e-6). */
  readonly step?: number;
  /** Seed of the random projection of the output (default 1). */
  readonly seed?: number;
}

export interface GradCheckResult {
  /** Per input: ||analytic - numeric||_2 / max(||analytic||_2, ||numeric||_2). */
  readonly relativeErrors: number[];
  readonly analytic: Float64Array[];
  readonly numeric: Float64Array[];
}

/** Norm-wise relative error; 0 when both are zero. */
export function relativeError(analytic: ArrayLike<number>, numeric: ArrayLike<number>): number {
  let diff = 0;
  let a = 0;
  let n = 0;
  for (let i = 0; i < analytic.length; i++) {
    diff += (analytic[i] - numeric[i]) ** 2;
    a += analytic[i] ** 2;
    n += numeric[i] ** 2;
  }
  const scale = Math.sqrt(Math.max(a, n));
  return scale === 0 ? 0 : Math.sqrt(diff) / scale;
}

/** d objective / d values[index] by central differences; values[index] is restored. */
export function centralDifference(objective: () => number, values: Float64Array, index: number, step: number): number {
  const saved = values[index];
  values[index] = saved + step;
  const plus = objective();
  values[index] = saved - step;
  const minus = objective();
  values[index] = saved;
  return (plus - minus) / (2 * step);
}

/** Checks the gradients of sum(op(inputs) ⊙ R), R a fixed random tensor, w.r.t. every input element. */
export function gradCheck(
  op: (inputs: Variable[]) => Variable,
  inputs: readonly GradCheckInput[],
  options: GradCheckOptions = {},
): GradCheckResult {
  const step = options.step ?? 1e-6;
  const data = inputs.map((input) => Float64Array.from(input.data));
  const leaves = data.map((d, i) => Variable.leaf(d, inputs[i].shape, true));
  const output = op(leaves);
  const random = new Random(options.seed ?? 1);
  const projection = Float64Array.from(output.data, () => random.uniform(-1, 1));
  backward(output, projection.slice());
  const analytic = leaves.map((leaf) => (leaf.grad === null ? new Float64Array(leaf.size) : Float64Array.from(leaf.grad)));

  const objective = (): number => {
    const out = op(data.map((d, i) => Variable.leaf(d, inputs[i].shape, false))).data;
    let sum = 0;
    for (let i = 0; i < out.length; i++) sum += out[i] * projection[i];
    return sum;
  };
  const numeric = data.map((values) => {
    const gradient = new Float64Array(values.length);
    for (let index = 0; index < values.length; index++) gradient[index] = centralDifference(objective, values, index, step);
    return gradient;
  });
  return { relativeErrors: analytic.map((a, i) => relativeError(a, numeric[i])), analytic, numeric };
}
