import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { HostTensor } from '../lib/backend';
import { readPth, writePth } from '../lib/pth';
import {
  ScaleSet,
  loadScales,
  saveScales,
  scaleKey,
  scalesFromJson,
  scalesFromNetworkState,
  scalesToJson,
  scaleValueWarnings,
  validateScales,
  type ScaleFileJson,
} from '../lib/scales';
import { train } from '../lib';
import { networkSpec } from '../lib/configs';
import { parameterInfo, type BlockSpec, type NetworkSpec } from '../lib/spec';
import { thrown } from './helpers';

const FIXTURES = path.join(__dirname, 'fixtures', 'official-scales');
const B1_FILE = path.join(FIXTURES, 'RepOpt-VGG-B1-scales.pth');
const B2_FILE = path.join(FIXTURES, 'RepOpt-VGG-B2-scales.pth');

// Debian's python3-torch lives with the system interpreter only; the python3 on PATH has no torch.
const TORCH_PYTHON = '/usr/bin/python3';

/** Runs a Python script under real PyTorch and returns its stdout. Fails (never skips) without torch. */
function runTorch(script: string, args: string[]): string {
  const run = (code: string) =>
    spawnSync(TORCH_PYTHON, ['-c', code, ...args], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, OMP_NUM_THREADS: '1' } });
  const probe = run('import torch');
  if (probe.status !== 0)
    throw new Error(
      `${TORCH_PYTHON} cannot import torch (${probe.error?.message ?? probe.stderr.trim().split('\n').pop()}); install it: apt-get install python3-torch`,
    );
  const result = run(script);
  if (result.status !== 0) throw new Error(`python failed (${result.status}): ${result.stderr}`);
  return result.stdout;
}

/** A RepOpt-VGG network spec in hs mode, built the way METHOD.md §3 describes (stage0, then four stages). */
function vggSpec(numBlocks: readonly number[], widths: readonly number[]): NetworkSpec {
  const stage0 = Math.min(64, Math.floor(64 * widths[0]));
  const blocks: BlockSpec[] = [{ name: 'stage0', inChannels: 3, outChannels: stage0, stride: 2 }];
  let channels = stage0;
  [64, 128, 256, 512].forEach((base, stage) => {
    const width = Math.floor(base * widths[stage]);
    for (let i = 0; i < numBlocks[stage]; i++) {
      blocks.push({ name: `stage${stage + 1}.${i}`, inChannels: channels, outChannels: width, stride: i === 0 ? 2 : 1 });
      channels = width;
    }
  });
  return { mode: 'hs', inChannels: 3, numClasses: 1000, blocks };
}

const B1_SPEC = vggSpec([4, 6, 16, 1], [2, 2, 2, 4]);
const B2_SPEC = vggSpec([4, 6, 16, 1], [2.5, 2.5, 2.5, 5]);

/** A two-block spec: stage0 (3 -> 4 channels, no identity) and stage1.0 (4 -> 4, stride 1, identity). */
const TINY_SPEC: NetworkSpec = {
  mode: 'hs',
  inChannels: 3,
  numClasses: 2,
  blocks: [
    { name: 'stage0', inChannels: 3, outChannels: 4, stride: 2 },
    { name: 'stage1.0', inChannels: 4, outChannels: 4, stride: 1 },
  ],
};

function tinySet(overrides: Record<string, number[] | undefined> = {}): ScaleSet {
  const base: Record<string, number[] | undefined> = {
    'stage0.scale_conv.weight': [1, 2, 3, 4],
    'stage0.scale_1x1.weight': [0.5, -0.5, 0.25, 0],
    'stage1.0.scale_conv.weight': [1, 1, 1, 1],
    'stage1.0.scale_1x1.weight': [2, 2, 2, 2],
    'stage1.0.scale_identity.weight': [-1, 0.1, 1e-30, 3],
    ...overrides,
  };
  return ScaleSet.from(Object.entries(base).filter((e): e is [string, number[]] => e[1] !== undefined));
}

function bitsOf(set: ScaleSet): Array<[string, string]> {
  return set.entries().map(([key, v]) => [key, Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('hex')]);
}

