// Network descriptions shared by both backends: plain data, and the parameter layout they imply.
// Parameter names are the official RepOptimizers state_dict keys.

/** target: conv3x3-BN-ReLU. hs: trainable branch scales. csla: constant s, t, trainable identity.
 * repvgg: three BN branches (the structural baseline). deploy: conv3x3 with bias + ReLU, what a
 * trained repvgg network folds into (official key: rbr_reparam). */
export type BlockMode = 'target' | 'hs' | 'csla' | 'repvgg' | 'deploy';

export interface BlockSpec {
  /** Parameter prefix: 'stage0', 'stage1.0', ... */
  readonly name: string;
  readonly inChannels: number;
  readonly outChannels: number;
  readonly stride: number;
  /** Branch scale init for hs / csla blocks (official: 1 for stage0 and the first block of a stage,
   * sqrt(2 / i) for block i >= 1). Defaults to 1. */
  readonly scaleInit?: number;
}

export interface NetworkSpec {
  readonly mode: BlockMode;
  readonly inChannels: number;
  readonly numClasses: number;
  readonly blocks: readonly BlockSpec[];
}

export type Precision = 'float32' | 'float64';

export type ParamRole =
  | 'conv3x3'
  | 'conv1x1'
  | 'conv_bias'
  | 'scale_conv'
  | 'scale_1x1'
  | 'scale_identity'
  | 'bn_weight'
  | 'bn_bias'
  | 'linear_weight'
  | 'linear_bias';

export interface ParamInfo {
  readonly name: string;
  readonly shape: readonly number[];
  readonly role: ParamRole;
  /** Block name, absent for the head. */
  readonly block?: string;
  /** False for the constant scales of csla blocks. */
  readonly trainable: boolean;
}

export interface BufferInfo {
  readonly name: string;
  readonly shape: readonly number[];
  readonly role: 'running_mean' | 'running_var' | 'num_batches_tracked';
}

export const BN_EPS = 1e-5;
export const BN_MOMENTUM = 0.1;

/** A block has an identity branch when it keeps both channels and resolution. */
export function hasIdentity(b: BlockSpec): boolean {
  return b.inChannels === b.outChannels && b.stride === 1;
}

function bnParams(prefix: string, block: string, c: number): ParamInfo[] {
  return [
    { name: `${prefix}.weight`, shape: [c], role: 'bn_weight', block, trainable: true },
    { name: `${prefix}.bias`, shape: [c], role: 'bn_bias', block, trainable: true },
  ];
}

function bnBuffers(prefix: string, c: number): BufferInfo[] {
  return [
    { name: `${prefix}.running_mean`, shape: [c], role: 'running_mean' },
    { name: `${prefix}.running_var`, shape: [c], role: 'running_var' },
    { name: `${prefix}.num_batches_tracked`, shape: [], role: 'num_batches_tracked' },
  ];
}

/** Batch-norm layers of a block, by their key prefix. */
export function blockBatchNorms(mode: BlockMode, b: BlockSpec): string[] {
  if (mode === 'deploy') return [];
  if (mode !== 'repvgg') return [`${b.name}.bn`];
  return [`${b.name}.bn_3x3`, `${b.name}.bn_1x1`].concat(hasIdentity(b) ? [`${b.name}.bn_identity`] : []);
}

