// RandAugment settings: timm's config strings ('rand-m9-mstd0.5-inc1') and the official RepOptimizers
// 'raug15' preset, parsed into the checked, normalised spec the native loader applies (native/core/randaugment.h).
import { OptionError } from '../option-error';

/** timm's op names (_RAND_TRANSFORMS, _RAND_INCREASING_TRANSFORMS), and Cutout of the raug15 policy. */
export const RAND_AUGMENT_OPS = [
  'AutoContrast',
  'Equalize',
  'Invert',
  'Rotate',
  'Posterize',
  'Solarize',
  'SolarizeAdd',
  'Color',
  'Contrast',
  'Brightness',
  'Sharpness',
  'ShearX',
  'ShearY',
  'TranslateXRel',
  'TranslateYRel',
  'PosterizeIncreasing',
  'SolarizeIncreasing',
  'ColorIncreasing',
  'ContrastIncreasing',
  'BrightnessIncreasing',
  'SharpnessIncreasing',
  'Cutout',
] as const;
export type RandAugmentOpName = (typeof RAND_AUGMENT_OPS)[number];

export type RandAugmentInterpolation = 'bilinear' | 'bicubic' | 'random';

export interface RandAugmentSpec {
  /** Each layer draws one of these uniformly, with replacement. */
  readonly ops: readonly RandAugmentOpName[];
  readonly numLayers: number;
  /** Probability that a drawn op is applied. */
  readonly prob: number;
  /** On timm's scale, where 10 is each op's nominal maximum. */
  readonly magnitude: number;
  /** gauss: N(magnitude, magnitudeStd) (fixed when 0); uniform: U[0, magnitude]; uniformInteger: an integer
   * uniform in [0, magnitude) (raug15). Then clipped to [0, magnitudeMax]. */
  readonly magnitudeDraw: 'gauss' | 'uniform' | 'uniformInteger';
  readonly magnitudeStd: number;
  readonly magnitudeMax: number;
  /** RGB the affine ops bring in from outside the image. */
  readonly fill: readonly [number, number, number];
  /** Resampling of the affine ops; random: bilinear or bicubic per application. */
  readonly interpolation: RandAugmentInterpolation;
  /** Cap on SolarizeAdd's addend: timm 128, raug15 255 (none). */
  readonly solarizeAddMax: number;
}

export interface RandAugmentOptions {
  /** Default: the ImageNet mean, (124, 116, 104), as timm's create_transform passes (raug15: 128 grey). */
  readonly fill?: readonly [number, number, number];
  /** Default 'bilinear', the official recipe's DATA.INTERPOLATION (raug15: 'random'). */
  readonly interpolation?: RandAugmentInterpolation;
}

const TIMM_OPS: readonly RandAugmentOpName[] = RAND_AUGMENT_OPS.slice(0, 15);
const TIMM_INCREASING_OPS: readonly RandAugmentOpName[] = [
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
];

// The official RepOptimizers AUG.PRESET 'raug15' (its randaug.py RandAugPolicy(magnitude=15)): 2 ops from
// timm's older 16-op list (Posterize as 'PosterizeTpu', plus Cutout), always applied, each at an integer
// magnitude uniform in 0..14 with no clipping, grey fill, bilinear or bicubic at random.
const RAUG15: Omit<RandAugmentSpec, 'fill' | 'interpolation'> = {
  ops: [...TIMM_OPS, 'Cutout'],
  numLayers: 2,
  prob: 1,
  magnitude: 15,
  magnitudeDraw: 'uniformInteger',
  magnitudeStd: 0,
  magnitudeMax: 15,
  solarizeAddMax: 255,
};

const INTEGER = /^\d+$/;
const DECIMAL = /^\d+(\.\d*)?([eE][+-]?\d+)?$/;

/**
 * Parses a RandAugment config: 'raug15', or timm's 'rand-<sections>' with sections (any order, each once)
 * m<int> magnitude (default 10), n<int> layers (2), p<float> probability per layer (0.5), mstd<float> magnitude
 * std (0; above 100: uniform in [0, m]), mmax<int> clip (10), inc1 the *Increasing ops. timm's 't' (op sets)
 * sections are not supported. `option` names the option in errors.
 */