let tempDir: string;
beforeAll(() => {
  tempDir = fs.mkdtempSync(path.join(os.tmpdir(), 'scales-test-'));
});
afterAll(() => fs.rmSync(tempDir, { recursive: true, force: true }));
const temp = (name: string) => path.join(tempDir, name);

describe('official scale files', () => {
  test('B1: 79 keys, 13 with negative values, shapes as in the file, fits RepOpt-VGG-B1', () => {
    const set = loadScales(B1_FILE);
    expect(set.size).toBe(79);
    expect(set.entries().filter(([, v]) => v.some((x) => x < 0))).toHaveLength(13);
    const raw = readPth(B1_FILE);
    expect(set.keys()).toEqual([...raw.keys()]);
    for (const [key, t] of raw) expect([set.get(key).length]).toEqual(t.shape);
    expect(set.get('stage4.0.scale_conv.weight')).toHaveLength(2048);
    validateScales(B1_SPEC, set);
  });

  test('B2: 79 keys that fit RepOpt-VGG-B2 and not B1', () => {
    const set = loadScales(B2_FILE);
    expect(set.size).toBe(79);
    validateScales(B2_SPEC, set);
    const e = thrown(() => validateScales(B1_SPEC, set));
    expect(e.message).toMatch(
      /^scales do not fit the network \(79 scale keys expected, 79 given\):\n {2}wrong lengths \(77\): stage1\.0\.scale_1x1\.weight has 160 values, expected 128, /,
    );
    expect(e.message).toMatch(/\.\.\. and 67 more$/);
  });

  test("a block's (s, t, g), g only where the block has an identity branch", () => {
    const set = loadScales(B1_FILE);
    const stage0 = set.block('stage0');
    expect(Object.keys(stage0).sort()).toEqual(['s', 't']);
    expect(stage0.s).toEqual(set.get('stage0.scale_conv.weight'));
    expect(stage0.t).toEqual(set.get('stage0.scale_1x1.weight'));
    const block = set.block('stage1.1');
    expect(block.g).toEqual(set.get('stage1.1.scale_identity.weight'));
    expect(block.s).toHaveLength(128);
    expect(set.block('stage1.0').g).toBeUndefined();
    expect(() => set.block('stage9.0')).toThrow("scale set: no key 'stage9.0.scale_conv.weight'");
  });
});

describe('ScaleSet', () => {
  test('is immutable: values are copied in and out', () => {
    const source = [1, 2, 3, 4];
    const set = tinySet({ 'stage0.scale_conv.weight': source });
    source[0] = 99;
    set.get('stage0.scale_conv.weight')[1] = 99;
    set.entries()[0][1][2] = 99;
    set.block('stage0').s[3] = 99;
    expect(Array.from(set.get('stage0.scale_conv.weight'))).toEqual([1, 2, 3, 4]);
  });

  test('keys and helpers', () => {
    expect(scaleKey('stage1.0', 'scale_identity')).toBe('stage1.0.scale_identity.weight');
    expect(() =>
      ScaleSet.from([
        ['a', [1]],
        ['a', [2]],
      ]),
    ).toThrow("scale set: key 'a' given twice");
  });
});