/** Parameters in registration order (the official modules' order), head last. */
export function parameterInfo(spec: NetworkSpec): ParamInfo[] {
  const out: ParamInfo[] = [];
  for (const b of spec.blocks) {
    const [o, i, n] = [b.outChannels, b.inChannels, b.name];
    switch (spec.mode) {
      case 'target':
        out.push({ name: `${n}.conv.weight`, shape: [o, i, 3, 3], role: 'conv3x3', block: n, trainable: true });
        out.push(...bnParams(`${n}.bn`, n, o));
        break;
      case 'hs':
      case 'csla': {
        const scalesTrainable = spec.mode === 'hs';
        out.push({ name: `${n}.conv.weight`, shape: [o, i, 3, 3], role: 'conv3x3', block: n, trainable: true });
        out.push({ name: `${n}.scale_conv.weight`, shape: [o], role: 'scale_conv', block: n, trainable: scalesTrainable });
        out.push({ name: `${n}.conv_1x1.weight`, shape: [o, i, 1, 1], role: 'conv1x1', block: n, trainable: true });
        out.push({ name: `${n}.scale_1x1.weight`, shape: [o], role: 'scale_1x1', block: n, trainable: scalesTrainable });
        if (hasIdentity(b)) out.push({ name: `${n}.scale_identity.weight`, shape: [o], role: 'scale_identity', block: n, trainable: true });
        out.push(...bnParams(`${n}.bn`, n, o));
        break;
      }
      case 'repvgg':
        out.push({ name: `${n}.conv_3x3.weight`, shape: [o, i, 3, 3], role: 'conv3x3', block: n, trainable: true });
        out.push(...bnParams(`${n}.bn_3x3`, n, o));
        out.push({ name: `${n}.conv_1x1.weight`, shape: [o, i, 1, 1], role: 'conv1x1', block: n, trainable: true });
        out.push(...bnParams(`${n}.bn_1x1`, n, o));
        if (hasIdentity(b)) out.push(...bnParams(`${n}.bn_identity`, n, o));
        break;
      case 'deploy':
        out.push({ name: `${n}.rbr_reparam.weight`, shape: [o, i, 3, 3], role: 'conv3x3', block: n, trainable: true });
        out.push({ name: `${n}.rbr_reparam.bias`, shape: [o], role: 'conv_bias', block: n, trainable: true });
        break;
    }
  }
  const last = spec.blocks.length ? spec.blocks[spec.blocks.length - 1].outChannels : spec.inChannels;
  out.push({ name: 'linear.weight', shape: [spec.numClasses, last], role: 'linear_weight', trainable: true });
  out.push({ name: 'linear.bias', shape: [spec.numClasses], role: 'linear_bias', trainable: true });
  return out;
}

export function bufferInfo(spec: NetworkSpec): BufferInfo[] {
  return spec.blocks.flatMap((b) => blockBatchNorms(spec.mode, b).flatMap((p) => bnBuffers(p, b.outChannels)));
}

/** Checks a spec's internal consistency; throws naming the offending block. */
export function validateSpec(spec: NetworkSpec): void {
  const modes: BlockMode[] = ['target', 'hs', 'csla', 'repvgg', 'deploy'];
  if (!modes.includes(spec.mode)) throw new RangeError(`network spec: mode must be one of ${modes.join(', ')}, got '${spec.mode}'`);
  const positive = (v: number) => Number.isInteger(v) && v > 0;
  if (!positive(spec.inChannels)) throw new RangeError(`network spec: inChannels must be a positive integer, got ${spec.inChannels}`);
  if (!positive(spec.numClasses)) throw new RangeError(`network spec: numClasses must be a positive integer, got ${spec.numClasses}`);
  if (spec.blocks.length === 0) throw new RangeError('network spec: at least one block is needed');
  let channels = spec.inChannels;
  const seen = new Set<string>();
  for (const b of spec.blocks) {
    if (!/^[A-Za-z_][\w]*(\.\w+)*$/.test(b.name)) throw new RangeError(`network spec: block name '${b.name}' is not a dotted identifier`);
    if (seen.has(b.name)) throw new RangeError(`network spec: block name '${b.name}' is used twice`);
    seen.add(b.name);
    if (b.inChannels !== channels)
      throw new RangeError(`network spec: block ${b.name} takes ${b.inChannels} channels but receives ${channels}`);
    if (!positive(b.outChannels)) throw new RangeError(`network spec: block ${b.name} outChannels must be a positive integer`);
    if (b.stride !== 1 && b.stride !== 2) throw new RangeError(`network spec: block ${b.name} stride must be 1 or 2, got ${b.stride}`);
    if (b.scaleInit !== undefined && !Number.isFinite(b.scaleInit))
      throw new RangeError(`network spec: block ${b.name} scaleInit must be finite`);
    channels = b.outChannels;
  }
}
