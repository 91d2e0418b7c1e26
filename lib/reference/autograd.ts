// A minimal reverse-mode autograd: each op output remembers its inputs and a closure that turns the
// output's gradient into gradient contributions for the inputs.
import type { Precision } from '../spec';
import { type FloatArray, allocate, formatShape, precisionOf, sizeOf } from './numeric';

/** Receives d(root)/d(output) and adds the inputs' contributions with `accumulateGrad`. */
export type BackwardFn = (gradOutput: FloatArray) => void;

export class Variable {
  readonly shape: readonly number[];
  readonly data: FloatArray;
  readonly requiresGrad: boolean;
  /** d(root)/d(this) after `backward`, in this variable's precision; null when nothing flowed here. */
  grad: FloatArray | null = null;
  readonly inputs: readonly Variable[];
  readonly backwardFn: BackwardFn | null;

  private constructor(
    data: FloatArray,
    shape: readonly number[],
    requiresGrad: boolean,
    inputs: readonly Variable[],
    backwardFn: BackwardFn | null,
  ) {
    if (sizeOf(shape) !== data.length) throw new RangeError(`variable: ${data.length} values do not fill shape ${formatShape(shape)}`);
    this.data = data;
    this.shape = [...shape];
    this.requiresGrad = requiresGrad;
    this.inputs = inputs;
    this.backwardFn = backwardFn;
  }

  /** A graph input. `data` is shared, not copied: parameters are updated in place between steps. */
  static leaf(data: FloatArray, shape: readonly number[], requiresGrad = false): Variable {
    return new Variable(data, shape, requiresGrad, [], null);
  }

  /** An op result; it tracks gradients when any input does. */
  static result(data: FloatArray, shape: readonly number[], inputs: readonly Variable[], backwardFn: BackwardFn): Variable {
    const requiresGrad = inputs.some((v) => v.requiresGrad);
    return new Variable(data, shape, requiresGrad, requiresGrad ? inputs : [], requiresGrad ? backwardFn : null);
  }

  get precision(): Precision {
    return precisionOf(this.data);
  }

  get size(): number {
    return this.data.length;
  }
}

/** Adds `contribution` (a fresh array, which may be kept) to `v.grad`; ignored if `v` needs no gradient. */
export function accumulateGrad(v: Variable, contribution: FloatArray): void {
  if (!v.requiresGrad) return;
  if (contribution.length !== v.size)
    throw new Error(`autograd: gradient of ${contribution.length} values for a variable of shape ${formatShape(v.shape)}`);
  if (v.grad === null) {
    v.grad = contribution.constructor === v.data.constructor ? contribution : copyTo(v.precision, contribution);
    return;
  }
  const grad = v.grad;
  for (let i = 0; i < grad.length; i++) grad[i] += contribution[i];
}

function copyTo(precision: Precision, values: FloatArray): FloatArray {
  const out = allocate(precision, values.length);
  out.set(values);
  return out;
}

/** Back-propagates from `root`. `seed` is d(objective)/d(root); defaults to 1 for a one-element root. */
export function backward(root: Variable, seed?: FloatArray): void {
  if (!root.requiresGrad) throw new Error('autograd: backward from a variable that does not depend on any gradient-tracking input');
  if (seed === undefined) {
    if (root.size !== 1) throw new Error(`autograd: backward needs a seed gradient for a root of shape ${formatShape(root.shape)}`);
    seed = allocate(root.precision, 1).fill(1);
  }
  if (seed.length !== root.size) throw new Error(`autograd: seed of ${seed.length} values for a root of shape ${formatShape(root.shape)}`);
  root.grad = copyTo(root.precision, seed);
  const order = topologicalOrder(root);
  for (let i = order.length - 1; i >= 0; i--) {
    const node = order[i];
    if (node.backwardFn !== null && node.grad !== null) node.backwardFn(node.grad);
  }
}

/** Gradient-tracking nodes reachable from `root`, every node after all of its inputs. */
function topologicalOrder(root: Variable): Variable[] {
  const order: Variable[] = [];
  const visited = new Set<Variable>();
  // Iterative post-order DFS: deep graphs must not overflow the JS stack.
  const stack: { node: Variable; next: number }[] = [{ node: root, next: 0 }];
  visited.add(root);
  while (stack.length > 0) {
    const frame = stack[stack.length - 1];
    if (frame.next < frame.node.inputs.length) {
      const input = frame.node.inputs[frame.next++];
      if (input.requiresGrad && !visited.has(input)) {
        visited.add(input);
        stack.push({ node: input, next: 0 });
      }
    } else {
      order.push(frame.node);
      stack.pop();
    }
  }
  return order;
}