describe('files', () => {
  test('JSON: documented shape and bit-identical round trip (-0, subnormals, float32 extremes)', () => {
    const set = ScaleSet.from([
      ...loadScales(B1_FILE).entries(),
      ['extremes', new Float32Array([-0, 1e-45, -3.4028234663852886e38, 1 / 3])],
    ]);
    const file = temp('scales.json');
    saveScales(file, set);
    const doc = JSON.parse(fs.readFileSync(file, 'utf8')) as ScaleFileJson;
    expect(doc.format).toBe('repopt-scales');
    expect(doc.version).toBe(1);
    expect(Object.keys(doc.scales)).toEqual(set.keys());
    expect(doc.scales['stage0.scale_conv.weight']).toHaveLength(64);
    expect(bitsOf(loadScales(file))).toEqual(bitsOf(set));
    expect(Object.is(loadScales(file).get('extremes')[0], -0)).toBe(true);
    expect(scalesToJson(ScaleSet.from([['k', [0.1, -0, 1e-30, 1 / 3]]]))).toContain('"k": [0.1, -0, 1e-30, 0.33333334]');
  });

  test('.pth: bit-identical round trip', () => {
    const set = ScaleSet.from([...loadScales(B1_FILE).entries(), ['extremes', new Float32Array([-0, 1e-45, Number.NaN, Infinity])]]);
    const file = temp('scales.pth');
    saveScales(file, set);
    expect(bitsOf(loadScales(file))).toEqual(bitsOf(set));
  });

  test('a .pth we save is read by torch.load with the same keys and values', () => {
    const set = loadScales(B1_FILE);
    const file = temp('for-torch.pth');
    saveScales(file, set, 'pth');
    const script = `
import sys, json, torch
d = torch.load(sys.argv[1], weights_only=True)
print(json.dumps([type(d).__name__, [[k, str(v.dtype), list(v.shape), v.numpy().tobytes().hex()] for k, v in d.items()]]))
`;
    const [type, entries] = JSON.parse(runTorch(script, [file])) as [string, Array<[string, string, number[], string]>];
    expect(type).toBe('OrderedDict');
    expect(entries.map(([k, , , hex]) => [k, hex])).toEqual(bitsOf(set));
    expect(entries.every(([, dtype, shape], i) => dtype === 'torch.float32' && shape[0] === set.entries()[i][1].length)).toBe(true);
  });

  test('format by extension, else by content', () => {
    const set = tinySet();
    saveScales(temp('a.scales'), set, 'json');
    saveScales(temp('b.scales'), set, 'pth');
    expect(bitsOf(loadScales(temp('a.scales')))).toEqual(bitsOf(set));
    expect(bitsOf(loadScales(temp('b.scales')))).toEqual(bitsOf(set));
    expect(() => saveScales(temp('c.scales'), set)).toThrow(
      /c\.scales: cannot tell the scale file format from the name; pass 'json' or 'pth'/,
    );
    fs.writeFileSync(temp('d.scales'), 'garbage');
    expect(() => loadScales(temp('d.scales'))).toThrow(/d\.scales: neither a JSON scale file nor a torch\.save zip/);
  });

  test('bad files: truncated or non-zip .pth, non-vector tensors, bad JSON, non-finite values', () => {
    const pth = fs.readFileSync(B1_FILE);
    fs.writeFileSync(temp('truncated.pth'), pth.subarray(0, pth.length / 2));
    expect(() => loadScales(temp('truncated.pth'))).toThrow(/truncated\.pth: truncated or damaged zip archive/);
    fs.writeFileSync(temp('text.pth'), '{"format": "repopt-scales"}');
    expect(() => loadScales(temp('text.pth'))).toThrow(/text\.pth: not a zip archive/);
    writePth(
      temp('matrix.pth'),
      new Map([
        ['k', { dtype: 'float32', shape: [2, 2], data: new Float32Array(4) }],
        ['n', { dtype: 'int64', shape: [1], data: new BigInt64Array(1) }],
      ]),
    );
    expect(() => loadScales(temp('matrix.pth'))).toThrow(
      /matrix\.pth: scales must be 1-D float tensors; 2 are not: k \(float32 \[2, 2\]\), n \(int64 \[1\]\)/,
    );

    const json = (text: string) => thrown(() => scalesFromJson(text, 's.json')).message;
    expect(json('{"format": "repopt-scales", "version": 1, "scales": {"k": [NaN]}}')).toMatch(/^s\.json: not valid JSON/);
    expect(json('[1, 2]')).toBe('s.json: not a scale file (expected an object with "format": "repopt-scales")');
    expect(json('{"format": "repopt-scales", "version": 2, "scales": {}}')).toBe(
      's.json: scale file version 2 is not supported (this reader knows version 1)',
    );
    expect(json('{"format": "repopt-scales", "version": 1}')).toMatch(/"scales" must be an object mapping keys to arrays of numbers/);
    expect(json('{"format": "repopt-scales", "version": 1, "scales": {"k": 3}}')).toBe('s.json: scales["k"] is not an array of numbers');
    expect(json('{"format": "repopt-scales", "version": 1, "scales": {"k": [1, null]}}')).toBe(
      's.json: scales["k"][1] is null, not a number',
    );
    expect(json('{"format": "repopt-scales", "version": 1, "scales": {"k": [1e39]}}')).toBe(
      's.json: scales["k"][0] = 1e+39 is outside the float32 range',
    );

    expect(() => scalesToJson(ScaleSet.from([['k', [1, Number.NaN]]]))).toThrow('scales to JSON: k[1] is NaN, which JSON cannot store');
  });
});

