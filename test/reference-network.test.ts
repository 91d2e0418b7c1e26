// The reference Network: layout, init, state dicts, whole-network gradients and forward semantics.
import type { GradMult, HostTensor } from '../lib/backend';
import { type BlockMode, type NetworkSpec, bufferInfo, hasIdentity, parameterInfo } from '../lib/spec';
import { Random, ReferenceNetwork, centralDifference, createReferenceNetwork, referenceBackend, relativeError } from '../lib/reference';

const MODES: BlockMode[] = ['target', 'hs', 'csla', 'repvgg'];

/** 8x8 -> 4x4 (stage0) -> 4x4 (identity block) -> 2x2. */
function tinySpec(mode: BlockMode): NetworkSpec {
  return {
    mode,
    inChannels: 3,
    numClasses: 5,
    blocks: [
      { name: 'stage0', inChannels: 3, outChannels: 4, stride: 2 },
      { name: 'stage1.0', inChannels: 4, outChannels: 4, stride: 1, scaleInit: 0.7 },
      { name: 'stage2.0', inChannels: 4, outChannels: 6, stride: 2, scaleInit: 1.3 },
    ],
  };
}

function randomBatch(batch: number, seed: number): HostTensor {
  const random = new Random(seed);
  return { shape: [batch, 3, 8, 8], data: Float64Array.from({ length: batch * 3 * 64 }, () => random.uniform(-2, 2)) };
}

const LABELS = new Int32Array([0, 3, 1, 4]);

function values(state: Map<string, HostTensor>, name: string): Float32Array | Float64Array {
  const t = state.get(name);
  if (t === undefined) throw new Error(`no ${name} in the state dict`);
  return t.data;
}

function cloneState(state: Map<string, HostTensor>): Map<string, HostTensor> {
  return new Map([...state].map(([k, v]) => [k, { shape: [...v.shape], data: v.data.slice() }]));
}

function expectAllClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: number): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    if (!(Math.abs(actual[i] - expected[i]) <= tolerance))
      throw new Error(`element ${i}: ${actual[i]} vs ${expected[i]} (tolerance ${tolerance})`);
  }
}

describe('layout', () => {
  test.each(MODES)('%s: parameters and buffers are exactly parameterInfo / bufferInfo', (mode) => {
    const net = createReferenceNetwork(tinySpec(mode));
    expect(net.backend).toBe('reference');
    expect(net.parameters()).toEqual(parameterInfo(tinySpec(mode)));
    expect(net.buffers()).toEqual(bufferInfo(tinySpec(mode)));
    const state = net.stateDict();
    const expectedNames = [...parameterInfo(tinySpec(mode)), ...bufferInfo(tinySpec(mode))].map((p) => p.name).sort();
    expect([...state.keys()].sort()).toEqual(expectedNames);
    for (const info of [...parameterInfo(tinySpec(mode)), ...bufferInfo(tinySpec(mode))]) {
      expect(state.get(info.name)?.shape).toEqual(info.shape);
    }
  });

  test("state dict keys follow torch's order: each module's parameters, then its buffers", () => {
    const spec: NetworkSpec = {
      mode: 'target',
      inChannels: 3,
      numClasses: 2,
      blocks: [{ name: 'stage0', inChannels: 3, outChannels: 4, stride: 2 }],
    };
    expect([...createReferenceNetwork(spec).stateDict().keys()]).toEqual([
      'stage0.conv.weight',
      'stage0.bn.weight',
      'stage0.bn.bias',
      'stage0.bn.running_mean',
      'stage0.bn.running_var',
      'stage0.bn.num_batches_tracked',
      'linear.weight',
      'linear.bias',
    ]);
    const repvgg = createReferenceNetwork(tinySpec('repvgg'));
    expect([...repvgg.stateDict().keys()].filter((k) => k.startsWith('stage1.0.'))).toEqual([
      'stage1.0.conv_3x3.weight',
      'stage1.0.bn_3x3.weight',
      'stage1.0.bn_3x3.bias',
      'stage1.0.bn_3x3.running_mean',
      'stage1.0.bn_3x3.running_var',
      'stage1.0.bn_3x3.num_batches_tracked',
      'stage1.0.conv_1x1.weight',
      'stage1.0.bn_1x1.weight',
      'stage1.0.bn_1x1.bias',
      'stage1.0.bn_1x1.running_mean',
      'stage1.0.bn_1x1.running_var',
      'stage1.0.bn_1x1.num_batches_tracked',
      'stage1.0.bn_identity.weight',
      'stage1.0.bn_identity.bias',
      'stage1.0.bn_identity.running_mean',
      'stage1.0.bn_identity.running_var',
      'stage1.0.bn_identity.num_batches_tracked',
    ]);
  });

  test('the backend object', () => {
    expect(referenceBackend.name).toBe('reference');
    const net = referenceBackend.createNetwork(tinySpec('target'));
    expect(net).toBeInstanceOf(ReferenceNetwork);
    expect(net.precision).toBe('float32');
    expect(values(net.stateDict(), 'linear.weight')).toBeInstanceOf(Float32Array);
    expect(
      values(referenceBackend.createNetwork(tinySpec('target'), { precision: 'float64' }).stateDict(), 'linear.weight'),
    ).toBeInstanceOf(Float64Array);
    expect(() => referenceBackend.createNetwork({ ...tinySpec('target'), numClasses: 0 })).toThrow(/numClasses/);
  });
});

