// Mixup / CutMix draws as the official recipe makes them (timm's Mixup in 'batch' mode with
// correct_lam): per step, with probability `prob`, a lambda from Beta(alpha, alpha) and, when both are
// on, CutMix instead of Mixup with probability `switchProb`. The native step mixes the batch with itself
// reversed and trains on soft targets. Each step's draws come from a generator keyed by (seed, step)
// alone, so a resumed run makes the same ones without keeping generator state.

export interface MixupConfig {
  /** Beta(a, a) of Mixup's lambda; 0: no Mixup. */
  readonly mixupAlpha: number;
  /** Beta(a, a) of CutMix's lambda; 0: no CutMix. */
  readonly cutmixAlpha: number;
  /** Probability that a step is mixed at all. */
  readonly prob: number;
  /** With both on: probability of CutMix rather than Mixup. */
  readonly switchProb: number;
}

/** One step's draw, as the native step takes it: the batch x mixed with x.flip(0); targets
 * lam * onehot(y) + (1 - lam) * onehot(y.flip(0)). CutMix pastes rows [top, bottom) x columns
 * [left, right) of the reversed batch, and lam is the share of the image outside that box. */
export type MixDraw =
  | { readonly kind: 'mixup'; readonly lam: number }
  | {
      readonly kind: 'cutmix';
      readonly lam: number;
      readonly top: number;
      readonly bottom: number;
      readonly left: number;
      readonly right: number;
    };

const MASK64 = (1n << 64n) - 1n;

function mix64(z: bigint): bigint {
  z = (z + 0x9e3779b97f4a7c15n) & MASK64;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  return z ^ (z >> 31n);
}

/** splitmix64 (Steele et al.) started from a key mixed from (seed, step). */
export class StepRng {
  private state: bigint;

  constructor(seed: number, step: number) {
    // A tag keeps this stream apart from others keyed by the same (seed, step).
    this.state = mix64(mix64(mix64(BigInt(seed)) ^ BigInt(step)) ^ 0x6d69787570n);
  }

  /** Uniform in [0, 1), 53 random bits. */
  uniform(): number {
    this.state = (this.state + 0x9e3779b97f4a7c15n) & MASK64;
    return Number(mix64(this.state) >> 11n) * 2 ** -53;
  }

  /** Uniform integer in [0, n). */
  below(n: number): number {
    return Math.floor(this.uniform() * n);
  }

  /** Standard normal (Box-Muller). */
  normal(): number {
    const u = 1 - this.uniform();
    const v = this.uniform();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  /** Gamma(shape, 1), Marsaglia and Tsang's method; shape < 1 by Gamma(shape + 1) * U^(1 / shape). */
  gamma(shape: number): number {
    if (shape < 1) return this.gamma(shape + 1) * (1 - this.uniform()) ** (1 / shape);
    const d = shape - 1 / 3;
    const c = 1 / Math.sqrt(9 * d);
    for (;;) {
      const x = this.normal();
      const v = (1 + c * x) ** 3;
      if (v <= 0) continue;
      const u = 1 - this.uniform();
      if (u < 1 - 0.0331 * x ** 4 || Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v))) return d * v;
    }
  }

  /** Beta(a, b) as X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b). */
  beta(a: number, b: number): number {
    const x = this.gamma(a);
    const y = this.gamma(b);
    return x / (x + y);
  }
}

/** Whether a config mixes at all. */
export function mixes(config: MixupConfig | undefined): config is MixupConfig {
  return !!config && config.prob > 0 && (config.mixupAlpha > 0 || config.cutmixAlpha > 0);
}

/** The CutMix box of an image of height x width for `lam` (timm's rand_bbox: a box of side ratio
 * sqrt(1 - lam) centred on a uniform pixel, clipped to the image) and lam corrected to its area. */
export function cutmixBox(rng: StepRng, height: number, width: number, lam: number): Extract<MixDraw, { kind: 'cutmix' }> {
  const ratio = Math.sqrt(1 - lam);
  const cutH = Math.floor(height * ratio);
  const cutW = Math.floor(width * ratio);
  const cy = rng.below(height);
  const cx = rng.below(width);
  const clip = (v: number, hi: number) => Math.min(Math.max(v, 0), hi);
  const top = clip(cy - Math.floor(cutH / 2), height);
  const bottom = clip(cy + Math.floor(cutH / 2), height);
  const left = clip(cx - Math.floor(cutW / 2), width);
  const right = clip(cx + Math.floor(cutW / 2), width);
  return { kind: 'cutmix', lam: 1 - ((bottom - top) * (right - left)) / (height * width), top, bottom, left, right };
}

/** The draw of step `step` for images of [height, width]; null when the step is not mixed. */
export function mixDraw(config: MixupConfig, seed: number, step: number, height: number, width: number): MixDraw | null {
  const rng = new StepRng(seed, step);
  if (!mixes(config) || !(rng.uniform() < config.prob)) return null;
  const both = config.mixupAlpha > 0 && config.cutmixAlpha > 0;
  const cutmix = both ? rng.uniform() < config.switchProb : config.cutmixAlpha > 0;
  const alpha = cutmix ? config.cutmixAlpha : config.mixupAlpha;
  const lam = rng.beta(alpha, alpha);
  return cutmix ? cutmixBox(rng, height, width, lam) : { kind: 'mixup', lam };
}
