// Machine-readable CLI output: `repopt scales show --json` and `repopt eval --json` print one JSON document
// on stdout (warnings inside it, nothing on stderr) whose values match the file and the run.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { type EpochEvent, train } from '../lib';
import { networkSpec } from '../lib/configs';
import { saveScales, ScaleSet } from '../lib/scales';
import { parameterInfo } from '../lib/spec';
import { useTestThreads } from './helpers';

beforeAll(useTestThreads);

const cli = path.join(__dirname, '..', 'dist', 'cli.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'repopt-json-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const threads = String(process.env.REPOPT_TEST_THREADS ?? 2);

function repopt(...args: string[]) {
  return spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
}

describe('repopt scales show --json', () => {
  // RepOpt-VGG-XS scales: s = 2, t = 0.5, g = 1 everywhere, except stage0's s = [-1, 3, 3, ...].
  const params = parameterInfo(networkSpec('RepOpt-VGG-XS', { mode: 'hs' })).filter((p) => p.role.startsWith('scale_'));
  const width = params.find((p) => p.name === 'stage0.scale_conv.weight')!.shape[0]!;
  const value = { scale_conv: 2, scale_1x1: 0.5, scale_identity: 1 } as Record<string, number>;
  const set = ScaleSet.from(
    params.map((p): [string, number[]] => [
      p.name,
      p.name === 'stage0.scale_conv.weight' ? [-1, ...Array(width - 1).fill(3)] : Array(p.shape[0]).fill(value[p.role]),
    ]),
  );
  const jsonFile = path.join(tmp, 'scales.json');
  const pthFile = path.join(tmp, 'scales.pth');
  saveScales(jsonFile, set);
  saveScales(pthFile, set);

  test('file, arch, sha256, per-branch statistics and warnings, from JSON and .pth alike', () => {
    const fromJson = repopt('scales', 'show', jsonFile, '--json');
    expect(fromJson.stderr).toBe('');
    expect(fromJson.status).toBe(0);
    const doc = JSON.parse(fromJson.stdout);
    expect(doc.file).toBe(jsonFile);
    expect(doc.arch).toBe('RepOpt-VGG-XS');
    expect(doc.tensors).toBe(params.length);
    // The checksum the JSON scale file records for these values.
    expect(doc.sha256).toBe(JSON.parse(fs.readFileSync(jsonFile, 'utf8')).sha256);
    expect(doc.sha256).toMatch(/^[0-9a-f]{64}$/);
    // One entry per branch: s and t for every block, g where the block has an identity.
    expect(doc.statistics).toHaveLength(params.length);
    const stage0s = doc.statistics.find((b: { block: string; branch: string }) => b.block === 'stage0' && b.branch === 's');
    expect(Math.abs(stage0s.mean - (-1 + 3 * (width - 1)) / width)).toBeLessThanOrEqual(1e-12);
    expect(stage0s.min).toBe(-1);
    expect(stage0s.max).toBe(3);
    expect(stage0s.negativeShare).toBe(1 / width);
    const someT = doc.statistics.find((b: { branch: string }) => b.branch === 't');
    expect([someT.mean, someT.min, someT.max, someT.negativeShare]).toEqual([0.5, 0.5, 0.5, 0]);
    expect(doc.warnings).toHaveLength(1);
    expect(doc.warnings[0]).toMatch(
      new RegExp(`^${jsonFile}: negative scales in 1 tensors .*stage0\\.scale_conv\\.weight \\(1 of ${width}\\)`),
    );

    const fromPth = repopt('scales', 'show', pthFile, '--json');
    expect(fromPth.status).toBe(0);
    const pthDoc = JSON.parse(fromPth.stdout);
    expect(pthDoc.sha256).toBe(doc.sha256);
    expect(pthDoc.statistics).toEqual(doc.statistics);
    expect(pthDoc.warnings).toEqual([doc.warnings[0].replace(jsonFile, pthFile)]);
  });

  test('without --json the same warning goes to stderr; a file that fits nothing is still an error', () => {
    const text = repopt('scales', 'show', jsonFile);
    expect(text.status).toBe(0);
    expect(text.stdout).toMatch(/fits RepOpt-VGG-XS/);
    expect(text.stderr).toMatch(/^warning: .*negative scales in 1 tensors/);
    const misfit = path.join(tmp, 'misfit.json');
    saveScales(misfit, ScaleSet.from([['stage9.scale_conv.weight', [1]]]));
    const bad = repopt('scales', 'show', misfit, '--json');
    expect(bad.status).toBe(1);
    expect(bad.stdout).toBe('');
    expect(bad.stderr).toMatch(/fit none of/);
  });
});

describe('repopt eval --json', () => {
  const out = path.join(tmp, 'run');
  const data = { kind: 'fashion-mnist', trainSubset: 256, testSubset: 64 } as const;
  const epochs: EpochEvent[] = [];
  const ckptDir = (run: string, step: number) => path.join(run, 'checkpoints', `ckpt-${String(step).padStart(9, '0')}`);

  beforeAll(async () => {
    // Checkpoints after step 4 (epoch 1) and step 8 (epoch 2), each with the run's own test evaluation.
    const run = train({ arch: 'RepOpt-VGG-XS', mode: 'vgg', data, epochs: 2, batchSize: 64, threads: Number(threads), outDir: out });
    run.on('epoch', (e) => epochs.push(e));
    expect((await run.result).steps).toBe(8);
  }, 120_000);

  test("the newest checkpoint: its test metrics equal the run's own evaluation", () => {
    const r = repopt('eval', '--checkpoint', out, '--threads', threads, '--json');
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(Object.keys(doc).sort()).toEqual(['accuracy', 'checkpoint', 'count', 'data', 'loss', 'warnings']);
    expect(doc.checkpoint).toBe(ckptDir(out, 8));
    expect(doc.data).toMatchObject(data);
    expect(doc.count).toBe(64);
    expect(doc.warnings).toEqual([]);
    expect(Math.abs(doc.accuracy - epochs[1]!.testAccuracy)).toBeLessThanOrEqual(1e-12);
    expect(Math.abs(doc.loss - epochs[1]!.testLoss)).toBeLessThanOrEqual(1e-6 * epochs[1]!.testLoss);
  });

  test('a damaged newest checkpoint: the older one is evaluated, and the warning is in the JSON', () => {
    const copy = path.join(tmp, 'damaged');
    fs.cpSync(out, copy, { recursive: true });
    const meta = path.join(ckptDir(copy, 8), 'meta.json');
    fs.writeFileSync(meta, fs.readFileSync(meta, 'utf8').replace('"step": 8', '"step": 9'));
    const r = repopt('eval', '--checkpoint', copy, '--threads', threads, '--json');
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(doc.checkpoint).toBe(ckptDir(copy, 4));
    expect(doc.warnings).toEqual([
      `checkpoint ${ckptDir(copy, 8)} is damaged, so an older one is used: checkpoint ${meta}: checksum mismatch: its content was edited or damaged`,
    ]);
    expect(Math.abs(doc.accuracy - epochs[0]!.testAccuracy)).toBeLessThanOrEqual(1e-12);
    expect(Math.abs(doc.loss - epochs[0]!.testLoss)).toBeLessThanOrEqual(1e-6 * epochs[0]!.testLoss);
  });
});
