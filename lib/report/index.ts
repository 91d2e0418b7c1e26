// Reporting for the training CLI: plots, progress, markdown tables, metric logs.
export { linePlot } from './line-plot';
export type { LinePlotOptions, LineSeries } from './line-plot';
export { barPlot } from './bar-plot';
export type { BarPlotOptions, BarSeries } from './bar-plot';
export { rangePlot } from './range-plot';
export type { RangePlotOptions, RangeSeries } from './range-plot';
export { histogram, histogramPlot } from './histogram-plot';
export type { Histogram, HistogramPlotOptions, HistogramSeries } from './histogram-plot';
export { PLOT_HEIGHT, PLOT_WIDTH, renderPlot, renderSvg } from './render';
export { createProgress, formatMetrics, formatRate } from './progress';
export type { Progress, ProgressOptions, ProgressStream } from './progress';
export { markdownTable } from './markdown';
export type { ColumnAlign, TableCell } from './markdown';
export { formatBytes, formatCount, formatDuration, formatMetric, formatPercent } from './format';
export { writeJsonl } from './jsonl';
export type { JsonlWriter } from './jsonl';
