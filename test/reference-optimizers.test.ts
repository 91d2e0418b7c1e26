// The reference optimizers: torch.optim.SGD / AdamW by hand, the GradMult, RepOptSGD / RepOptAdamW,
// and the optimizer-spec checks.
import type { GradMult, OptimizerSpec } from '../lib/backend';
import type { NetworkSpec, Precision } from '../lib/spec';
import { type OptimizedParameter, Random, ReferenceOptimizer, createReferenceNetwork, fullGradMult } from '../lib/reference';

type Values = Float32Array | Float64Array;

function parameter(
  name: string,
  shape: number[],
  initial: number[],
  precision: Precision = 'float64',
  trainable = true,
): OptimizedParameter {
  const data = precision === 'float32' ? Float32Array.from(initial) : Float64Array.from(initial);
  return { info: { name, shape, role: shape.length === 4 ? 'conv3x3' : 'linear_bias', trainable }, data };
}

function gradient(values: number[], precision: Precision = 'float64'): Values {
  return precision === 'float32' ? Float32Array.from(values) : Float64Array.from(values);
}

/** Runs three steps on p = [1, -2] with gradients g1, g2, g3; returns p after each step. */
const GRADIENTS = [
  [0.5, 1],
  [-0.25, 0.5],
  [1, -1],
];
function threeSteps(spec: OptimizerSpec, precision: Precision = 'float64'): number[][] {
  const p = parameter('p', [2], [1, -2], precision);
  const optimizer = new ReferenceOptimizer(spec, [p], precision, {});
  return GRADIENTS.map((g) => {
    optimizer.step(new Map([['p', gradient(g, precision)]]));
    return Array.from(p.data);
  });
}

function expectSteps(actual: number[][], expected: number[][], tolerance: number): void {
  expected.forEach((row, step) => {
    row.forEach((v, i) => {
      expect([step, i, Math.abs(actual[step][i] - v) <= tolerance * Math.max(1, Math.abs(v))]).toEqual([step, i, true]);
    });
  });
}

describe('SGD as torch.optim.SGD, three steps by hand (float64)', () => {
  test('momentum 0.9, dampening 0.5, weight decay 0.01, lr 0.1', () => {
    // Element 0: step 1: d = 0.5 + 0.01 * 1 = 0.51, buf = d (no dampening on the first step), p = 1 - 0.051 = 0.949.
    // step 2: d = -0.25 + 0.01 * 0.949 = -0.24051, buf = 0.9 * 0.51 + 0.5 * d = 0.338745, p = 0.949 - 0.0338745 = 0.9151255.
    // step 3: d = 1 + 0.009151255 = 1.009151255, buf = 0.9 * 0.338745 + 0.5 * d = 0.8094461275, p = 0.83418088725.
    const steps = threeSteps({ type: 'sgd', lr: 0.1, momentum: 0.9, dampening: 0.5, weightDecay: 0.01 });
    expectSteps(
      steps,
      [
        [0.949, -2.098],
        [0.9151255, -2.210151],
        [0.83418088725, -2.2599818245],
      ],
      1e-14,
    );
  });

  test('nesterov, momentum 0.9, weight decay 0.01, lr 0.1', () => {
    // Element 0: step 1: d = 0.51, buf = 0.51, d = d + 0.9 * buf = 0.969, p = 0.9031.
    // step 2: d = -0.25 + 0.009031 = -0.240969, buf = 0.459 - 0.240969 = 0.218031, d = d + 0.1962279 = -0.0447411, p = 0.90757411.
    const steps = threeSteps({ type: 'sgd', lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 0.01 });
    expectSteps(
      steps,
      [
        [0.9031, -2.1862],
        [0.90757411, -2.35642622],
        [0.698189208191, -2.272120188182],
      ],
      1e-14,
    );
  });

  test('no momentum, weight decay 0.1, lr 0.1', () => {
    // p = p - 0.1 * (g + 0.1 p): 1 - 0.1 * 0.6 = 0.94; 0.94 - 0.1 * (-0.25 + 0.094) = 0.9556; 0.9556 - 0.1 * 1.09556 = 0.846044
    const steps = threeSteps({ type: 'sgd', lr: 0.1, weightDecay: 0.1 });
    expectSteps(
      steps,
      [
        [0.94, -2.08],
        [0.9556, -2.1092],
        [0.846044, -1.988108],
      ],
      1e-14,
    );
  });

  test('float32 rounds like a float32 torch step (values from torch 1.13, within 1 ulp)', () => {
    const steps = threeSteps({ type: 'sgd', lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 0.01 }, 'float32');
    expectSteps(
      steps,
      [
        [0.9031000137329102, -2.186199903488159],
        [0.9075741171836853, -2.356426239013672],
        [0.6981891989707947, -2.272120237350464],
      ],
      2 ** -23,
    );
  });
});

