// Validation of an OptimizerSpec against a network's parameters, and its resolution into
// per-group hyper-parameters (torch.optim's param_groups with their defaults filled in). The one
// check and the one place of defaults for both backends: the reference optimizers take the result,
// the native addon gets it whole (nativeOptimizerConfig) and reads every field as given.
import type { GradMult, OptimizerSpec, ParamGroupSpec } from './backend';
import { checkGradMult } from './gradmult';
import { gradMultOf } from './repopt';
import type { ParamInfo } from './spec';

export interface ResolvedGroup {
  readonly params: readonly string[];
  readonly lr: number;
  readonly momentum: number;
  readonly dampening: number;
  readonly nesterov: boolean;
  readonly weightDecay: number;
}

export interface ResolvedOptimizerSpec {
  readonly type: 'sgd' | 'adamw';
  readonly groups: readonly ResolvedGroup[];
  readonly betas: readonly [number, number];
  readonly eps: number;
  /** By parameter name; absent for plain SGD / AdamW (present, possibly empty: RepOptSGD / RepOptAdamW). */
  readonly gradMults: ReadonlyMap<string, GradMult> | null;
  readonly gradMultStorage: 'compact' | 'full';
  /** RepOptSGD's step implementation (all three agree bit for bit). */
  readonly implementation: SgdImplementation;
}

export type SgdImplementation = 'fused' | 'foreach' | 'reference';
const IMPLEMENTATIONS: readonly SgdImplementation[] = ['fused', 'foreach', 'reference'];

/** torch's defaults: SGD has no weight decay, AdamW 1e-2. */
const DEFAULT_WEIGHT_DECAY = { sgd: 0, adamw: 1e-2 } as const;
const DEFAULT_BETAS: readonly [number, number] = [0.9, 0.999];
const DEFAULT_EPS = 1e-8;

const SGD_ONLY = ['momentum', 'dampening', 'nesterov'] as const;
const ADAMW_ONLY = ['betas', 'eps'] as const;

function fail(message: string): never {
  throw new RangeError(`optimizer spec: ${message}`);
}

function checkNumber(where: string, name: string, value: unknown, range: 'finite' | 'nonNegative'): void {
  if (value === undefined) return;
  if (typeof value !== 'number' || !Number.isFinite(value)) fail(`${where}${name} must be a finite number, got ${String(value)}`);
  if (range === 'nonNegative' && value < 0) fail(`${where}invalid ${name} ${value} (must be >= 0)`);
}

function checkHyperParameters(type: 'sgd' | 'adamw', where: string, source: ParamGroupSpec | OptimizerSpec): void {
  if (type === 'adamw') {
    for (const key of SGD_ONLY) if (source[key] !== undefined) fail(`${where}'${key}' is an SGD option; AdamW does not take it`);
  }
  checkNumber(where, 'learning rate', source.lr, 'nonNegative');
  checkNumber(where, 'momentum', source.momentum, 'nonNegative');
  checkNumber(where, 'dampening', source.dampening, 'finite');
  checkNumber(where, 'weight decay', source.weightDecay, 'nonNegative');
  if (source.nesterov !== undefined && typeof source.nesterov !== 'boolean') fail(`${where}nesterov must be a boolean`);
}

function resolveGroup(spec: OptimizerSpec, group: ParamGroupSpec, index: number | null): ResolvedGroup {
  const where = index === null ? '' : `group ${index}: `;
  const resolved: ResolvedGroup = {
    params: group.params,
    lr: group.lr ?? spec.lr,
    momentum: group.momentum ?? spec.momentum ?? 0,
    dampening: group.dampening ?? spec.dampening ?? 0,
    nesterov: group.nesterov ?? spec.nesterov ?? false,
    weightDecay: group.weightDecay ?? spec.weightDecay ?? DEFAULT_WEIGHT_DECAY[spec.type],
  };
  // torch.optim.SGD's check, applied to every group.
  if (resolved.nesterov && (resolved.momentum <= 0 || resolved.dampening !== 0)) {
    fail(
      `${where}nesterov momentum requires a momentum > 0 and zero dampening (momentum ${resolved.momentum}, dampening ` +
        `${resolved.dampening})`,
    );
  }
  return resolved;
}