export function parseRandAugment(config: string, options: RandAugmentOptions = {}, option = 'randAugment'): RandAugmentSpec {
  const fail = (why: string): never => {
    throw new OptionError(option, `${option} '${config}': ${why}`);
  };
  const fill = checkFill(options.fill, option);
  const interpolation = options.interpolation;
  if (interpolation !== undefined && !['bilinear', 'bicubic', 'random'].includes(interpolation)) {
    throw new OptionError(option, `${option}: interpolation must be 'bilinear', 'bicubic' or 'random', got ${String(interpolation)}`);
  }
  if (typeof config !== 'string') fail('must be a string');
  if (config === 'raug15') return { ...RAUG15, fill: fill ?? [128, 128, 128], interpolation: interpolation ?? 'random' };
  const [head, ...sections] = config.split('-');
  if (head !== 'rand') fail("must be 'raug15' or a timm RandAugment string starting 'rand-', like 'rand-m9-mstd0.5-inc1'");
  let magnitude = 10;
  let numLayers = 2;
  let prob = 0.5;
  let magnitudeStd = 0;
  let magnitudeMax = 10;
  let increasing = false;
  const seen = new Set<string>();
  for (const section of sections) {
    const match = /^([a-z]+)(\d.*)$/.exec(section);
    if (!match) fail(`section '${section}' is not <key><number> (keys: m, n, p, mstd, mmax, inc)`);
    const [, key, value] = match as RegExpExecArray;
    if (seen.has(key)) fail(`section '${key}' is given twice`);
    seen.add(key);
    const integer = (lo: number, hi: number): number => {
      const v = Number(value);
      if (!INTEGER.test(value) || v < lo || v > hi) fail(`${key} must be an integer in [${lo}, ${hi}], got '${value}'`);
      return v;
    };
    const decimal = (): number => {
      if (!DECIMAL.test(value)) fail(`${key} must be a number, got '${value}'`);
      return Number(value);
    };
    switch (key) {
      case 'm':
        magnitude = integer(0, 100);
        break;
      case 'n':
        numLayers = integer(0, 64);
        break;
      case 'p':
        prob = decimal();
        if (prob > 1) fail(`p must be in [0, 1], got '${value}'`);
        break;
      case 'mstd':
        magnitudeStd = decimal();
        break;
      case 'mmax':
        // timm reads mmax0 as the default 10 (a falsy bound), so 0 is refused rather than misread.
        magnitudeMax = integer(1, 100);
        break;
      case 'inc':
        // timm turns the *Increasing ops on for any inc value, inc0 included.
        if (value !== '1') fail(`inc must be 1 (timm enables the increasing ops for any inc value; leave it out for the plain ones)`);
        increasing = true;
        break;
      default:
        fail(`unknown section '${section}' (keys: m, n, p, mstd, mmax, inc; timm's 't' op sets are not supported)`);
    }
  }
  const uniform = magnitudeStd > 100;
  return {
    ops: increasing ? TIMM_INCREASING_OPS : TIMM_OPS,
    numLayers,
    prob,
    magnitude,
    magnitudeDraw: uniform ? 'uniform' : 'gauss',
    magnitudeStd: uniform ? 0 : magnitudeStd,
    magnitudeMax,
    fill: fill ?? [124, 116, 104],
    interpolation: interpolation ?? 'bilinear',
    solarizeAddMax: 128,
  };
}

function checkFill(fill: readonly number[] | undefined, option: string): [number, number, number] | undefined {
  if (fill === undefined) return undefined;
  if (!Array.isArray(fill) || fill.length !== 3 || !fill.every((v) => Number.isInteger(v) && v >= 0 && v <= 255)) {
    throw new OptionError(option, `${option}: fill must be 3 integers in [0, 255], got ${JSON.stringify(fill)}`);
  }
  return [fill[0], fill[1], fill[2]];
}
