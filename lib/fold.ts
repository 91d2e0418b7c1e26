// RepVGG structural re-parameterisation: a trained repvgg network (three BN branches per block) folds
// into the deploy network (one conv3x3 with bias per block) that computes the same function in eval mode.
import type { HostTensor } from './backend';
import { BN_EPS, hasIdentity, type NetworkSpec } from './spec';

function need(state: ReadonlyMap<string, HostTensor>, key: string): HostTensor['data'] {
  const t = state.get(key);
  if (!t) throw new RangeError(`fold: the state has no '${key}' (is it a repvgg network's state?)`);
  return t.data;
}

/** The deploy spec of a repvgg or target (plain VGG, RepOpt-VGG) spec. */
export function deploySpec(spec: NetworkSpec): NetworkSpec {
  if (spec.mode !== 'repvgg' && spec.mode !== 'target')
    throw new RangeError(`fold: repvgg and target networks fold, this one is '${spec.mode}'`);
  return { ...spec, mode: 'deploy' };
}

/** Folds each target block's eval-mode BN into its conv (kernel * gamma / sqrt(var + eps), bias
 * beta - mean * gamma / sqrt(var + eps)): the deploy form of a plain VGG or RepOpt-VGG. */
export function foldTarget(spec: NetworkSpec, state: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  if (spec.mode !== 'target') throw new RangeError(`fold: foldTarget folds target networks, this one is '${spec.mode}'`);
  const out = new Map<string, HostTensor>();
  const float32 = state.get('linear.weight')?.data instanceof Float32Array;
  for (const b of spec.blocks) {
    const per = b.inChannels * 9;
    const w = need(state, `${b.name}.conv.weight`);
    const [gamma, beta, mean, variance] = ['weight', 'bias', 'running_mean', 'running_var'].map((k) => need(state, `${b.name}.bn.${k}`));
    const kernel = new Float64Array(b.outChannels * per);
    const bias = new Float64Array(b.outChannels);
    for (let oc = 0; oc < b.outChannels; oc++) {
      const factor = gamma[oc] / Math.sqrt(variance[oc] + BN_EPS);
      for (let e = oc * per; e < (oc + 1) * per; e++) kernel[e] = w[e] * factor;
      bias[oc] = beta[oc] - mean[oc] * factor;
    }
    out.set(`${b.name}.rbr_reparam.weight`, {
      shape: [b.outChannels, b.inChannels, 3, 3],
      data: float32 ? Float32Array.from(kernel) : kernel,
    });
    out.set(`${b.name}.rbr_reparam.bias`, { shape: [b.outChannels], data: float32 ? Float32Array.from(bias) : bias });
  }
  for (const key of ['linear.weight', 'linear.bias']) out.set(key, { shape: state.get(key)?.shape ?? [], data: need(state, key) });
  return out;
}

/** The deploy network of a repvgg or target network: its spec and folded state. */
export function foldToDeploy(
  spec: NetworkSpec,
  state: ReadonlyMap<string, HostTensor>,
): { spec: NetworkSpec; state: Map<string, HostTensor> } {
  return { spec: deploySpec(spec), state: spec.mode === 'repvgg' ? foldRepVGG(spec, state) : foldTarget(spec, state) };
}

/** Folds a repvgg state into the deploy network's state (same precision). Eval-mode BN: each branch
 * becomes kernel * gamma / sqrt(var + eps) and bias beta - mean * gamma / sqrt(var + eps). */
export function foldRepVGG(spec: NetworkSpec, state: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  if (spec.mode !== 'repvgg') throw new RangeError(`fold: foldRepVGG folds repvgg networks, this one is '${spec.mode}'`);
  const out = new Map<string, HostTensor>();
  const float32 = state.get('linear.weight')?.data instanceof Float32Array;
  const store = (v: Float64Array) => (float32 ? Float32Array.from(v) : v);
  for (const b of spec.blocks) {
    const [o, i, n] = [b.outChannels, b.inChannels, b.name];
    const kernel = new Float64Array(o * i * 9);
    const bias = new Float64Array(o);
    const branch = (bn: string, addKernel: (oc: number, factor: number) => void) => {
      const [gamma, beta, mean, variance] = ['weight', 'bias', 'running_mean', 'running_var'].map((k) => need(state, `${n}.${bn}.${k}`));
      for (let oc = 0; oc < o; oc++) {
        const factor = gamma[oc] / Math.sqrt(variance[oc] + BN_EPS);
        addKernel(oc, factor);
        bias[oc] += beta[oc] - mean[oc] * factor;
      }
    };
    const w3 = need(state, `${n}.conv_3x3.weight`);
    branch('bn_3x3', (oc, f) => {
      for (let e = oc * i * 9; e < (oc + 1) * i * 9; e++) kernel[e] += w3[e] * f;
    });
    const w1 = need(state, `${n}.conv_1x1.weight`);
    branch('bn_1x1', (oc, f) => {
      for (let ic = 0; ic < i; ic++) kernel[(oc * i + ic) * 9 + 4] += w1[oc * i + ic] * f;
    });
    if (hasIdentity(b)) branch('bn_identity', (oc, f) => (kernel[(oc * i + oc) * 9 + 4] += f));
    out.set(`${n}.rbr_reparam.weight`, { shape: [o, i, 3, 3], data: store(kernel) });
    out.set(`${n}.rbr_reparam.bias`, { shape: [o], data: store(bias) });
  }
  for (const key of ['linear.weight', 'linear.bias']) out.set(key, state.get(key) ?? { shape: [], data: need(state, key) });
  return out;
}
