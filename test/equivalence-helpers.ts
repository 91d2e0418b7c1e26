// Shared fixtures for the equivalence tests: a small CSLA network with constant scales of both
// signs, its target twin built by the init rule, and seeded batches.
import type { Backend, HostTensor, Network, OptimizerSpec } from '../lib/backend';
import { applyInitRule, gradMultOf, mergedKernel, type RepConv } from '../lib/repopt';
import { Random } from '../lib/reference/random';
import { type BlockMode, hasIdentity, type NetworkSpec, type Precision } from '../lib/spec';

export const BLOCKS = [
  { name: 'stage0', inChannels: 3, outChannels: 4, stride: 2 },
  { name: 'stage1.0', inChannels: 4, outChannels: 6, stride: 2 },
  { name: 'stage1.1', inChannels: 6, outChannels: 6, stride: 1 },
  { name: 'stage1.2', inChannels: 6, outChannels: 6, stride: 1 },
];

export function inPrecision(v: ArrayLike<number>, precision: Precision): Float32Array | Float64Array {
  return precision === 'float32' ? Float32Array.from(v) : Float64Array.from(v);
}

export function specOf(mode: BlockMode): NetworkSpec {
  return { mode, inChannels: 3, numClasses: 5, blocks: BLOCKS };
}

export function batches(count: number, precision: Precision, seed = 11): { x: HostTensor; y: Int32Array }[] {
  const random = new Random(seed);
  return Array.from({ length: count }, () => ({
    x: {
      shape: [6, 3, 8, 8],
      data: inPrecision(
        Float64Array.from({ length: 6 * 3 * 64 }, () => random.uniform(-2, 2)),
        precision,
      ),
    },
    y: Int32Array.from({ length: 6 }, () => Math.floor(random.nextDouble() * 5)),
  }));
}

/** Constant scales of both signs, away from 0, per block. */
export function cslaScales(seed = 5): Map<string, { s: Float64Array; t: Float64Array; g?: Float64Array }> {
  const random = new Random(seed);
  const signed = () => (random.nextDouble() < 0.5 ? -1 : 1) * random.uniform(0.3, 1.5);
  return new Map(
    BLOCKS.map((b) => [
      b.name,
      {
        s: Float64Array.from({ length: b.outChannels }, signed),
        t: Float64Array.from({ length: b.outChannels }, signed),
        ...(hasIdentity(b) ? { g: Float64Array.from({ length: b.outChannels }, () => random.uniform(0.5, 1.5)) } : {}),
      },
    ]),
  );
}

export function repConvs(scales: ReturnType<typeof cslaScales>): RepConv[] {
  return BLOCKS.map((b) => ({
    param: `${b.name}.conv.weight`,
    shape: [b.outChannels, b.inChannels, 3, 3] as const,
    groups: 1,
    identity: hasIdentity(b),
    scales: scales.get(b.name)!,
  }));
}

/** A CSLA network with the given constant scales and its target twin after the init rule. */
export function cslaAndTarget(backend: Backend, precision: Precision) {
  const scales = cslaScales();
  const csla = backend.createNetwork(specOf('csla'), { precision, seed: 3 });
  const cslaState = csla.stateDict();
  for (const [block, v] of scales) {
    cslaState.set(`${block}.scale_conv.weight`, { shape: [v.s.length], data: inPrecision(v.s, precision) });
    cslaState.set(`${block}.scale_1x1.weight`, { shape: [v.t.length], data: inPrecision(v.t, precision) });
    if (v.g) cslaState.set(`${block}.scale_identity.weight`, { shape: [v.g.length], data: inPrecision(v.g, precision) });
  }
  csla.loadStateDict(cslaState);

  const target = backend.createNetwork(specOf('target'), { precision, seed: 4 });
  const targetState = new Map<string, HostTensor>();
  for (const name of target.stateDict().keys()) targetState.set(name, cslaState.get(name)!);
  const kernels1x1 = new Map(
    BLOCKS.map((b) => [`${b.name}.conv.weight`, Float64Array.from(cslaState.get(`${b.name}.conv_1x1.weight`)!.data)]),
  );
  const convs = repConvs(scales);
  target.loadStateDict(applyInitRule(targetState, convs, { kernels1x1, identityInit: 'trained' }));
  return { csla, target, convs, scales };
}

export const SGD: OptimizerSpec = { type: 'sgd', lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 1e-3 };

export function repOptSpec(base: OptimizerSpec, convs: RepConv[], extra: Partial<OptimizerSpec> = {}): OptimizerSpec {
  return { ...base, gradMults: convs.map((c) => gradMultOf(c, base.type)), ...extra };
}

/** The target-equivalent kernels of a CSLA network's current state: s ⊙ W3 + t ⊙ pad(W1) + g ⊙ I. */
export function equivalentKernels(csla: Network, convs: RepConv[]): Map<string, Float64Array> {
  const state = csla.stateDict();
  const out = new Map<string, Float64Array>();
  for (const conv of convs) {
    const block = conv.param.replace(/\.conv\.weight$/, '');
    const g = state.get(`${block}.scale_identity.weight`)?.data;
    const w3 = Float64Array.from(state.get(conv.param)!.data);
    out.set(conv.param, Float64Array.from(mergedKernel(w3, state.get(`${block}.conv_1x1.weight`)!.data, conv, g)));
  }
  return out;
}

/** max |a - b| / max |b|. */
export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return diff / (scale || 1);
}
