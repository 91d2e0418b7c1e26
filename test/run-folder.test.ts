// Run folders (issue 14): a folder holds one run at a time (a lock naming its process; a folder that
// holds a run is refused unless resumed or overwritten, which moves it aside whole), a resumed run
// matches its checkpoint's settings, bad --out paths fail at once, and half-written checkpoints of an
// interrupted run are cleared. Tiny CLI runs (RepOpt-VGG-XS, 256 Fashion-MNIST images: 4 steps/epoch).
import { type ChildProcess, spawn, spawnSync } from 'child_process';
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { hyperSearch, train } from '../lib';
import { readLatestCheckpoint } from '../lib/train/checkpoint';
import type { TrainConfig, TrainOptions } from '../lib/train/config';
import { thrown } from './helpers';

const cli = path.join(__dirname, '..', 'dist', 'cli.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'repopt-run-folder-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const env = { ...process.env, OMP_NUM_THREADS: '1' };

// Later flags override these (commander keeps an option's last value).
const TINY = [
  'train',
  '--mode',
  'vgg',
  '--arch',
  'RepOpt-VGG-XS',
  '--train-subset',
  '256',
  '--test-subset',
  '64',
  '--batch-size',
  '64',
  '--epochs',
  '2',
  '--lr',
  '0.1',
  '--seed',
  '0',
  '--threads',
  '1',
];

function repopt(out: string, ...flags: string[]) {
  return spawnSync(process.execPath, [cli, ...TINY, ...flags, '--out', out], { encoding: 'utf8', env, timeout: 120_000 });
}

const apiOptions = (outDir: string, extra: Partial<TrainOptions> = {}): TrainOptions => ({
  mode: 'vgg',
  arch: 'RepOpt-VGG-XS',
  data: { kind: 'fashion-mnist', trainSubset: 256, testSubset: 64 },
  batchSize: 64,
  epochs: 1,
  threads: 1,
  outDir,
  ...extra,
});

/** SHA-256 of every file under dir, by relative path. */
function hashes(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const entry of fs.readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const file = path.join(entry.parentPath, entry.name);
    out[path.relative(dir, file)] = createHash('sha256').update(fs.readFileSync(file)).digest('hex');
  }
  return out;
}

function metrics(out: string): Record<string, unknown>[] {
  return fs
    .readFileSync(path.join(out, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
}

const trainSteps = (out: string) => metrics(out).flatMap((l) => (l.type === 'train' ? [l.step as number] : []));
const latestStep = (out: string) => readLatestCheckpoint<TrainConfig>(path.join(out, 'checkpoints'))!.meta.step;

describe('a folder that holds a run', () => {
  test('a second run without --resume is refused naming --resume and --overwrite; the first run stays byte-identical', async () => {
    const out = path.join(tmp, 'reused');
    expect(repopt(out).status).toBe(0);
    const before = hashes(out);
    expect(Object.keys(before).sort()).toEqual([
      'checkpoints/ckpt-000000004/meta.json',
      'checkpoints/ckpt-000000004/model.pth',
      'checkpoints/ckpt-000000004/optimizer.bin',
      'checkpoints/ckpt-000000008/meta.json',
      'checkpoints/ckpt-000000008/model.pth',
      'checkpoints/ckpt-000000008/optimizer.bin',
      'checkpoints/latest',
      'metrics.jsonl',
    ]);

    // The user's repro: fewer epochs and another lr into the same folder.
    const again = repopt(out, '--epochs', '1', '--lr', '0.3');
    expect(again.status).toBe(1);
    expect(again.stderr).toBe(
      'repopt: --out already holds a run (checkpoints/ckpt-000000004, ckpt-000000008; metrics.jsonl): continue it with --resume, ' +
        'or start a new run there with --overwrite (the old run is moved aside whole, to a sibling folder named ' +
        `<folder>.replaced-<UTC time>). Folder: ${out}\n`,
    );
    expect(hashes(out)).toEqual(before);

    // The API names its parameters; the hyper-search goes through the same check.
    const apiMessage = /^outDir already holds a run \(.*\): continue it with resume, or start a new run there with overwrite /;
    await expect(train(apiOptions(out)).result).rejects.toThrow(apiMessage);
    await expect(hyperSearch(apiOptions(out)).result).rejects.toThrow(apiMessage);
    expect(hashes(out)).toEqual(before);
  }, 60_000);

  test('--overwrite moves the old run aside byte-identical, says where, and the new run completes in the folder', () => {
    const out = path.join(tmp, 'replaced');
    expect(repopt(out).status).toBe(0);
    const before = hashes(out);
    const r = repopt(out, '--epochs', '1', '--overwrite');
    expect(r.status).toBe(0);
    const [, moved] = /warning: .* held a run \(checkpoints\/ckpt-000000004, ckpt-000000008; metrics\.jsonl\): moved it to (\S+)\n/.exec(
      r.stderr,
    )!;
    expect(path.dirname(moved)).toBe(tmp);
    expect(path.basename(moved)).toMatch(/^replaced\.replaced-\d{8}T\d{6}Z$/);
    expect(hashes(moved)).toEqual(before);
    expect(r.stdout).toMatch(/after 4 steps; checkpoint .*replaced\/checkpoints\/ckpt-000000004\n$/);
    expect(trainSteps(out)).toEqual([4]); // the new run's metrics alone
    expect(readLatestCheckpoint<TrainConfig>(path.join(out, 'checkpoints'))!.meta.config.epochs).toBe(1);
    expect(fs.readdirSync(out).sort()).toEqual(['checkpoints', 'metrics.jsonl']); // lock released

    expect(thrown(() => train(apiOptions(out, { resume: true, overwrite: true }))).message).toBe(
      'overwrite and resume exclude each other (one moves the run in outDir aside, the other continues it)',
    );
  }, 60_000);
});

/** s as a regular expression matching it literally. */
const regexpOf = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

function exitOf(child: ChildProcess): Promise<{ code: number | null; stdout: string }> {
  let stdout = '';
  child.stdout?.on('data', (d) => (stdout += d));
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code, stdout })));
}