describe('AdamW as torch.optim.AdamW, three steps by hand', () => {
  test('lr 0.01, weight decay 0.1, default betas (0.9, 0.999) and eps 1e-8 (float64)', () => {
    // Element 0, step 1: p = 1 * (1 - 0.01 * 0.1) = 0.999; m = 0.1 * 0.5 = 0.05; v = 0.001 * 0.25 = 0.00025;
    // bc1 = 0.1, bc2 = 0.001; denom = sqrt(0.00025) / sqrt(0.001) + 1e-8 = 0.5 + 1e-8;
    // p = 0.999 - (0.01 / 0.1) * 0.05 / (0.5 + 1e-8) = 0.9890000002.
    const steps = threeSteps({ type: 'adamw', lr: 0.01, weightDecay: 0.1 });
    expect(steps[0][0]).toBeCloseTo(0.999 - (0.01 / 0.1) * (0.05 / (Math.sqrt(0.00025) / Math.sqrt(0.001) + 1e-8)), 15);
    expectSteps(
      steps,
      [
        [0.9890000002, -2.0079999999],
        [0.9853476298705847, -2.015313796170284],
        [0.9777811663376385, -2.0144063130745424],
      ],
      1e-14,
    );
  });

  test("the defaults are torch's: betas (0.9, 0.999), eps 1e-8, weight decay 1e-2", () => {
    expect(threeSteps({ type: 'adamw', lr: 0.01 })).toEqual(
      threeSteps({ type: 'adamw', lr: 0.01, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 1e-2 }),
    );
  });

  test('float32 (values from torch 1.13, within 1 ulp)', () => {
    const steps = threeSteps({ type: 'adamw', lr: 0.01, weightDecay: 0.1 }, 'float32');
    expectSteps(
      steps,
      [
        [0.9890000224113464, -2.008000135421753],
        [0.9853476881980896, -2.0153138637542725],
        [0.9777812361717224, -2.014406442642212],
      ],
      2 ** -23,
    );
  });
});

describe('parameter groups and missing gradients', () => {
  test('groups override lr / momentum / weight decay; parameters outside every group stay put', () => {
    const a = parameter('a', [1], [1]);
    const b = parameter('b', [1], [1]);
    const c = parameter('c', [1], [1]);
    const optimizer = new ReferenceOptimizer(
      {
        type: 'sgd',
        lr: 0.1,
        momentum: 0.9,
        weightDecay: 0.5,
        groups: [{ params: ['a'] }, { params: ['b'], lr: 0.01, momentum: 0, weightDecay: 0 }],
      },
      [a, b, c],
      'float64',
      {},
    );
    const grads = new Map([
      ['a', gradient([1])],
      ['b', gradient([1])],
      ['c', gradient([1])],
    ]);
    optimizer.step(grads);
    optimizer.step(grads);
    // a: d1 = 1 + 0.5 = 1.5, p = 0.85; d2 = 1 + 0.425 = 1.425, buf = 1.35 + 1.425 = 2.775, p = 0.85 - 0.2775 = 0.5725
    expect(a.data[0]).toBeCloseTo(0.5725, 14);
    expect(b.data[0]).toBeCloseTo(0.98, 14);
    expect(c.data[0]).toBe(1);
    expect(optimizer.steps).toBe(2);
  });

  test('a parameter without a gradient is skipped: no decay, and its momentum buffer waits', () => {
    const p = parameter('p', [1], [1]);
    const optimizer = new ReferenceOptimizer({ type: 'sgd', lr: 0.1, momentum: 0.9, weightDecay: 0.1 }, [p], 'float64', {});
    optimizer.step(new Map([['p', gradient([1])]])); // d = 1.1, buf = 1.1, p = 0.89
    optimizer.step(new Map());
    expect(p.data[0]).toBeCloseTo(0.89, 15);
    optimizer.step(new Map([['p', gradient([1])]])); // d = 1.089, buf = 0.99 + 1.089 = 2.079, p = 0.89 - 0.2079
    expect(p.data[0]).toBeCloseTo(0.6821, 14);
  });

  test('a parameter that is not trainable is never updated, even when a group names it', () => {
    const constant = parameter('s', [1], [2], 'float64', false);
    const optimizer = new ReferenceOptimizer(
      { type: 'sgd', lr: 0.1, weightDecay: 0.5, groups: [{ params: ['s'] }] },
      [constant],
      'float64',
      {},
    );
    optimizer.step(new Map([['s', gradient([1])]]));
    expect(constant.data[0]).toBe(2);
  });
});

