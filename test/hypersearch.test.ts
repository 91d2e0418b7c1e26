import { scaleStatistics, scaleWarnings } from '../lib/hypersearch';
import { networkSpec } from '../lib/configs';
import { ScaleSet } from '../lib/scales';
import { parameterInfo } from '../lib/spec';

const spec = networkSpec('RepOpt-VGG-XS', { mode: 'hs', numClasses: 10, inChannels: 1 });
const scaleParams = parameterInfo(spec).filter((p) => p.role.startsWith('scale_'));
const initial = (p: (typeof scaleParams)[number]) =>
  p.role === 'scale_identity' ? 1 : (spec.blocks.find((b) => b.name === p.block)!.scaleInit ?? 1);
const set = (f: (p: (typeof scaleParams)[number], c: number) => number) =>
  ScaleSet.from(scaleParams.map((p) => [p.name, Array.from({ length: p.shape[0] }, (_, c) => f(p, c))]));

describe('hyper-search scale statistics and warnings', () => {
  test('statistics per block and branch', () => {
    const stats = scaleStatistics(
      spec,
      set((_p, c) => (c === 0 ? -0.5 : 2)),
    );
    const s0 = stats.find((s) => s.block === 'stage0' && s.branch === 's')!;
    expect(s0.min).toBe(-0.5);
    expect(s0.max).toBe(2);
    expect(s0.negativeShare).toBeCloseTo(1 / 8, 12);
    expect(stats.filter((s) => s.branch === 'g').map((s) => s.block)).toEqual(
      spec.blocks.filter((b) => b.inChannels === b.outChannels && b.stride === 1).map((b) => b.name),
    );
  });
  test('warns about scales that did not move, exploded or are NaN; not about trained ones', () => {
    expect(
      scaleWarnings(
        scaleStatistics(
          spec,
          set((p) => initial(p)),
        ),
      ),
    ).toEqual([expect.stringMatching(/barely moved from their initial values/)]);
    expect(
      scaleWarnings(
        scaleStatistics(
          spec,
          set((p, c) => initial(p) + 0.1 * Math.sin(c)),
        ),
      ),
    ).toEqual([]);
    expect(
      scaleWarnings(
        scaleStatistics(
          spec,
          set((_p, c) => (c === 1 ? 500 : 1.2)),
        ),
      )[0],
    ).toMatch(/exploding scales/);
  });
});
