// Official files in: what the official RepOptimizers code and PyTorch users save (nested checkpoint dicts,
// fp16 / bf16 weights, DistributedDataParallel 'module.' prefixes, pickled config objects), written here
// by python3-torch, read by the .pth reader, as scales (--scales) and as weights (eval, convert, --finetune).
// The CLI tests run dist/cli.js: build with `npx tsc -p .` first.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { networkSpec } from '../lib/configs';
import { readOfficialStateDict } from '../lib/official';
import { isPthTensor, type PthTensor, PthUnreadable, type PthValue, readPth, readPthTree } from '../lib/pth';
import { loadScales } from '../lib/scales';
import { bufferInfo, parameterInfo } from '../lib/spec';
import { checkpointAt } from '../lib/train/load';
import { runTorch, thrown, useTestThreads } from './helpers';

beforeAll(useTestThreads);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'repopt-official-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const file = (name: string) => path.join(tmp, name);

const cli = path.join(__dirname, '..', 'dist', 'cli.js');
function repopt(...args: string[]) {
  return spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 300_000, env: { ...process.env, OMP_NUM_THREADS: '1' } });
}
function expectOk(r: ReturnType<typeof repopt>): string {
  if (r.status !== 0) throw new Error(`repopt exited with ${r.status}: ${r.stderr}`);
  return r.stdout;
}

const hexOf = (t: PthTensor) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).toString('hex');

/** Python: flattens a loaded tree as [path, kind, ...] rows: tensors with dtype, shape and bytes, plain values
 * as text, other objects by their class. */
const FLATTEN_PY = `
import torch
def flat(v, path):
    if isinstance(v, torch.Tensor):
        return [[path, 'tensor', str(v.dtype).replace('torch.', ''), list(v.shape), v.detach().contiguous().numpy().tobytes().hex()]]
    if isinstance(v, dict):
        return [row for k, x in v.items() for row in flat(x, path + [k])]
    if isinstance(v, (list, tuple)):
        return [row for i, x in enumerate(v) for row in flat(x, path + [i])]
    if v is None or isinstance(v, bool): return [[path, 'value', repr(v)]]
    if isinstance(v, int): return [[path, 'int', str(v)]]
    if isinstance(v, float): return [[path, 'float', repr(v)]]
    if isinstance(v, str): return [[path, 'str', v]]
    return [[path, 'object', type(v).__module__ + '.' + type(v).__qualname__]]
`;

type Row = [Array<string | number>, string, ...unknown[]];

/** Our tree, flattened as FLATTEN_PY does (ints and floats compared as numbers later). */
function flatten(v: PthValue, at: Array<string | number>): Row[] {
  if (v instanceof PthUnreadable) return [[at, 'object', v.what]];
  if (v instanceof Map) return [...v].flatMap(([k, x]) => flatten(x, [...at, k as string | number]));
  if (Array.isArray(v)) return v.flatMap((x, i) => flatten(x, [...at, i]));
  if (isPthTensor(v)) return [[at, 'tensor', v.dtype, [...v.shape], hexOf(v)]];
  if (v === null || typeof v === 'boolean') return [[at, 'value', v === null ? 'None' : v ? 'True' : 'False']];
  if (typeof v === 'string') return [[at, 'str', v]];
  return [[at, 'number', v]];
}

/** The value at a path of keys and indices. */
function get(tree: PthValue, ...keys: Array<string | number>): PthValue {
  return keys.reduce<PthValue>((v, k) => (v instanceof Map ? (v.get(k) as PthValue) : (v as readonly PthValue[])[k as number]), tree);
}

