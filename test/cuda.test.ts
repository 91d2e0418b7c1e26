// The CUDA checks of bench/cuda/checks.js (device vs CPU, with tolerances). Without a visible GPU the
// CUDA run is skipped, and the same checks run with the CPU as the "device", so the checking code
// itself is exercised everywhere.
import { info } from '../lib/runtime';
import { useTestThreads } from './helpers';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { runChecks } = require('../bench/cuda/checks.js') as {
  runChecks(device: string): Promise<{ check: string; pass: boolean; value: unknown; limit: unknown }[]>;
};

beforeAll(useTestThreads);

const cuda = info().cuda;
const skipReason = 'CUDA is not available here (no GPU, or a CPU-only libtorch); bench/cuda/run.sh runs these on a GPU machine';

describe('CUDA checks', () => {
  (cuda ? test : test.skip)(cuda ? 'on cuda:0, against the CPU' : `on cuda:0 — skipped: ${skipReason}`, async () => {
    const results = await runChecks('cuda');
    for (const r of results) expect({ check: r.check, pass: r.pass }).toEqual({ check: r.check, pass: true });
    expect(results.length).toBe(9);
  });

  test('the same checks with the CPU as the device', async () => {
    const results = await runChecks('cpu');
    for (const r of results)
      expect({ check: r.check, pass: r.pass, value: r.value }).toEqual({ check: r.check, pass: true, value: r.value });
    expect(results.length).toBe(7);
  });
});
