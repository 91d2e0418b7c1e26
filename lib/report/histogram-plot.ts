import type { TopLevelSpec } from 'vega-lite';
import { renderPlot } from './render';
import { seriesColor } from './series';

export interface HistogramSeries {
  name: string;
  /** Any number of values, e.g. a layer's weights as a Float32Array; non-finite ones are skipped. */
  values: ArrayLike<number>;
}

export interface HistogramPlotOptions {
  title: string;
  xLabel: string;
  series: HistogramSeries[];
  /** Number of equal-width bins over the range of all series together (default 60). */
  bins?: number;
  /** 'symlog' shows sparse tails (a few large weights) next to the bulk; default 'linear'. */
  countScale?: 'linear' | 'symlog';
}

export interface Histogram {
  /** bins + 1 edges, shared by all series so their bars line up. */
  edges: number[];
  /** One count array per series. */
  counts: number[][];
}

/**
 * Counts values into equal-width bins spanning every series' finite values. Done here rather than by
 * Vega's bin transform so that millions of weights become `bins` rows, not millions of data objects.
 */
export function histogram(series: ArrayLike<number>[], bins: number): Histogram {
  const binCount = Math.max(1, Math.floor(Number.isFinite(bins) ? bins : 1));
  let low = Infinity;
  let high = -Infinity;
  for (const values of series) {
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (Number.isFinite(v)) {
        if (v < low) low = v;
        if (v > high) high = v;
      }
    }
  }
  if (low > high) [low, high] = [0, 1]; // no finite value at all
  if (low === high) [low, high] = [low - 0.5, high + 0.5]; // one value: give the bin a width
  const width = (high - low) / binCount;
  const edges = Array.from({ length: binCount + 1 }, (_, i) => (i === binCount ? high : low + i * width));
  const counts = series.map((values) => {
    const count = new Array<number>(binCount).fill(0);
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      // The top edge belongs to the last bin.
      if (Number.isFinite(v)) count[Math.min(binCount - 1, Math.floor((v - low) / width))]++;
    }
    return count;
  });
  return { edges, counts };
}

/** Overlaid, translucent histograms, e.g. one layer's weights in three models. */
export async function histogramPlot(file: string, options: HistogramPlotOptions): Promise<void> {
  const { edges, counts } = histogram(
    options.series.map((s) => s.values),
    options.bins ?? 60,
  );
  const rows: { series: string; start: number; end: number; count: number }[] = [];
  options.series.forEach(({ name }, s) => {
    counts[s].forEach((count, b) => {
      rows.push({ series: name, start: edges[b], end: edges[b + 1], count });
    });
  });
  const spec: TopLevelSpec = {
    title: options.title,
    data: { values: rows },
    mark: { type: 'rect', opacity: 0.45, stroke: null },
    encoding: {
      x: { field: 'start', type: 'quantitative', title: options.xLabel, scale: { zero: false, nice: false } },
      x2: { field: 'end' },
      y: {
        field: 'count',
        type: 'quantitative',
        title: options.countScale === 'symlog' ? 'count (symmetric log scale)' : 'count',
        scale: { type: options.countScale ?? 'linear' },
      },
      y2: { datum: 0 },
      color: seriesColor(options.series.map((s) => s.name)),
    },
  };
  await renderPlot(file, spec);
}
