// RepOptSGD / RepOptAdamW on the native backend: fused == reference and compact == full bit for bit,
// state round trips, the official AdamW's departure from CSLA, and bad optimizer specs.
import type { OptimizerSpec } from '../lib/backend';
import { type NativeBackendNetwork, nativeBackend } from '../lib/native-backend';
import { native } from '../lib/native';
import { nativeOptimizerConfig, resolveOptimizerSpec } from '../lib/optimizer-spec';
import { gradMultOf } from '../lib/repopt';
import { type Precision, parameterInfo } from '../lib/spec';
import { batches, cslaAndTarget, cslaScales, repConvs, repOptSpec, specOf } from './equivalence-helpers';
import { thrown, useTestThreads } from './helpers';

beforeAll(useTestThreads);

function twinTargets(precision: Precision): [NativeBackendNetwork, NativeBackendNetwork] {
  const a = nativeBackend.createNetwork(specOf('target'), { precision, seed: 21 }) as NativeBackendNetwork;
  const b = nativeBackend.createNetwork(specOf('target'), { precision, seed: 99 }) as NativeBackendNetwork;
  b.loadStateDict(a.stateDict());
  return [a, b];
}

function expectBitIdentical(a: NativeBackendNetwork, b: NativeBackendNetwork): void {
  const sa = a.stateDict();
  const sb = b.stateDict();
  for (const [name, t] of sa) {
    const other = sb.get(name)!.data;
    const same = t.data.every((v, i) => Object.is(v, other[i]));
    if (!same) throw new Error(`${name} differs`);
  }
}

const convs = repConvs(cslaScales());
// Groups with their own options, wd on conv weights only (the official grouping's shape).
const grouped = (base: OptimizerSpec): OptimizerSpec => ({
  ...base,
  groups: [
    {
      params: specOf('target')
        .blocks.map((b) => `${b.name}.conv.weight`)
        .concat('linear.weight'),
      weightDecay: 4e-3,
    },
    {
      params: specOf('target')
        .blocks.flatMap((b) => [`${b.name}.bn.weight`, `${b.name}.bn.bias`])
        .concat('linear.bias'),
      weightDecay: 0,
      lr: 0.02,
      dampening: 0.1,
      nesterov: false,
    },
  ],
});

describe.each(['float32', 'float64'] as Precision[])('RepOptSGD bit-exactness (%s)', (precision) => {
  const data = batches(8, precision);
  const specs: [string, OptimizerSpec][] = [
    ['nesterov + wd', repOptSpec({ type: 'sgd', lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 1e-3 }, convs)],
    ['grouped, dampening', repOptSpec(grouped({ type: 'sgd', lr: 0.05, momentum: 0.8 }), convs)],
    ['no momentum', repOptSpec({ type: 'sgd', lr: 0.1 }, convs)],
  ];

  test.each(specs)('fused step == reference step (%s)', (_, spec) => {
    const [a, b] = twinTargets(precision);
    const fused = a.createOptimizer(spec);
    const reference = b.createOptimizer(spec);
    reference.setImplementation('reference');
    for (const { x, y } of data) {
      expect(a.trainStep(fused, x, y)).toBe(b.trainStep(reference, x, y));
    }
    expectBitIdentical(a, b);
  });

  // The multi-tensor path (the default on CUDA) runs on CPU tensors too: the same single roundings
  // as the reference, so equal bit for bit, with compact and with full GradMults.
  test.each(
    specs.flatMap(([name, spec]): [string, OptimizerSpec][] => [
      [`${name}, compact`, spec],
      [`${name}, full`, { ...spec, gradMultStorage: 'full' }],
    ]),
  )('foreach step == reference step (%s)', (_, spec) => {
    const [a, b] = twinTargets(precision);
    const foreach = a.createOptimizer(spec);
    foreach.setImplementation('foreach');
    const reference = b.createOptimizer(spec);
    reference.setImplementation('reference');
    expect([foreach.implementation, reference.implementation]).toEqual(['foreach', 'reference']);
    let moved = 0;
    const before = a.stateDict().get('stage1.0.conv.weight')!.data;
    for (const { x, y } of data) {
      expect(a.trainStep(foreach, x, y)).toBe(b.trainStep(reference, x, y));
    }
    const after = a.stateDict().get('stage1.0.conv.weight')!.data;
    for (let i = 0; i < after.length; i++) if (after[i] !== before[i]) moved++;
    expect(moved).toBeGreaterThan(after.length / 2); // the step really updated the weights
    expectBitIdentical(a, b);
  });

  test.each(specs)('compact GradMult == full GradMult (%s)', (_, spec) => {
    const [a, b] = twinTargets(precision);
    const compact = a.createOptimizer(spec);
    const full = b.createOptimizer({ ...spec, gradMultStorage: 'full' });
    for (const { x, y } of data) {
      a.trainStep(compact, x, y);
      b.trainStep(full, x, y);
    }
    expectBitIdentical(a, b);
    // Compact keeps per-channel vectors only; full keeps a tensor per conv weight.
    const convElements = convs.reduce((n, c) => n + c.shape.reduce((p, d) => p * d, 1), 0);
    const bytes = precision === 'float32' ? 4 : 8;
    expect(full.gradMultBytes).toBeGreaterThanOrEqual(convElements * bytes);
    expect(compact.gradMultBytes).toBeLessThan((convElements * bytes) / 4);
  });
});