describe('validateScales', () => {
  test('accepts a matching set', () => {
    validateScales(TINY_SPEC, tinySet());
    validateScales({ ...TINY_SPEC, mode: 'csla' }, tinySet());
  });

  test('lists missing, unexpected and mis-shaped keys and non-finite values in one error', () => {
    const set = tinySet({
      'stage1.0.scale_identity.weight': undefined,
      'stage0.scale_identity.weight': [1, 1, 1, 1],
      'linear.weight': [1],
      'stage0.scale_conv.weight': [1, 2, 3],
      'stage1.0.scale_conv.weight': [1, Number.NaN, Infinity, Number.NaN],
    });
    expect(thrown(() => validateScales(TINY_SPEC, set)).message).toBe(
      'scales do not fit the network (5 scale keys expected, 6 given):\n' +
        '  missing keys (1): stage1.0.scale_identity.weight\n' +
        '  unexpected keys (2): stage0.scale_identity.weight, linear.weight\n' +
        '  wrong lengths (1): stage0.scale_conv.weight has 3 values, expected 4\n' +
        '  non-finite values (3 in 1 keys): stage1.0.scale_conv.weight has 3 (first at [1]: NaN)',
    );
  });

  test('long lists are cut with a count', () => {
    const set = ScaleSet.from(loadScales(B1_FILE).entries().slice(0, 40));
    expect(thrown(() => validateScales(B1_SPEC, set)).message).toMatch(
      /^scales do not fit the network \(79 scale keys expected, 40 given\):\n {2}missing keys \(39\): stage3\.3\.scale_identity\.weight, (stage\S+, ){9}\.\.\. and 29 more$/,
    );
    const inf = ScaleSet.from([['x', [-Infinity]]]);
    expect(thrown(() => validateScales(TINY_SPEC, inf)).message).toMatch(
      /non-finite values \(1 in 1 keys\): x has 1 \(first at \[0\]: -Infinity\)/,
    );
  });
});

describe('scalesFromNetworkState', () => {
  /** A state dict shaped like an hs network's, every value `fill(name, index)`. */
  function networkState(spec: NetworkSpec, fill: (name: string, i: number) => number): Map<string, HostTensor> {
    return new Map(
      parameterInfo(spec).map((p) => {
        const data = new Float64Array(p.shape.reduce((a, b) => a * b, 1)).map((_, i) => fill(p.name, i));
        return [p.name, { shape: p.shape, data }];
      }),
    );
  }

  test('takes exactly the scale parameters, as float32, in parameter order', () => {
    const state = networkState(TINY_SPEC, (name, i) => (name.includes('scale') ? 0.1 * (i + 1) : 7));
    const set = scalesFromNetworkState(TINY_SPEC, state);
    expect(set.keys()).toEqual([
      'stage0.scale_conv.weight',
      'stage0.scale_1x1.weight',
      'stage1.0.scale_conv.weight',
      'stage1.0.scale_1x1.weight',
      'stage1.0.scale_identity.weight',
    ]);
    expect(set.get('stage1.0.scale_identity.weight')).toEqual(new Float32Array([0.1, 0.2, 0.3, 0.4]));
    expect(scalesFromNetworkState({ ...TINY_SPEC, mode: 'csla' }, state).size).toBe(5);
  });

  test('refuses networks without scales, missing parameters and diverged values', () => {
    const state = networkState(TINY_SPEC, () => 1);
    expect(() => scalesFromNetworkState({ ...TINY_SPEC, mode: 'target' }, state)).toThrow(
      "scalesFromNetworkState: a 'target' network has no branch scales (hs or csla needed)",
    );
    const partial = new Map(state);
    partial.delete('stage0.scale_1x1.weight');
    expect(() => scalesFromNetworkState(TINY_SPEC, partial)).toThrow(
      'scalesFromNetworkState: the state dict lacks 1 scale parameters: stage0.scale_1x1.weight',
    );
    const diverged = new Map(state).set('stage0.scale_1x1.weight', { shape: [4], data: new Float64Array([1, Number.NaN, 1, 1]) });
    expect(() => scalesFromNetworkState(TINY_SPEC, diverged)).toThrow(/non-finite values \(1 in 1 keys\): stage0\.scale_1x1\.weight has 1/);
  });
});

