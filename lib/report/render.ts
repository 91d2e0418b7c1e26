import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Config, TopLevelSpec } from 'vega-lite';

export const PLOT_WIDTH = 900;
export const PLOT_HEIGHT = 500;

/** One look for every plot: white background, text large enough to read in a rendered PNG. */
const PLOT_CONFIG: Config = {
  background: 'white',
  padding: 12,
  title: { fontSize: 17, fontWeight: 'bold', offset: 12 },
  axis: { labelFontSize: 12, titleFontSize: 14, titlePadding: 10, gridColor: '#e8e8e8' },
  legend: { labelFontSize: 13, titleFontSize: 13, symbolSize: 120, symbolStrokeWidth: 3, labelLimit: 260, rowPadding: 6 },
};

/** Plot specs are written without size or styling; this adds them so every plot is PLOT_WIDTH x PLOT_HEIGHT. */
function sized(spec: TopLevelSpec): TopLevelSpec {
  return {
    ...spec,
    width: PLOT_WIDTH,
    height: PLOT_HEIGHT,
    // 'fit' with 'padding' makes the whole image, legend and titles included, exactly this size.
    autosize: { type: 'fit', contains: 'padding' },
    config: PLOT_CONFIG,
  };
}

/** The plot as an SVG document, rendered headlessly (Vega needs no canvas for SVG). */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  // Loaded on first use: vega takes ~0.3 s to load, which commands that never plot should not pay.
  // vega + vega-lite: a declarative grammar of graphics that renders SVG server-side (v5: CommonJS builds).
  const [vega, vegaLite] = await Promise.all([import('vega'), import('vega-lite')]);
  const view = new vega.View(vega.parse(vegaLite.compile(sized(spec)).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Renders `spec` to `file`: SVG when the name ends in .svg, PNG otherwise. */
export async function renderPlot(file: string, spec: TopLevelSpec): Promise<void> {
  const svg = await renderSvg(spec);
  await fs.promises.mkdir(path.dirname(path.resolve(file)), { recursive: true });
  if (file.toLowerCase().endsWith('.svg')) {
    await fs.promises.writeFile(file, svg);
    return;
  }
  // sharp: rasterises SVG with librsvg from its prebuilt libvips, which installs from npm (no canvas build).
  const { default: sharp } = await import('sharp');
  await sharp(Buffer.from(svg)).flatten({ background: '#ffffff' }).png().toFile(file);
}