function gradMult(partial: Partial<GradMult> & Pick<GradMult, 'shape'>): GradMult {
  const outChannels = partial.shape[0];
  return {
    param: 'w',
    base: new Float64Array(outChannels).fill(1),
    centre: new Float64Array(outChannels),
    identity: false,
    groups: 1,
    ...partial,
  };
}

/** M[o, i, p, q] of a row-major [O, I, kH, kW] tensor. */
function at(m: Values, shape: readonly number[], o: number, i: number, p: number, q: number): number {
  return m[((o * shape[1] + i) * shape[2] + p) * shape[3] + q];
}

describe('GradMult expansion, element by element', () => {
  test('groups 1 with identity: base everywhere, + centre at the kernel centre, + 1 on the diagonal centre', () => {
    const shape = [3, 3, 3, 3] as const;
    const m = fullGradMult(
      gradMult({ shape, base: Float64Array.from([2, -1, 0.5]), centre: Float64Array.from([0.25, 3, 1]), identity: true }),
      'float64',
    );
    // off-centre: base[o]
    expect(at(m, shape, 0, 1, 0, 0)).toBe(2);
    expect(at(m, shape, 1, 2, 2, 1)).toBe(-1);
    expect(at(m, shape, 2, 0, 1, 0)).toBe(0.5);
    expect(at(m, shape, 2, 2, 0, 1)).toBe(0.5);
    // centre, off the diagonal: base[o] + centre[o]
    expect(at(m, shape, 0, 1, 1, 1)).toBe(2.25);
    expect(at(m, shape, 1, 0, 1, 1)).toBe(2);
    expect(at(m, shape, 2, 1, 1, 1)).toBe(1.5);
    // centre, on the diagonal: base[o] + centre[o] + 1
    expect(at(m, shape, 0, 0, 1, 1)).toBe(3.25);
    expect(at(m, shape, 1, 1, 1, 1)).toBe(3);
    expect(at(m, shape, 2, 2, 1, 1)).toBe(2.5);
    // and nothing else deviates from base[o]
    let centres = 0;
    for (let o = 0; o < 3; o++)
      for (let i = 0; i < 3; i++)
        for (let p = 0; p < 3; p++)
          for (let q = 0; q < 3; q++) {
            if (p === 1 && q === 1) centres++;
            else expect(at(m, shape, o, i, p, q)).toBe([2, -1, 0.5][o]);
          }
    expect(centres).toBe(9);
  });

  test('without identity the diagonal centre is base + centre', () => {
    const shape = [2, 2, 3, 3] as const;
    const m = fullGradMult(gradMult({ shape, base: Float64Array.from([2, 3]), centre: Float64Array.from([1, 1]) }), 'float64');
    expect(at(m, shape, 0, 0, 1, 1)).toBe(3);
    expect(at(m, shape, 1, 1, 1, 1)).toBe(4);
    expect(at(m, shape, 1, 1, 0, 1)).toBe(3);
  });

  test('depthwise (groups = channels): the + 1 goes to [o, 0, centre] for every o', () => {
    const shape = [4, 1, 3, 3] as const;
    const m = fullGradMult(
      gradMult({ shape, base: Float64Array.from([1, 2, 3, 4]), centre: Float64Array.from([10, 20, 30, 40]), identity: true, groups: 4 }),
      'float64',
    );
    for (let o = 0; o < 4; o++) {
      expect(at(m, shape, o, 0, 1, 1)).toBe((o + 1) * 11 + 1);
      expect(at(m, shape, o, 0, 0, 0)).toBe(o + 1);
    }
  });

  test('groups 2 (2 input channels per group): the + 1 goes to i == o % 2', () => {
    const shape = [4, 2, 3, 3] as const;
    const m = fullGradMult(
      gradMult({ shape, base: new Float64Array(4).fill(1), centre: new Float64Array(4).fill(2), identity: true, groups: 2 }),
      'float64',
    );
    const diagonal = [
      [4, 3],
      [3, 4],
      [4, 3],
      [3, 4],
    ];
    for (let o = 0; o < 4; o++) for (let i = 0; i < 2; i++) expect([o, i, at(m, shape, o, i, 1, 1)]).toEqual([o, i, diagonal[o][i]]);
    expect(at(m, shape, 3, 1, 2, 2)).toBe(1);
  });

  test('a 1x1 kernel: its only position is the centre', () => {
    const shape = [2, 2, 1, 1] as const;
    const m = fullGradMult(
      gradMult({ shape, base: Float64Array.from([1, 2]), centre: Float64Array.from([0.5, 0.5]), identity: true }),
      'float64',
    );
    expect(Array.from(m)).toEqual([2.5, 1.5, 2.5, 3.5]);
  });

  test('float32: summed in float32, base + centre first, then + 1', () => {
    const shape = [1, 1, 3, 3] as const;
    const m = fullGradMult(
      gradMult({ shape, base: Float64Array.from([0.1]), centre: Float64Array.from([0.2]), identity: true }),
      'float32',
    );
    expect(m).toBeInstanceOf(Float32Array);
    const f = Math.fround;
    expect(m[4]).toBe(f(f(f(0.1) + f(0.2)) + 1));
    expect(m[0]).toBe(f(0.1));
  });

  test('inconsistent GradMults are refused', () => {
    expect(() => fullGradMult(gradMult({ shape: [2, 2, 3, 3], base: new Float64Array(3) }), 'float64')).toThrow(
      /base must be a Float64Array of 2 values/,
    );
    expect(() => fullGradMult(gradMult({ shape: [2, 3, 3, 3], identity: true }), 'float64')).toThrow(
      /identity needs as many output as input channels/,
    );
    expect(() => fullGradMult(gradMult({ shape: [3, 1, 3, 3], groups: 2 }), 'float64')).toThrow(
      /groups must be a positive integer dividing 3/,
    );
    expect(() => fullGradMult(gradMult({ shape: [2, 2, 3, 3], centre: Float64Array.from([1, NaN]) }), 'float64')).toThrow(/non-finite/);
  });
});

