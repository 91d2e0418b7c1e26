// The official RepOpt-VGG-B1 scale file drives GradMults and the init rule for our B1 spec.
import * as path from 'path';
import { networkSpec } from '../lib/configs';
import { fullGradMult, gradMultOf, repConvsOf } from '../lib/repopt';
import { loadScales, ScaleSet } from '../lib/scales';
import { thrown } from './helpers';

const fixture = path.join(__dirname, 'fixtures', 'official-scales', 'RepOpt-VGG-B1-scales.pth');
const b1 = networkSpec('RepOpt-VGG-B1', { mode: 'target', numClasses: 1000 });

describe('official B1 scales', () => {
  const scales = loadScales(fixture);
  const convs = repConvsOf(b1, scales);
  const mults = convs.map((c) => gradMultOf(c, 'sgd'));

  test('28 GradMults, one per block conv, with the weights’ shapes', () => {
    expect(mults).toHaveLength(28);
    expect(mults.map((m) => m.param)).toEqual(b1.blocks.map((b) => `${b.name}.conv.weight`));
    expect(mults[0].shape).toEqual([64, 3, 3, 3]);
    expect(mults[1].shape).toEqual([128, 64, 3, 3]);
    expect(mults[2].shape).toEqual([128, 128, 3, 3]);
    expect(mults[27].shape).toEqual([2048, 512, 3, 3]);
    expect(mults.filter((m) => m.identity)).toHaveLength(28 - 5); // stage0 and the first block of each stage have none
  });

  test('entries match the formula computed by hand', () => {
    const block = 'stage1.1'; // has an identity branch
    const k = mults.findIndex((m) => m.param === `${block}.conv.weight`);
    const m = fullGradMult(mults[k], 'float32');
    const s = scales.get(`${block}.scale_conv.weight`);
    const t = scales.get(`${block}.scale_1x1.weight`);
    const at = (o: number, i: number, p: number, q: number) => m[((o * 128 + i) * 3 + p) * 3 + q];
    const f = Math.fround;
    for (const o of [0, 5, 127]) {
      expect(at(o, 3, 0, 2)).toBe(f(s[o] * s[o])); // off-centre: s^2
      expect(at(o, (o + 1) % 128, 1, 1)).toBe(f(f(s[o] * s[o]) + f(t[o] * t[o]))); // centre: s^2 + t^2
      expect(at(o, o, 1, 1)).toBe(f(f(f(s[o] * s[o]) + f(t[o] * t[o])) + 1)); // diagonal centre: + 1
    }
  });

  test('negative scales are squared', () => {
    let checked = 0;
    for (const [k, conv] of convs.entries()) {
      for (let o = 0; o < conv.shape[0]; o++) {
        const [s, t] = [conv.scales.s[o], conv.scales.t[o]];
        if (s >= 0 && t >= 0) continue;
        expect(mults[k].base[o]).toBe(s * s);
        expect(mults[k].centre[o]).toBe(t * t);
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(0);
  });

  test('scales that do not fit the network are refused naming the keys', () => {
    const a0 = networkSpec('RepOpt-VGG-A0', { mode: 'target' });
    expect(thrown(() => repConvsOf(a0, scales)).message).toMatch(/stage1\.2|unexpected|missing/);
    const truncated = ScaleSet.from(scales.entries().filter(([key]) => key !== 'stage2.3.scale_1x1.weight'));
    expect(thrown(() => repConvsOf(b1, truncated)).message).toMatch(/stage2\.3\.scale_1x1\.weight/);
    const withNaN = ScaleSet.from(
      scales.entries().map(([key, v]) => [key, key === 'stage0.scale_conv.weight' ? v.map((x, i) => (i === 7 ? NaN : x)) : v]),
    );
    expect(thrown(() => repConvsOf(b1, withNaN)).message).toMatch(/stage0\.scale_conv\.weight/);
  });

  test('GradMult construction refuses non-finite scales and wrong lengths', () => {
    const conv = convs[3];
    expect(thrown(() => gradMultOf({ ...conv, scales: { ...conv.scales, s: Float32Array.of(1, Infinity) } }, 'sgd')).message).toMatch(
      /has 2 values, the conv has 128 output channels/,
    );
    const s = Float32Array.from(conv.scales.s);
    s[9] = Infinity;
    expect(thrown(() => gradMultOf({ ...conv, scales: { ...conv.scales, s } }, 'sgd')).message).toBe(
      `${conv.param}: scale s[9] is Infinity`,
    );
  });
});

describe('grouped / depthwise GradMult', () => {
  test('identity at [o, o % (C/groups), centre]', () => {
    // 8 channels in 4 groups: each output channel sees 2 inputs of its group.
    const gm = gradMultOf(
      {
        param: 'dw',
        shape: [8, 2, 3, 3],
        groups: 4,
        identity: true,
        scales: { s: new Float32Array(8).fill(2), t: new Float32Array(8).fill(3) },
      },
      'sgd',
    );
    const m = fullGradMult(gm, 'float64');
    for (let o = 0; o < 8; o++) {
      for (let i = 0; i < 2; i++) {
        const centre = m[(o * 2 + i) * 9 + 4];
        expect(centre).toBe(i === o % 2 ? 4 + 9 + 1 : 4 + 9);
        expect(m[(o * 2 + i) * 9]).toBe(4);
      }
    }
  });
});