/** Throws a RangeError naming what is wrong; otherwise the groups with every default filled in. */
export function resolveOptimizerSpec(spec: OptimizerSpec, parameters: readonly ParamInfo[]): ResolvedOptimizerSpec {
  if (typeof spec !== 'object' || spec === null) fail('expected an object');
  if (spec.type !== 'sgd' && spec.type !== 'adamw') fail(`type must be 'sgd' or 'adamw', got '${String(spec.type)}'`);
  if (spec.lr === undefined) fail('lr is required');
  checkHyperParameters(spec.type, '', spec);
  if (spec.type === 'sgd') {
    for (const key of ADAMW_ONLY) if (spec[key] !== undefined) fail(`'${key}' is an AdamW option; SGD does not take it`);
  }
  const betas = spec.betas ?? DEFAULT_BETAS;
  if (!Array.isArray(betas) || betas.length !== 2 || !betas.every((b) => typeof b === 'number' && b >= 0 && b < 1)) {
    fail(`betas must be two numbers in [0, 1), got ${JSON.stringify(spec.betas)}`);
  }
  checkNumber('', 'eps', spec.eps, 'nonNegative');
  if (spec.gradMultStorage !== undefined && spec.gradMultStorage !== 'compact' && spec.gradMultStorage !== 'full') {
    fail(`gradMultStorage must be 'compact' or 'full', got '${String(spec.gradMultStorage)}'`);
  }
  if (spec.implementation !== undefined && !IMPLEMENTATIONS.includes(spec.implementation)) {
    fail(`implementation must be 'fused', 'foreach' or 'reference', got '${String(spec.implementation)}'`);
  }

  const byName = new Map(parameters.map((p) => [p.name, p]));
  let groups: ResolvedGroup[];
  if (spec.groups === undefined) {
    groups = [resolveGroup(spec, { params: parameters.filter((p) => p.trainable).map((p) => p.name) }, null)];
  } else {
    if (!Array.isArray(spec.groups) || spec.groups.length === 0) fail('groups must be a non-empty array');
    const owner = new Map<string, number>();
    groups = spec.groups.map((group, index) => {
      const where = `group ${index}: `;
      const names: unknown = typeof group === 'object' && group !== null ? group.params : undefined;
      if (!Array.isArray(names) || !names.every((name): name is string => typeof name === 'string')) {
        fail(`${where}params must be an array of parameter names`);
      }
      checkHyperParameters(spec.type, where, group);
      const unknown = names.filter((name) => !byName.has(name));
      if (unknown.length > 0) fail(`${where}unknown parameter(s) ${unknown.map((n) => `'${n}'`).join(', ')}`);
      for (const name of names) {
        const earlier = owner.get(name);
        if (earlier !== undefined) fail(`parameter '${name}' appears in more than one group (groups ${earlier} and ${index})`);
        owner.set(name, index);
      }
      return resolveGroup(spec, group, index);
    });
  }

  if (spec.gradMults !== undefined && spec.repConvs !== undefined) fail('give gradMults or repConvs, not both');
  if (spec.repConvs !== undefined && !Array.isArray(spec.repConvs)) fail('repConvs must be an array');
  const given = spec.repConvs !== undefined ? spec.repConvs.map((c) => gradMultOf(c, spec.type)) : spec.gradMults;
  let gradMults: Map<string, GradMult> | null = null;
  if (given !== undefined) {
    if (!Array.isArray(given)) fail('gradMults must be an array');
    gradMults = new Map<string, GradMult>();
    const updated = new Set(groups.flatMap((g) => g.params));
    for (const gm of given) {
      if (typeof gm !== 'object' || gm === null) fail('gradMults must hold GradMult objects');
      checkGradMult(gm, byName.get(gm.param) ?? null);
      if (!updated.has(gm.param)) fail(`a GradMult names '${gm.param}', which is not a parameter this optimizer updates`);
      if (gradMults.has(gm.param)) fail(`two GradMults for '${gm.param}'`);
      gradMults.set(gm.param, gm);
    }
  }
  return {
    type: spec.type,
    groups,
    betas: [betas[0], betas[1]],
    eps: spec.eps ?? DEFAULT_EPS,
    gradMults,
    gradMultStorage: spec.gradMultStorage ?? 'compact',
    implementation: spec.implementation ?? 'fused',
  };
}

/** The resolved spec as the native createOptimizer reads it: every field present, nothing to default. */
export interface NativeOptimizerConfig {
  readonly type: 'sgd' | 'adamw';
  readonly groups: readonly ResolvedGroup[];
  readonly betas: readonly [number, number];
  readonly eps: number;
  /** null: plain SGD / AdamW. */
  readonly gradMults: readonly GradMult[] | null;
  readonly gradMultStorage: 'compact' | 'full';
  readonly implementation: SgdImplementation;
}

export function nativeOptimizerConfig(r: ResolvedOptimizerSpec): NativeOptimizerConfig {
  return {
    type: r.type,
    groups: r.groups,
    betas: r.betas,
    eps: r.eps,
    gradMults: r.gradMults === null ? null : [...r.gradMults.values()],
    gradMultStorage: r.gradMultStorage,
    implementation: r.implementation,
  };
}
