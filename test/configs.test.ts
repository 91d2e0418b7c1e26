import { ARCHS, networkSpec } from '../lib/configs';
import { nativeBackend } from '../lib/native-backend';
import { type BlockMode, bufferInfo, parameterInfo } from '../lib/spec';
import { useTestThreads } from './helpers';

beforeAll(useTestThreads);

const count = (arch: string) =>
  parameterInfo(networkSpec(arch, { mode: 'target' })).reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);

describe('architecture registry', () => {
  test('official parameter counts at 1000 classes (conv + BN + FC)', () => {
    expect(Math.round(count('RepOpt-VGG-B1') / 1000)).toBe(51842);
    expect(Math.round(count('RepOpt-VGG-B2') / 1000)).toBe(80331);
    expect(Math.round(count('RepOpt-VGG-L1') / 1000)).toBe(76038);
    expect(Math.round(count('RepOpt-VGG-L2') / 1000)).toBe(118133);
  });

  test('official layout: widths, 32x downsampling, sqrt(2/i) scale init', () => {
    const b1 = networkSpec('RepOpt-VGG-B1', { mode: 'hs' });
    expect(b1.blocks).toHaveLength(28);
    expect(b1.blocks[0]).toMatchObject({ name: 'stage0', inChannels: 3, outChannels: 64, stride: 2, scaleInit: 1 });
    expect(b1.blocks.filter((b) => b.stride === 2).map((b) => b.name)).toEqual(['stage0', 'stage1.0', 'stage2.0', 'stage3.0', 'stage4.0']);
    expect(b1.blocks.find((b) => b.name === 'stage3.4')!.scaleInit).toBeCloseTo(Math.sqrt(2 / 4), 15);
    expect(b1.blocks[b1.blocks.length - 1]).toMatchObject({ name: 'stage4.0', outChannels: 2048 });
    const a0 = networkSpec('RepOpt-VGG-A0', { mode: 'target', strides: [1, 2, 2, 2, 2] });
    expect(a0.blocks[0]).toMatchObject({ outChannels: 48, stride: 1 });
    expect(Object.keys(ARCHS)).toEqual(
      expect.arrayContaining(['RepOpt-VGG-A0', 'RepOpt-VGG-A1', 'RepOpt-VGG-A2', 'RepOpt-VGG-B0', 'RepOpt-VGG-S']),
    );
  });

  test.each(['target', 'hs', 'csla', 'repvgg', 'deploy'] as BlockMode[])(
    '%s blocks: the native network has exactly the spec’s keys and shapes',
    (mode) => {
      const spec = networkSpec('RepOpt-VGG-XS', { mode, numClasses: 10, inChannels: 1 });
      const state = nativeBackend.createNetwork(spec).stateDict();
      const expected = [...parameterInfo(spec), ...bufferInfo(spec)];
      expect([...state.keys()].sort()).toEqual(expected.map((p) => p.name).sort());
      for (const p of expected) expect([p.name, state.get(p.name)!.shape]).toEqual([p.name, p.shape]);
      if (mode === 'hs') expect(state.get('stage1.0.scale_conv.weight')!.data[0]).toBe(1);
      if (mode === 'csla')
        expect(
          parameterInfo(spec)
            .filter((p) => !p.trainable)
            .map((p) => p.name),
        ).toContain('stage0.scale_1x1.weight');
    },
  );
});