describe('RepOptimizer steps with a GradMult', () => {
  // M of a [2, 2, 3, 3] weight with base [2, 0.5], centre [1, 3], identity:
  // o = 0: off-centre 2, centre 3, diagonal centre 4; o = 1: off-centre 0.5, centre 3.5, diagonal centre 4.5.
  const shape = [2, 2, 3, 3] as const;
  const mults: GradMult = {
    param: 'w',
    shape,
    base: Float64Array.from([2, 0.5]),
    centre: Float64Array.from([1, 3]),
    identity: true,
    groups: 1,
  };
  const probes: [string, number, number][] = [
    ['[0,0,1,1] (M = 4)', ((0 * 2 + 0) * 3 + 1) * 3 + 1, 4],
    ['[0,1,1,1] (M = 3)', ((0 * 2 + 1) * 3 + 1) * 3 + 1, 3],
    ['[0,0,0,0] (M = 2)', 0, 2],
    ['[1,0,1,1] (M = 3.5)', ((1 * 2 + 0) * 3 + 1) * 3 + 1, 3.5],
    ['[1,1,1,1] (M = 4.5)', ((1 * 2 + 1) * 3 + 1) * 3 + 1, 4.5],
    ['[1,1,2,0] (M = 0.5)', ((1 * 2 + 1) * 3 + 2) * 3 + 0, 0.5],
  ];

  function run(spec: OptimizerSpec, gradients: number[]): Values {
    const w = parameter('w', [...shape], new Array(36).fill(1));
    const optimizer = new ReferenceOptimizer(spec, [w], 'float64', {});
    for (const g of gradients) optimizer.step(new Map([['w', gradient(new Array(36).fill(g))]]));
    return w.data;
  }

  test('RepOptSGD: d = g ⊙ M, then + wd * p, then momentum (lr 0.1, momentum 0.9, wd 0.01; g = 0.5 then -1)', () => {
    // For M = 4: step 1: d = 2 + 0.01 = 2.01, buf = d, p = 0.799; step 2: d = -4 + 0.00799 = -3.99201,
    // buf = 1.809 - 3.99201 = -2.18301, p = 0.799 + 0.218301 = 1.017301 (the others alike; torch 1.13 agrees).
    const expected: Record<number, number> = { 4: 1.017301, 3: 1.012251, 2: 1.007201, 3.5: 1.014776, 4.5: 1.019826, 0.5: 0.999626 };
    const compact = run({ type: 'sgd', lr: 0.1, momentum: 0.9, weightDecay: 0.01, gradMults: [mults] }, [0.5, -1]);
    const full = run({ type: 'sgd', lr: 0.1, momentum: 0.9, weightDecay: 0.01, gradMults: [mults], gradMultStorage: 'full' }, [0.5, -1]);
    for (const [where, index, m] of probes) {
      expect([where, compact[index]]).toEqual([where, expect.closeTo(expected[m], 14)]);
      expect(full[index]).toBe(compact[index]);
    }
  });

  test('RepOptAdamW (official): moments of g ⊙ M, update with m ⊙ M (lr 0.01, wd 0.1; g = 0.5 then -1)', () => {
    const result = run({ type: 'adamw', lr: 0.01, weightDecay: 0.1, gradMults: [mults] }, [0.5, -1]);
    for (const [where, index, M] of probes) {
      // Scalar hand computation for one element.
      let p = 1;
      let m = 0;
      let v = 0;
      [0.5, -1].forEach((g, k) => {
        const step = k + 1;
        p *= 1 - 0.01 * 0.1;
        const gm = g * M;
        m = 0.9 * m + 0.1 * gm;
        v = 0.999 * v + 0.001 * gm * gm;
        const denom = Math.sqrt(v) / Math.sqrt(1 - 0.999 ** step) + 1e-8;
        p -= (0.01 / (1 - 0.9 ** step)) * ((m * M) / denom);
      });
      expect([where, result[index]]).toEqual([where, expect.closeTo(p, 14)]);
    }
    // First step, M = 4: the move is lr * M (not lr, as plain Adam's would be): p = 0.999 - 0.01 * 4 (almost).
    expect(result.length).toBe(36);
    const oneStep = run({ type: 'adamw', lr: 0.01, weightDecay: 0.1, gradMults: [mults] }, [0.5]);
    expect(oneStep[4]).toBeCloseTo(0.999 - 0.04, 8);
  });
});

