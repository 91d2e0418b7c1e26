// Error messages name what the user set: the API parameter through the API, the flag through the CLI
// (dist/cli.js: build with `npx tsc -p .` first), never an internal function or a temporary file.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { Command } from 'commander';
import { buildProgram } from '../lib/cli';
import { CLI_FLAGS, cliMessage, flagOf } from '../lib/commands/flags';
import { native } from '../lib/native';
import { OptionError } from '../lib/option-error';
import { quantize, train } from '../lib';
import { TRAIN_DEFAULTS } from '../lib/defaults';
import { checkConfig, type TrainConfig } from '../lib/train/config';
import { Tensor } from '../lib/tensor';
import { thrown, useTestThreads } from './helpers';

const cli = path.join(__dirname, '..', 'dist', 'cli.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'repopt-messages-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
beforeAll(useTestThreads);

function repopt(...args: string[]) {
  return spawnSync(process.execPath, [cli, ...args], {
    encoding: 'utf8',
    timeout: 120_000,
    env: { ...process.env, OMP_NUM_THREADS: '1' },
  });
}

/** A tiny run's CLI flags: 200 training images in batches of 50 (4 steps). */
const TINY = ['--arch', 'RepOpt-VGG-XS', '--mode', 'vgg', '--train-subset', '200', '--test-subset', '100'];
const TINY_RUN = [...TINY, '--epochs', '1', '--batch-size', '50', '--threads', '1'];
const tinyOptions = (out: string, extra: Partial<TrainConfig> = {}) => ({
  arch: 'RepOpt-VGG-XS',
  mode: 'vgg' as const,
  data: { kind: 'fashion-mnist' as const, trainSubset: 200, testSubset: 100 },
  epochs: 1,
  batchSize: 50,
  threads: 1,
  outDir: path.join(tmp, out),
  ...extra,
});

/** The CLI failed with exit status 1 and a message that names `flag` and none of `internals`. */
function expectCliError(r: ReturnType<typeof repopt>, pattern: RegExp, internals: string[] = []): void {
  expect(r.error).toBeUndefined();
  expect(r.stderr).toMatch(pattern);
  for (const name of internals) expect(r.stderr).not.toContain(name);
  expect(r.status).toBe(1);
}

describe('the CLI names its flags', () => {
  test('API names become flags, as whole words, outside paths', () => {
    expect(flagOf('data.trainSubset')).toBe('--train-subset');
    expect(flagOf('quant.calibBatches')).toBe('--calib-batches');
    expect(flagOf('evalBatchSize')).toBe('evalBatchSize');
    const e = new OptionError('lr', 'lr 2 with batchSize 64: lower lr (not --lr twice), see runs/lr/x and lr.json', ['batchSize', 'lr']);
    expect(cliMessage(e)).toBe('--lr 2 with --batch-size 64: lower --lr (not --lr twice), see runs/lr/x and lr.json');
    // The option itself only at the start: later it may be a value (here the folder 'out').
    expect(cliMessage(new OptionError('out', 'out out/a.pth: the folder out does not exist'))).toBe(
      '--out out/a.pth: the folder out does not exist',
    );
    expect(cliMessage(new OptionError('data', 'data.kind is set; data is not'))).toBe('data.kind is set; data is not');
    expect(cliMessage(new Error('lr is plain'))).toBe('lr is plain');
  });

  test('every flag of the table is an option of some command', () => {
    const flags = new Set<string>();
    const collect = (command: Command) => {
      for (const option of command.options) if (option.long) flags.add(option.long);
      command.commands.forEach(collect);
    };
    collect(buildProgram());
    expect(Object.values(CLI_FLAGS).filter((flag) => !flags.has(flag))).toEqual([]);
  });

  test('--lr 1e308: refused before training, naming --lr and the batch size', () => {
    const r = repopt('train', ...TINY_RUN, '--out', path.join(tmp, 'lr-huge'), '--lr', '1e308');
    expectCliError(r, /repopt: --lr 1e\+308 is too large for --batch-size 50: the peak learning rate --lr x 50 \/ 256 must/, [
      'Optimizer.setLr',
    ]);
    expect(fs.existsSync(path.join(tmp, 'lr-huge', 'checkpoints'))).toBe(false);
  });

  test('--lr 1e30: the divergence names the step, --lr and --skip-non-finite', () => {
    const r = repopt('train', ...TINY_RUN, '--out', path.join(tmp, 'lr-diverge'), '--lr', '1e30');
    expectCliError(
      r,
      /repopt: --lr 1e\+30: training diverged, the loss read at step [1-4] is NaN; no checkpoint was written yet: start again with a lower --lr, or pass --skip-non-finite to skip such steps/,
      ['steps -', '(none)'],
    );
  });

  test('--label-smoothing 2, --seed 1e30, --weight-decay 1e308, --device foo: refused by the config check', () => {
    const run = (name: string, ...flags: string[]) => repopt('train', ...TINY_RUN, '--out', path.join(tmp, name), ...flags);
    expectCliError(run('ls', '--label-smoothing', '2'), /repopt: --label-smoothing must be in \[0, 1\], got 2/, ['Network.trainBatch']);
    expectCliError(run('seed', '--seed', '1e30'), /repopt: --seed must be an integer in \[0, 4294967294\], got 1e\+30/, ['splitDataset']);
    expectCliError(run('wd', '--weight-decay', '1e308'), /repopt: --weight-decay must be in \[0, 3\.4e38\], got 1e\+308/, [
      'cannot be converted',
    ]);
    expectCliError(run('dev', '--device', 'foo'), /repopt: --device must be 'cpu', 'cuda' or 'cuda:<n>', got 'foo'/, ['Network.to']);
    expectCliError(run('big-batch', '--train-subset', '30'), /repopt: --batch-size 50 is larger than the training set \(30 images\)/);
  });

  test('mode target without --scales, --resume with --finetune: flags in the message', () => {
    expectCliError(
      repopt('train', ...TINY_RUN, '--mode', 'target', '--out', path.join(tmp, 'noscales')),
      /repopt: --scales is needed for --mode target \(RepOpt-VGG\)/,
    );
    expectCliError(
      repopt('train', ...TINY_RUN, '--resume', '--finetune', tmp, '--out', path.join(tmp, 'both')),
      /repopt: --resume and --finetune exclude each other/,
    );
  });

  test('a folder or a device as --scales fails at once, naming the path', () => {
    const folder = repopt('train', ...TINY, '--mode', 'target', '--scales', tmp, '--out', path.join(tmp, 'sf'));
    expectCliError(folder, new RegExp(`repopt: --scales ${tmp}: is a folder, not a file`), ['EISDIR']);
    const device = repopt('train', ...TINY, '--mode', 'target', '--scales', '/dev/zero', '--out', path.join(tmp, 'sz'));
    expectCliError(device, /repopt: --scales \/dev\/zero: not a regular file/);
    expectCliError(repopt('scales', 'show', '/dev/zero'), /\/dev\/zero: not a regular file/);
    expectCliError(repopt('scales', 'show', tmp), new RegExp(`${tmp}: is a folder, not a file`), ['EISDIR']);
  });
});

describe('commands on a trained run', () => {
  let run: string;
  beforeAll(async () => {
    run = path.join(tmp, 'run');
    const r = await train(tinyOptions('run')).result;
    r.network.dispose();
  }, 120_000);

  test('quantize with more calibration batches than the data holds names --calib-batches and the batches there are', () => {
    const r = repopt('quantize', '--checkpoint', run, '--threads', '1');
    expectCliError(
      r,
      /repopt: --calib-batches 8 is more than the training set holds: its 200 images make 1 batch\(es\) of --batch-size 128; lower --calib-batches or --batch-size/,
      ['Network.calibrate', 'argument'],
    );
  });

  test('quantize through the API names calibBatches', async () => {
    const e = await quantize({ checkpoint: run, calibBatches: 3, batchSize: 100, threads: 1 }).catch((x: Error) => x);
    expect(e).toBeInstanceOf(OptionError);
    expect((e as OptionError).option).toBe('calibBatches');
    expect((e as Error).message).toBe(
      'calibBatches 3 is more than the training set holds: its 200 images make 2 batch(es) of batchSize 100; lower calibBatches or batchSize',
    );
    const percentile = await quantize({ checkpoint: run, percentile: 50 }).catch((x: Error) => x);
    expect((percentile as Error).message).toBe('percentile must be in (50, 100], got 50');
    const qatLr = await quantize({ checkpoint: run, calibBatches: 1, qatEpochs: 1, qatLr: 1e308 }).catch((x: Error) => x);
    expect((qatLr as OptionError).option).toBe('qatLr');
    expect((qatLr as Error).message).toMatch(/^qatLr 1e\+308 is too large for the run's batch size 50: /);
  });

  test('export / convert into a missing folder name the path and the folder, not a temporary file', () => {
    for (const command of ['export', 'convert']) {
      const out = path.join(tmp, 'missing-dir', 'a.pth');
      const r = repopt(command, '--checkpoint', run, '--out', out);
      expectCliError(r, new RegExp(`repopt: --out ${out}: the folder ${path.dirname(out)} does not exist`), ['.tmp', 'ENOENT']);
    }
  });
});

describe('the API names its parameters', () => {
  const config = (extra: Partial<TrainConfig>): TrainConfig =>
    ({ ...TRAIN_DEFAULTS, outDir: path.join(tmp, 'api'), ...extra }) as TrainConfig;
  const optionOf = (c: TrainConfig) => {
    const e = thrown(() => checkConfig(c));
    expect(e).toBeInstanceOf(OptionError);
    expect(e.message).not.toMatch(/--/);
    return [(e as OptionError).option, e.message];
  };

  test('config checks: OptionErrors naming the parameter, no flags', () => {
    expect(optionOf(config({ lr: 1e308 }))).toEqual([
      'lr',
      'lr 1e+308 is too large for batchSize 128: the peak learning rate lr x 128 / 256 must be at most 3.4e38 (float32), got Infinity',
    ]);
    expect(optionOf(config({ seed: 2 ** 32 }))).toEqual(['seed', 'seed must be an integer in [0, 4294967294], got 4294967296']);
    expect(optionOf(config({ labelSmoothing: 2 }))).toEqual(['labelSmoothing', 'labelSmoothing must be in [0, 1], got 2']);
    expect(optionOf(config({ mode: 'target' }))[0]).toBe('scales');
    expect(optionOf(config({ mode: 'vgg', scales: 'x.json' }))).toEqual(['scales', 'scales only applies to mode target, not vgg']);
    expect(optionOf(config({ mode: 'vgg', resume: true, finetune: 'x' }))).toEqual(['resume', 'resume and finetune exclude each other']);
    expect(optionOf(config({ mode: 'target', scales: 'x.json', clipNorm: 1 }))[1]).toMatch(
      /^clipNorm: .* drop clipNorm or pass forceClip$/,
    );
    expect(optionOf(config({ device: 'gpu' }))[0]).toBe('device');
    expect(optionOf(config({ momentum: Infinity }))[0]).toBe('momentum');
    expect(optionOf(config({ data: { kind: 'fashion-mnist', trainSubset: -5 } }))).toEqual([
      'data.trainSubset',
      'data.trainSubset must be a positive integer (a number of images), got -5',
    ]);
    expect(optionOf(config({ data: { kind: 'cifar10' } as TrainConfig['data'] }))[0]).toBe('data.dir');
    expect(optionOf(config({ strides: [3, 1, 1, 1, 1] as unknown as TrainConfig['strides'] }))[0]).toBe('strides');
  });

  test('a diverging run rejects with an OptionError of lr, naming the step and skipNonFinite', async () => {
    const e = await train(tinyOptions('api-diverge', { lr: 1e30 })).result.catch((x: Error) => x);
    expect(e).toBeInstanceOf(OptionError);
    expect((e as OptionError).option).toBe('lr');
    expect((e as Error).message).toMatch(
      /^lr 1e\+30: training diverged, the loss read at step [1-4] is NaN; no checkpoint was written yet: start again with a lower lr, or pass skipNonFinite to skip such steps$/,
    );
  }, 60_000);

  test('a wrong-sized rngState says how many bytes the generator takes', () => {
    const images = new Uint8Array(4 * 16);
    const ds = new (native().Dataset)(images, [4, 1, 4, 4], new Int32Array(4), { device: 'cpu', mean: [0], std: [1], augmentSeed: 1 });
    try {
      const state = ds.rngState();
      expect(state.length).toBeGreaterThan(3);
      expect(thrown(() => ds.setRngState(new Uint8Array(3))).message).toBe(
        `Dataset.setRngState: argument 'state' must hold ${state.length} bytes (what rngState() returns on this dataset's device), got 3`,
      );
      ds.setRngState(state);
      expect(Buffer.from(ds.rngState()).equals(Buffer.from(state))).toBe(true);
    } finally {
      ds.dispose();
    }
  });

  test('Tensor.fromArray copies a SharedArrayBuffer-backed array (offset kept, later writes not seen)', () => {
    const shared = new Float32Array(new SharedArrayBuffer(8 * 4));
    shared.set([1, 2, 3, 4, 5, 6, 7, 8]);
    const t = Tensor.fromArray(shared.subarray(2, 6), [2, 2]);
    try {
      shared[2] = 99;
      expect(Array.from(t.toArray())).toEqual([3, 4, 5, 6]);
      expect(t.shape).toEqual([2, 2]);
    } finally {
      t.dispose();
    }
  });
});