describe('default initialisation', () => {
  test('a seed gives the same weights; another seed other weights', () => {
    const a = createReferenceNetwork(tinySpec('hs'), { seed: 3 }).stateDict();
    const b = createReferenceNetwork(tinySpec('hs'), { seed: 3 }).stateDict();
    const c = createReferenceNetwork(tinySpec('hs'), { seed: 4 }).stateDict();
    expect(Array.from(values(a, 'stage1.0.conv.weight'))).toEqual(Array.from(values(b, 'stage1.0.conv.weight')));
    expect(Array.from(values(a, 'stage1.0.conv.weight'))).not.toEqual(Array.from(values(c, 'stage1.0.conv.weight')));
  });

  test('conv and linear weights and the linear bias are U(-1/sqrt(fan_in), 1/sqrt(fan_in))', () => {
    const state = createReferenceNetwork(tinySpec('repvgg'), { precision: 'float64', seed: 11 }).stateDict();
    const bounds: [string, number][] = [
      ['stage0.conv_3x3.weight', 1 / Math.sqrt(3 * 9)],
      ['stage0.conv_1x1.weight', 1 / Math.sqrt(3)],
      ['stage1.0.conv_3x3.weight', 1 / Math.sqrt(4 * 9)],
      ['stage2.0.conv_1x1.weight', 1 / Math.sqrt(4)],
      ['linear.weight', 1 / Math.sqrt(6)],
      ['linear.bias', 1 / Math.sqrt(6)],
    ];
    for (const [name, bound] of bounds) {
      const v = Array.from(values(state, name));
      expect(Math.max(...v.map(Math.abs))).toBeLessThanOrEqual(bound * (1 + 1e-12));
    }
    // On a larger weight, the spread is that of U(-b, b): mean 0, variance b^2 / 3.
    const wide = createReferenceNetwork(
      { mode: 'target', inChannels: 16, numClasses: 2, blocks: [{ name: 'stage0', inChannels: 16, outChannels: 16, stride: 1 }] },
      { precision: 'float64' },
    );
    const w = Array.from(values(wide.stateDict(), 'stage0.conv.weight'));
    const bound = 1 / Math.sqrt(16 * 9);
    const mean = w.reduce((a, b) => a + b, 0) / w.length;
    const variance = w.reduce((a, b) => a + (b - mean) ** 2, 0) / w.length;
    expect(Math.abs(mean)).toBeLessThan(0.05 * bound);
    expect(variance / (bound ** 2 / 3)).toBeGreaterThan(0.9);
    expect(variance / (bound ** 2 / 3)).toBeLessThan(1.1);
    expect(Math.max(...w)).toBeGreaterThan(0.99 * bound);
    expect(Math.min(...w)).toBeLessThan(-0.99 * bound);
  });

  test('BN 1 / 0 / running 0 / 1 / count 0; scales from scaleInit (default 1); identity scale 1', () => {
    const state = createReferenceNetwork(tinySpec('hs')).stateDict();
    expect(Array.from(values(state, 'stage1.0.bn.weight'))).toEqual([1, 1, 1, 1]);
    expect(Array.from(values(state, 'stage1.0.bn.bias'))).toEqual([0, 0, 0, 0]);
    expect(Array.from(values(state, 'stage1.0.bn.running_mean'))).toEqual([0, 0, 0, 0]);
    expect(Array.from(values(state, 'stage1.0.bn.running_var'))).toEqual([1, 1, 1, 1]);
    expect(Array.from(values(state, 'stage1.0.bn.num_batches_tracked'))).toEqual([0]);
    expect(Array.from(values(state, 'stage0.scale_conv.weight'))).toEqual([1, 1, 1, 1]);
    expect(Array.from(values(state, 'stage1.0.scale_conv.weight'))).toEqual(Array(4).fill(Math.fround(0.7)));
    expect(Array.from(values(state, 'stage1.0.scale_1x1.weight'))).toEqual(Array(4).fill(Math.fround(0.7)));
    expect(Array.from(values(state, 'stage1.0.scale_identity.weight'))).toEqual([1, 1, 1, 1]);
    expect(Array.from(values(state, 'stage2.0.scale_1x1.weight'))).toEqual(Array(6).fill(Math.fround(1.3)));
  });
});