describe('optimizer spec checks', () => {
  const spec: NetworkSpec = {
    mode: 'csla',
    inChannels: 3,
    numClasses: 4,
    blocks: [
      { name: 'stage0', inChannels: 3, outChannels: 4, stride: 2 },
      { name: 'stage1.0', inChannels: 4, outChannels: 4, stride: 1 },
    ],
  };
  const net = createReferenceNetwork(spec);
  const conv: GradMult = {
    param: 'stage1.0.conv.weight',
    shape: [4, 4, 3, 3],
    base: new Float64Array(4).fill(1),
    centre: new Float64Array(4).fill(1),
    identity: true,
    groups: 1,
  };
  const cases: [string, OptimizerSpec, RegExp][] = [
    ['negative lr', { type: 'sgd', lr: -0.1 }, /invalid learning rate -0.1/],
    [
      'negative lr in a group',
      { type: 'sgd', lr: 0.1, groups: [{ params: ['linear.bias'], lr: -1 }] },
      /group 0: invalid learning rate -1/,
    ],
    ['negative momentum', { type: 'sgd', lr: 0.1, momentum: -0.5 }, /invalid momentum/],
    ['negative weight decay', { type: 'adamw', lr: 0.1, weightDecay: -1 }, /invalid weight decay/],
    ['nesterov without momentum', { type: 'sgd', lr: 0.1, nesterov: true }, /nesterov momentum requires a momentum > 0 and zero dampening/],
    ['nesterov with dampening', { type: 'sgd', lr: 0.1, momentum: 0.9, dampening: 0.1, nesterov: true }, /nesterov momentum requires/],
    [
      'nesterov in a group whose momentum is 0',
      { type: 'sgd', lr: 0.1, momentum: 0.9, nesterov: true, groups: [{ params: ['linear.bias'], momentum: 0 }] },
      /group 0: nesterov/,
    ],
    [
      'an unknown parameter in a group',
      { type: 'sgd', lr: 0.1, groups: [{ params: ['linear.bias', 'stage7.conv.weight'] }] },
      /group 0: unknown parameter\(s\) 'stage7.conv.weight'/,
    ],
    [
      'a parameter in two groups',
      { type: 'sgd', lr: 0.1, groups: [{ params: ['linear.bias'] }, { params: ['linear.weight', 'linear.bias'] }] },
      /'linear.bias' appears in more than one group \(groups 0 and 1\)/,
    ],
    ['no groups', { type: 'sgd', lr: 0.1, groups: [] }, /groups must be a non-empty array/],
    ['an unknown type', { type: 'rmsprop' as 'sgd', lr: 0.1 }, /type must be 'sgd' or 'adamw'/],
    ['betas for SGD', { type: 'sgd', lr: 0.1, betas: [0.9, 0.99] }, /'betas' is an AdamW option/],
    ['momentum for AdamW', { type: 'adamw', lr: 0.1, momentum: 0.9 }, /'momentum' is an SGD option/],
    ['a beta of 1', { type: 'adamw', lr: 0.1, betas: [0.9, 1] }, /betas must be two numbers in \[0, 1\)/],
    ['a non-finite lr', { type: 'sgd', lr: NaN }, /learning rate must be a finite number/],
    ['an unknown storage', { type: 'sgd', lr: 0.1, gradMultStorage: 'sparse' as 'full' }, /gradMultStorage/],
    [
      'a GradMult for an unknown parameter',
      { type: 'sgd', lr: 0.1, gradMults: [{ ...conv, param: 'stage1.0.conv_3x3.weight' }] },
      /not a parameter of the network/,
    ],
    [
      'a GradMult for a constant',
      { type: 'sgd', lr: 0.1, gradMults: [{ ...conv, param: 'stage1.0.scale_conv.weight' }] },
      /constant \(not trainable\)/,
    ],
    [
      'a GradMult of another shape',
      { type: 'sgd', lr: 0.1, gradMults: [{ ...conv, param: 'stage0.conv.weight' }] },
      /has shape \[4, 4, 3, 3\] but the parameter has shape \[4, 3, 3, 3\]/,
    ],
    [
      'a grouped GradMult for a plain conv',
      { type: 'sgd', lr: 0.1, gradMults: [{ ...conv, identity: false, groups: 2 }] },
      /groups 2, but the network's convolutions have groups 1/,
    ],
    ['two GradMults for one parameter', { type: 'sgd', lr: 0.1, gradMults: [conv, conv] }, /two GradMults for 'stage1.0.conv.weight'/],
  ];
  test.each(cases)('%s', (_name, optimizerSpec, message) => {
    expect(() => net.createOptimizer(optimizerSpec)).toThrow(message);
  });

  test('a valid spec is kept as given, with no steps yet', () => {
    const optimizerSpec: OptimizerSpec = { type: 'sgd', lr: 0.1, momentum: 0.9, nesterov: true, gradMults: [conv] };
    const optimizer = net.createOptimizer(optimizerSpec);
    expect(optimizer.spec).toBe(optimizerSpec);
    expect(optimizer.steps).toBe(0);
  });
});

