// The theorem (METHOD.md §2): a CSLA network trained with plain SGD and the target network trained
// with RepOptSGD from the init rule give the same outputs and equivalent weights, step after step.
import type { Backend } from '../lib/backend';
import { nativeBackend } from '../lib/native-backend';
import { referenceBackend } from '../lib/reference';
import type { Precision } from '../lib/spec';
import { batches, cslaAndTarget, equivalentKernels, relativeError, repOptSpec, SGD } from './equivalence-helpers';
import { useTestThreads } from './helpers';

beforeAll(useTestThreads);

const cases: [string, Precision, Backend, number, number][] = [
  // backend, precision, steps, tolerance (relative)
  ['native', 'float64', nativeBackend, 25, 1e-12],
  ['native', 'float32', nativeBackend, 25, 1e-5],
  ['reference', 'float64', referenceBackend, 20, 1e-12],
  ['reference', 'float32', referenceBackend, 20, 1e-5],
];

describe.each(cases)('CSLA + SGD == target + RepOptSGD (%s, %s)', (_, precision, backend, steps, tolerance) => {
  test(`same losses, outputs and equivalent kernels over ${steps} steps`, () => {
    const { csla, target, convs } = cslaAndTarget(backend, precision);
    const data = batches(steps, precision);
    // The init rule makes the two networks equal before any step.
    expect(relativeError(target.forward(data[0].x, 'eval').data, csla.forward(data[0].x, 'eval').data)).toBeLessThan(tolerance);

    const plain = csla.createOptimizer(SGD);
    const repopt = target.createOptimizer(repOptSpec(SGD, convs));
    let worstLoss = 0;
    for (const { x, y } of data) {
      const lossCsla = csla.trainStep(plain, x, y, { labelSmoothing: 0.1 });
      const lossTarget = target.trainStep(repopt, x, y, { labelSmoothing: 0.1 });
      worstLoss = Math.max(worstLoss, Math.abs(lossCsla - lossTarget) / Math.abs(lossCsla));
    }
    expect(worstLoss).toBeLessThan(tolerance);
    expect(repopt.steps).toBe(steps);

    const kernels = equivalentKernels(csla, convs);
    const targetState = target.stateDict();
    for (const [name, kernel] of kernels) expect(relativeError(targetState.get(name)!.data, kernel)).toBeLessThan(tolerance);
    for (const mode of ['train', 'eval'] as const) {
      expect(relativeError(target.forward(data[0].x, mode).data, csla.forward(data[0].x, mode).data)).toBeLessThan(tolerance);
    }
    // Training really moved the weights (the test would be vacuous otherwise).
    const initial = cslaAndTarget(backend, precision).target.stateDict();
    expect(relativeError(targetState.get('stage1.1.conv.weight')!.data, initial.get('stage1.1.conv.weight')!.data)).toBeGreaterThan(1e-3);
  });
});
