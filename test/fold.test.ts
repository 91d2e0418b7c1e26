import type { Backend } from '../lib/backend';
import { foldRepVGG, foldTarget, foldToDeploy, deploySpec } from '../lib/fold';
import { nativeBackend } from '../lib/native-backend';
import { referenceBackend } from '../lib/reference';
import { batches, relativeError, specOf } from './equivalence-helpers';
import { thrown, useTestThreads } from './helpers';

beforeAll(useTestThreads);

describe.each([
  ['native', nativeBackend],
  ['reference', referenceBackend],
] as [string, Backend][])('RepVGG fold (%s)', (_, backend) => {
  test('the folded deploy network equals the trained multi-branch network in eval mode', () => {
    const repvgg = backend.createNetwork(specOf('repvgg'), { seed: 5 });
    const opt = repvgg.createOptimizer({ type: 'sgd', lr: 0.05, momentum: 0.9 });
    for (const { x, y } of batches(5, 'float32')) repvgg.trainStep(opt, x, y); // BN statistics and weights move
    const deploy = backend.createNetwork(deploySpec(specOf('repvgg')), { seed: 6 });
    deploy.loadStateDict(foldRepVGG(specOf('repvgg'), repvgg.stateDict()));
    const probe = batches(1, 'float32', 99)[0].x;
    const expected = repvgg.forward(probe, 'eval').data;
    expect(relativeError(deploy.forward(probe, 'eval').data, expected)).toBeLessThan(1e-5);
    expect(deploy.parameters().every((p) => !p.name.includes('bn'))).toBe(true);
  });

  test('a target network (VGG / RepOpt-VGG) folds its BN into the deploy network', () => {
    const target = backend.createNetwork(specOf('target'), { seed: 7 });
    const opt = target.createOptimizer({ type: 'sgd', lr: 0.05, momentum: 0.9 });
    for (const { x, y } of batches(5, 'float32')) target.trainStep(opt, x, y);
    const folded = foldToDeploy(specOf('target'), target.stateDict());
    expect(folded.spec.mode).toBe('deploy');
    const deploy = backend.createNetwork(folded.spec, { seed: 8 });
    deploy.loadStateDict(folded.state);
    const probe = batches(1, 'float32', 98)[0].x;
    expect(relativeError(deploy.forward(probe, 'eval').data, target.forward(probe, 'eval').data)).toBeLessThan(1e-5);
  });
});

test('each fold takes its own mode', () => {
  expect(thrown(() => foldRepVGG(specOf('target'), new Map())).message).toMatch(/foldRepVGG folds repvgg networks, this one is 'target'/);
  expect(thrown(() => foldTarget(specOf('repvgg'), new Map())).message).toMatch(/foldTarget folds target networks, this one is 'repvgg'/);
  expect(thrown(() => deploySpec(specOf('hs'))).message).toMatch(/repvgg and target networks fold, this one is 'hs'/);
  expect(thrown(() => foldRepVGG(specOf('repvgg'), new Map())).message).toMatch(/no 'stage0\.conv_3x3\.weight'/);
});
