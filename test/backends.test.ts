// Native (libtorch) vs reference (pure TypeScript): the same initial weights and batches give the
// same losses and parameters, for every block mode and optimizer.
import type { OptimizerSpec } from '../lib/backend';
import { nativeBackend } from '../lib/native-backend';
import { referenceBackend } from '../lib/reference';
import type { BlockMode, Precision } from '../lib/spec';
import { batches, cslaScales, relativeError, repConvs, repOptSpec, specOf } from './equivalence-helpers';
import { useTestThreads } from './helpers';

beforeAll(useTestThreads);

const convs = repConvs(cslaScales());
const SGD: OptimizerSpec = { type: 'sgd', lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 1e-3 };
const ADAMW: OptimizerSpec = { type: 'adamw', lr: 2e-3, weightDecay: 1e-2 };

const cases: [BlockMode, string, OptimizerSpec][] = [
  ['target', 'sgd', SGD],
  ['target', 'repopt-sgd', repOptSpec(SGD, convs)],
  ['target', 'adamw', ADAMW],
  [
    'target',
    'repopt-adamw',
    repOptSpec(
      ADAMW,
      convs.map((c) => ({ ...c })),
    ),
  ],
  ['csla', 'sgd', SGD],
  ['csla', 'adamw', ADAMW],
  ['hs', 'sgd', SGD],
  ['hs', 'adamw', ADAMW],
  ['repvgg', 'sgd', SGD],
  ['repvgg', 'adamw', ADAMW],
];

const tolerances: [Precision, number][] = [
  ['float32', 1e-4],
  ['float64', 1e-9],
];

describe.each(tolerances)('native == reference (%s)', (precision, tolerance) => {
  test.each(cases)('%s blocks, %s: 10 steps', (mode, _, spec) => {
    const nat = nativeBackend.createNetwork(specOf(mode), { precision, seed: 8 });
    const ref = referenceBackend.createNetwork(specOf(mode), { precision, seed: 8 });
    ref.loadStateDict(nat.stateDict());
    const optNat = nat.createOptimizer(spec);
    const optRef = ref.createOptimizer(spec);
    for (const { x, y } of batches(10, precision, 31)) {
      const a = nat.trainStep(optNat, x, y, { labelSmoothing: 0.1 });
      const b = ref.trainStep(optRef, x, y, { labelSmoothing: 0.1 });
      expect(Math.abs(a - b) / Math.abs(b)).toBeLessThan(tolerance);
    }
    const stateNat = nat.stateDict();
    const stateRef = ref.stateDict();
    expect([...stateNat.keys()]).toEqual([...stateRef.keys()]);
    for (const [name, t] of stateRef) expect([name, relativeError(stateNat.get(name)!.data, t.data) < tolerance]).toEqual([name, true]);
    const probe = batches(1, precision, 77)[0].x;
    expect(relativeError(nat.forward(probe, 'eval').data, ref.forward(probe, 'eval').data)).toBeLessThan(tolerance);
  });
});