describe('step implementations', () => {
  test('fused by default; foreach and reference on request; other names and optimizers refused', () => {
    const [a] = twinTargets('float32');
    const sgd = a.createOptimizer(repOptSpec({ type: 'sgd', lr: 0.05 }, convs));
    expect(sgd.implementation).toBe('fused');
    sgd.setImplementation('foreach');
    expect(sgd.implementation).toBe('foreach');
    expect(thrown(() => sgd.setImplementation('fast' as 'fused')).message).toBe(
      "Optimizer.setImplementation: argument 'implementation' must be 'fused', 'foreach' or 'reference', got 'fast'",
    );
    expect(sgd.implementation).toBe('foreach');
    const plain = a.createOptimizer({ type: 'adamw', lr: 1e-3 });
    expect(plain.implementation).toBeNull();
    expect(thrown(() => plain.setImplementation('foreach')).message).toMatch(/only repopt-sgd has several step implementations/);
  });
});

describe('optimizer state round trip', () => {
  test.each([
    ['repopt-sgd', repOptSpec({ type: 'sgd', lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 1e-3 }, convs)],
    ['repopt-sgd full', repOptSpec({ type: 'sgd', lr: 0.05, momentum: 0.9 }, convs, { gradMultStorage: 'full' })],
    ['repopt-adamw', repOptSpec({ type: 'adamw', lr: 1e-3 }, convs)],
    ['sgd', { type: 'sgd', lr: 0.05, momentum: 0.9 } as OptimizerSpec],
    ['adamw', { type: 'adamw', lr: 1e-3, weightDecay: 0.05 } as OptimizerSpec],
  ] as [string, OptimizerSpec][])('%s: save after 4 steps, load into a fresh optimizer, 4 more steps agree bit for bit', (_, spec) => {
    const data = batches(8, 'float32');
    const [a, b] = twinTargets('float32');
    const optA = a.createOptimizer(spec);
    for (const { x, y } of data.slice(0, 4)) a.trainStep(optA, x, y);
    const saved = optA.stateBytes();

    b.loadStateDict(a.stateDict());
    // A fresh optimizer, built with GradMults of other scales and another lr: load replaces them all.
    const optB = b.createOptimizer({
      ...spec,
      lr: 123,
      ...(spec.gradMults ? { gradMults: repOptSpec(spec, repConvs(cslaScales(77))).gradMults } : {}),
    });
    optB.loadStateBytes(saved);
    expect(optB.steps).toBe(4);
    for (const { x, y } of data.slice(4)) expect(b.trainStep(optB, x, y)).toBe(a.trainStep(optA, x, y));
    expectBitIdentical(a, b);
    expect(optB.steps).toBe(8);
  });

  test('a state that does not fit is refused and changes nothing', () => {
    const [a, b] = twinTargets('float32');
    const spec = repOptSpec({ type: 'sgd', lr: 0.05, momentum: 0.9 }, convs);
    const sgd = a.createOptimizer(spec);
    const { x, y } = batches(1, 'float32')[0];
    a.trainStep(sgd, x, y);
    const adamw = b.createOptimizer({ type: 'adamw', lr: 1e-3 });
    expect(thrown(() => adamw.loadStateBytes(sgd.stateBytes())).message).toMatch(/the state is of a repopt-sgd optimizer, this is adamw/);
    const fewer = b.createOptimizer({ ...spec, groups: [{ params: ['linear.weight'] }], gradMults: [] });
    expect(thrown(() => fewer.loadStateBytes(sgd.stateBytes())).message).toMatch(/saved with \d+ parameters, this optimizer's has 1/);
    expect(fewer.steps).toBe(0);
    expect(thrown(() => sgd.loadStateBytes(new Uint8Array([1, 2, 3]))).name).toBe('Error');
    expect(sgd.steps).toBe(1);
  });
});

describe('RepOptAdamW (official semantics) departs from a CSLA block trained with AdamW', () => {
  test('one step: same-sign channels move like CSLA, mixed-sign channels move (|s|+|t|)/|s+t| times less', () => {
    // Adam's first step moves each weight by ~lr: the CSLA kernel's centre moves by (|s| + |t|) lr,
    // the official rule (power 1) by |s + t| lr. Equal only where s and t share a sign.
    const { csla, target, convs: cs, scales } = cslaAndTarget(nativeBackend, 'float64');
    const lr = 1e-3;
    const plain = csla.createOptimizer({ type: 'adamw', lr, weightDecay: 0 });
    const official = target.createOptimizer({ type: 'adamw', lr, weightDecay: 0, gradMults: cs.map((c) => gradMultOf(c, 'adamw')) });
    const before = target.stateDict();
    const { x, y } = batches(1, 'float64')[0];
    csla.trainStep(plain, x, y);
    target.trainStep(official, x, y);
    const after = target.stateDict();
    const cslaAfter = csla.stateDict();
    const block = 'stage1.0'; // no identity branch, so every centre is s, t only
    const { s, t } = scales.get(block)!;
    const w = (state: Map<string, { data: ArrayLike<number> }>, o: number, i: number) =>
      state.get(`${block}.conv.weight`)!.data[(o * 4 + i) * 9 + 4];
    const cslaCentre = (o: number, i: number) =>
      s[o] * cslaAfter.get(`${block}.conv.weight`)!.data[(o * 4 + i) * 9 + 4] +
      t[o] * cslaAfter.get(`${block}.conv_1x1.weight`)!.data[o * 4 + i];
    let mixed = 0;
    for (let o = 0; o < 6; o++) {
      for (let i = 0; i < 4; i++) {
        const official = Math.abs(w(after, o, i) - w(before, o, i));
        const cslaMove = Math.abs(cslaCentre(o, i) - w(before, o, i));
        const expected = (Math.abs(s[o]) + Math.abs(t[o])) / Math.abs(s[o] + t[o]);
        // Relative: Adam's eps weighs a little where |s + t| is tiny.
        expect(Math.abs(cslaMove / official / expected - 1)).toBeLessThan(1e-3);
        if (Math.sign(s[o]) !== Math.sign(t[o])) mixed++;
      }
    }
    expect(mixed).toBeGreaterThan(0); // the fixture has mixed-sign channels
  });
});

describe('bad optimizer specs are clear errors', () => {
  const net = nativeBackend.createNetwork(specOf('csla'), { seed: 1 }) as NativeBackendNetwork;
  // Checked once, in TypeScript (lib/optimizer-spec.ts), before anything reaches the addon.
  const gm = (param: string, out: number, inp: number, extra: object = {}) => ({
    param,
    shape: [out, inp, 3, 3],
    base: new Float64Array(out),
    centre: new Float64Array(out),
    identity: false,
    groups: 1,
    ...extra,
  });
  const cases: [string, object, RegExp][] = [
    ['unknown type', { type: 'lamb', lr: 0.1 }, /type must be 'sgd' or 'adamw', got 'lamb'/],
    ['missing lr', { type: 'sgd' }, /lr is required/],
    ['NaN lr', { type: 'sgd', lr: NaN }, /learning rate must be a finite number, got NaN/],
    ['negative lr', { type: 'sgd', lr: -1 }, /invalid learning rate -1/],
    ['nesterov without momentum', { type: 'sgd', lr: 0.1, nesterov: true }, /nesterov momentum requires a momentum > 0 and zero dampening/],
    ['SGD option on AdamW', { type: 'adamw', lr: 0.1, momentum: 0.9 }, /'momentum' is an SGD option; AdamW does not take it/],
    ['empty groups', { type: 'sgd', lr: 0.1, groups: [] }, /groups must be a non-empty array/],
    [
      'unknown parameter',
      { type: 'sgd', lr: 0.1, groups: [{ params: ['stage9.conv.weight'] }] },
      /group 0: unknown parameter\(s\) 'stage9\.conv\.weight'/,
    ],
    [
      'parameter in two groups',
      { type: 'sgd', lr: 0.1, groups: [{ params: ['linear.bias'] }, { params: ['linear.bias'] }] },
      /'linear\.bias' appears in more than one group/,
    ],
    [
      'GradMult for a parameter not in the optimizer',
      { type: 'sgd', lr: 0.1, groups: [{ params: ['linear.bias'] }], gradMults: [gm('stage0.conv.weight', 4, 3)] },
      /'stage0\.conv\.weight', which is not a parameter this optimizer updates/,
    ],
    [
      'GradMult of the wrong length',
      { type: 'sgd', lr: 0.1, gradMults: [gm('stage0.conv.weight', 4, 3, { base: new Float64Array(3) })] },
      /base must be a Float64Array of 4 values/,
    ],
    [
      'GradMult with NaN',
      { type: 'sgd', lr: 0.1, gradMults: [gm('stage0.conv.weight', 4, 3, { base: Float64Array.of(1, NaN, 1, 1) })] },
      /base holds a non-finite value/,
    ],
    [
      'identity on a channel-changing conv',
      { type: 'sgd', lr: 0.1, gradMults: [gm('stage1.0.conv.weight', 6, 4, { identity: true })] },
      /identity needs as many output as input channels/,
    ],
    [
      'GradMult of the wrong shape',
      { type: 'sgd', lr: 0.1, gradMults: [gm('stage0.conv.weight', 4, 2)] },
      /has shape \[4, 2, 3, 3\] but the parameter has shape \[4, 3, 3, 3\]/,
    ],
    [
      'base not a Float64Array',
      { type: 'sgd', lr: 0.1, gradMults: [gm('stage0.conv.weight', 4, 3, { base: [1, 1, 1, 1] })] },
      /base must be a Float64Array of 4 values/,
    ],
    [
      'unknown implementation',
      { type: 'sgd', lr: 0.1, implementation: 'simd' },
      /implementation must be 'fused', 'foreach' or 'reference', got 'simd'/,
    ],
  ];
  test.each(cases)('%s', (_, spec, message) => {
    const before = net.stateDict();
    expect(thrown(() => net.createOptimizer(spec as OptimizerSpec)).message).toMatch(message);
    const after = net.stateDict();
    for (const [k, v] of before) expect(after.get(k)!.data).toEqual(v.data);
  });

  test('the raw binding refuses a parameter named twice and takes gradMults: undefined as a plain optimizer', () => {
    const spec = specOf('csla');
    const raw = new (native().Network)(spec, { seed: 1 });
    const config = nativeOptimizerConfig(resolveOptimizerSpec({ type: 'sgd', lr: 0.1 }, parameterInfo(spec)));
    const group = config.groups[0];
    const twice = (groups: (typeof group)[]) => thrown(() => raw.createOptimizer({ ...config, groups })).message;
    const inTwo = twice([
      { ...group, params: ['linear.bias'] },
      { ...group, params: ['linear.weight', 'linear.bias'] },
    ]);
    expect(inTwo).toMatch(/'linear\.bias' is named in more than one parameter group/);
    expect(twice([{ ...group, params: ['linear.bias', 'linear.bias'] }])).toMatch(
      /'linear\.bias' is named in more than one parameter group/,
    );
    const plain = raw.createOptimizer({ ...config, gradMults: undefined as unknown as null });
    expect(plain.kind).toBe('sgd');
    plain.dispose();
    raw.dispose();
  });
});

describe('a group naming a constant parameter', () => {
  // As torch.optim and the reference backend: accepted, and the constant is never updated (not even
  // by weight decay) while the group's other parameters are.
  test('is accepted; the constant stays bit-identical through a step, the trainable parameter moves', () => {
    const net = nativeBackend.createNetwork(specOf('csla'), { seed: 1 }) as NativeBackendNetwork;
    const opt = net.createOptimizer({
      type: 'sgd',
      lr: 0.1,
      weightDecay: 0.5,
      groups: [{ params: ['stage0.scale_1x1.weight', 'linear.bias'] }],
    });
    const bits = (t: { data: Float32Array | Float64Array }) =>
      Array.from(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    const before = net.stateDict();
    const [{ x, y }] = batches(1, 'float32');
    expect(Number.isFinite(net.trainStep(opt, x, y))).toBe(true);
    const after = net.stateDict();
    expect(bits(after.get('stage0.scale_1x1.weight')!)).toEqual(bits(before.get('stage0.scale_1x1.weight')!));
    expect(bits(after.get('linear.bias')!)).not.toEqual(bits(before.get('linear.bias')!));
    opt.dispose();
    net.dispose();
  });
});

describe('devices', () => {
  test('moving a network after creating an optimizer is refused', () => {
    const [a] = twinTargets('float32');
    a.to('cpu');
    a.createOptimizer({ type: 'sgd', lr: 0.1 });
    expect(thrown(() => a.to('cpu')).message).toMatch(/optimizers exist for this network/);
  });

  // Runs where libtorch sees a GPU (the CUDA build); on CPU-only machines there is nothing to run.
  const cuda = require('../lib/runtime').info().cuda as boolean;
  const title = 'CUDA: compact == full GradMult and close to the CPU result';
  (cuda ? test : test.skip)(cuda ? title : `${title} — skipped: CUDA is not available here (no GPU, or a CPU-only libtorch)`, () => {
    const spec = repOptSpec({ type: 'sgd', lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 1e-3 }, convs);
    const [a, b] = twinTargets('float64');
    const [c] = twinTargets('float64');
    c.loadStateDict(a.stateDict());
    a.to('cuda');
    b.to('cuda');
    const compact = a.createOptimizer(spec);
    const full = b.createOptimizer({ ...spec, gradMultStorage: 'full' });
    const cpu = c.createOptimizer(spec);
    for (const { x, y } of batches(6, 'float64')) {
      a.trainStep(compact, x, y);
      b.trainStep(full, x, y);
      c.trainStep(cpu, x, y);
    }
    expectBitIdentical(a, b);
    const sa = a.stateDict();
    for (const [name, t] of c.stateDict()) {
      const other = sa.get(name)!.data;
      t.data.forEach((v, i) => {
        expect(Math.abs(v - other[i])).toBeLessThan(1e-9 * (1 + Math.abs(v)));
      });
    }
  });
});

describe('asynchronous train steps', () => {
  test('trainStepAsync equals trainStep, and a second call while one runs is refused', async () => {
    const [a, b] = twinTargets('float32');
    const spec = repOptSpec({ type: 'sgd', lr: 0.05, momentum: 0.9 }, convs);
    const optA = a.createOptimizer(spec);
    const optB = b.createOptimizer(spec);
    for (const { x, y } of batches(3, 'float32')) {
      const pending = b.trainStepAsync(optB, x, y);
      expect(thrown(() => b.trainStep(optB, x, y)).message).toMatch(/Network\.trainStep: an asynchronous step is running on this network/);
      expect(thrown(() => b.stateDict()).message).toMatch(/await it first/);
      expect(thrown(() => optB.setLr(0.1)).message).toBe(
        'Optimizer.setLr: an asynchronous step is running on this optimizer; await it first',
      );
      expect(await pending).toBe(a.trainStep(optA, x, y));
    }
    expectBitIdentical(a, b);
  });
});
