import type { TopLevelSpec } from 'vega-lite';
import { renderPlot } from './render';
import { plottable, seriesColor } from './series';

export interface LineSeries {
  name: string;
  x: ArrayLike<number>;
  y: ArrayLike<number>;
}

export interface LinePlotOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: LineSeries[];
  /** Logarithmic y axis (losses); values <= 0 are left out. */
  logY?: boolean;
}

/** Series short enough to see each point (per-epoch curves) get markers as well as a line. */
const MAX_POINTS_WITH_MARKERS = 60;

/**
 * Line plot of one or more series, e.g. training loss per step of three models. Series may have
 * different x values. Points whose x or y is not finite (or y <= 0 with logY) are left out.
 */
export async function linePlot(file: string, options: LinePlotOptions): Promise<void> {
  const logY = options.logY ?? false;
  const rows: { series: string; x: number; y: number }[] = [];
  let longest = 0;
  for (const { name, x, y } of options.series) {
    const length = Math.min(x.length, y.length);
    longest = Math.max(longest, length);
    for (let i = 0; i < length; i++) {
      if (plottable(x[i], false) && plottable(y[i], logY)) rows.push({ series: name, x: x[i], y: y[i] });
    }
  }
  const spec: TopLevelSpec = {
    title: options.title,
    data: { values: rows },
    mark: { type: 'line', strokeWidth: 2, point: longest <= MAX_POINTS_WITH_MARKERS, clip: true },
    encoding: {
      x: { field: 'x', type: 'quantitative', title: options.xLabel, scale: { zero: false, nice: false } },
      y: {
        field: 'y',
        type: 'quantitative',
        title: options.yLabel,
        // A log axis rounded out to whole decades would leave most of the plot empty.
        scale: logY ? { type: 'log', nice: false } : { zero: false },
      },
      color: seriesColor(options.series.map((s) => s.name)),
    },
  };
  await renderPlot(file, spec);
}
