// INT8 quantization: the observers' and qparam rules (by hand and against PyTorch's observers), the
// fake-quantized network against real int8 kernels, QAT ranges, the int8 export read back (also by
// PyTorch, running its own quantized kernels on it), and bad input.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { networkSpec } from '../lib/configs';
import { native, type NativeDataset } from '../lib/native';
import { NativeBackendNetwork } from '../lib/native-backend';
import { readInt8Model, spreadTable, weightSpread, writeInt8Model } from '../lib/quant';
import { Random } from '../lib/reference';
import { thrown, useTestThreads } from './helpers';

beforeAll(useTestThreads);

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'repopt-quant-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const f32 = (values: number[]) => native().Tensor.fromArray(new Float32Array(values), [values.length]);
const fround = Math.fround;

function syntheticDataset(count: number, seed: number): NativeDataset {
  const random = new Random(seed);
  const images = Uint8Array.from({ length: count * 16 * 16 }, () => Math.floor(random.nextDouble() * 256));
  const labels = Int32Array.from({ length: count }, (_, i) => i % 10);
  return new (native().Dataset)(images, [count, 1, 16, 16], labels, { mean: [0.5], std: [0.25] });
}

const smallSpec = (mode: 'target' | 'deploy') => networkSpec('RepOpt-VGG-S', { mode, numClasses: 10, inChannels: 1 });

describe('observers and qparams', () => {
  test('min-max over batches, PyTorch affine rule (range widened to 0, float32 scale, rounded zero point)', () => {
    const r = native().observeRange([f32([-1, 0, 2, 3]), f32([0.5, 4])]);
    expect([r.min, r.max]).toEqual([-1, 4]);
    expect(r.scale).toBe(fround(fround(5) / 255));
    expect(r.zeroPoint).toBe(51); // 0 - round(-1 / (5/255)) = round(51)
    const positive = native().observeRange([f32([0.5, 2])]);
    expect([positive.scale, positive.zeroPoint]).toEqual([fround(fround(2) / 255), 0]);
    const signed = native().observeRange([f32([-1, 3])], { activations: 'int8' });
    expect([signed.scale, signed.zeroPoint]).toEqual([fround(fround(4) / 255), -64]); // -128 + round(63.75)
  });

  test('percentile: nearest-rank percentiles per batch, averaged over batches', () => {
    const ramp = (offset: number) => f32(Array.from({ length: 10000 }, (_, i) => i + offset));
    // p = 99 of 0..9999: the ceil(0.99 * 10000) = 9900th smallest value, 9899; p = 1: the 100th, 99.
    const one = native().observeRange([ramp(0)], { observer: 'percentile', percentile: 99 });
    expect([one.min, one.max]).toEqual([99, 9899]);
    const two = native().observeRange([ramp(0), ramp(1000)], { observer: 'percentile', percentile: 99 });
    expect([two.min, two.max]).toEqual([599, 10399]);
    expect(two.scale).toBe(fround(fround(10399) / 255)); // min widened to 0
  });

  test('per-channel symmetric weight scales: max|w| / 127.5, at least float32 eps', () => {
    const w = native().Tensor.fromArray(new Float32Array([1, -2, 0.5, 0.25, 0, 0]), [3, 2]);
    expect(Array.from(native().channelScales(w))).toEqual([fround(2 / 127.5), fround(0.5 / 127.5), fround(2 ** -23)]);
  });

  test("the same numbers as PyTorch's MinMaxObserver and PerChannelMinMaxObserver", () => {
    const random = new Random(3);
    const batches = [0, 1, 2].map(() => Float32Array.from({ length: 500 }, () => random.uniform(-3, 7)));
    const weight = Float32Array.from({ length: 8 * 27 }, () => random.uniform(-0.4, 0.4));
    const ours = native().observeRange(batches.map((b) => native().Tensor.fromArray(b, [b.length])));
    const scales = Array.from(native().channelScales(native().Tensor.fromArray(weight, [8, 3, 3, 3])));
    const script = `
import json, sys, torch
from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver
d = json.load(sys.stdin)
o = MinMaxObserver(dtype=torch.quint8)
for b in d['batches']: o(torch.tensor(b, dtype=torch.float32))
s, z = o.calculate_qparams()
w = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
w(torch.tensor(d['weight'], dtype=torch.float32).reshape(8, 3, 3, 3))
ws, wz = w.calculate_qparams()
print(json.dumps({'scale': float(s), 'zeroPoint': int(z), 'scales': ws.tolist(), 'zeros': wz.tolist()}))`;
    const r = spawnSync('/usr/bin/python3', ['-c', script], {
      input: JSON.stringify({ batches: batches.map((b) => Array.from(b)), weight: Array.from(weight) }),
      encoding: 'utf8',
    });
    if (r.status !== 0) throw new Error(`python3 with torch failed (apt-get install python3-torch): ${r.stderr}`);
    const torch = JSON.parse(r.stdout);
    expect(ours.scale).toBe(torch.scale);
    expect(ours.zeroPoint).toBe(torch.zeroPoint);
    expect(scales).toEqual(torch.scales);
    expect(torch.zeros.every((z: number) => z === 0)).toBe(true);
  });
});

