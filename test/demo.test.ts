// The main job end to end: `repopt demo --quick`, then eval and convert on what it wrote.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import { sealedJsonText } from '../lib/sealed-json';

const cli = path.join(__dirname, '..', 'dist', 'cli.js');
const out = fs.mkdtempSync(path.join(os.tmpdir(), 'repopt-demo-'));
afterAll(() => fs.rmSync(out, { recursive: true, force: true }));

function repopt(...args: string[]) {
  return spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: '1' } });
}

describe('repopt demo --quick', () => {
  type Metrics = { accuracy: number };
  let results: {
    rows: { name: string; testAccuracy: number }[];
    folded: Metrics;
    int8: Record<string, { float: Metrics; simulated: Metrics; int8: Metrics }>;
  };
  beforeAll(() => {
    const r = repopt('demo', '--quick', '--out', out, '--threads', '2');
    if (r.status !== 0) throw new Error(`demo failed (${r.status}):\n${r.stderr}`);
    expect(r.stdout).toMatch(/report: .*report\.md/);
    results = JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8'));
  }, 240000);

  test('writes the report, plots, scales and checkpoints', async () => {
    const report = fs.readFileSync(path.join(out, 'report.md'), 'utf8');
    for (const name of ['RepOpt-VGG', 'RepVGG', 'VGG', 'RepVGG, folded (deploy)']) expect(report).toContain(`| ${name}`);
    // The INT8 column, the INT8 table and the weight-spread table.
    expect(report).toMatch(/\| model +\| test accuracy \| INT8 \(PTQ\) \|/);
    expect(report).toMatch(/\| RepVGG, folded \(deploy\) \| \d+\.\d% +\| \d+\.\d% +\|/);
    expect(report).toMatch(/\| model \(folded\) \| float32 \| INT8 simulated \| INT8 \(QNNPACK\) \| drop/);
    expect(report).toMatch(/\| layer +\| RepOpt-VGG range +\| RepOpt-VGG std +\| RepOpt-VGG max\/std \| RepVGG range/);
    expect(report).toMatch(/\| stage4\.0 +\| -?\d/);
    for (const png of ['accuracy.png', 'loss.png', 'scales.png', 'weights.png']) {
      expect(report).toContain(`](${png})`);
      const meta = await sharp(path.join(out, png)).metadata();
      expect([meta.format, meta.width, meta.height]).toEqual(['png', 900, 500]);
    }
    for (const f of [
      'hyper-search/scales.json',
      'hyper-search/scales.pth',
      'RepOpt-VGG/checkpoints/latest',
      'RepVGG/metrics.jsonl',
      'VGG/checkpoints/latest',
    ]) {
      expect(fs.existsSync(path.join(out, f))).toBe(true);
    }
  });

  test('INT8: every model keeps most of its accuracy; simulated and real int8 agree closely', () => {
    for (const name of ['RepOpt-VGG', 'RepVGG', 'VGG']) {
      const q = results.int8[name];
      expect(q.int8.accuracy).toBeGreaterThan(0.6);
      expect(Math.abs(q.int8.accuracy - q.simulated.accuracy)).toBeLessThanOrEqual(0.005);
      expect(q.float.accuracy).toBeCloseTo(results.rows.find((r) => r.name === name)!.testAccuracy, 2);
    }
  });

  test('every model beats chance (10 classes) by a wide margin; the folded RepVGG matches RepVGG', () => {
    expect(results.rows.map((r) => r.name)).toEqual(['RepOpt-VGG', 'RepVGG', 'VGG']);
    for (const r of results.rows) expect(r.testAccuracy).toBeGreaterThan(0.6);
    const repvgg = results.rows.find((r) => r.name === 'RepVGG')!;
    expect(Math.abs(results.folded.accuracy - repvgg.testAccuracy)).toBeLessThanOrEqual(0.002);
  });

  test('eval and convert work on the demo’s checkpoints; convert folds repvgg and plain runs, refuses hs', () => {
    const evaluated = repopt('eval', '--checkpoint', path.join(out, 'VGG'));
    expect(evaluated.stderr).toBe('');
    expect(evaluated.stdout).toMatch(/test accuracy \d+\.\d%, loss \d\.\d+ on 2000 images/);
    const pth = path.join(out, 'deploy.pth');
    const converted = repopt('convert', '--checkpoint', path.join(out, 'RepVGG'), '--out', pth);
    expect(converted.status).toBe(0);
    expect(fs.statSync(pth).size).toBeGreaterThan(100000);
    const plain = repopt('convert', '--checkpoint', path.join(out, 'VGG'), '--out', path.join(out, 'vgg-deploy.safetensors'));
    expect(plain.stdout).toMatch(/vgg-deploy\.safetensors: 7 folded blocks/);
    const refused = repopt('convert', '--checkpoint', path.join(out, 'hyper-search'), '--out', pth);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/convert folds trained repvgg, target and vgg checkpoints; .* is mode hs/);
  });
});

