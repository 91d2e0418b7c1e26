// Two details checked against the official code: the weight-decay grouping of its set_weight_decay
// (optimizer.py) and the lr of timm's CosineLRScheduler as its build_scheduler (lr_scheduler.py) and
// training loop use it. The expected values are written out here from those sources, not from lib/.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { train } from '../lib';
import { networkSpec } from '../lib/configs';
import { parameterInfo } from '../lib/spec';
import { officialParamGroups } from '../lib/train/param-groups';
import { lrAt } from '../lib/train/schedule';
import { useTestThreads } from './helpers';

beforeAll(useTestThreads);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'repopt-fidelity-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('weight decay as the official set_weight_decay', () => {
  // The official rule over RepOptVGG-B1(mode='repvgg').named_parameters(): a name containing
  // 'identity.weight' is decayed; else a 1-D parameter or a '.bias' is not; else it is. So the conv
  // weights, the 23 bn_identity weights (blocks keeping width and resolution) and linear.weight.
  const OFFICIAL_B1_REPVGG_DECAYED = `
    stage0.conv_3x3.weight stage0.conv_1x1.weight
    stage1.0.conv_3x3.weight stage1.0.conv_1x1.weight
    stage1.1.conv_3x3.weight stage1.1.conv_1x1.weight stage1.1.bn_identity.weight
    stage1.2.conv_3x3.weight stage1.2.conv_1x1.weight stage1.2.bn_identity.weight
    stage1.3.conv_3x3.weight stage1.3.conv_1x1.weight stage1.3.bn_identity.weight
    stage2.0.conv_3x3.weight stage2.0.conv_1x1.weight
    stage2.1.conv_3x3.weight stage2.1.conv_1x1.weight stage2.1.bn_identity.weight
    stage2.2.conv_3x3.weight stage2.2.conv_1x1.weight stage2.2.bn_identity.weight
    stage2.3.conv_3x3.weight stage2.3.conv_1x1.weight stage2.3.bn_identity.weight
    stage2.4.conv_3x3.weight stage2.4.conv_1x1.weight stage2.4.bn_identity.weight
    stage2.5.conv_3x3.weight stage2.5.conv_1x1.weight stage2.5.bn_identity.weight
    stage3.0.conv_3x3.weight stage3.0.conv_1x1.weight
    stage3.1.conv_3x3.weight stage3.1.conv_1x1.weight stage3.1.bn_identity.weight
    stage3.2.conv_3x3.weight stage3.2.conv_1x1.weight stage3.2.bn_identity.weight
    stage3.3.conv_3x3.weight stage3.3.conv_1x1.weight stage3.3.bn_identity.weight
    stage3.4.conv_3x3.weight stage3.4.conv_1x1.weight stage3.4.bn_identity.weight
    stage3.5.conv_3x3.weight stage3.5.conv_1x1.weight stage3.5.bn_identity.weight
    stage3.6.conv_3x3.weight stage3.6.conv_1x1.weight stage3.6.bn_identity.weight
    stage3.7.conv_3x3.weight stage3.7.conv_1x1.weight stage3.7.bn_identity.weight
    stage3.8.conv_3x3.weight stage3.8.conv_1x1.weight stage3.8.bn_identity.weight
    stage3.9.conv_3x3.weight stage3.9.conv_1x1.weight stage3.9.bn_identity.weight
    stage3.10.conv_3x3.weight stage3.10.conv_1x1.weight stage3.10.bn_identity.weight
    stage3.11.conv_3x3.weight stage3.11.conv_1x1.weight stage3.11.bn_identity.weight
    stage3.12.conv_3x3.weight stage3.12.conv_1x1.weight stage3.12.bn_identity.weight
    stage3.13.conv_3x3.weight stage3.13.conv_1x1.weight stage3.13.bn_identity.weight
    stage3.14.conv_3x3.weight stage3.14.conv_1x1.weight stage3.14.bn_identity.weight
    stage3.15.conv_3x3.weight stage3.15.conv_1x1.weight stage3.15.bn_identity.weight
    stage4.0.conv_3x3.weight stage4.0.conv_1x1.weight
    linear.weight`
    .trim()
    .split(/\s+/);

  test('RepVGG-B1 baseline: the 80 decayed tensors of the official rule, bn_identity weights included', () => {
    const params = parameterInfo(networkSpec('RepOpt-VGG-B1', { mode: 'repvgg' }));
    const [decay, none] = officialParamGroups(params, 1e-4);
    expect(OFFICIAL_B1_REPVGG_DECAYED).toHaveLength(80);
    expect(decay).toEqual({ params: OFFICIAL_B1_REPVGG_DECAYED, weightDecay: 1e-4 });
    expect(decay.params.filter((n) => n.endsWith('bn_identity.weight'))).toHaveLength(23);
    // Everything else (BN weights and biases of the 3x3 and 1x1 branches, bn_identity.bias, linear.bias) undecayed.
    expect(none.weightDecay).toBe(0);
    expect(new Set([...decay.params, ...none.params]).size).toBe(params.length);
    expect(none.params).toContain('stage1.1.bn_identity.bias');
    expect(none.params).toContain('stage1.1.bn_3x3.weight');
    expect(none.params).toContain('linear.bias');
  });

  test('RepOpt-VGG-B1 target: conv weights and linear.weight decayed, BN not', () => {
    const [decay, none] = officialParamGroups(parameterInfo(networkSpec('RepOpt-VGG-B1', { mode: 'target' })), 1e-4);
    expect(decay.params).toHaveLength(28 + 1);
    expect(decay.params.every((n) => n.endsWith('.conv.weight') || n === 'linear.weight')).toBe(true);
    expect(none.params).toHaveLength(28 * 2 + 1);
  });
});

