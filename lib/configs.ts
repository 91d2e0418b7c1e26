// Architecture registry: named, typed, data only (like timm's model registry). networkSpec() turns
// an entry into the block list the backends build, the way the official RepOptVGG constructor does.
import type { BlockMode, BlockSpec, NetworkSpec } from './spec';

export interface ArchConfig {
  /** Blocks per stage, stages 1-4 (stage0 is one block). */
  readonly numBlocks: readonly [number, number, number, number];
  readonly widthMultiplier: readonly [number, number, number, number];
  /** Strides of stage0..stage4; the official default downsamples 32x. */
  readonly strides: readonly [number, number, number, number, number];
  readonly description: string;
}

const OFFICIAL_STRIDES = [2, 2, 2, 2, 2] as const;

/** One registry entry (as timm's _cfg): blocks per stage, width multipliers, what it is, strides. */
function arch(
  numBlocks: ArchConfig['numBlocks'],
  widthMultiplier: ArchConfig['widthMultiplier'],
  description: string,
  strides: ArchConfig['strides'] = OFFICIAL_STRIDES,
): ArchConfig {
  return { numBlocks, widthMultiplier, strides, description };
}

export const ARCHS = {
  'RepOpt-VGG-B1': arch([4, 6, 16, 1], [2, 2, 2, 4], 'official, 51.8M params'),
  'RepOpt-VGG-B2': arch([4, 6, 16, 1], [2.5, 2.5, 2.5, 5], 'official, 80.3M params'),
  'RepOpt-VGG-L1': arch([8, 14, 24, 1], [2, 2, 2, 4], 'official, 76.0M params'),
  'RepOpt-VGG-L2': arch([8, 14, 24, 1], [2.5, 2.5, 2.5, 5], 'official, 118.1M params'),
  'RepOpt-VGG-A0': arch([2, 4, 14, 1], [0.75, 0.75, 0.75, 2.5], 'RepVGG-A0 layout'),
  'RepOpt-VGG-A1': arch([2, 4, 14, 1], [1, 1, 1, 2.5], 'RepVGG-A1 layout'),
  'RepOpt-VGG-A2': arch([2, 4, 14, 1], [1.5, 1.5, 1.5, 2.75], 'RepVGG-A2 layout'),
  'RepOpt-VGG-B0': arch([4, 6, 16, 1], [1, 1, 1, 2.5], 'RepVGG-B0 layout'),
  'RepOpt-VGG-S': arch(
    [1, 2, 2, 1],
    [0.25, 0.25, 0.25, 0.25],
    'small, for 28x28 / 32x32 data on 2 CPU cores (16-128 channels, 8x downsampling)',
    [1, 2, 2, 2, 1],
  ),
  'RepOpt-VGG-XS': arch([1, 1, 1, 1], [0.125, 0.125, 0.125, 0.125], 'tiny, for tests (8-64 channels)', [1, 2, 2, 2, 1]),
} as const satisfies Record<string, ArchConfig>;

export type ArchName = keyof typeof ARCHS;

export interface SpecOptions {
  readonly mode: BlockMode;
  readonly numClasses?: number;
  readonly inChannels?: number;
  /** Overrides the architecture's strides (e.g. a CIFAR-style stem: stride 1 for stage0). */
  readonly strides?: readonly [number, number, number, number, number];
}

export function archConfig(name: string): ArchConfig {
  if (!(name in ARCHS)) throw new RangeError(`unknown architecture '${name}'; known: ${Object.keys(ARCHS).join(', ')}`);
  return ARCHS[name as ArchName];
}

/** Blocks as the official RepOptVGG builds them, with the hs/csla scale init (1 for the first block of
 * a stage and for stage0, sqrt(2 / i) for block i >= 1). */
export function networkSpec(arch: string, options: SpecOptions): NetworkSpec {
  const a = archConfig(arch);
  const strides = options.strides ?? a.strides;
  const blocks: BlockSpec[] = [];
  let channels = Math.min(64, Math.trunc(64 * a.widthMultiplier[0]));
  const inChannels = options.inChannels ?? 3;
  blocks.push({ name: 'stage0', inChannels, outChannels: channels, stride: strides[0], scaleInit: 1 });
  const widths = [64, 128, 256, 512].map((w, k) => Math.trunc(w * a.widthMultiplier[k]));
  for (let stage = 0; stage < 4; stage++) {
    for (let i = 0; i < a.numBlocks[stage]; i++) {
      blocks.push({
        name: `stage${stage + 1}.${i}`,
        inChannels: channels,
        outChannels: widths[stage],
        stride: i === 0 ? strides[stage + 1] : 1,
        scaleInit: i === 0 ? 1 : Math.sqrt(2 / i),
      });
      channels = widths[stage];
    }
  }
  return { mode: options.mode, inChannels, numClasses: options.numClasses ?? 1000, blocks };
}