describe('the lock', () => {
  test('a second run while one runs in the folder is refused naming its pid; the first completes intact', async () => {
    const out = path.join(tmp, 'concurrent');
    const lock = path.join(out, 'run.lock');
    // 10 steps per epoch, 30 epochs: seconds, while the second run is refused in a fraction of one.
    const first = spawn(process.execPath, [cli, ...TINY, '--train-subset', '640', '--epochs', '30', '--out', out], {
      env,
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    const exit = exitOf(first);
    const end = Date.now() + 30_000;
    while (!fs.existsSync(lock) && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    const holder = JSON.parse(fs.readFileSync(lock, 'utf8'));
    expect([holder.pid, holder.host]).toEqual([first.pid, os.hostname()]);

    const second = repopt(out, '--epochs', '1');
    expect(second.status).toBe(1);
    expect(second.stderr).toMatch(
      new RegExp(
        `^repopt: --out is in use by another run: pid ${first.pid} on host ${os.hostname()}, started \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z ` +
          `\\(.*cli\\.js train .*\\); wait for it to end or choose another folder \\(${regexpOf(out)}\\)\\n$`,
      ),
    );
    expect(first.exitCode).toBe(null); // still running

    const done = await exit;
    expect(done.code).toBe(0);
    expect(done.stdout).toMatch(/after 300 steps; checkpoint .*ckpt-000000300\n$/);
    expect(latestStep(out)).toBe(300);
    // One run's metrics: steps in order, each once.
    const steps = trainSteps(out);
    expect(steps).toEqual([...steps].sort((a, b) => a - b));
    expect(new Set(steps).size).toBe(steps.length);
    expect(steps[steps.length - 1]).toBe(300);
    expect(fs.existsSync(lock)).toBe(false);
  }, 120_000);

  test("a stale lock (its process ended, or its pid now another process's) is taken over with a warning", () => {
    const out = path.join(tmp, 'stale');
    fs.mkdirSync(out);
    const lock = path.join(out, 'run.lock');
    const ended = spawnSync('true').pid;
    const stale = { pid: ended, host: os.hostname(), startedAt: '2020-01-02T03:04:05.000Z', command: 'repopt train', token: 'a' };
    fs.writeFileSync(lock, JSON.stringify(stale));
    const r = repopt(out, '--epochs', '1');
    expect(r.status).toBe(0);
    expect(r.stderr).toContain(
      `warning: ${out}: took over the lock of a run that is no longer running (pid ${ended} on host ${os.hostname()}, ` +
        'started 2020-01-02T03:04:05.000Z (repopt train))\n',
    );
    expect(fs.existsSync(lock)).toBe(false);

    // This (live) process's pid, but a start time that is not its own: the pid was reused.
    const reused = path.join(tmp, 'reused-pid');
    fs.mkdirSync(reused);
    fs.writeFileSync(path.join(reused, 'run.lock'), JSON.stringify({ ...stale, pid: process.pid, processStart: '1' }));
    const taken = repopt(reused, '--epochs', '1');
    expect(taken.status).toBe(0);
    expect(taken.stderr).toContain(`took over the lock of a run that is no longer running (pid ${process.pid} on host`);
  }, 60_000);

  test('a lock from another host is refused (it cannot be checked from here) and left in place', () => {
    const out = path.join(tmp, 'other-host');
    fs.mkdirSync(out);
    const lock = path.join(out, 'run.lock');
    const text = JSON.stringify({ pid: 4242, host: 'node-7', startedAt: '2020-01-02T03:04:05.000Z', command: 'repopt train', token: 'b' });
    fs.writeFileSync(lock, text);
    const r = repopt(out);
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(
      'repopt: --out is in use by pid 4242 on host node-7, started 2020-01-02T03:04:05.000Z (repopt train), which this host ' +
        `cannot check; if that run has ended, delete ${lock}\n`,
    );
    expect(fs.readFileSync(lock, 'utf8')).toBe(text);
  });

  test('the lock names this process while the run goes, and is released however it ends (completed, aborted, thrown)', async () => {
    const out = path.join(tmp, 'api');
    const lock = path.join(out, 'run.lock');
    const run = train(apiOptions(out));
    let holder: { pid: number; host: string; command: string } | undefined;
    run.on('start', () => {
      holder = JSON.parse(fs.readFileSync(lock, 'utf8'));
    });
    const done = await run.result;
    done.network.dispose();
    expect(done.status).toBe('completed');
    expect(holder).toMatchObject({ pid: process.pid, host: os.hostname(), command: process.argv.slice(1).join(' ') });
    expect(fs.existsSync(lock)).toBe(false);

    const abortedOut = path.join(tmp, 'api-aborted');
    const aborted = await train(apiOptions(abortedOut), { signal: AbortSignal.abort() }).result;
    aborted.network.dispose();
    expect(aborted.status).toBe('aborted');
    expect(fs.existsSync(path.join(abortedOut, 'run.lock'))).toBe(false);

    // A fine-tuning start that is not there fails inside the run, after the folder was taken.
    const missing = path.join(tmp, 'no-such-run');
    await expect(train(apiOptions(path.join(tmp, 'api-thrown'), { finetune: missing })).result).rejects.toThrow(missing);
    expect(fs.existsSync(path.join(tmp, 'api-thrown', 'run.lock'))).toBe(false);
  }, 60_000);
});

describe('--resume checks the settings against the checkpoint', () => {
  const out = path.join(tmp, 'resumed');
  let checkpoint: Record<string, string>;
  beforeAll(() => {
    expect(repopt(out, '--stop-after-steps', '2').status).toBe(0);
    checkpoint = hashes(path.join(out, 'checkpoints'));
  });

  test('different lr, batch size, seed and epochs: refused naming each, nothing written', () => {
    const r = repopt(out, '--resume', '--lr', '0.3', '--batch-size', '32', '--seed', '7', '--epochs', '3');
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(
      "repopt: --resume: the settings differ from the checkpoint's: --batch-size: checkpoint 64, given 32; --lr: checkpoint 0.1, " +
        "given 0.3; --epochs: checkpoint 2, given 3; --seed: checkpoint 0, given 7. Give the checkpoint's values, or add " +
        `--allow-config-change to continue with the given ones (the changes are recorded in metrics.jsonl). Checkpoint: ${out}/checkpoints/ckpt-000000002\n`,
    );
    expect(hashes(path.join(out, 'checkpoints'))).toEqual(checkpoint);
    expect(trainSteps(out)).toEqual([2]);
    expect(fs.existsSync(path.join(out, 'run.lock'))).toBe(false);
  });

  test('another arch: refused before any weights load, even with --allow-config-change', () => {
    for (const extra of [[], ['--allow-config-change']]) {
      const r = repopt(out, '--resume', '--arch', 'RepOpt-VGG-S', ...extra);
      expect(r.status).toBe(1);
      expect(r.stderr).toBe(
        "repopt: --resume: the settings differ from the checkpoint's: --arch: checkpoint RepOpt-VGG-XS, given RepOpt-VGG-S. The " +
          "network (architecture, block type, data set) cannot change when resuming: give the checkpoint's, or start a new run " +
          `in another folder. Checkpoint: ${out}/checkpoints/ckpt-000000002\n`,
      );
    }
    expect(hashes(path.join(out, 'checkpoints'))).toEqual(checkpoint);
  });

  test('with --allow-config-change: continues, warns, and records the changes in metrics.jsonl', () => {
    const r = repopt(out, '--resume', '--lr', '0.3', '--epochs', '3', '--allow-config-change');
    expect(r.status).toBe(0);
    expect(r.stderr).toContain(
      "warning: resumed with settings that differ from the checkpoint's: lr: checkpoint 0.1, given 0.3; epochs: checkpoint 2, given 3\n",
    );
    expect(r.stdout).toMatch(/after 12 steps/);
    expect(metrics(out).find((l) => l.type === 'config-change')).toEqual({
      type: 'config-change',
      step: 2,
      changes: [
        { option: 'lr', checkpoint: 0.1, given: 0.3 },
        { option: 'epochs', checkpoint: 2, given: 3 },
      ],
    });
    expect(trainSteps(out)[0]).toBe(2);
    // Later checkpoints carry the new settings: resuming with them needs no flag.
    const config = readLatestCheckpoint<TrainConfig>(path.join(out, 'checkpoints'))!.meta.config;
    expect([config.lr, config.epochs]).toEqual([0.3, 3]);
  });
});

describe('bad --out paths fail at once, naming --out', () => {
  test('/proc, a link into /proc, /sys, an empty path, a file, a path through a file', () => {
    const t0 = Date.now();
    const proc = repopt('/proc/x');
    const ms = Date.now() - t0;
    expect(proc.status).toBe(1);
    expect(proc.stderr).toBe('repopt: --out /proc/x is under /proc, a kernel file system: choose a folder on a disk\n');
    expect(ms).toBeLessThan(1000);

    const link = path.join(tmp, 'kernel');
    fs.symlinkSync('/proc', link);
    expect(repopt(path.join(link, 'x')).stderr).toBe(
      `repopt: --out ${link}/x is under /proc, a kernel file system: choose a folder on a disk\n`,
    );
    expect(thrown(() => train(apiOptions('/sys/x'))).message).toBe(
      'outDir /sys/x is under /sys, a kernel file system: choose a folder on a disk',
    );
    expect(repopt('').stderr).toBe('repopt: --out must name the run folder, got an empty path\n');

    const file = path.join(tmp, 'a-file');
    fs.writeFileSync(file, 'x');
    expect(repopt(file).stderr).toBe(`repopt: --out ${file} is a file, not a folder\n`);
    expect(repopt(path.join(file, 'run')).stderr).toMatch(
      new RegExp(`^repopt: --out ${regexpOf(file)}/run: cannot create the folder \\(ENOTDIR: not a directory, mkdir .*\\)\\n$`),
    );
  });
});

describe('interrupted checkpoint writes', () => {
  test("a leftover .ckpt-*.tmp-* folder and a half-written 'latest' are removed and reported at the next start", () => {
    const out = path.join(tmp, 'leftovers');
    expect(repopt(out, '--stop-after-steps', '2').status).toBe(0);
    const checkpoints = path.join(out, 'checkpoints');
    fs.mkdirSync(path.join(checkpoints, '.ckpt-000000005.tmp-abc'));
    fs.writeFileSync(path.join(checkpoints, '.ckpt-000000005.tmp-abc', 'model.pth'), 'partial');
    fs.writeFileSync(path.join(checkpoints, '.latest.12345.0a1b2c.tmp'), 'ckpt-0');
    const r = repopt(out, '--resume', '--stop-after-steps', '4');
    expect(r.status).toBe(0);
    expect(r.stderr).toContain(
      `warning: removed what interrupted checkpoint writes left in ${checkpoints}: .ckpt-000000005.tmp-abc, .latest.12345.0a1b2c.tmp\n`,
    );
    expect(fs.readdirSync(checkpoints).sort()).toEqual(['ckpt-000000002', 'ckpt-000000004', 'latest']);
    expect(latestStep(out)).toBe(4);
  });
});
