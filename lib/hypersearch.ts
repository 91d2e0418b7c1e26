// Hyper-search: train the HS network (trainable branch scales), read its scales as the RepOptimizer
// constants, save them (JSON and .pth), and say whether they look usable.
import * as path from 'path';
import { markdownTable, rangePlot } from './report';
import { saveScales, type ScaleSet, scalesFromNetworkState } from './scales';
import { hasIdentity, type NetworkSpec } from './spec';
import type { TrainConfig } from './train/config';
import { type RunContext, runTraining, type TrainResult } from './train/trainer';

export interface BranchStats {
  readonly block: string;
  readonly branch: 's' | 't' | 'g';
  readonly mean: number;
  readonly min: number;
  readonly max: number;
  readonly negativeShare: number;
  /** Largest |value - initial value|. */
  readonly moved: number;
}

const BRANCH_KEYS = { s: 'scale_conv', t: 'scale_1x1', g: 'scale_identity' } as const;

export function scaleStatistics(spec: NetworkSpec, scales: ScaleSet): BranchStats[] {
  const out: BranchStats[] = [];
  for (const b of spec.blocks) {
    const branches = hasIdentity(b) ? (['s', 't', 'g'] as const) : (['s', 't'] as const);
    for (const branch of branches) {
      const key = `${b.name}.${BRANCH_KEYS[branch]}.weight`;
      if (!scales.has(key)) continue;
      const v = Array.from(scales.get(key));
      const init = branch === 'g' ? 1 : (b.scaleInit ?? 1);
      out.push({
        block: b.name,
        branch,
        mean: v.reduce((a, x) => a + x, 0) / v.length,
        min: Math.min(...v),
        max: Math.max(...v),
        negativeShare: v.filter((x) => x < 0).length / v.length,
        moved: Math.max(...v.map((x) => Math.abs(x - init))),
      });
    }
  }
  return out;
}

/** Warnings for scales that should not be used as constants. */
export function scaleWarnings(stats: readonly BranchStats[]): string[] {
  const warnings: string[] = [];
  const bad = stats.filter((s) => ![s.mean, s.min, s.max].every(Number.isFinite));
  if (bad.length)
    warnings.push(
      `non-finite scales in ${bad.map((s) => `${s.block}.${s.branch}`).join(', ')}: the HS run diverged; lower the lr or clip gradients`,
    );
  const huge = stats.filter((s) => Math.max(Math.abs(s.min), Math.abs(s.max)) > 100);
  if (huge.length) warnings.push(`exploding scales (|x| > 100) in ${huge.map((s) => `${s.block}.${s.branch}`).join(', ')}`);
  if (stats.length && stats.every((s) => s.moved < 1e-3))
    warnings.push('the scales barely moved from their initial values: train the HS model longer (or with a larger lr)');
  return warnings;
}

export function scaleTable(stats: readonly BranchStats[]): string {
  return markdownTable(
    ['block', 'branch', 'mean', 'min', 'max', 'negative'],
    stats.map((s) => [s.block, s.branch, s.mean, s.min, s.max, `${(100 * s.negativeShare).toFixed(1)}%`]),
  );
}

export async function plotScales(file: string, stats: readonly BranchStats[]): Promise<void> {
  const blocks = [...new Set(stats.map((s) => s.block))];
  const series = (['s', 't', 'g'] as const).map((branch) => {
    const of = (block: string) => stats.find((s) => s.block === block && s.branch === branch);
    return {
      name: { s: 's (3x3)', t: 't (1x1)', g: 'g (identity)' }[branch],
      mean: blocks.map((b) => of(b)?.mean ?? NaN),
      min: blocks.map((b) => of(b)?.min ?? NaN),
      max: blocks.map((b) => of(b)?.max ?? NaN),
    };
  });
  await rangePlot(file, {
    title: 'Hyper-searched branch scales per block (mean, min..max over channels)',
    xLabel: 'block',
    yLabel: 'scale',
    categories: blocks,
    series,
  });
}

export interface HyperSearchResult {
  readonly train: TrainResult;
  readonly scales: ScaleSet;
  readonly stats: BranchStats[];
  readonly warnings: string[];
  readonly files: { readonly json: string; readonly pth: string };
}

/** Trains mode hs (a checked config), then reads, saves and judges the scales. */
export async function runHyperSearch(config: TrainConfig, context: RunContext): Promise<HyperSearchResult> {
  if (config.mode !== 'hs') throw new Error(`hyper-search trains mode hs, got ${config.mode}`);
  const result = await runTraining(config, context);
  const scales = scalesFromNetworkState(result.spec, result.network.stateDict());
  const files = { json: path.join(config.outDir, 'scales.json'), pth: path.join(config.outDir, 'scales.pth') };
  if (result.rank === 0) {
    // Data parallel: rank 0 alone writes (all ranks hold the same scales).
    saveScales(files.json, scales, 'json');
    saveScales(files.pth, scales, 'pth');
  }
  const stats = scaleStatistics(result.spec, scales);
  const unfinished =
    result.status === 'completed'
      ? []
      : [`the search was ${result.status} after ${result.steps} steps: these scales come from an unfinished search (resume it to finish)`];
  return { train: result, scales, stats, warnings: [...unfinished, ...scaleWarnings(stats)], files };
}
