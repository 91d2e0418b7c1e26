// Shared pieces of the plot specs.

/** Keeps the legend and the colours in the order the caller gave the series (Vega would sort them). */
export function seriesColor(names: string[]) {
  return { field: 'series', type: 'nominal', title: null, scale: { domain: names } } as const;
}

/** Category axis labels: slanted once there are too many to fit upright side by side. */
export function categoryAxis(count: number) {
  return { labelAngle: count > 12 ? -45 : 0, labelLimit: 160 } as const;
}

/** Finite and, on a log axis, positive: what a plot can place. */
export function plottable(value: number, logScale: boolean): boolean {
  return Number.isFinite(value) && (!logScale || value > 0);
}
