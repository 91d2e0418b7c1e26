// RepOptimizer math in TypeScript: GradMults from branch scales, and the initialisation rule. Both
// work on named conv layers (RepConv), so any architecture can register its convs; repConvsOf()
// lists them for the RepOpt-VGG family.
import type { GradMult, HostTensor } from './backend';
import { checkConvStructure } from './gradmult';
import { Random } from './reference/random';
import { type ScaleSet, validateScales } from './scales';
import { hasIdentity, type NetworkSpec } from './spec';

/** Branch scales of one conv: s (3x3 branch), t (1x1 branch), g (identity; trained by hyper-search). */
export interface BranchScales {
  readonly s: ArrayLike<number>;
  readonly t: ArrayLike<number>;
  readonly g?: ArrayLike<number>;
}

/** A conv weight [O, I/groups, k, k] trained as the merge of a k x k, a 1x1 and (optionally) an identity branch. */
export interface RepConv {
  readonly param: string;
  readonly shape: readonly [number, number, number, number];
  readonly groups: number;
  readonly identity: boolean;
  readonly scales: BranchScales;
}

function checkVector(conv: RepConv, what: string, v: ArrayLike<number> | undefined): void {
  const out = conv.shape[0];
  if (v === undefined) throw new RangeError(`${conv.param}: scale ${what} is missing`);
  if (v.length !== out) throw new RangeError(`${conv.param}: scale ${what} has ${v.length} values, the conv has ${out} output channels`);
  for (let i = 0; i < v.length; i++) {
    if (!Number.isFinite(v[i])) throw new RangeError(`${conv.param}: scale ${what}[${i}] is ${v[i]}`);
  }
}

function checkConv(conv: RepConv): void {
  checkConvStructure(conv.param, conv.shape, conv.groups, conv.identity);
  checkVector(conv, 's', conv.scales.s);
  checkVector(conv, 't', conv.scales.t);
  if (conv.scales.g !== undefined) checkVector(conv, 'g', conv.scales.g);
}

/** The GradMult of one conv for an optimizer: s^p everywhere, + t^p at the centre, + 1 on the
 * identity diagonal's centre, with p = 2 for SGD and p = 1 for AdamW (as the official code). */
export function gradMultOf(conv: RepConv, optimizer: 'sgd' | 'adamw'): GradMult {
  if (optimizer !== 'sgd' && optimizer !== 'adamw')
    throw new RangeError(`gradMultOf: optimizer must be 'sgd' or 'adamw', got '${String(optimizer)}'`);
  checkConv(conv);
  const power = optimizer === 'sgd' ? 2 : 1;
  return {
    param: conv.param,
    shape: conv.shape,
    base: Float64Array.from(conv.scales.s, (v) => v ** power),
    centre: Float64Array.from(conv.scales.t, (v) => v ** power),
    identity: conv.identity,
    groups: conv.groups,
  };
}

/** The full multiplier tensor of a GradMult (the official storage), summed in a precision. */
export { fullGradMult } from './gradmult';

/** The convs of a RepOpt-VGG-family network with their scales. The scale set must fit the network
 * exactly (validateScales: every key, length and value checked, all problems reported at once). */
export function repConvsOf(spec: NetworkSpec, scales: ScaleSet): RepConv[] {
  validateScales(spec, scales);
  return spec.blocks.map((b) => ({
    param: `${b.name}.conv.weight`,
    shape: [b.outChannels, b.inChannels, 3, 3] as const,
    groups: 1,
    identity: hasIdentity(b),
    scales: scales.block(b.name),
  }));
}

export interface InitRuleOptions {
  /** Identity branch init: the hyper-searched scale g (official default) or constant 1 (the paper's equation). */
  readonly identityInit?: 'trained' | 'one';
  /** Seed of the fresh 1x1 kernels (default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in))). */
  readonly seed?: number;
  /** Explicit 1x1 kernels [O, I/groups] by conv name, instead of fresh ones. */
  readonly kernels1x1?: ReadonlyMap<string, Float64Array>;
  /** Skip the from-scratch check (BN weights all 1), e.g. to fine-tune. */
  readonly allowTrained?: boolean;
}

/** W' = s ⊙ W3 + t ⊙ pad(W1) [+ g ⊙ identity] for every conv, where W3 is the conv's current
 * (default-initialised) weight. Returns a new state; the input is not changed. */
export function applyInitRule(
  state: ReadonlyMap<string, HostTensor>,
  convs: readonly RepConv[],
  options: InitRuleOptions = {},
): Map<string, HostTensor> {
  if (!options.allowTrained) {
    for (const [name, t] of state) {
      if (/\.bn(_\w+)?\.weight$/.test(name) && t.data.some((v) => v !== 1)) {
        throw new Error(
          `init rule: ${name} is not all 1, so the network is not freshly initialised; pass allowTrained to re-initialise anyway`,
        );
      }
    }
  }
  const random = new Random(options.seed ?? 0);
  const out = new Map(state);
  for (const conv of convs) {
    checkConv(conv);
    const current = state.get(conv.param);
    const [o, perGroup] = conv.shape;
    if (!current) throw new RangeError(`init rule: the network has no parameter ${conv.param}`);
    if (current.shape.join() !== conv.shape.join())
      throw new RangeError(`init rule: ${conv.param} has shape [${current.shape}], expected [${conv.shape}]`);
    const w1 = options.kernels1x1?.get(conv.param) ?? freshKernel1x1(random, o, perGroup);
    if (w1.length !== o * perGroup)
      throw new RangeError(`init rule: the 1x1 kernel of ${conv.param} needs ${o * perGroup} values, got ${w1.length}`);
    const g = options.identityInit === 'one' ? undefined : conv.scales.g;
    out.set(conv.param, { shape: current.shape, data: mergedKernel(current.data, w1, conv, g) });
  }
  return out;
}

/** A fresh default-initialised 1x1 kernel [O, I/groups] (bias discarded), as nn.Conv2d(I, O, 1). */
export function freshKernel1x1(random: Random, out: number, perGroup: number): Float64Array {
  const bound = 1 / Math.sqrt(perGroup);
  return Float64Array.from({ length: out * perGroup }, () => random.uniform(-bound, bound));
}

/** s ⊙ W3 + t ⊙ pad(W1) [+ g (or 1) on the identity diagonal's centre], in W3's precision. */
export function mergedKernel(
  w3: Float32Array | Float64Array,
  w1: ArrayLike<number>,
  conv: RepConv,
  g?: ArrayLike<number>,
): Float32Array | Float64Array {
  const [out, perGroup, k] = conv.shape;
  const round = w3 instanceof Float32Array ? Math.fround : (v: number) => v;
  const merged = w3 instanceof Float32Array ? new Float32Array(w3.length) : new Float64Array(w3.length);
  const c = k >> 1;
  for (let o = 0; o < out; o++) {
    const s = round(conv.scales.s[o]);
    const t = round(conv.scales.t[o]);
    for (let i = 0; i < perGroup; i++) {
      const offset = (o * perGroup + i) * k * k;
      for (let e = 0; e < k * k; e++) merged[offset + e] = round(w3[offset + e] * s);
      const centre = offset + c * k + c;
      merged[centre] = round(merged[centre] + round(round(w1[o * perGroup + i]) * t));
      if (conv.identity && i === o % perGroup) merged[centre] = round(merged[centre] + (g ? round(g[o]) : 1));
    }
  }
  return merged;
}
