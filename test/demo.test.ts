// The main job end to end: `repopt demo --quick`, then eval and convert on what it wrote.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';

const cli = path.join(__dirname, '..', 'dist', 'cli.js');
const out = fs.mkdtempSync(path.join(os.tmpdir(), 'repopt-demo-'));
afterAll(() => fs.rmSync(out, { recursive: true, force: true }));

function repopt(...args: string[]) {
  return spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: '1' } });
}

describe('repopt demo --quick', () => {
  let results: { rows: { name: string; testAccuracy: number }[]; folded: { accuracy: number } };
  beforeAll(() => {
    const r = repopt('demo', '--quick', '--out', out, '--threads', '2');
    if (r.status !== 0) throw new Error(`demo failed (${r.status}):\n${r.stderr}`);
    expect(r.stdout).toMatch(/report: .*report\.md/);
    results = JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8'));
  }, 240000);

  test('writes the report, plots, scales and checkpoints', async () => {
    const report = fs.readFileSync(path.join(out, 'report.md'), 'utf8');
    for (const name of ['RepOpt-VGG', 'RepVGG', 'VGG', 'RepVGG, folded (deploy)']) expect(report).toContain(`| ${name}`);
    for (const png of ['accuracy.png', 'loss.png', 'scales.png']) {
      expect(report).toContain(`](${png})`);
      const meta = await sharp(path.join(out, png)).metadata();
      expect([meta.format, meta.width, meta.height]).toEqual(['png', 900, 500]);
    }
    for (const f of ['hyper-search/scales.json', 'hyper-search/scales.pth', 'RepOpt-VGG/checkpoints/latest', 'RepVGG/metrics.jsonl', 'VGG/checkpoints/latest']) {
      expect(fs.existsSync(path.join(out, f))).toBe(true);
    }
  });

  test('every model beats chance (10 classes) by a wide margin; the folded RepVGG matches RepVGG', () => {
    expect(results.rows.map((r) => r.name)).toEqual(['RepOpt-VGG', 'RepVGG', 'VGG']);
    for (const r of results.rows) expect(r.testAccuracy).toBeGreaterThan(0.6);
    const repvgg = results.rows.find((r) => r.name === 'RepVGG')!;
    expect(Math.abs(results.folded.accuracy - repvgg.testAccuracy)).toBeLessThanOrEqual(0.002);
  });

  test('eval and convert work on the demo’s checkpoints; convert refuses non-repvgg runs', () => {
    const evaluated = repopt('eval', '--checkpoint', path.join(out, 'VGG'));
    expect(evaluated.stderr).toBe('');
    expect(evaluated.stdout).toMatch(/test accuracy \d+\.\d%, loss \d\.\d+ on 2000 images/);
    const pth = path.join(out, 'deploy.pth');
    const converted = repopt('convert', '--checkpoint', path.join(out, 'RepVGG'), '--out', pth);
    expect(converted.status).toBe(0);
    expect(fs.statSync(pth).size).toBeGreaterThan(100000);
    const refused = repopt('convert', '--checkpoint', path.join(out, 'VGG'), '--out', pth);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/convert folds repvgg checkpoints; .* is mode vgg/);
  });
});

describe('CLI errors say what to do', () => {
  test('train --mode target without scales', () => {
    const r = repopt('train', '--mode', 'target', '--out', path.join(out, 'x'));
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/mode target \(RepOpt-VGG\) needs --scales/);
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
    expect(got.keys.slice(0, 6)).toEqual(['stage0.conv.weight', 'stage0.bn.weight', 'stage0.bn.bias', 'stage0.bn.running_mean', 'stage0.bn.running_var', 'stage0.bn.num_batches_tracked']);
    expect(got.keys[got.keys.length - 1]).toBe('linear.bias');
    expect(got.batches).toBeGreaterThan(0);
  });
});
