// Storage and rounding for the two precisions. Every op stores its result in the precision's typed
// array, so float32 results are rounded once per op, as a float32 PyTorch op would round them.
import type { Precision } from '../spec';

export type FloatArray = Float32Array | Float64Array;

export function allocate(precision: Precision, length: number): FloatArray {
  return precision === 'float32' ? new Float32Array(length) : new Float64Array(length);
}

export function precisionOf(data: FloatArray): Precision {
  return data instanceof Float32Array ? 'float32' : 'float64';
}

/** Rounds a JS number to the precision (what storing it in the typed array would do). Used for the
 * scalars torch converts to the tensor's type before an op (lr, momentum, eps, ...). */
export function rounder(precision: Precision): (value: number) => number {
  return precision === 'float32' ? Math.fround : (value: number) => value;
}

/** A copy of `values` in the precision. */
export function toPrecision(values: ArrayLike<number>, precision: Precision): FloatArray {
  const out = allocate(precision, values.length);
  out.set(values);
  return out;
}

export function sizeOf(shape: readonly number[]): number {
  let size = 1;
  for (const d of shape) size *= d;
  return size;
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

export function formatShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}