describe('RepOptimizer on networks', () => {
  test('trainStep with a GradMult applies p -= lr * (g ⊙ M) to the gradients of the same state', () => {
    const spec: NetworkSpec = {
      mode: 'target',
      inChannels: 2,
      numClasses: 3,
      blocks: [{ name: 'stage0', inChannels: 2, outChannels: 2, stride: 1 }],
    };
    const net = createReferenceNetwork(spec, { precision: 'float64', seed: 5 });
    const twin = createReferenceNetwork(spec, { precision: 'float64' });
    const random = new Random(6);
    const input = { shape: [4, 2, 8, 8], data: Float64Array.from({ length: 4 * 2 * 64 }, () => random.uniform(-1, 1)) };
    const labels = new Int32Array([0, 1, 2, 1]);
    const gm: GradMult = {
      param: 'stage0.conv.weight',
      shape: [2, 2, 3, 3],
      base: Float64Array.from([1.5, -0.5]),
      centre: Float64Array.from([2, 0.25]),
      identity: true,
      groups: 1,
    };
    const m = fullGradMult(gm, 'float64');
    const optimizer = net.createOptimizer({ type: 'sgd', lr: 0.2, gradMults: [gm] });
    for (let step = 0; step < 2; step++) {
      twin.loadStateDict(net.stateDict());
      const { gradients } = twin.computeGradients(input, labels);
      const before = net.stateDict();
      net.trainStep(optimizer, input, labels);
      const after = net.stateDict();
      for (const [name, g] of gradients) {
        const p0 = before.get(name)?.data ?? new Float64Array(0);
        const p1 = after.get(name)?.data ?? new Float64Array(0);
        for (let i = 0; i < p0.length; i++) {
          const multiplier = name === gm.param ? m[i] : 1;
          expect(p1[i]).toBeCloseTo(p0[i] - 0.2 * g.data[i] * multiplier, 14);
        }
      }
    }
  });
});