describe('state dicts', () => {
  test('stateDict returns copies; num_batches_tracked is a [] tensor counting training forwards', () => {
    const net = createReferenceNetwork(tinySpec('target'));
    const state = net.stateDict();
    values(state, 'linear.bias')[0] = 1234;
    expect(values(net.stateDict(), 'linear.bias')[0]).not.toBe(1234);
    net.forward(randomBatch(4, 1), 'train');
    net.forward(randomBatch(4, 2), 'train');
    net.forward(randomBatch(4, 3), 'eval');
    const after = net.stateDict();
    const count = after.get('stage0.bn.num_batches_tracked');
    expect(count?.shape).toEqual([]);
    expect(Array.from(count?.data ?? [])).toEqual([2]);
    expect(Array.from(values(after, 'stage0.bn.running_mean')).some((v) => v !== 0)).toBe(true);
  });

  test('eval forward leaves every buffer alone', () => {
    const net = createReferenceNetwork(tinySpec('repvgg'));
    net.forward(randomBatch(4, 1), 'train');
    const before = net.stateDict();
    net.forward(randomBatch(4, 2), 'eval');
    expect(net.stateDict()).toEqual(before);
  });

  test('a loaded state dict reproduces the other network exactly', () => {
    const source = createReferenceNetwork(tinySpec('hs'), { seed: 1 });
    source.forward(randomBatch(4, 5), 'train');
    const target = createReferenceNetwork(tinySpec('hs'), { seed: 2 });
    target.loadStateDict(source.stateDict());
    expect(target.stateDict()).toEqual(source.stateDict());
    expect(Array.from(target.forward(randomBatch(4, 6), 'eval').data)).toEqual(Array.from(source.forward(randomBatch(4, 6), 'eval').data));
  });

  test('loadStateDict is strict: it names every missing, unexpected and mis-shaped key and loads nothing', () => {
    const net = createReferenceNetwork(tinySpec('csla'));
    const before = net.stateDict();
    const bad = cloneState(before);
    values(bad, 'stage0.conv.weight').fill(0.5); // a valid change that must not be applied
    bad.delete('stage1.0.bn.running_var');
    bad.delete('linear.bias');
    bad.set('stage9.conv.weight', { shape: [1], data: new Float32Array(1) });
    bad.set('stage0.bn.weight', { shape: [5], data: new Float32Array(5) });
    bad.set('stage1.0.scale_identity.weight', { shape: [4], data: new Float32Array(3) });
    bad.set('stage0.bn.num_batches_tracked', { shape: [], data: new Float32Array([1.5]) });
    let message = '';
    try {
      net.loadStateDict(bad);
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(/Missing key\(s\) in state_dict: "stage1.0.bn.running_var", "linear.bias"/);
    expect(message).toMatch(/Unexpected key\(s\) in state_dict: "stage9.conv.weight"/);
    expect(message).toMatch(
      /size mismatch for stage0.bn.weight: copying a param with shape \[5\] from checkpoint, the shape in current model is \[4\]/,
    );
    expect(message).toMatch(/stage1.0.scale_identity.weight: 3 values for shape \[4\]/);
    expect(message).toMatch(/stage0.bn.num_batches_tracked: expected a non-negative integer count/);
    expect(net.stateDict()).toEqual(before);

    // A count shaped [1] instead of [] is a shape mismatch, as in torch.
    const countShape = cloneState(before);
    countShape.set('stage0.bn.num_batches_tracked', { shape: [1], data: new Float32Array([3]) });
    expect(() => net.loadStateDict(countShape)).toThrow(/size mismatch for stage0.bn.num_batches_tracked/);
    // Either precision is accepted as a source.
    const float64 = new Map([...before].map(([k, v]) => [k, { shape: v.shape, data: Float64Array.from(v.data) }]));
    expect(() => net.loadStateDict(float64)).not.toThrow();
  });
});

describe('whole-network finite-difference gradient check (float64, relative error < 1e-6)', () => {
  test.each(MODES)('%s', (mode) => {
    const net = createReferenceNetwork(tinySpec(mode), { precision: 'float64', seed: 21 });
    // Non-trivial BN affine parameters, so that their gradients are exercised too.
    const state = net.stateDict();
    const random = new Random(22);
    for (const info of net.parameters()) {
      if (info.role === 'bn_weight' || info.role === 'bn_bias' || info.role.startsWith('scale')) {
        const v = values(state, info.name);
        for (let i = 0; i < v.length; i++) v[i] += random.uniform(-0.3, 0.3);
      }
    }
    net.loadStateDict(state);
    const input = randomBatch(4, 23);
    const options = { labelSmoothing: 0.1 };
    const { gradients } = net.computeGradients(input, LABELS, options);
    const trainable = net.parameters().filter((p) => p.trainable);
    expect([...gradients.keys()]).toEqual(trainable.map((p) => p.name));

    const probe = cloneState(net.stateDict());
    for (const info of trainable) {
      const perturbed = values(probe, info.name) as Float64Array;
      const numeric = new Float64Array(perturbed.length);
      for (let i = 0; i < perturbed.length; i++) {
        numeric[i] = centralDifference(
          () => {
            net.loadStateDict(probe);
            return net.evaluateLoss(input, LABELS, { ...options, mode: 'train' });
          },
          perturbed,
          i,
          1e-6,
        );
      }
      const analytic = gradients.get(info.name)?.data ?? new Float64Array(0);
      const error = relativeError(analytic, numeric);
      if (!(error < 1e-6)) throw new Error(`${mode} ${info.name}: relative error ${error}`);
    }
  });
});

/** The target-mode state equivalent to an hs / csla network (the §5 fold): W' = s W3 + t pad(W1) + g I. */
function foldLinearAddBlocks(spec: NetworkSpec, state: Map<string, HostTensor>): Map<string, HostTensor> {
  const target = createReferenceNetwork({ ...spec, mode: 'target' }, { precision: 'float64' }).stateDict();
  for (const [name, t] of target) if (state.has(name)) target.set(name, { shape: t.shape, data: Float64Array.from(values(state, name)) });
  for (const b of spec.blocks) {
    const [O, I] = [b.outChannels, b.inChannels];
    const w3 = values(state, `${b.name}.conv.weight`);
    const w1 = values(state, `${b.name}.conv_1x1.weight`);
    const s = values(state, `${b.name}.scale_conv.weight`);
    const t = values(state, `${b.name}.scale_1x1.weight`);
    const g = state.has(`${b.name}.scale_identity.weight`) ? values(state, `${b.name}.scale_identity.weight`) : null;
    const folded = new Float64Array(O * I * 9);
    for (let o = 0; o < O; o++) {
      for (let i = 0; i < I; i++) {
        for (let k = 0; k < 9; k++) folded[(o * I + i) * 9 + k] = s[o] * w3[(o * I + i) * 9 + k];
        folded[(o * I + i) * 9 + 4] += t[o] * w1[o * I + i];
        if (g !== null && i === o) folded[(o * I + i) * 9 + 4] += g[o];
      }
    }
    target.set(`${b.name}.conv.weight`, { shape: [O, I, 3, 3], data: folded });
  }
  return target;
}

/** The target-mode state equivalent (in eval) to a RepVGG network: BN folded into each branch, the
 * summed bias carried by a BN that adds it (weight 1, running mean 0, running var 1 - eps). */
function foldRepVggBlocks(spec: NetworkSpec, state: Map<string, HostTensor>): Map<string, HostTensor> {
  const target = createReferenceNetwork({ ...spec, mode: 'target' }, { precision: 'float64' }).stateDict();
  for (const name of ['linear.weight', 'linear.bias'])
    target.set(name, { shape: [...(state.get(name)?.shape ?? [])], data: Float64Array.from(values(state, name)) });
  for (const b of spec.blocks) {
    const [O, I] = [b.outChannels, b.inChannels];
    const branch = (bn: string) => {
      const gamma = values(state, `${bn}.weight`);
      const beta = values(state, `${bn}.bias`);
      const mean = values(state, `${bn}.running_mean`);
      const variance = values(state, `${bn}.running_var`);
      const scale = Array.from(gamma, (gv, o) => gv / Math.sqrt(variance[o] + 1e-5));
      return { scale, shift: Array.from(beta, (bv, o) => bv - mean[o] * scale[o]) };
    };
    const dense = branch(`${b.name}.bn_3x3`);
    const pointwise = branch(`${b.name}.bn_1x1`);
    const identity = state.has(`${b.name}.bn_identity.weight`) ? branch(`${b.name}.bn_identity`) : null;
    const w3 = values(state, `${b.name}.conv_3x3.weight`);
    const w1 = values(state, `${b.name}.conv_1x1.weight`);
    const folded = new Float64Array(O * I * 9);
    const bias = new Float64Array(O);
    for (let o = 0; o < O; o++) {
      bias[o] = dense.shift[o] + pointwise.shift[o] + (identity?.shift[o] ?? 0);
      for (let i = 0; i < I; i++) {
        for (let k = 0; k < 9; k++) folded[(o * I + i) * 9 + k] = dense.scale[o] * w3[(o * I + i) * 9 + k];
        folded[(o * I + i) * 9 + 4] += pointwise.scale[o] * w1[o * I + i];
        if (identity !== null && i === o) folded[(o * I + i) * 9 + 4] += identity.scale[o];
      }
    }
    target.set(`${b.name}.conv.weight`, { shape: [O, I, 3, 3], data: folded });
    target.set(`${b.name}.bn.weight`, { shape: [O], data: new Float64Array(O).fill(1) });
    target.set(`${b.name}.bn.bias`, { shape: [O], data: bias });
    target.set(`${b.name}.bn.running_mean`, { shape: [O], data: new Float64Array(O) });
    target.set(`${b.name}.bn.running_var`, { shape: [O], data: new Float64Array(O).fill(1 - 1e-5) });
  }
  return target;
}

describe('forward semantics, checked against the equivalent plain network', () => {
  test.each(['hs', 'csla'] as const)('%s (LinearAddBlock) equals a target network with folded weights, in train and eval', (mode) => {
    const spec = tinySpec(mode);
    const net = createReferenceNetwork(spec, { precision: 'float64', seed: 31 });
    const state = net.stateDict();
    const random = new Random(32);
    for (const suffix of ['scale_conv', 'scale_1x1', 'scale_identity']) {
      for (const b of spec.blocks) {
        const v = state.get(`${b.name}.${suffix}.weight`)?.data;
        if (v !== undefined) for (let i = 0; i < v.length; i++) v[i] = random.uniform(-1.5, 1.5);
      }
    }
    net.loadStateDict(state);
    const plain = createReferenceNetwork({ ...spec, mode: 'target' }, { precision: 'float64' });
    plain.loadStateDict(foldLinearAddBlocks(spec, state));
    for (const mode of ['train', 'eval'] as const) {
      const input = randomBatch(4, 33);
      expectAllClose(net.forward(input, mode).data, plain.forward(input, mode).data, 1e-12);
    }
  });

  test('repvgg in eval equals a target network with the branches and BNs folded into one conv', () => {
    const spec = tinySpec('repvgg');
    const net = createReferenceNetwork(spec, { precision: 'float64', seed: 41 });
    const state = net.stateDict();
    const random = new Random(42);
    for (const info of net.parameters()) {
      if (info.role === 'bn_weight' || info.role === 'bn_bias') {
        const v = values(state, info.name);
        for (let i = 0; i < v.length; i++)
          v[i] = random.uniform(0.5, 1.5) * (info.role === 'bn_bias' ? Math.sign(random.uniform(-1, 1)) : 1);
      }
    }
    net.loadStateDict(state);
    net.forward(randomBatch(4, 43), 'train'); // non-trivial running statistics
    net.forward(randomBatch(4, 44), 'train');
    const plain = createReferenceNetwork({ ...spec, mode: 'target' }, { precision: 'float64' });
    plain.loadStateDict(foldRepVggBlocks(spec, net.stateDict()));
    const input = randomBatch(4, 45);
    expectAllClose(net.forward(input, 'eval').data, plain.forward(input, 'eval').data, 1e-12);
  });
});

describe('training', () => {
  test.each(MODES)('%s: SGD steps reduce the loss on a fixed batch (float32)', (mode) => {
    const net = createReferenceNetwork(tinySpec(mode), { seed: 51 });
    const optimizer = net.createOptimizer({ type: 'sgd', lr: 0.05, momentum: 0.9, weightDecay: 1e-4 });
    const input = { ...randomBatch(4, 52), data: Float32Array.from(randomBatch(4, 52).data) };
    const losses: number[] = [];
    for (let step = 0; step < 20; step++) losses.push(net.trainStep(optimizer, input, LABELS, { labelSmoothing: 0.1 }));
    expect(optimizer.steps).toBe(20);
    expect(losses.every(Number.isFinite)).toBe(true);
    for (let step = 1; step < losses.length; step++) expect(losses[step]).toBeLessThan(losses[step - 1]);
    expect(losses[losses.length - 1]).toBeLessThan(0.5 * losses[0]);
  });

  test('float32 follows float64 closely from the same state (3 plain SGD steps, repvgg)', () => {
    const wide = createReferenceNetwork(tinySpec('repvgg'), { precision: 'float64', seed: 55 });
    const narrow = createReferenceNetwork(tinySpec('repvgg'), { precision: 'float32' });
    narrow.loadStateDict(wide.stateDict());
    const sgd = { type: 'sgd', lr: 0.05, momentum: 0.9, weightDecay: 1e-4 } as const;
    const [wideOptimizer, narrowOptimizer] = [wide.createOptimizer(sgd), narrow.createOptimizer(sgd)];
    const input = randomBatch(4, 56);
    for (let step = 0; step < 3; step++) {
      const expected = wide.trainStep(wideOptimizer, input, LABELS, { labelSmoothing: 0.1 });
      expect(Math.abs(narrow.trainStep(narrowOptimizer, input, LABELS, { labelSmoothing: 0.1 }) - expected)).toBeLessThan(1e-5 * expected);
    }
    const logits = narrow.forward(input, 'eval');
    expect(logits.data).toBeInstanceOf(Float32Array);
    expect(logits.shape).toEqual([4, 5]);
    expectAllClose(logits.data, wide.forward(input, 'eval').data, 1e-5);
  });

  test('csla: the constant scales get no gradient and never change; everything else trains', () => {
    const net = createReferenceNetwork(tinySpec('csla'), { precision: 'float64', seed: 61 });
    const input = randomBatch(4, 62);
    const { gradients } = net.computeGradients(input, LABELS);
    expect(gradients.has('stage1.0.scale_conv.weight')).toBe(false);
    expect(gradients.has('stage1.0.scale_1x1.weight')).toBe(false);
    expect(gradients.has('stage1.0.scale_identity.weight')).toBe(true);
    const before = net.stateDict();
    // Even a group that names them explicitly does not update them.
    const optimizer = net.createOptimizer({
      type: 'sgd',
      lr: 0.1,
      weightDecay: 0.1,
      groups: [{ params: net.parameters().map((p) => p.name) }],
    });
    for (let step = 0; step < 3; step++) net.trainStep(optimizer, input, LABELS);
    const after = net.stateDict();
    for (const info of net.parameters()) {
      const same = Array.from(values(after, info.name)).every((v, i) => v === values(before, info.name)[i]);
      expect([info.name, same]).toEqual([info.name, !info.trainable]);
    }
  });

  test('trainStep checks its inputs before changing anything', () => {
    const net = createReferenceNetwork(tinySpec('target'));
    const other = createReferenceNetwork(tinySpec('target'));
    const optimizer = net.createOptimizer({ type: 'sgd', lr: 0.1 });
    const input = randomBatch(4, 71);
    const before = net.stateDict();
    expect(() => net.trainStep(other.createOptimizer({ type: 'sgd', lr: 0.1 }), input, LABELS)).toThrow(/not created by this network/);
    expect(() => net.trainStep(optimizer, input, new Int32Array([0, 1, 2, 5]))).toThrow(/label 5 of sample 3/);
    expect(() => net.trainStep(optimizer, input, new Int32Array([0, 1]))).toThrow(/2 labels for a batch of 4/);
    expect(() => net.trainStep(optimizer, input, LABELS, { labelSmoothing: -0.1 })).toThrow(/labelSmoothing/);
    expect(() => net.trainStep(optimizer, { shape: [4, 2, 8, 8], data: new Float32Array(4 * 2 * 64) }, LABELS)).toThrow(
      /2 channels, the network takes 3/,
    );
    expect(() => net.trainStep(optimizer, { shape: [4, 3, 8, 8], data: new Float32Array(10) }, LABELS)).toThrow(/10 values for shape/);
    expect(net.stateDict()).toEqual(before);
    expect(optimizer.steps).toBe(0);
    optimizer.dispose();
    expect(() => net.trainStep(optimizer, input, LABELS)).toThrow(/disposed/);
    net.dispose();
    expect(() => net.forward(input, 'eval')).toThrow(/disposed/);
  });
});

describe('gradient re-parameterisation (METHOD §2): CSLA + SGD == target + RepOptSGD', () => {
  test('same losses and the same (folded) weights over 3 steps of nesterov SGD with weight decay, scales of both signs', () => {
    const spec = tinySpec('csla');
    const csla = createReferenceNetwork(spec, { precision: 'float64', seed: 81 });
    const state = csla.stateDict();
    const random = new Random(82);
    for (const b of spec.blocks) {
      for (const suffix of ['scale_conv', 'scale_1x1']) {
        const v = values(state, `${b.name}.${suffix}.weight`);
        for (let i = 0; i < v.length; i++) v[i] = random.uniform(0.3, 1.5) * (random.uniform(-1, 1) < 0 ? -1 : 1);
      }
    }
    csla.loadStateDict(state);
    const target = createReferenceNetwork({ ...spec, mode: 'target' }, { precision: 'float64' });
    target.loadStateDict(foldLinearAddBlocks(spec, state));
    // GradMult for SGD: power 2 of the constant scales, + 1 on the diagonal centre of identity blocks.
    const gradMults: GradMult[] = spec.blocks.map((b) => ({
      param: `${b.name}.conv.weight`,
      shape: [b.outChannels, b.inChannels, 3, 3],
      base: Float64Array.from(values(state, `${b.name}.scale_conv.weight`), (s) => s * s),
      centre: Float64Array.from(values(state, `${b.name}.scale_1x1.weight`), (t) => t * t),
      identity: hasIdentity(b),
      groups: 1,
    }));
    const sgd = { type: 'sgd', lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 1e-3 } as const;
    const cslaOptimizer = csla.createOptimizer(sgd);
    const targetOptimizer = target.createOptimizer({ ...sgd, gradMults });
    const input = randomBatch(4, 83);
    for (let step = 0; step < 3; step++) {
      const cslaLoss = csla.trainStep(cslaOptimizer, input, LABELS, { labelSmoothing: 0.1 });
      const targetLoss = target.trainStep(targetOptimizer, input, LABELS, { labelSmoothing: 0.1 });
      expect(Math.abs(cslaLoss - targetLoss)).toBeLessThan(1e-12);
    }
    const folded = foldLinearAddBlocks(spec, csla.stateDict());
    for (const [name, t] of target.stateDict()) expectAllClose(t.data, values(folded, name), 1e-12);
    // Not vacuous: the weights moved.
    expect(
      Math.abs(values(target.stateDict(), 'stage1.0.conv.weight')[4] - values(foldLinearAddBlocks(spec, state), 'stage1.0.conv.weight')[4]),
    ).toBeGreaterThan(1e-4);
  });
});
