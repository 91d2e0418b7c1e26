// The optimizer spec is checked and resolved once (lib/optimizer-spec.ts), for both backends: here, the
// GradMult power following the optimizer type.
import { networkSpec } from '../lib/configs';
import { resolveOptimizerSpec } from '../lib/optimizer-spec';
import { repConvsOf, type RepConv } from '../lib/repopt';
import { ScaleSet } from '../lib/scales';
import { parameterInfo } from '../lib/spec';

const spec = networkSpec('RepOpt-VGG-XS', { mode: 'target', numClasses: 4, inChannels: 1 });
const params = parameterInfo(spec);
const convs: RepConv[] = repConvsOf(
  spec,
  ScaleSet.from(
    spec.blocks.flatMap((b): [string, Float32Array][] => [
      [`${b.name}.scale_conv.weight`, Float32Array.from({ length: b.outChannels }, (_, o) => 1.5 + o / 100)],
      [`${b.name}.scale_1x1.weight`, Float32Array.from({ length: b.outChannels }, (_, o) => 0.5 - o / 200)],
    ]),
  ),
);

describe('GradMults from repConvs', () => {
  test('SGD squares the branch scales, AdamW takes them as they are (the official code)', () => {
    for (const [type, power] of [
      ['sgd', 2],
      ['adamw', 1],
    ] as const) {
      const r = resolveOptimizerSpec({ type, lr: 0.1, repConvs: convs }, params);
      expect(r.gradMults!.size).toBe(convs.length);
      for (const c of convs) {
        const gm = r.gradMults!.get(c.param)!;
        expect(Array.from(gm.base)).toEqual(Array.from(c.scales.s, (v) => v ** power));
        expect(Array.from(gm.centre)).toEqual(Array.from(c.scales.t, (v) => v ** power));
      }
    }
  });

  test('gradMults and repConvs together are refused', () => {
    const sgd = resolveOptimizerSpec({ type: 'sgd', lr: 0.1, repConvs: convs }, params);
    expect(() => resolveOptimizerSpec({ type: 'sgd', lr: 0.1, repConvs: convs, gradMults: [...sgd.gradMults!.values()] }, params)).toThrow(
      'optimizer spec: give gradMults or repConvs, not both',
    );
  });
});
