import type { TopLevelSpec } from 'vega-lite';
import { renderPlot } from './render';
import { categoryAxis, plottable, seriesColor } from './series';

export interface BarSeries {
  name: string;
  /** One value per category, in the order of `categories`. */
  values: ArrayLike<number>;
}

export interface BarPlotOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  categories: string[];
  series: BarSeries[];
}

/** Grouped bars: one group per category, one bar per series in each (e.g. final accuracy per model). */
export async function barPlot(file: string, options: BarPlotOptions): Promise<void> {
  const rows: { category: string; series: string; value: number }[] = [];
  for (const { name, values } of options.series) {
    options.categories.forEach((category, i) => {
      if (i < values.length && plottable(values[i], false)) rows.push({ category, series: name, value: values[i] });
    });
  }
  const spec: TopLevelSpec = {
    title: options.title,
    data: { values: rows },
    mark: { type: 'bar' },
    encoding: {
      x: {
        field: 'category',
        type: 'nominal',
        title: options.xLabel,
        sort: options.categories,
        axis: categoryAxis(options.categories.length),
      },
      xOffset: { field: 'series', type: 'nominal', sort: options.series.map((s) => s.name) },
      y: { field: 'value', type: 'quantitative', title: options.yLabel },
      color: seriesColor(options.series.map((s) => s.name)),
    },
  };
  await renderPlot(file, spec);
}
