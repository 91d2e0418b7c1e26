// RandAugment: timm config strings and the raug15 preset parsed into specs; every op against Pillow
// (python3-pil, the library timm's RandAugment runs) at several magnitudes, signs and resampling filters;
// Cutout's box; and the whole policy's statistics (op frequencies, untouched images, raug15's integer
// magnitudes) and its determinism in (seed, epoch, index).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseRandAugment, RAND_AUGMENT_OPS, type RandAugmentOpName, type RandAugmentSpec } from '../lib/data/randaugment';
import { native } from '../lib/native';
import { thrown } from './helpers';

const W = 40;
const H = 30;

/** A 40 x 30 RGB image with structure: two gradients, a bright block, noise; values in [20, 230]. */
function testImage(): Uint8Array {
  const img = new Uint8Array(W * H * 3);
  let s = 12345;
  const noise = (n: number) => {
    s = (s * 1103515245 + 12345) >>> 0;
    return (s >>> 16) % n;
  };
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const p = (y * W + x) * 3;
      img[p] = Math.min(230, 20 + Math.floor((150 * x) / (W - 1)) + noise(40));
      img[p + 1] = Math.min(230, 30 + Math.floor((120 * y) / (H - 1)) + noise(40));
      img[p + 2] = Math.min(230, 60 + (x >= 8 && x < 20 && y >= 5 && y < 15 ? 100 : 0) + noise(30));
    }
  }
  return img;
}

// timm's level -> argument functions (timm/data/auto_augment.py) on Pillow's ops.
const PILLOW_REFERENCE = `
import json, sys
from PIL import Image, ImageOps, ImageEnhance
w, h = int(sys.argv[1]), int(sys.argv[2])
img = Image.frombytes('RGB', (w, h), open(sys.argv[3], 'rb').read())
out = bytearray()
for op, m, sign, interp, add_max in json.load(open(sys.argv[4])):
    level = m / 10.
    kw = dict(resample=Image.BICUBIC if interp == 'bicubic' else Image.BILINEAR, fillcolor=(124, 116, 104))
    base = op.replace('Increasing', '')
    if op == 'AutoContrast': r = ImageOps.autocontrast(img)
    elif op == 'Equalize': r = ImageOps.equalize(img)
    elif op == 'Invert': r = ImageOps.invert(img)
    elif op == 'Rotate': r = img.rotate(sign * (level * 30.), **kw)
    elif base == 'Posterize':
        bits = int(level * 4) if op == base else 4 - int(level * 4)
        r = img if bits >= 8 else ImageOps.posterize(img, bits)
    elif base == 'Solarize':
        t = min(256, int(level * 256))
        r = ImageOps.solarize(img, t if op == base else 256 - t)
    elif op == 'SolarizeAdd':
        add = min(add_max, int(level * 110))
        r = img.point([min(255, i + add) if i < 128 else i for i in range(256)] * 3)
    elif base in ('Color', 'Contrast', 'Brightness', 'Sharpness'):
        factor = level * 1.8 + 0.1 if op == base else max(0.1, 1.0 + sign * (level * .9))
        r = getattr(ImageEnhance, base)(img).enhance(factor)
    elif op == 'ShearX': r = img.transform(img.size, Image.AFFINE, (1, sign * (level * .3), 0, 0, 1, 0), **kw)
    elif op == 'ShearY': r = img.transform(img.size, Image.AFFINE, (1, 0, 0, sign * (level * .3), 1, 0), **kw)
    elif op == 'TranslateXRel': r = img.transform(img.size, Image.AFFINE, (1, 0, sign * (level * .45) * w, 0, 1, 0), **kw)
    elif op == 'TranslateYRel': r = img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, sign * (level * .45) * h), **kw)
    else: raise SystemExit('unknown op ' + op)
    out += r.tobytes()
sys.stdout.buffer.write(bytes(out))
`;

