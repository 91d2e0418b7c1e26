// examples/ run as a user runs them: compiled, importing 'repopt' (the package by its own name), on a
// Fashion-MNIST subset. The README's first script is examples/train-fashion-mnist.ts, verbatim.
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const root = path.join(__dirname, '..');
const built = path.join(root, 'build', 'examples');
const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'repopt-examples-'));
const env = { ...process.env, OMP_NUM_THREADS: process.env.OMP_NUM_THREADS ?? '2' };
afterAll(() => fs.rmSync(cwd, { recursive: true, force: true }));

beforeAll(() => {
  const tsc = spawnSync(
    process.execPath,
    [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(root, 'examples', 'tsconfig.json')],
    { encoding: 'utf8' },
  );
  expect(tsc.stdout + tsc.stderr).toBe('');
  expect(tsc.status).toBe(0);
  // The other examples start from what this one writes (runs/hs/scales.json, runs/target).
  searched = example('hyper-search-then-train', ['2000']);
}, 600_000);

function example(name: string, args: string[]) {
  return spawnSync(process.execPath, [path.join(built, `${name}.js`), ...args], { cwd, env, encoding: 'utf8', timeout: 600_000 });
}

let searched: ReturnType<typeof example>;

describe('examples', () => {
  test('the README leads "Using it" with train-fashion-mnist.ts, verbatim', () => {
    const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
    const script = fs.readFileSync(path.join(root, 'examples', 'train-fashion-mnist.ts'), 'utf8');
    const using = readme.indexOf('## Using it');
    expect(using).toBeGreaterThan(0);
    const block = /```ts\n([\s\S]*?)```/.exec(readme.slice(using))![1];
    expect(block).toBe(script);
    expect(script.trimEnd().split('\n').length).toBeLessThanOrEqual(15);
  });

  test('hyper-search-then-train: scales, then RepOpt-VGG-S trained with them', () => {
    const r = searched;
    // Only warnings about the short search may go to stderr.
    expect(r.stderr.split('\n').filter((l) => l && !l.startsWith('warning: '))).toEqual([]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^scales: runs\/hs\/scales\.json \(HS model test accuracy \d+\.\d\d %\)$/m);
    expect(r.stdout).toMatch(/^epoch 2: test accuracy \d+\.\d\d %$/m);
    const acc = Number(
      /RepOpt-VGG-S: (\d+\.\d\d) % after 30 steps; checkpoint runs\/target\/checkpoints\/ckpt-000000030$/m.exec(r.stdout)![1],
    );
    expect(acc).toBeGreaterThan(30); // 10 classes: chance is 10 %
    expect(fs.existsSync(path.join(cwd, 'runs', 'hs', 'scales.pth'))).toBe(true);
  }, 600_000);

  test('train-fashion-mnist: progress line, epoch lines, and Ctrl-C stops with a checkpoint', async () => {
    const child = spawn(process.execPath, [path.join(built, 'train-fashion-mnist.js'), 'runs/hs/scales.json', '2000'], { cwd, env });
    let out = '';
    let err = '';
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    // Until the first epoch line (or the child's end, should it fail early).
    await new Promise<void>((resolve) => {
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (/epoch 1: test accuracy/.test(out)) resolve();
      });
      child.once('exit', () => resolve());
    });
    child.kill('SIGINT');
    expect(await exited).toBe(0);
    expect(err).toBe('');
    expect(out).toMatch(/\rstep 15 {2}loss \d+\.\d{3} {2}\d+ img\/s /);
    const [, steps, dir] = /^aborted after (\d+) steps: (runs\/repopt-vgg-s\/checkpoints\/ckpt-\d{9})$/m.exec(out)!;
    expect(Number(steps)).toBeGreaterThanOrEqual(15);
    expect(Number(steps)).toBeLessThan(150);
    expect(fs.existsSync(path.join(cwd, dir, 'meta.json'))).toBe(true);
  }, 600_000);

  test('finetune-and-export: fine-tunes the trained run, writes deploy safetensors, a .pth and INT8', () => {
    const r = example('finetune-and-export', ['runs/target', 'runs/hs/scales.json', '2000']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^fine-tuned: \d+\.\d\d %$/m);
    expect(r.stdout).toMatch(/^deploy network: runs\/deploy\.safetensors \(\d+ blocks\); weights: runs\/finetuned\.pth \(\d+ tensors\)$/m);
    expect(r.stdout).toMatch(/^post-training: float \d+\.\d\d %, int8 \d+\.\d\d %$/m);
    for (const f of ['runs/deploy.safetensors', 'runs/finetuned.pth', 'runs/finetuned/int8/model.int8.json'])
      expect(fs.existsSync(path.join(cwd, f))).toBe(true);
  }, 600_000);
});
