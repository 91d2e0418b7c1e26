// Files of the official RepOptimizers code (DingXiaoH/RepOptimizers), read where repopt's own are: its
// training checkpoints ({'model': state_dict, 'optimizer': ..., 'config': ...}, or a bare state dict,
// 'module.' prefixes of DistributedDataParallel included) as weights, and its hyper-search checkpoints as
// scale files. repopt's parameter names are the official ones, so only the layout around them differs.
import { ARCHS, networkSpec } from './configs';
import { bufferInfo, type BlockMode, type NetworkSpec, parameterInfo } from './spec';
import { describePthValue, isPthTensor, notATensor, type PthTensor, type PthValue, pthPath, readPthTree } from './pth';

/** Where checkpoints nest the model's state dict: the official code's 'model', and the common 'state_dict'. */
const STATE_DICT_KEYS = ['model', 'state_dict'] as const;
/** What DistributedDataParallel puts before every key of the model it wraps. */
const DDP_PREFIX = 'module.';

/** The model state dict of a torch.save file's tree: the root, or the dict under 'model' / 'state_dict';
 * keys without a 'module.' prefix they all share. Every entry must be a tensor: errors name the entry's
 * path in the file. */
export function officialStateDict(root: PthValue, file: string): Map<string, PthTensor> {
  if (!(root instanceof Map)) throw new Error(`${file}: holds ${describePthValue(root)}, not a state dict or a checkpoint dict`);
  const nestedKey = STATE_DICT_KEYS.find((k) => root.get(k) instanceof Map);
  const dict = nestedKey === undefined ? root : (root.get(nestedKey) as ReadonlyMap<unknown, PthValue>);
  const at = nestedKey === undefined ? [] : [nestedKey];
  const keys = [...dict.keys()];
  const nonString = keys.find((k) => typeof k !== 'string');
  if (nonString !== undefined)
    throw new Error(`${file}: ${at.length ? `'${pthPath(at)}'` : 'the file'} has the key ${String(nonString)}, so it is not a state dict`);
  const strip = keys.length > 0 && (keys as string[]).every((k) => k.startsWith(DDP_PREFIX));
  const out = new Map<string, PthTensor>();
  for (const [key, value] of dict as ReadonlyMap<string, PthValue>) {
    if (!isPthTensor(value))
      throw new Error(`${file}: entry '${pthPath([...at, key])}' is ${notATensor(value)} (a state dict holds tensors only)`);
    out.set(strip ? key.slice(DDP_PREFIX.length) : key, value);
  }
  if (out.size === 0) throw new Error(`${file}: the state dict${at.length ? ` under '${pthPath(at)}'` : ''} is empty`);
  return out;
}

/** An official checkpoint or state dict file's model weights. */
export function readOfficialStateDict(file: string): Map<string, PthTensor> {
  return officialStateDict(readPthTree(file, 'checkpoint'), file);
}

/** Keys of the hs network's weights besides the scales: a state dict with them is a whole hyper-search
 * model, not a scale file. */
const HS_WEIGHT_KEY = /(^|\.)(conv|conv_1x1)\.weight$|^linear\.weight$/;
const SCALE_KEY = /\.(scale_conv|scale_1x1|scale_identity)\.weight$/;

/** The branch scales of a state dict: all of a scale file, or the scale entries of a hyper-search model's
 * state dict (its conv, BN and head weights left out, as the official loader does). */
export function scaleEntries(state: ReadonlyMap<string, PthTensor>, file: string): Map<string, PthTensor> {
  if (![...state.keys()].some((k) => HS_WEIGHT_KEY.test(k))) return new Map(state);
  const scales = new Map([...state].filter(([k]) => SCALE_KEY.test(k)));
  if (scales.size === 0)
    throw new Error(
      `${file}: a model's weights without branch scales (no '<block>.scale_conv.weight' keys): not a hyper-search (mode hs) ` +
        'checkpoint or scale file',
    );
  return scales;
}

/** The block mode a state dict's keys imply (official modes target, hs / csla, repvgg). */
function modeOfState(state: ReadonlyMap<string, PthTensor>, file: string): BlockMode {
  const has = (suffix: string) => [...state.keys()].some((k) => k.endsWith(suffix));
  if (has('.scale_conv.weight')) return 'hs';
  if (has('.conv_3x3.weight')) return 'repvgg';
  if (has('.conv.weight') && has('.bn.weight')) return 'target';
  throw new Error(`${file}: not a RepOpt-VGG state dict (no '<block>.conv.weight' and '<block>.bn.weight' keys, nor repvgg's or hs's)`);
}

/** Every way the state dict differs from the spec's parameters and buffers, names and shapes. */
function mismatches(spec: NetworkSpec, state: ReadonlyMap<string, PthTensor>): string[] {
  const expected = new Map([...parameterInfo(spec), ...bufferInfo(spec)].map((p) => [p.name, p.shape]));
  const out: string[] = [];
  for (const [name, shape] of expected) {
    const t = state.get(name);
    if (!t) out.push(`missing ${name}`);
    else if (t.shape.join() !== shape.join()) out.push(`${name} is [${t.shape.join(', ')}], expected [${shape.join(', ')}]`);
  }
  for (const name of state.keys()) if (!expected.has(name)) out.push(`unexpected ${name}`);
  return out;
}

export interface OfficialModel {
  readonly arch: string;
  readonly mode: BlockMode;
  readonly spec: NetworkSpec;
  readonly state: Map<string, PthTensor>;
}

/** The network an official state dict holds: its mode from the keys, its classes and input channels from
 * the weights, its architecture `arch` if given (checked), else the one whose shapes it has. */
export function officialModel(state: Map<string, PthTensor>, file: string, arch?: string): OfficialModel {
  const mode = modeOfState(state, file);
  const first = state.get('stage0.conv.weight') ?? state.get('stage0.conv_3x3.weight');
  const linear = state.get('linear.weight');
  if (first?.shape.length !== 4 || linear?.shape.length !== 2)
    throw new Error(`${file}: no 4-D stage0 conv weight or 2-D linear.weight, so not a RepOpt-VGG state dict`);
  const specOf = (name: string) => networkSpec(name, { mode, numClasses: linear.shape[0], inChannels: first.shape[1] });
  if (arch !== undefined) {
    const problems = mismatches(specOf(arch), state);
    if (problems.length > 0)
      throw new Error(
        `${file}: does not hold a ${arch} (${mode}) network: ${problems.slice(0, 5).join('; ')}${problems.length > 5 ? '; ...' : ''}`,
      );
    return { arch, mode, spec: specOf(arch), state };
  }
  const found = Object.keys(ARCHS).find((name) => mismatches(specOf(name), state).length === 0);
  if (!found) throw new Error(`${file}: its weights fit none of the architectures (${Object.keys(ARCHS).join(', ')})`);
  return { arch: found, mode, spec: specOf(found), state };
}