describe('the .pth reader: nested checkpoints', () => {
  test('dicts, lists, tuples, int keys, plain values, a config object and an optimizer state, protocols 2 and 4', () => {
    const files = [file('nested-p2.pth'), file('nested-p4.pth')];
    const script = `${FLATTEN_PY}
import sys, json, argparse, collections
torch.manual_seed(0)
w = torch.randn(4, 3)
model = collections.OrderedDict()
model['stage0.conv.weight'] = torch.randn(2, 1, 3, 3)
model['stage0.bn.num_batches_tracked'] = torch.tensor(7)
model['linear.bias'] = torch.arange(3.0)
p = torch.nn.Parameter(torch.ones(2))
opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
p.sum().backward(); opt.step()
tree = {
    'model': model,
    'list': [w, w.t(), {'inner': torch.tensor([1, -2], dtype=torch.int32)}],
    'tuple': (w[1:], 5, 'text', None, True, 2.5, -(2 ** 70)),
    'ids': {0: torch.ones(2, dtype=torch.float64), 1: 'one'},
    'optimizer': opt.state_dict(),
    'epoch': 239, 'max_accuracy': 54.53,
    'config': argparse.Namespace(lr=0.1, arch='RepOpt-VGG-B1'),
}
torch.save(tree, sys.argv[1])
torch.save(tree, sys.argv[2], pickle_protocol=4)
print(json.dumps(flat(tree, [])))
`;
    const expected = JSON.parse(runTorch(script, files)) as Row[];
    for (const f of files) {
      const ours = flatten(readPthTree(f), []);
      expect(ours.map((r) => r[0])).toEqual(expected.map((r) => r[0]));
      ours.forEach((row, i) => {
        const want = expected[i];
        if (want[1] === 'int') expect(BigInt(row[2] as number | bigint)).toBe(BigInt(want[2] as string));
        else if (want[1] === 'float') expect(row[2]).toBe(Number(want[2]));
        else if (want[1] === 'object') expect(row).toEqual([want[0], 'object', `an object made by ${want[2]}`]);
        else expect(row).toEqual(want);
      });
    }
    // What the rows say, spelled out: the optimizer's int keys, the big int, the config object.
    const tree = readPthTree(files[0]);
    expect((get(tree, 'optimizer', 'state', 0, 'momentum_buffer') as PthTensor).data).toEqual(new Float32Array([1, 1]));
    expect(get(tree, 'tuple', 6)).toBe(-(2n ** 70n));
    expect(get(tree, 'config')).toEqual(new PthUnreadable('an object made by argparse.Namespace'));
  });

  test('fp16 and bf16 storages are widened to float32 exactly (subnormals, extremes, -0, inf, NaN; strided views)', () => {
    const f = file('half.pth');
    const script = `
import sys, json, torch
torch.manual_seed(0)
special = [0.0, -0.0, 1.0, -2.5, 65504.0, 6.103515625e-05, 5.960464477539063e-08, -1e-07, float('inf'), float('-inf'), float('nan'), 1 / 3]
h = torch.tensor(special, dtype=torch.float16)
b = torch.tensor(special + [3.0e38, 1e-40, -9.2e-41], dtype=torch.bfloat16)
sd = {'h': h, 'b': b, 'h_t': torch.randn(3, 4).half().t(), 'b_cols': torch.randn(3, 4).bfloat16()[:, 1:]}
torch.save({'model': sd}, sys.argv[1])
print(json.dumps({k: [list(v.shape), v.float().contiguous().numpy().tobytes().hex()] for k, v in sd.items()}))
`;
    const expected = JSON.parse(runTorch(script, [f])) as Record<string, [number[], string]>;
    const state = readOfficialStateDict(f);
    expect([...state.keys()]).toEqual(['h', 'b', 'h_t', 'b_cols']);
    for (const [key, [shape, hex]] of Object.entries(expected)) {
      const t = state.get(key)!;
      expect([t.dtype, t.shape, hexOf(t)]).toEqual(['float32', shape, hex]);
    }
    // The fp16 subnormal 2^-24 and the bf16 subnormal nearest 1e-40 survive, not flushed to 0.
    expect(state.get('h')!.data[6]).toBe(2 ** -24);
    expect(state.get('b')!.data[13]).not.toBe(0);
  });

  test('refused, naming the entry: code-running globals anywhere, unsupported dtypes and objects where weights are read', () => {
    const marker = file('ran');
    const names = ['evil-weight', 'evil-unread', 'complex', 'object', 'tolerated'].map((n) => file(`${n}.pth`));
    const script = `
import sys, os, argparse, torch
class Evil:
    def __reduce__(self):
        return (os.system, ('touch ' + sys.argv[6],))
good = {'stage0.conv.weight': torch.ones(1)}
torch.save({'model': {'stage0.conv.weight': Evil()}}, sys.argv[1])
torch.save({'model': good, 'extra': [1, Evil()]}, sys.argv[2])
torch.save({'model': {'module.stage1.0.conv.weight': torch.zeros(2, dtype=torch.complex64)}}, sys.argv[3])
torch.save({'model': {'stage0.conv.weight': argparse.Namespace(lr=0.1)}}, sys.argv[4])
# Unreadable things outside the state dict are passed over.
torch.save({'model': good, 'optimizer': {'state': {0: torch.zeros(2, dtype=torch.complex64)}}, 'config': argparse.Namespace(x=1)}, sys.argv[5])
`;
    runTorch(script, [...names, marker]);
    const error = (f: string) => thrown(() => readOfficialStateDict(f)).message;
    expect(error(names[0])).toBe(
      `${names[0]}: entry 'model.stage0.conv.weight' refers to posix.system, a function that runs code or touches the system: no ` +
        'checkpoint needs it, so the file is refused (it is not run; open it only if you trust where it came from)',
    );
    expect(error(names[1])).toMatch(new RegExp(`^${names[1]}: entry 'extra\\.1' refers to posix\\.system, `));
    expect(error(names[2])).toMatch(
      /entry 'model\.module\.stage1\.0\.conv\.weight' is a tensor of torch\.ComplexFloatStorage, an unsupported dtype \(supported: torch\.FloatStorage, .*torch\.HalfStorage, torch\.BFloat16Storage\) \(a state dict holds tensors only\)$/,
    );
    expect(error(names[3])).toMatch(
      /entry 'model\.stage0\.conv\.weight' is an object made by argparse\.Namespace, not a tensor \(a state dict holds tensors only\)$/,
    );
    expect(fs.existsSync(marker)).toBe(false);
    expect([...readOfficialStateDict(names[4]).keys()]).toEqual(['stage0.conv.weight']);
  });
});