describe('CLI errors say what to do', () => {
  test('train --mode target without scales', () => {
    const r = repopt('train', '--mode', 'target', '--out', path.join(out, 'x'));
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/--scales is needed for --mode target \(RepOpt-VGG\)/);
  });
  test('bad option values', () => {
    const r = repopt('train', '--epochs', '-3');
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/option '--epochs <n>' argument '-3' is invalid\. expected an integer >= 1/);
  });
  test('scales show on the official B1 file, and on a file that is not one', () => {
    const ok = repopt('scales', 'show', path.join(__dirname, 'fixtures', 'official-scales', 'RepOpt-VGG-B1-scales.pth'));
    expect(ok.status).toBe(0);
    expect(ok.stdout).toMatch(/79 tensors, fits RepOpt-VGG-B1/);
    expect(ok.stdout).toMatch(/\| stage3\.15 +\| g +\|/);
    const bad = path.join(out, 'bad.pth');
    fs.writeFileSync(bad, 'not a zip');
    const r = repopt('scales', 'show', bad);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/bad\.pth/);
  });
});

describe('export', () => {
  test('state_dict .pth (torch.load) and safetensors with official keys', () => {
    const pth = path.join(out, 'vgg.pth');
    const st = path.join(out, 'vgg.safetensors');
    expect(repopt('export', '--checkpoint', path.join(out, 'VGG'), '--out', pth).status).toBe(0);
    expect(repopt('export', '--checkpoint', path.join(out, 'VGG'), '--out', st).status).toBe(0);
    // Real PyTorch reads the .pth; the safetensors file is parsed by its spec with the standard library.
    const script = `
import json, struct, sys, torch
sd = torch.load(sys.argv[1])
raw = open(sys.argv[2], 'rb').read()
n = struct.unpack('<Q', raw[:8])[0]
header = json.loads(raw[8:8 + n])
same = all(torch.equal(sd[k], torch.frombuffer(bytearray(raw[8 + n + h['data_offsets'][0]:8 + n + h['data_offsets'][1]]), dtype={'F32': torch.float32, 'I64': torch.int64}[h['dtype']]).reshape(h['shape'])) for k, h in header.items() if k != '__metadata__')
print(json.dumps({'keys': list(sd.keys()), 'same': same, 'batches': int(sd['stage0.bn.num_batches_tracked'])}))`;
    const r = spawnSync('/usr/bin/python3', ['-c', script, pth, st], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`python3 with torch failed (apt-get install python3-torch): ${r.stderr}`);
    const got = JSON.parse(r.stdout);
    expect(got.same).toBe(true);
    expect(got.keys.slice(0, 6)).toEqual([
      'stage0.conv.weight',
      'stage0.bn.weight',
      'stage0.bn.bias',
      'stage0.bn.running_mean',
      'stage0.bn.running_var',
      'stage0.bn.num_batches_tracked',
    ]);
    expect(got.keys[got.keys.length - 1]).toBe('linear.bias');
    expect(got.batches).toBeGreaterThan(0);
  });
});