describe('lr as timm CosineLRScheduler in the official loop', () => {
  // build_scheduler: CosineLRScheduler(t_initial=T, lr_min, warmup_lr_init, warmup_t=W, cycle_limit=1,
  // t_in_epochs=False), warmup_prefix left False. timm's _get_lr(t):
  //   t < W:  warmup_lr_init + t * (peak - warmup_lr_init) / W
  //   t < T:  lr_min + 0.5 * (peak - lr_min) * (1 + cos(pi * t / T))     (t itself: no '- W')
  //   else:   lr_min
  // The loop calls step_update(i) after iteration i's optimizer step, so iteration i runs with
  // _get_lr(i - 1), and iteration 0 with the lr set at construction, _get_lr(0).
  // peak = 0.1 * 128 / 256 = 0.05; T = 110; W = 10; warmup_lr_init = 0.001; lr_min = 0.0001.
  const s = { baseLr: 0.1, batchSize: 128, totalSteps: 110, warmupSteps: 10, warmupInitLr: 0.001, minLr: 0.0001 };
  const cosine = (t: number) => 0.0001 + 0.5 * (0.05 - 0.0001) * (1 + Math.cos((Math.PI * t) / 110));

  test.each([
    [0, 0.001], // construction: warmup_lr_init
    [1, 0.001], // _get_lr(0)
    [6, 0.001 + (5 * (0.05 - 0.001)) / 10], // _get_lr(5) = 0.0255
    [10, 0.001 + (9 * (0.05 - 0.001)) / 10], // _get_lr(9), the last warm-up value (0.0451)
    [11, cosine(10)], // _get_lr(10): the cosine at 10/110, not at its start (0.0489)
    [56, 0.0001 + 0.5 * (0.05 - 0.0001)], // _get_lr(55): half-way at 55/110 (0.02505)
    [110, cosine(109)], // the last iteration
    [111, 0.0001], // past t_initial: lr_min
  ])('iteration %i runs with lr %f', (step, lr) => {
    expect(Math.abs(lrAt(step, s) - lr)).toBeLessThanOrEqual(1e-15);
  });

  test('without warm-up: the peak for iterations 0 and 1, then the cosine from step 1', () => {
    const plain = { baseLr: 0.1, batchSize: 128, totalSteps: 110, warmupSteps: 0 };
    expect(lrAt(0, plain)).toBe(0.05);
    expect(lrAt(1, plain)).toBe(0.05);
    expect(Math.abs(lrAt(2, plain) - 0.025 * (1 + Math.cos(Math.PI / 110)))).toBeLessThanOrEqual(1e-15);
  });

  test('a training run uses it: the lr of each step event, warm-up epochs counted in steps', async () => {
    // 256 images / batch 64 = 4 steps per epoch, 3 epochs: T = 12, W = 4, peak = 0.2 * 64 / 256 = 0.05.
    const getLr = (t: number) => (t < 4 ? (t * 0.05) / 4 : 0.025 * (1 + Math.cos((Math.PI * t) / 12)));
    const run = train({
      arch: 'RepOpt-VGG-XS',
      mode: 'vgg',
      data: { kind: 'fashion-mnist', trainSubset: 256, testSubset: 64 },
      epochs: 3,
      warmupEpochs: 1,
      batchSize: 64,
      lr: 0.2,
      logEvery: 1,
      threads: Number(process.env.REPOPT_TEST_THREADS ?? 2),
      outDir: path.join(tmp, 'lr'),
    });
    const seen: Array<[number, number]> = [];
    run.on('step', (e) => seen.push([e.step, e.lr]));
    await run.result;
    // Step event n follows iteration n - 1.
    expect(seen.map(([step]) => step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    for (const [step, lr] of seen) expect(Math.abs(lr - getLr(Math.max(0, step - 2)))).toBeLessThanOrEqual(1e-15);
  }, 120_000);
});