/** A tiny run's flags: RepOpt-VGG-XS on 200 Fashion-MNIST images, 2 steps, one thread. */
const DATA = ['--train-subset', '200', '--test-subset', '100'];
const TINY_RUN = ['--arch', 'RepOpt-VGG-XS', ...DATA, '--epochs', '1', '--batch-size', '50', '--stop-after-steps', '2', '--threads', '1'];
/** The model.pth bytes of a run folder's newest checkpoint. */
const modelBytes = (run: string) => fs.readFileSync(path.join(checkpointAt(run).dir, 'model.pth'));

describe('an official hyper-search checkpoint as scales', () => {
  // The hs network of RepOpt-VGG-XS on Fashion-MNIST, every parameter and buffer, as the official RepOptVGG names them.
  const spec = networkSpec('RepOpt-VGG-XS', { mode: 'hs', numClasses: 10, inChannels: 1 });
  const entries = [...parameterInfo(spec), ...bufferInfo(spec)].map((p) => [p.name, p.shape]);
  const layouts = ['hs-flat.pth', 'hs-nested.pth', 'hs-state-dict-fp16.pth'].map(file);
  const scaleFile = file('scales.pth');
  beforeAll(() => {
    const script = `
import sys, json, argparse, collections, torch
torch.manual_seed(1)
sd = collections.OrderedDict()
for name, shape in json.loads(sys.argv[1]):
    if '.scale_' in name: sd[name] = (torch.rand(shape) + 0.5).half().float()  # exact in fp16, so every file holds the same scales
    elif name.endswith('num_batches_tracked'): sd[name] = torch.tensor(1000)
    else: sd[name] = torch.randn(shape)
torch.save(sd, sys.argv[2])
ddp = collections.OrderedDict(('module.' + k, v) for k, v in sd.items())
torch.save({'model': ddp, 'optimizer': {'state': {}, 'param_groups': [{'lr': 0.1, 'params': list(range(len(sd)))}]},
            'epoch': 239, 'max_accuracy': 54.53, 'config': argparse.Namespace(mode='hs')}, sys.argv[3])
torch.save({'state_dict': collections.OrderedDict((k, v.half() if v.is_floating_point() else v) for k, v in sd.items())}, sys.argv[4])
torch.save(collections.OrderedDict((k, v) for k, v in sd.items() if '.scale_' in k), sys.argv[5])  # the released scale file layout
`;
    runTorch(script, [JSON.stringify(entries), ...layouts, scaleFile]);
  });

  test("flat, nested under model with module. prefixes, under state_dict in fp16: the scale file's scales", () => {
    const reference = loadScales(scaleFile);
    expect(reference.size).toBe(parameterInfo(spec).filter((p) => p.role.startsWith('scale_')).length);
    const sorted = (set: ReturnType<typeof loadScales>) => set.entries().sort(([a], [b]) => (a < b ? -1 : 1));
    for (const f of layouts) expect(sorted(loadScales(f))).toEqual(sorted(reference));
  });

  test('a model without scales is refused as scales', () => {
    const target = networkSpec('RepOpt-VGG-XS', { mode: 'target', numClasses: 10, inChannels: 1 });
    const f = file('target-as-scales.pth');
    runTorch('import sys, json, torch\ntorch.save({"model": {n: torch.zeros(s) for n, s in json.loads(sys.argv[1])}}, sys.argv[2])', [
      JSON.stringify(parameterInfo(target).map((p) => [p.name, p.shape])),
      f,
    ]);
    expect(thrown(() => loadScales(f)).message).toBe(
      `${f}: a model's weights without branch scales (no '<block>.scale_conv.weight' keys): not a hyper-search (mode hs) checkpoint or scale file`,
    );
  });

  test('repopt train --mode target --scales <hs checkpoint> trains exactly as with the scale file', () => {
    const run = (scales: string, out: string) =>
      expectOk(repopt('train', '--mode', 'target', '--scales', scales, ...TINY_RUN, '--out', file(out)));
    run(scaleFile, 'run-scale-file');
    run(layouts[1], 'run-hs-checkpoint');
    expect(modelBytes(file('run-hs-checkpoint')).equals(modelBytes(file('run-scale-file')))).toBe(true);
  });
});