describe('scale JSON checksum', () => {
  test('a damaged value is detected; a hand-edited file without the checksum loads', () => {
    const set = ScaleSet.from([
      ['stage0.scale_conv.weight', [1.5, -0.25]],
      ['stage0.scale_1x1.weight', [0.75, 2]],
    ]);
    const text = scalesToJson(set);
    expect(text).toMatch(/"sha256": "[0-9a-f]{64}"/);
    expect(Array.from(scalesFromJson(text, 'ok.json').get('stage0.scale_conv.weight'))).toEqual([1.5, -0.25]);
    const damaged = text.replace('-0.25', '-0.26');
    expect(() => scalesFromJson(damaged, 'damaged.json')).toThrow(/damaged\.json: checksum mismatch/);
    const edited = damaged.replace(/\n\s*"sha256": "[0-9a-f]+",/, '');
    expect(Array.from(scalesFromJson(edited, 'edited.json').get('stage0.scale_conv.weight'))).toEqual([1.5, -0.26].map(Math.fround));
  });
});

describe('degenerate scale values', () => {
  const cli = path.join(__dirname, '..', 'dist', 'cli.js');
  const repopt = (...args: string[]) =>
    spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, OMP_NUM_THREADS: '1' } });
  /** RepOpt-VGG-XS's scale keys (Fashion-MNIST: 1 channel, 10 classes), every value `fill(key, channel)`. */
  const xsSpec = networkSpec('RepOpt-VGG-XS', { mode: 'hs', numClasses: 10, inChannels: 1 });
  const xsScales = (fill: (key: string, channel: number) => number) =>
    ScaleSet.from(
      parameterInfo(xsSpec)
        .filter((p) => p.role.startsWith('scale_'))
        .map((p): [string, number[]] => [p.name, Array.from({ length: p.shape[0]! }, (_, o) => fill(p.name, o))]),
    );
  /** Writes the set as JSON without its checksum, as a hand-edited file would be. */
  const saveEdited = (name: string, set: ScaleSet) => {
    fs.writeFileSync(temp(name), scalesToJson(set).replace(/\n\s*"sha256": "[0-9a-f]+",/, ''));
    return temp(name);
  };
  const trainFlags = ['--arch', 'RepOpt-VGG-XS', '--mode', 'target', '--train-subset', '200', '--test-subset', '100'];
  const trainFlagsRun = [...trainFlags, '--epochs', '1', '--batch-size', '50', '--threads', '1'];

  test('all zeros: refused by loadScales, by train (before anything is written) and by scales show', () => {
    const file = saveEdited(
      'zeros.json',
      xsScales(() => 0),
    );
    const count = xsScales(() => 0).entries().length;
    expect(thrown(() => loadScales(file)).message).toMatch(
      new RegExp(`^${file}: every scale is 0 \\(\\d+ values in ${count} tensors\\): no block could train`),
    );
    const r = repopt('train', ...trainFlags, '--scales', file, '--out', temp('zeros-run'));
    expect(r.stderr).toContain(`repopt: --scales ${file}: every scale is 0`);
    expect(r.status).toBe(1);
    expect(fs.existsSync(temp('zeros-run'))).toBe(false);
    const show = repopt('scales', 'show', file);
    expect(show.stderr).toContain(`${file}: every scale is 0`);
    expect(show.status).toBe(1);
  });

  test('one block with every branch 0 is refused, naming the block and its branches', () => {
    const file = saveEdited(
      'block.json',
      xsScales((key) => (key.startsWith('stage2.0.') ? 0 : 1)),
    );
    expect(thrown(() => loadScales(file)).message).toBe(
      `${file}: block stage2.0 has every branch scale 0 (scale_conv (s), scale_1x1 (t)): its conv could never train`,
    );
  });

  test('NaN, infinite and absurdly large values are refused, naming the key, index and value', () => {
    const nan = ScaleSet.from(
      xsScales(() => 1)
        .entries()
        .map(([k, v]): [string, Float32Array] => [k, k === 'stage1.0.scale_1x1.weight' ? v.fill(Number.NaN, 2) : v]),
    );
    saveScales(temp('nan.pth'), nan);
    expect(thrown(() => loadScales(temp('nan.pth'))).message).toBe(
      `${temp('nan.pth')}: stage1.0.scale_1x1.weight[2] is NaN: scales must be finite numbers (the hyper-search run that wrote it diverged)`,
    );
    const huge = saveEdited(
      'huge.json',
      xsScales((key, o) => (key === 'stage0.scale_conv.weight' && o === 1 ? -2e4 : 1)),
    );
    expect(thrown(() => loadScales(huge)).message).toBe(
      `${huge}: stage0.scale_conv.weight[1] is -20000: beyond the |scale| <= 10000 a network can train with (the gradient is multiplied by its square)`,
    );
    expect(() =>
      loadScales(
        saveEdited(
          'large.json',
          xsScales(() => 1e4),
        ),
      ),
    ).not.toThrow();
  });

  test('negative values and a zero branch are accepted with warnings, through scales show and a training run', async () => {
    const set = xsScales((key, o) => (key === 'stage1.0.scale_1x1.weight' ? 0 : key === 'stage0.scale_conv.weight' && o < 3 ? -0.5 : 1));
    const file = saveEdited('negative.json', set);
    expect(loadScales(file).size).toBe(set.size);
    const warnings = scaleValueWarnings(set, file);
    expect(warnings).toEqual([
      `${file}: block stage1.0 has scale_1x1 (t) 0 throughout: that branch adds nothing to the block`,
      `${file}: negative scales in 1 tensors (accepted: hyper-search learns some; with SGD the gradient multiplier uses their ` +
        'squares): stage0.scale_conv.weight (3 of 8)',
    ]);
    const show = repopt('scales', 'show', file);
    expect(show.status).toBe(0);
    expect(show.stdout).toContain('fits RepOpt-VGG-XS');
    for (const w of warnings) expect(show.stderr).toContain(`warning: ${w}`);

    const run = train({
      arch: 'RepOpt-VGG-XS',
      mode: 'target',
      scales: file,
      data: { kind: 'fashion-mnist', trainSubset: 200, testSubset: 100 },
      epochs: 1,
      batchSize: 50,
      threads: 1,
      outDir: temp('negative-run'),
    });
    const heard: string[] = [];
    run.on('warning', (e) => heard.push(e.message));
    const r = await run.result;
    r.network.dispose();
    expect(r.steps).toBe(4);
    expect(heard).toEqual(warnings);
  }, 120_000);

  test('output channels with every branch 0 are warned about', () => {
    const set = xsScales((key, o) => (key.startsWith('stage3.0.') && o < 2 ? 0 : 1));
    expect(scaleValueWarnings(set, 'c.json')).toEqual([
      'c.json: block stage3.0 has 2 of 32 output channels with every branch scale 0: they never train',
    ]);
  });

  test('--scales as a folder or /dev/zero fails at once, naming the path', () => {
    expect(thrown(() => loadScales(tempDir)).message).toBe(`scale file ${tempDir}: is a folder, not a file`);
    expect(thrown(() => loadScales('/dev/zero', 'scales')).message).toBe('scales /dev/zero: not a regular file (a device, FIFO or socket)');
    const r = repopt('train', ...trainFlagsRun, '--scales', '/dev/zero', '--out', temp('dev-zero-run'));
    expect(r.stderr).toContain('repopt: --scales /dev/zero: not a regular file');
    expect(r.status).toBe(1);
  });
});
