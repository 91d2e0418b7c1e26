import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { PLOT_HEIGHT, PLOT_WIDTH, barPlot, histogram, histogramPlot, linePlot, rangePlot } from '../lib/report';

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'repopt-report-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

interface Pixels {
  width: number;
  height: number;
  data: Buffer;
}

async function decode(file: string): Promise<Pixels> {
  const { data, info } = await sharp(file).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, data };
}

/** Pixels in the rectangle that are clearly not white (antialiasing halos aside). */
function nonWhite(p: Pixels, x0: number, y0: number, x1: number, y1: number): number {
  let count = 0;
  for (let y = y0; y < y1; y++) {
    for (let x = x0; x < x1; x++) {
      const i = (y * p.width + x) * 3;
      if (p.data[i] < 200 || p.data[i + 1] < 200 || p.data[i + 2] < 200) count++;
    }
  }
  return count;
}

/** A plot drawn at the expected size, with something drawn in its middle (the plot area). */
async function expectPlot(file: string): Promise<Pixels> {
  const pixels = await decode(file);
  expect([pixels.width, pixels.height]).toEqual([PLOT_WIDTH, PLOT_HEIGHT]);
  const drawn = nonWhite(pixels, 150, 100, 650, 400);
  expect(drawn).toBeGreaterThan(1000);
  return pixels;
}

const steps = Array.from({ length: 10_000 }, (_, i) => i);
const lossCurves = (decay: number) =>
  ['RepOpt-VGG', 'RepVGG', 'VGG'].map((name, k) => ({
    name,
    x: steps,
    y: steps.map((i) => 2.3 * Math.exp(-i / (decay + 700 * k)) + 0.05 + 0.01 * Math.sin(i)),
  }));

describe('linePlot', () => {
  test('renders 3 x 10k points to a 900x500 PNG; other data gives other pixels', async () => {
    const a = path.join(dir, 'loss-a.png');
    const b = path.join(dir, 'loss-b.png');
    await linePlot(a, { title: 'Training loss', xLabel: 'step', yLabel: 'loss', series: lossCurves(1500), logY: true });
    await linePlot(b, { title: 'Training loss', xLabel: 'step', yLabel: 'loss', series: lossCurves(300), logY: true });
    const [pa, pb] = [await expectPlot(a), await expectPlot(b)];
    expect(pa.data.equals(pb.data)).toBe(false);
  });

  test('the title text is rasterised (fonts are found), not just the lines', async () => {
    const file = path.join(dir, 'titled.png');
    const series = [{ name: 'acc', x: [1, 2, 3], y: [0.5, 0.7, 0.8] }];
    await linePlot(file, { title: 'Test accuracy of all models', xLabel: 'epoch', yLabel: 'accuracy', series });
    const pixels = await expectPlot(file);
    // The title sits alone in the top band; with no usable font it would be blank.
    expect(nonWhite(pixels, 250, 0, 650, 35)).toBeGreaterThan(200);
  });

  test('skips NaN, infinite and (on a log axis) non-positive points; writes SVG for .svg names', async () => {
    const file = path.join(dir, 'odd.svg');
    const series = [{ name: 'loss', x: [0, 1, 2, 3, 4], y: [1, NaN, Infinity, 0, 0.5] }];
    await linePlot(file, { title: 'odd', xLabel: 'step', yLabel: 'loss', series, logY: true });
    const svg = fs.readFileSync(file, 'utf8');
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg).toContain(`width="${PLOT_WIDTH}"`);
    expect(svg).not.toContain('NaN');
  });
});

describe('barPlot and rangePlot', () => {
  const blocks = Array.from({ length: 28 }, (_, i) => `stage${Math.floor(i / 7)}.${i % 7}`);

  test('grouped bars render and depend on the values', async () => {
    const a = path.join(dir, 'bars-a.png');
    const b = path.join(dir, 'bars-b.png');
    const options = (shift: number) => ({
      title: 'Final accuracy',
      xLabel: 'data set',
      yLabel: 'top-1 (%)',
      categories: ['CIFAR-10', 'CIFAR-100'],
      series: [
        { name: 'RepOpt', values: [94, 75 - shift] },
        { name: 'plain', values: [92, 71 + shift] },
      ],
    });
    await barPlot(a, options(0));
    await barPlot(b, options(30));
    const [pa, pb] = [await expectPlot(a), await expectPlot(b)];
    expect(pa.data.equals(pb.data)).toBe(false);
  });

  test('per-block ranges of 28 blocks render', async () => {
    const file = path.join(dir, 'scales.png');
    const series = ['3x3', '1x1', 'identity'].map((name, k) => ({
      name,
      mean: blocks.map((_, i) => 1 + 0.3 * k + 0.02 * i),
      min: blocks.map((_, i) => 0.5 + 0.3 * k + 0.01 * i),
      max: blocks.map((_, i) => 1.5 + 0.3 * k + 0.03 * i),
    }));
    await rangePlot(file, { title: 'Branch scales', xLabel: 'block', yLabel: 'scale', categories: blocks, series });
    await expectPlot(file);
  });
});

describe('histogram', () => {
  test('counts into shared bins; the maximum lands in the last bin; non-finite values are skipped', () => {
    const { edges, counts } = histogram([[0, 1, 2, 3, 4], Float32Array.from([4, 4, NaN, Infinity])], 4);
    expect(edges).toEqual([0, 1, 2, 3, 4]);
    expect(counts).toEqual([
      [1, 1, 1, 2],
      [0, 0, 0, 2],
    ]);
  });

  test('a single repeated value or no values still give bins', () => {
    expect(histogram([[5, 5]], 2)).toEqual({ edges: [4.5, 5, 5.5], counts: [[0, 2]] });
    expect(histogram([[]], 0).counts).toEqual([[0]]);
  });

  test('overlaid histograms of 3 x 500k weights render', async () => {
    const file = path.join(dir, 'hist.png');
    const weights = (scale: number): Float32Array => {
      const values = new Float32Array(500_000);
      for (let i = 0; i < values.length; i++) values[i] = scale * Math.sin(i * 12.9898);
      return values;
    };
    const series = [
      { name: 'RepOpt', values: weights(0.02) },
      { name: 'RepVGG', values: weights(0.03) },
      { name: 'plain', values: weights(0.01) },
    ];
    await histogramPlot(file, { title: 'stage2.0 weights', xLabel: 'weight', series, bins: 50 });
    await expectPlot(file);
  });
});