describe('repopt quantize on the demo’s runs', () => {
  test('PTQ + 1 epoch of QAT on RepOpt-VGG (GradMults on): accuracies printed and in the run report, exports written', () => {
    const run = path.join(out, 'RepOpt-VGG');
    const r = repopt('quantize', '--checkpoint', run, '--calib-batches', '2', '--qat-epochs', '1', '--threads', '2');
    if (r.status !== 0) throw new Error(`quantize failed (${r.status}):\n${r.stderr}`);
    expect(r.stdout).toMatch(/post-training +float32 \d+\.\d% +int8 simulated \d+\.\d% +int8 QNNPACK \d+\.\d%/);
    expect(r.stdout).toMatch(/QAT \(1 epoch\) +float32 \d+\.\d% +int8 simulated \d+\.\d% +int8 QNNPACK \d+\.\d%/);
    const q = JSON.parse(fs.readFileSync(path.join(run, 'int8', 'quantization.json'), 'utf8'));
    expect(q.rows.map((x: { name: string }) => x.name)).toEqual(['post-training', 'QAT (1 epoch)']);
    for (const row of q.rows) {
      expect(row.int8.accuracy).toBeGreaterThan(0.6);
      expect(Math.abs(row.int8.accuracy - row.simulated.accuracy)).toBeLessThanOrEqual(0.005);
    }
    const report = fs.readFileSync(path.join(run, 'report.md'), 'utf8');
    expect(report).toMatch(/## INT8 quantization/);
    expect(report).toMatch(/\| QAT \(1 epoch\) +\| \d+\.\d% +\| \d+\.\d% +\| \d+\.\d% +\|/);
    // The QAT run is a RepOpt-VGG run: GradMults from the demo's scales, ranges kept in its checkpoint.
    const qatMeta = JSON.parse(
      fs.readFileSync(
        path.join(
          run,
          'int8',
          'qat',
          'checkpoints',
          fs.readFileSync(path.join(run, 'int8', 'qat', 'checkpoints', 'latest'), 'utf8').trim(),
          'meta.json',
        ),
        'utf8',
      ),
    );
    expect(qatMeta.config.mode).toBe('target');
    expect(qatMeta.config.scales).toMatch(/hyper-search/);
    expect(qatMeta.extra.quant.points.map((p: { name: string }) => p.name)).toContain('stage4.0');
    // Quantizing again replaces the report's section instead of adding a second.
    expect(repopt('quantize', '--checkpoint', run, '--calib-batches', '1', '--observer', 'percentile').status).toBe(0);
    expect(fs.readFileSync(path.join(run, 'report.md'), 'utf8').match(/## INT8 quantization/g)).toHaveLength(1);
    // The float deploy exports: PyTorch reads the .pth with the official deploy keys; the safetensors
    // file (parsed by its spec) holds the same tensors.
    const script = `
import json, struct, sys, torch
sd = torch.load(sys.argv[1])
raw = open(sys.argv[2], 'rb').read()
n = struct.unpack('<Q', raw[:8])[0]
header = json.loads(raw[8:8 + n])
same = all(torch.equal(sd[k], torch.frombuffer(bytearray(raw[8 + n + h['data_offsets'][0]:8 + n + h['data_offsets'][1]]), dtype=torch.float32).reshape(h['shape'])) for k, h in header.items() if k != '__metadata__')
print(json.dumps({'keys': list(sd.keys()), 'same': same and len(header) - ('__metadata__' in header) == len(sd)}))`;
    const py = spawnSync(
      '/usr/bin/python3',
      ['-c', script, path.join(run, 'int8', 'deploy.pth'), path.join(run, 'int8', 'deploy.safetensors')],
      { encoding: 'utf8' },
    );
    if (py.status !== 0) throw new Error(`python3 with torch failed: ${py.stderr}`);
    const got = JSON.parse(py.stdout);
    expect(got.same).toBe(true);
    expect(got.keys.slice(0, 3)).toEqual(['stage0.rbr_reparam.weight', 'stage0.rbr_reparam.bias', 'stage1.0.rbr_reparam.weight']);
    expect(got.keys[got.keys.length - 1]).toBe('linear.bias');
  }, 120000);

  test('bad input: zero calibration batches, a hyper-search run, a checkpoint of another architecture, QAT of a repvgg run', () => {
    const zero = repopt('quantize', '--checkpoint', path.join(out, 'VGG'), '--calib-batches', '0');
    expect(zero.status).toBe(1);
    expect(zero.stderr).toMatch(/'--calib-batches <n>' argument '0' is invalid\. expected an integer >= 1/);
    const hs = repopt('quantize', '--checkpoint', path.join(out, 'hyper-search'));
    expect(hs.stderr).toMatch(/quantize takes trained target, vgg or repvgg checkpoints; this one is a hyper-search \(mode hs\) model/);
    const repvgg = repopt('quantize', '--checkpoint', path.join(out, 'RepVGG'), '--qat-epochs', '1');
    expect(repvgg.stderr).toMatch(/a repvgg run quantizes post-training only/);
    // A checkpoint whose config names another architecture than its weights.
    const src = path.join(out, 'VGG', 'checkpoints', fs.readFileSync(path.join(out, 'VGG', 'checkpoints', 'latest'), 'utf8').trim());
    const wrong = path.join(out, 'wrong-arch');
    fs.cpSync(src, wrong, { recursive: true });
    // (re-sealed: an edit alone is refused as damage before the weights are looked at)
    const { checksum: _, ...meta } = JSON.parse(fs.readFileSync(path.join(wrong, 'meta.json'), 'utf8'));
    meta.config.arch = 'RepOpt-VGG-XS';
    fs.writeFileSync(path.join(wrong, 'meta.json'), sealedJsonText(meta, 2));
    const mismatch = repopt('quantize', '--checkpoint', wrong, '--out', path.join(out, 'wrong-int8'));
    expect(mismatch.status).toBe(1);
    expect(mismatch.stderr).toMatch(/the weights do not fit RepOpt-VGG-XS \(target\)/);
  });
});
