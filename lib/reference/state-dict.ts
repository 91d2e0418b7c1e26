// Strict state-dict checking, as torch's load_state_dict(strict=True) reports it: every problem is
// collected first, so a bad dict changes nothing.
import type { HostTensor } from '../backend';
import { formatShape, sameShape, sizeOf } from './numeric';

export interface StateEntry {
  readonly name: string;
  readonly shape: readonly number[];
  /** For entries with a restricted value set (num_batches_tracked): a problem description, or null. */
  readonly checkValues?: (values: Float32Array | Float64Array) => string | null;
}

function isHostTensor(value: unknown): value is HostTensor {
  if (typeof value !== 'object' || value === null) return false;
  const { shape, data } = value as { shape?: unknown; data?: unknown };
  return (
    Array.isArray(shape) &&
    shape.every((d) => Number.isInteger(d) && d >= 0) &&
    (data instanceof Float32Array || data instanceof Float64Array)
  );
}

/** Throws an Error listing every missing, unexpected, malformed or mis-shaped key. */
export function checkStateDict(expected: readonly StateEntry[], state: ReadonlyMap<string, HostTensor>, owner: string): void {
  if (!(state instanceof Map)) throw new TypeError(`loadStateDict: expected a Map of name -> {shape, data}`);
  const expectedNames = new Set(expected.map((e) => e.name));
  const missing = expected.filter((e) => !state.has(e.name)).map((e) => e.name);
  const unexpected = [...state.keys()].filter((name) => !expectedNames.has(name));
  const problems: string[] = [];
  for (const entry of expected) {
    const value: unknown = state.get(entry.name);
    if (value === undefined) continue;
    if (!isHostTensor(value)) {
      problems.push(`invalid tensor for ${entry.name}: expected {shape: number[], data: Float32Array | Float64Array}`);
    } else if (!sameShape(value.shape, entry.shape)) {
      problems.push(
        `size mismatch for ${entry.name}: copying a param with shape ${formatShape(value.shape)} from checkpoint, the ` +
          `shape in current model is ${formatShape(entry.shape)}.`,
      );
    } else if (value.data.length !== sizeOf(value.shape)) {
      problems.push(`invalid tensor for ${entry.name}: ${value.data.length} values for shape ${formatShape(value.shape)}`);
    } else {
      const problem = entry.checkValues?.(value.data) ?? null;
      if (problem !== null) problems.push(`invalid value for ${entry.name}: ${problem}`);
    }
  }
  const quote = (names: readonly string[]) => names.map((n) => `"${n}"`).join(', ');
  const lines: string[] = [];
  if (missing.length > 0) lines.push(`Missing key(s) in state_dict: ${quote(missing)}.`);
  if (unexpected.length > 0) lines.push(`Unexpected key(s) in state_dict: ${quote(unexpected)}.`);
  lines.push(...problems);
  if (lines.length > 0) throw new Error(`Error(s) in loading state_dict for ${owner}:\n\t${lines.join('\n\t')}`);
}
