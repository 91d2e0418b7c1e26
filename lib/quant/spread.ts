// Per-layer weight statistics of deploy networks. The paper's explanation of the INT8 gap: a folded
// RepVGG kernel adds three BN-scaled branches, so its weights spread much wider than a plain VGG's
// or a RepOpt-VGG's, and a per-channel int8 grid sized by the largest weight is coarse for the rest.
import type { HostTensor } from '../backend';
import { formatMetric, markdownTable } from '../report';
import type { NetworkSpec } from '../spec';

export interface LayerSpread {
  /** 'stage1.0', ..., 'linear' */
  readonly layer: string;
  readonly min: number;
  readonly max: number;
  readonly std: number;
  /** max |w| / std: how many standard deviations the int8 grid's end lies out. */
  readonly absMaxOverStd: number;
}

function stats(layer: string, values: ArrayLike<number>): LayerSpread {
  let min = Infinity;
  let max = -Infinity;
  let sum = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    min = Math.min(min, v);
    max = Math.max(max, v);
    sum += v;
  }
  const mean = sum / values.length;
  let squares = 0;
  for (let i = 0; i < values.length; i++) squares += (values[i] - mean) ** 2;
  const std = Math.sqrt(squares / values.length);
  return { layer, min, max, std, absMaxOverStd: Math.max(-min, max) / std };
}

/** The conv kernel of each deploy block, then the linear weight. */
export function weightSpread(spec: NetworkSpec, state: ReadonlyMap<string, HostTensor>): LayerSpread[] {
  if (spec.mode !== 'deploy') throw new RangeError(`weightSpread takes deploy networks (fold first), got '${spec.mode}'`);
  const weight = (key: string) => {
    const t = state.get(key);
    if (!t) throw new RangeError(`weightSpread: the state has no '${key}'`);
    return t.data;
  };
  return [...spec.blocks.map((b) => stats(b.name, weight(`${b.name}.rbr_reparam.weight`))), stats('linear', weight('linear.weight'))];
}

/** A markdown table: per layer, each model's weight range, std and max|w|/std. */
export function spreadTable(models: readonly { name: string; spread: readonly LayerSpread[] }[]): string {
  const layers = models[0].spread.map((s) => s.layer);
  const digits = formatMetric;
  return markdownTable(
    ['layer', ...models.flatMap((m) => [`${m.name} range`, `${m.name} std`, `${m.name} max/std`])],
    layers.map((layer, i) => [
      layer,
      ...models.flatMap((m) => [
        `${digits(m.spread[i].min)} .. ${digits(m.spread[i].max)}`,
        digits(m.spread[i].std),
        m.spread[i].absMaxOverStd.toFixed(1),
      ]),
    ]),
  );
}
