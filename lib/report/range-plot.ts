import type { TopLevelSpec } from 'vega-lite';
import { renderPlot } from './render';
import { categoryAxis, plottable, seriesColor } from './series';

export interface RangeSeries {
  name: string;
  /** Per category, in the order of `categories`: the dot. */
  mean: ArrayLike<number>;
  /** Per category: the ends of the bar through the dot. */
  min: ArrayLike<number>;
  max: ArrayLike<number>;
}

export interface RangePlotOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  categories: string[];
  series: RangeSeries[];
  /** Logarithmic y axis; categories with a value <= 0 are left out. */
  logY?: boolean;
}

/**
 * Per-category statistics: a dot at the mean and a bar from min to max, series side by side in each
 * category; e.g. the branch scales of each of ~28 blocks for three models.
 */
export async function rangePlot(file: string, options: RangePlotOptions): Promise<void> {
  const logY = options.logY ?? false;
  const rows: { category: string; series: string; mean: number; min: number; max: number }[] = [];
  for (const { name, mean, min, max } of options.series) {
    options.categories.forEach((category, i) => {
      const stats = { mean: mean[i], min: min[i], max: max[i] };
      if (Object.values(stats).every((v) => plottable(v, logY))) rows.push({ category, series: name, ...stats });
    });
  }
  const names = options.series.map((s) => s.name);
  const x = {
    field: 'category',
    type: 'nominal',
    title: options.xLabel,
    sort: options.categories,
    axis: categoryAxis(options.categories.length),
  } as const;
  const xOffset = { field: 'series', type: 'nominal', sort: names } as const;
  const scale = logY ? ({ type: 'log' } as const) : ({ zero: false } as const);
  const spec: TopLevelSpec = {
    title: options.title,
    data: { values: rows },
    encoding: { x, xOffset, color: seriesColor(names) },
    layer: [
      {
        mark: { type: 'rule', strokeWidth: 2.5 },
        encoding: { y: { field: 'min', type: 'quantitative', title: options.yLabel, scale }, y2: { field: 'max' } },
      },
      {
        mark: { type: 'point', filled: true, size: 45, opacity: 1 },
        encoding: { y: { field: 'mean', type: 'quantitative', title: options.yLabel, scale } },
      },
    ],
  };
  await renderPlot(file, spec);
}