type Case = [op: RandAugmentOpName, magnitude: number, sign: 1 | -1, interpolation: 'bilinear' | 'bicubic', solarizeAddMax: number];

function pillow(img: Uint8Array, cases: Case[]): Buffer {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'repopt-randaugment-'));
  try {
    fs.writeFileSync(path.join(dir, 'img.bin'), img);
    fs.writeFileSync(path.join(dir, 'cases.json'), JSON.stringify(cases));
    const run = spawnSync(
      '/usr/bin/python3',
      ['-c', PILLOW_REFERENCE, String(W), String(H), path.join(dir, 'img.bin'), path.join(dir, 'cases.json')],
      {
        maxBuffer: 1 << 28,
        timeout: 120_000,
      },
    );
    if (run.status !== 0) throw new Error(`python3 + Pillow failed (install python3-pil): ${run.error?.message ?? run.stderr.toString()}`);
    return run.stdout;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const AFFINE = new Set<RandAugmentOpName>(['Rotate', 'ShearX', 'ShearY', 'TranslateXRel', 'TranslateYRel']);
const TIMM_OPS = RAND_AUGMENT_OPS.filter((op) => op !== 'Cutout');

describe('parseRandAugment', () => {
  test("timm's strings: defaults, increasing ops, uniform magnitudes", () => {
    expect(parseRandAugment('rand-m9-mstd0.5-inc1')).toEqual({
      ops: [
        'AutoContrast',
        'Equalize',
        'Invert',
        'Rotate',
        'PosterizeIncreasing',
        'SolarizeIncreasing',
        'SolarizeAdd',
        'ColorIncreasing',
        'ContrastIncreasing',
        'BrightnessIncreasing',
        'SharpnessIncreasing',
        'ShearX',
        'ShearY',
        'TranslateXRel',
        'TranslateYRel',
      ],
      numLayers: 2,
      prob: 0.5,
      magnitude: 9,
      magnitudeDraw: 'gauss',
      magnitudeStd: 0.5,
      magnitudeMax: 10,
      fill: [124, 116, 104],
      interpolation: 'bilinear',
      solarizeAddMax: 128,
    });
    const plain = parseRandAugment('rand-n3-m15-p0.7-mstd101-mmax12', { interpolation: 'random', fill: [1, 2, 3] });
    expect(plain.ops).toEqual(TIMM_OPS.slice(0, 15));
    expect(plain).toMatchObject({ numLayers: 3, magnitude: 15, prob: 0.7, magnitudeDraw: 'uniform', magnitudeMax: 12 });
    expect(plain).toMatchObject({ interpolation: 'random', fill: [1, 2, 3] });
    expect(parseRandAugment('rand')).toMatchObject({ magnitude: 10, numLayers: 2, prob: 0.5, magnitudeStd: 0 });
  });

  test("'raug15': the official RepOptimizers preset", () => {
    const spec = parseRandAugment('raug15');
    expect(spec.ops).toEqual([...TIMM_OPS.slice(0, 15), 'Cutout']);
    expect(spec).toMatchObject({
      numLayers: 2,
      prob: 1,
      magnitude: 15,
      magnitudeDraw: 'uniformInteger',
      magnitudeMax: 15,
      fill: [128, 128, 128],
      interpolation: 'random',
      solarizeAddMax: 255,
    });
  });

  test.each([
    ['rand-m9.5', /m must be an integer/],
    ['rand-x3', /unknown section 'x3'/],
    ['rand-m9-m10', /'m' is given twice/],
    ['randm9', /must be 'raug15' or a timm RandAugment string/],
    ['rand-inc0', /inc must be 1/],
    ['rand-tweights', /not <key><number>/],
    ['rand-p1.5', /p must be in \[0, 1\]/],
    ['rand-mmax0', /mmax must be an integer in \[1, 100\]/],
    ['rand-m9-', /section '' is not/],
    ['raug16', /must be 'raug15'/],
  ])('%s is refused', (config, message) => {
    const e = thrown(() => parseRandAugment(config, {}, 'augment.randAugment'));
    expect(e.name).toBe('OptionError');
    expect(e.message).toMatch(/^augment\.randAugment '/);
    expect(e.message).toContain(config);
    expect(e.message).toMatch(message);
  });

  test('bad options are refused', () => {
    expect(thrown(() => parseRandAugment('raug15', { fill: [0, 256, 0] })).message).toMatch(/fill must be 3 integers in \[0, 255\]/);
    expect(thrown(() => parseRandAugment('raug15', { interpolation: 'nearest' as 'bilinear' })).message).toMatch(/interpolation must be/);
  });
});

describe('each op against Pillow', () => {
  const img = testImage();

  // Affine ops: both filters and signs; signed enhance ops (*Increasing): both signs; magnitudes above 10 as
  // mmax and raug15 reach them (SolarizeAdd with raug15's uncapped addend too).
  function cases(): Case[] {
    const out: Case[] = [];
    for (const op of TIMM_OPS) {
      for (const magnitude of [0, 3.7, 9, 10, 14]) {
        for (const sign of [1, -1] as const) {
          for (const interpolation of AFFINE.has(op) ? (['bilinear', 'bicubic'] as const) : (['bilinear'] as const)) {
            out.push([op, magnitude, sign, interpolation, 128]);
          }
        }
      }
    }
    for (const magnitude of [12, 14]) out.push(['SolarizeAdd', magnitude, 1, 'bilinear', 255]);
    return out;
  }

  test('every op, magnitude, sign and filter matches Pillow to within 1 (in practice: bit-exact)', () => {
    const all = cases();
    const reference = pillow(img, all);
    const n = W * H * 3;
    expect(reference.length).toBe(all.length * n);
    let differing = 0;
    const failures: string[] = [];
    all.forEach(([op, magnitude, sign, interpolation, solarizeAddMax], k) => {
      const ours = native().randAugmentOp(img, H, W, op, magnitude, { sign, interpolation, solarizeAddMax });
      let max = 0;
      for (let i = 0; i < n; i++) {
        const d = Math.abs(ours[i] - reference[k * n + i]);
        if (d) differing++;
        max = Math.max(max, d);
      }
      if (max > 1) failures.push(`${op} m${magnitude} sign ${sign} ${interpolation}: max |diff| ${max}`);
    });
    // Within 1 everywhere: the ops replicate Pillow's arithmetic (float blend, float 3x3 smooth, double
    // resampling, truncation), so only a rounding flip at a truncation boundary (another libm's cos/sin in
    // Rotate, FMA contraction in another build of Pillow) can move a value, and then by 1; such flips are
    // bounded at 0.5% of the bytes compared. On the Debian 12 host (Pillow 9.4) no byte differs.
    expect(failures).toEqual([]);
    expect(differing).toBeLessThanOrEqual(0.005 * all.length * n);
  });

  test('a magnitude-0 affine op and a factor-1 enhance op leave the image as it is; ops change it otherwise', () => {
    for (const op of ['Rotate', 'ShearX', 'TranslateYRel'] as const) expect(native().randAugmentOp(img, H, W, op, 0)).toEqual(img);
    expect(native().randAugmentOp(img, H, W, 'Brightness', 5)).toEqual(img);
    for (const op of TIMM_OPS) expect(native().randAugmentOp(img, H, W, op, 7)).not.toEqual(img);
  });

  test("Cutout paints one clipped square of raug15's colour, side max(2, 4m) rounded down to even", () => {
    let full = 0;
    for (let seed = 0; seed < 40; seed++) {
      const out = native().randAugmentOp(img, H, W, 'Cutout', 5, { seed });
      let x0 = W;
      let x1 = -1;
      let y0 = H;
      let y1 = -1;
      for (let y = 0; y < H; y++) {
        for (let x = 0; x < W; x++) {
          const p = (y * W + x) * 3;
          if (out[p] !== img[p] || out[p + 1] !== img[p + 1] || out[p + 2] !== img[p + 2]) {
            [x0, x1, y0, y1] = [Math.min(x0, x), Math.max(x1, x), Math.min(y0, y), Math.max(y1, y)];
          }
        }
      }
      expect(x1).toBeGreaterThanOrEqual(x0);
      // Every pixel of the bounding box is painted (the box is filled, nothing outside it changed).
      let unpainted = 0;
      for (let y = y0; y <= y1; y++) {
        for (let x = x0; x <= x1; x++) {
          const p = (y * W + x) * 3;
          if (out[p] !== 125 || out[p + 1] !== 122 || out[p + 2] !== 113) unpainted++;
        }
      }
      expect(unpainted).toBe(0);
      expect(x1 - x0 + 1).toBeLessThanOrEqual(20);
      expect(y1 - y0 + 1).toBeLessThanOrEqual(20);
      if (x1 - x0 + 1 === 20 && y1 - y0 + 1 === 20) full++;
    }
    // An unclipped 20 x 20 box needs its centre in [10, 30] x [10, 20]: probability 0.19 per seed.
    expect(full).toBeGreaterThan(0);
    expect(full).toBeLessThan(40);
  });

  test('bad arguments are named', () => {
    expect(thrown(() => native().randAugmentOp(img, H, W, 'Blur' as RandAugmentOpName, 5)).message).toMatch(
      /argument 'op' is not a RandAugment op: 'Blur'/,
    );
    expect(thrown(() => native().randAugmentOp(img.subarray(3), H, W, 'Invert', 5)).message).toMatch(/argument 'hwc' has 3597 bytes/);
    expect(thrown(() => native().randAugmentOp(img, H, W, 'Rotate', 5, { sign: 2 as 1 })).message).toMatch(/options\.sign must be 1 or -1/);
    const spec = parseRandAugment('rand-m9');
    expect(thrown(() => native().randAugment(img, H, W, { ...spec, ops: [] }, 0, 0, 0)).message).toMatch(
      /randAugment: spec\.ops must not be empty/,
    );
    expect(thrown(() => native().randAugment(img, H, W, { ...spec, prob: 2 }, 0, 0, 0)).message).toMatch(/spec\.prob must be in \[0, 1\]/);
    const noDraw = { ...spec, magnitudeDraw: undefined } as unknown as RandAugmentSpec;
    expect(thrown(() => native().randAugment(img, H, W, noDraw, 0, 0, 0)).message).toMatch(/spec\.magnitudeDraw must be a string/);
  });
});

describe('the whole policy', () => {
  const img = testImage();
  const same = (a: Uint8Array, b: Uint8Array) => Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;

  test('ops are drawn uniformly: one layer, always applied, identified by its output', () => {
    const spec: RandAugmentSpec = { ...parseRandAugment('rand-m9-n1-p1'), interpolation: 'bilinear' };
    // Each op's possible outputs at magnitude 9 (both signs); distinct between ops on this image.
    const candidates = TIMM_OPS.slice(0, 15).map((op) =>
      [1, -1].map((sign) => native().randAugmentOp(img, H, W, op, 9, { sign: sign as 1 | -1 })),
    );
    for (let a = 0; a < candidates.length; a++)
      for (let b = a + 1; b < candidates.length; b++)
        for (const x of candidates[a]) for (const y of candidates[b]) expect(same(x, y)).toBe(false);
    const counts = new Array(15).fill(0);
    const draws = 1500;
    for (let index = 0; index < draws; index++) {
      const out = native().randAugment(img, H, W, spec, 7, 0, index);
      const op = candidates.findIndex((outs) => outs.some((c) => same(c, out)));
      expect(op).toBeGreaterThanOrEqual(0);
      counts[op]++;
    }
    // 100 expected per op, standard deviation 9.7: [60, 140] is 4 of them.
    for (const c of counts) {
      expect(c).toBeGreaterThanOrEqual(60);
      expect(c).toBeLessThanOrEqual(140);
    }
  });

  test("two layers with probability 0.5: a quarter of the images are untouched; raug15's magnitudes are 0..14", () => {
    // Magnitude 7 +- 0.5, where no op leaves this image as it is (at 9, Solarize's threshold passes its maximum).
    const spec = parseRandAugment('rand-m7-mstd0.5');
    const draws = 1200;
    let untouched = 0;
    for (let index = 0; index < draws; index++) if (same(native().randAugment(img, H, W, spec, 3, 1, index), img)) untouched++;
    // p = 0.25 (plus ~0.1% for two cancelling Inverts); standard deviation 0.0125: 4 of them.
    expect(Math.abs(untouched / draws - 0.25)).toBeLessThanOrEqual(0.05);

    // raug15 restricted to Brightness, whose output tells its magnitude: an integer in 0..14, uniform.
    const raug: RandAugmentSpec = { ...parseRandAugment('raug15'), ops: ['Brightness'], numLayers: 1 };
    const byMagnitude = Array.from({ length: 16 }, (_, m) => native().randAugmentOp(img, H, W, 'Brightness', m));
    const counts = new Array(16).fill(0);
    for (let index = 0; index < 1500; index++) {
      const out = native().randAugment(img, H, W, raug, 5, 0, index);
      const m = byMagnitude.findIndex((c) => same(c, out));
      expect(m).toBeGreaterThanOrEqual(0);
      counts[m]++;
    }
    expect(counts[15]).toBe(0);
    // 100 expected per magnitude: [60, 140].
    for (const c of counts.slice(0, 15)) {
      expect(c).toBeGreaterThanOrEqual(60);
      expect(c).toBeLessThanOrEqual(140);
    }
  });

  test("interpolation 'random' draws bilinear or bicubic per application, and the sign, each half the time", () => {
    const spec: RandAugmentSpec = { ...parseRandAugment('rand-m9-n1-p1'), ops: ['Rotate'], interpolation: 'random' };
    const candidates = (['bilinear', 'bicubic'] as const).flatMap((interpolation) =>
      ([1, -1] as const).map((sign) => native().randAugmentOp(img, H, W, 'Rotate', 9, { sign, interpolation })),
    );
    const counts = [0, 0, 0, 0];
    for (let index = 0; index < 800; index++) {
      const k = candidates.findIndex((c) => same(c, native().randAugment(img, H, W, spec, 9, 0, index)));
      expect(k).toBeGreaterThanOrEqual(0);
      counts[k]++;
    }
    // 200 expected each, standard deviation 12.2: [150, 250] is 4 of them.
    for (const c of counts) {
      expect(c).toBeGreaterThanOrEqual(150);
      expect(c).toBeLessThanOrEqual(250);
    }
  });

  test('the same (seed, epoch, index) gives the same image; another seed, epoch or index another', () => {
    const spec = parseRandAugment('raug15');
    let differ = { seed: 0, epoch: 0, index: 0 };
    for (let index = 0; index < 30; index++) {
      const a = native().randAugment(img, H, W, spec, 11, 2, index);
      expect(same(a, native().randAugment(img, H, W, spec, 11, 2, index))).toBe(true);
      differ = {
        seed: differ.seed + (same(a, native().randAugment(img, H, W, spec, 12, 2, index)) ? 0 : 1),
        epoch: differ.epoch + (same(a, native().randAugment(img, H, W, spec, 11, 3, index)) ? 0 : 1),
        index: differ.index + (same(a, native().randAugment(img, H, W, spec, 11, 2, index + 1)) ? 0 : 1),
      };
    }
    expect(differ.seed).toBeGreaterThanOrEqual(25);
    expect(differ.epoch).toBeGreaterThanOrEqual(25);
    expect(differ.index).toBeGreaterThanOrEqual(25);
  });
});