describe('quantized networks', () => {
  const train = syntheticDataset(256, 1);
  const perm = train.permutation(0, 0);
  const deploy = new NativeBackendNetwork(smallSpec('deploy'), 'float32', 4);

  test('calibration records every point; the fake-quantized network agrees with real int8 (QNNPACK) kernels', async () => {
    const params = await deploy.calibrate(train, perm, 64, 3);
    expect(params.points.map((p) => p.name)).toEqual(['input', ...smallSpec('deploy').blocks.map((b) => b.name), 'pool', 'logits']);
    for (const p of params.points.slice(1, -1)) expect(p.min).toBe(0); // after ReLU
    // The input point saw normalised pixels (x/255 - 0.5) / 0.25 of 3 batches.
    expect(params.points[0].min).toBeGreaterThanOrEqual(-2);
    expect(params.points[0].max).toBeLessThanOrEqual(2);
    const x = train.batch(
      native().Tensor.fromArray(
        BigInt64Array.from({ length: 32 }, (_, i) => BigInt(i)),
        [32],
      ),
    )[0];
    deploy.setFakeQuant(true);
    const simulated = deploy.forward({ shape: x.shape, data: x.toArray() as Float32Array }, 'eval').data as Float32Array;
    deploy.setFakeQuant(false);
    const real = deploy.forwardInt8(x).toArray() as Float32Array;
    const step = params.points[params.points.length - 1].scale;
    let exact = 0;
    let worst = 0;
    for (let i = 0; i < real.length; i++) {
      const d = Math.abs(real[i] - simulated[i]);
      worst = Math.max(worst, d);
      if (d < 1e-6) exact++;
    }
    expect(worst).toBeLessThanOrEqual(step * 1.0001); // at most one output quantization step
    expect(exact / real.length).toBeGreaterThan(0.99);
    x.dispose();
  });

  test('int8 export: read back equal, dequantized within half a step, and run by PyTorch to the same logits', () => {
    const params = deploy.quantParams()!;
    const layers = deploy.quantizedWeights();
    writeInt8Model(dir, deploy.spec, params, layers, { mean: [0.5], std: [0.25] });
    const back = readInt8Model(dir);
    expect(back.layers.map((l) => l.meta.key)).toEqual([
      ...smallSpec('deploy').blocks.map((b) => `${b.name}.rbr_reparam.weight`),
      'linear.weight',
    ]);
    const floats = deploy.stateDict();
    back.layers.forEach((l, i) => {
      expect(Array.from(l.weight)).toEqual(Array.from(layers[i].weight));
      expect(Array.from(l.bias)).toEqual(Array.from(layers[i].bias!));
      const w = floats.get(l.meta.key)!.data;
      const perChannel = w.length / l.meta.weightScales.length;
      for (let e = 0; e < w.length; e++) {
        const s = l.meta.weightScales[Math.floor(e / perChannel)];
        expect(Math.abs(l.weight[e] * s - w[e])).toBeLessThanOrEqual(s * 0.5 + 1e-7);
      }
    });
    // A deployment consumer: PyTorch reads the JSON + binary and runs its own quantized kernels.
    const inputs = Float32Array.from({ length: 4 * 256 }, (_, i) => Math.sin(i) * 1.5);
    const ours = deploy.forwardInt8(native().Tensor.fromArray(inputs, [4, 1, 16, 16])).toArray() as Float32Array;
    const script = `
import json, sys, numpy as np, torch
torch.backends.quantized.engine = 'qnnpack'
d = sys.argv[1]
m = json.load(open(d + '/model.int8.json'))
raw = open(d + '/' + m['data']['file'], 'rb').read()
pts = {p['name']: p for p in m['points']}
def section(s, dt): return np.frombuffer(raw[s['offset']:s['offset'] + s['length']], dtype=dt)
x = torch.tensor(json.loads(sys.stdin.read()), dtype=torch.float32).reshape(4, 1, 16, 16)
p = pts['input']; q = torch.quantize_per_tensor(x, p['scale'], p['zeroPoint'], torch.quint8)
for l in m['layers']:
    ws = torch.tensor(l['weightScales'], dtype=torch.float64)
    w = torch.from_numpy(section(l['weight'], np.int8).copy()).reshape(l['shape'])
    qw = torch._make_per_channel_quantized_tensor(w, ws, torch.zeros(len(ws), dtype=torch.long), 0)
    bias = torch.from_numpy(section(l['bias'], np.int32).astype(np.float64)) * ws * pts[l['input']]['scale']
    out = pts[l['output']]
    if l['relu']:
        packed = torch.ops.quantized.conv2d_prepack(qw, bias.float(), [l['stride']] * 2, [l['padding']] * 2, [1, 1], 1)
        q = torch.ops.quantized.conv2d_relu(q, packed, out['scale'], out['zeroPoint'])
    else:
        pool = pts['pool']
        q = torch.quantize_per_tensor(q.dequantize().mean((2, 3)), pool['scale'], pool['zeroPoint'], torch.quint8)
        packed = torch.ops.quantized.linear_prepack(qw, bias.float())
        q = torch.ops.quantized.linear(q, packed, out['scale'], out['zeroPoint'])
print(json.dumps(q.dequantize().flatten().tolist()))`;
    const r = spawnSync('/usr/bin/python3', ['-c', script, dir], { input: JSON.stringify(Array.from(inputs)), encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`python3 with torch failed: ${r.stderr}`);
    const theirs: number[] = JSON.parse(r.stdout);
    const step = params.points[params.points.length - 1].scale;
    let worst = 0;
    theirs.forEach((v, i) => {
      worst = Math.max(worst, Math.abs(v - ours[i]));
    });
    expect(worst).toBeLessThanOrEqual(step * 1.0001);
  });

  test('a damaged int8 export is refused', () => {
    const bin = path.join(dir, 'model.int8.bin');
    const bytes = fs.readFileSync(bin);
    bytes[10] ^= 0xff;
    fs.writeFileSync(bin, bytes);
    expect(thrown(() => readInt8Model(dir)).message).toMatch(/size or SHA-256 differs .* the export is damaged/);
  });

  test('QAT: in training mode the ranges follow each batch by the moving-average factor; gradients pass', async () => {
    const target = new NativeBackendNetwork(smallSpec('target'), 'float32', 5);
    await target.calibrate(train, perm, 64, 2, { qatMomentum: 0.5 });
    target.setFakeQuant(true);
    const before = target.quantParams()!.points[0];
    const x = native().Tensor.fromArray(new Float32Array(2 * 256).fill(3), [2, 1, 16, 16]);
    target.forward({ shape: x.shape, data: x.toArray() as Float32Array }, 'train');
    const after = target.quantParams()!.points[0];
    expect(after.max).toBeCloseTo(before.max + 0.5 * (3 - before.max), 12);
    expect(after.min).toBeCloseTo(before.min + 0.5 * (3 - before.min), 12);
    // A QAT step changes the weights (straight-through gradients reach them).
    const opt = target.createOptimizer({ type: 'sgd', lr: 0.1 });
    const w0 = target.stateDict().get('stage2.0.conv.weight')!.data.slice();
    target.trainBatchSync(opt, train, perm, 0, 64);
    const w1 = target.stateDict().get('stage2.0.conv.weight')!.data;
    expect(w1.some((v, i) => v !== w0[i])).toBe(true);
    expect(Number.isFinite(target.takeTrainMetrics().loss)).toBe(true);
  });

  test('weight spread: per-layer min, max, std, max|w|/std, as a table', () => {
    const spread = weightSpread(
      deploy.spec,
      new Map([
        ['stage0.rbr_reparam.weight', { shape: [4], data: new Float64Array([-3, 1, -1, 3]) }],
        ...[...deploy.stateDict()].filter(([k]) => k !== 'stage0.rbr_reparam.weight'),
      ]),
    );
    expect(spread[0]).toEqual({ layer: 'stage0', min: -3, max: 3, std: Math.sqrt(5), absMaxOverStd: 3 / Math.sqrt(5) }); // mean 0, variance 20/4
    expect(spread[spread.length - 1].layer).toBe('linear');
    expect(spreadTable([{ name: 'a', spread }])).toMatch(/\| stage0 +\| -3 \.\. 3 +\| 2\.236 +\| 1\.3 +\|/);
  });
});

describe('bad input gets clear errors', () => {
  const train = syntheticDataset(64, 2);
  const perm = train.permutation(0, 0);

  test('calibration with zero batches, or batches larger than the data', async () => {
    const net = new NativeBackendNetwork(smallSpec('deploy'), 'float32', 1);
    expect(thrown(() => net.calibrateSync(train, perm, 16, 0)).message).toMatch(/batches' must be at least 1 \(calibration needs data\)/);
    expect(thrown(() => net.calibrateSync(train, perm, 128, 1)).message).toMatch(/batchSize' is larger than the dataset \(64\)/);
    // The async facade rejects (never throws) on a refused call.
    await expect(net.calibrate(train, perm, 16, 0)).rejects.toThrow(/^Network\.calibrateAsync: .*batches' must be at least 1/);
    expect(thrown(() => native().observeRange([])).message).toMatch(/is empty/);
    expect(net.quantParams()).toBeNull();
  });

  test('NaN activations name the point and batch; earlier ranges stay', async () => {
    const net = new NativeBackendNetwork(smallSpec('deploy'), 'float32', 1);
    const good = net.calibrateSync(train, perm, 16, 1);
    const state = net.stateDict();
    const w = state.get('stage1.0.rbr_reparam.weight')!;
    (w.data as Float32Array)[0] = NaN;
    net.loadStateDict(state);
    const nonFinite = /non-finite activations \(NaN or Inf\) at quantization point 'stage1\.0' in calibration batch 1/;
    expect(thrown(() => net.calibrateSync(train, perm, 16, 2)).message).toMatch(nonFinite);
    expect(net.quantParams()!.points[1].max).toBe(good.points[1].max);
    await expect(net.calibrate(train, perm, 16, 2)).rejects.toThrow(nonFinite); // off the JS thread: the same
    expect(net.quantParams()!.points[1].max).toBe(good.points[1].max);
    expect(train.count).toBe(64); // the dataset is free again
  });

  test('ranges of another architecture, real int8 on an unfolded network, fp64, no ranges yet', async () => {
    const net = new NativeBackendNetwork(smallSpec('deploy'), 'float32', 1);
    expect(thrown(() => net.setFakeQuant(true)).message).toMatch(/no quantization ranges; calibrate it first/);
    const other = networkSpec('RepOpt-VGG-XS', { mode: 'deploy', numClasses: 10, inChannels: 1 });
    const otherNet = new NativeBackendNetwork(other, 'float32', 1);
    const ranges = otherNet.calibrateSync(train, perm, 16, 1);
    expect(thrown(() => net.setQuantRanges(ranges)).message).toMatch(
      /has \d+ entries; this network has \d+ quantization points|expected '.*' \(another architecture\?\)/,
    );
    const target = new NativeBackendNetwork(smallSpec('target'), 'float32', 1);
    expect(thrown(() => target.evaluateInt8Sync(train, 16)).message).toMatch(/no quantization ranges; calibrate it first/);
    await expect(target.evaluateInt8(train, 16)).rejects.toThrow(/^Network\.evaluateInt8Async: the network has no quantization ranges/);
    target.calibrateSync(train, perm, 16, 1);
    expect(thrown(() => target.evaluateInt8Sync(train, 16)).message).toMatch(
      /real int8 inference runs deploy networks .* fold this one first/,
    );
    await expect(target.evaluateInt8(train, 16)).rejects.toThrow(/real int8 inference runs deploy networks .* fold this one first/);
    const repvgg = new NativeBackendNetwork(networkSpec('RepOpt-VGG-S', { mode: 'repvgg', numClasses: 10, inChannels: 1 }), 'float32', 1);
    expect(thrown(() => repvgg.calibrateSync(train, perm, 16, 1)).message).toMatch(
      /only plain networks .* quantize; fold this repvgg network into deploy blocks first/,
    );
    const fp64 = new NativeBackendNetwork(smallSpec('deploy'), 'float64', 1);
    expect(thrown(() => fp64.calibrateSync(train, perm, 16, 1)).message).toMatch(/must be float32 to quantize/);
    expect(thrown(() => net.calibrateSync(train, perm, 16, 1, { observer: 'histogram' as 'minmax' })).message).toMatch(
      /observer must be 'minmax' or 'percentile', got 'histogram'/,
    );
    expect(thrown(() => net.calibrateSync(train, perm, 16, 1, { observer: 'percentile', percentile: 30 })).message).toMatch(
      /percentile must be in \(50, 100\]/,
    );
  });
});