describe('an official RepOpt-VGG training checkpoint as weights', () => {
  const run = file('run-target');
  const official = file('official-target.pth');
  beforeAll(() => {
    expectOk(repopt('train', '--mode', 'vgg', ...TINY_RUN, '--out', run));
    // The official layout: {'model': DDP state dict, 'optimizer', 'lr_scheduler', 'epoch', 'config'}.
    const script = `
import sys, argparse, collections, torch
sd = torch.load(sys.argv[1])
torch.save({'model': collections.OrderedDict(('module.' + k, v) for k, v in sd.items()), 'optimizer': {'state': {}, 'param_groups': []},
            'lr_scheduler': {'base_values': [0.1]}, 'epoch': 0, 'max_accuracy': 0.0, 'config': argparse.Namespace(arch='RepOpt-VGG-XS')}, sys.argv[2])
`;
    runTorch(script, [path.join(checkpointAt(run).dir, 'model.pth'), official]);
  });

  test('repopt eval: the same loss and accuracy as the repopt checkpoint it was made from', () => {
    const ours = JSON.parse(expectOk(repopt('eval', '--checkpoint', run, '--threads', '1', '--json')));
    const theirs = JSON.parse(
      expectOk(repopt('eval', '--checkpoint', official, '--dataset', 'fashion-mnist', ...DATA, '--threads', '1', '--json')),
    );
    expect(theirs.count).toBe(ours.count);
    expect(theirs.accuracy).toBe(ours.accuracy);
    expect(Math.abs(theirs.loss - ours.loss)).toBeLessThanOrEqual(1e-6 * Math.abs(ours.loss));
    // The architecture is read off the shapes, or checked when given.
    const wrongArch = repopt('eval', '--checkpoint', official, '--arch', 'RepOpt-VGG-S', '--dataset', 'fashion-mnist', '--json');
    expect(wrongArch.stderr).toMatch(/official-target\.pth: does not hold a RepOpt-VGG-S \(target\) network: .*is \[/);
    expect(wrongArch.status).toBe(1);
  });

  test('repopt eval without --dataset says that an official checkpoint needs it', () => {
    const r = repopt('eval', '--checkpoint', official);
    expect(r.stderr).toContain(`--dataset is needed: ${official} is an official checkpoint file, which does not record its data set`);
    expect(r.status).toBe(1);
  });

  test('repopt convert folds it as it folds the repopt checkpoint; --finetune starts from it as from the run', () => {
    expectOk(repopt('convert', '--checkpoint', run, '--out', file('deploy-run.pth')));
    expectOk(repopt('convert', '--checkpoint', official, '--out', file('deploy-official.pth')));
    expect(fs.readFileSync(file('deploy-official.pth')).equals(fs.readFileSync(file('deploy-run.pth')))).toBe(true);
    expect(readPth(file('deploy-official.pth')).has('stage0.rbr_reparam.weight')).toBe(true);
    const finetune = (from: string, out: string) =>
      expectOk(repopt('train', '--mode', 'vgg', ...TINY_RUN, '--finetune', from, '--out', file(out)));
    finetune(run, 'finetune-run');
    finetune(official, 'finetune-official');
    expect(modelBytes(file('finetune-official')).equals(modelBytes(file('finetune-run')))).toBe(true);
  });
});
