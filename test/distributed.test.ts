// Data-parallel training on c10d (Gloo over 127.0.0.1, 2 real worker processes, 1 torch thread each):
// equivalence with one process on the whole batch, identical replicas, SyncBatchNorm, resume, and the
// failure modes (a killed worker, an unreachable store).
import { type ChildProcess, spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { freePort, launch, rendezvousFromEnv, shardPermutation } from '../lib/distributed';
import { native } from '../lib/native';
import { NativeBackendNetwork } from '../lib/native-backend';
import { networkSpec } from '../lib/configs';
import { nativeOptimizerConfig, resolveOptimizerSpec } from '../lib/optimizer-spec';
import { saveScales, scalesFromNetworkState } from '../lib/scales';
import { parameterInfo } from '../lib/spec';
import { readLatestCheckpoint } from '../lib/train/checkpoint';
import { thrown } from './helpers';

const cli = path.join(__dirname, '..', 'dist', 'cli.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'repopt-dist-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const workerEnv = (extra: NodeJS.ProcessEnv = {}) => {
  const env: NodeJS.ProcessEnv = { ...process.env, OMP_NUM_THREADS: '1', ...extra };
  // A launched run must not see this process's own rendezvous (if jest ever runs under one).
  for (const k of ['RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'REPOPT_RENDEZVOUS_FILE'])
    if (!(k in extra)) delete env[k];
  return env;
};

function run(args: string[], extra: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: workerEnv(extra), timeout: 120_000 });
  if (r.status !== 0) throw new Error(`repopt ${args.join(' ')} exited with ${r.status ?? r.signal}:\n${r.stderr}`);
  return r;
}

// Small Fashion-MNIST subsets, no augmentation (the ranks' augmentation streams differ by design).
const DATA = ['--arch', 'RepOpt-VGG-XS', '--train-subset', '512', '--test-subset', '200', '--pad', '0', '--no-flip', '--log-every', '1'];

function model(out: string) {
  const ckpt = readLatestCheckpoint(path.join(out, 'checkpoints'));
  if (!ckpt) throw new Error(`no checkpoint in ${out}`);
  return ckpt;
}

/** Largest |a - b| / max(1, |a|) over all state tensors (floating point ones). */
function maxRelDiff(a: ReturnType<typeof model>['model'], b: ReturnType<typeof model>['model']): { diff: number; key: string } {
  let worst = { diff: 0, key: '' };
  expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
  for (const [key, t] of a) {
    const u = b.get(key)!;
    for (let i = 0; i < t.data.length; i++) {
      const x = Number(t.data[i]);
      const d = Math.abs(x - Number(u.data[i])) / Math.max(1, Math.abs(x));
      if (d > worst.diff) worst = { diff: d, key };
    }
  }
  return worst;
}

function scalesFile(): string {
  const file = path.join(tmp, 'xs-scales.json');
  if (!fs.existsSync(file)) {
    const spec = networkSpec('RepOpt-VGG-XS', { mode: 'hs', numClasses: 10, inChannels: 1 });
    const hs = new NativeBackendNetwork(spec, 'float32', 3);
    saveScales(file, scalesFromNetworkState(spec, hs.stateDict()));
    hs.dispose();
  }
  return file;
}

describe('distributed sampler and environment', () => {
  test("the ranks' step-k batches together are the one-process step-k batch", () => {
    const perm = native().Tensor.fromArray(BigInt64Array.from({ length: 70 }, (_, i) => BigInt((i * 37) % 70)));
    const global = perm.toArray();
    const shards = [0, 1].map((r) => shardPermutation(perm, r, 2, 16).toArray());
    for (const s of shards) expect(new Set(s).size).toBe(70); // a permutation of the same samples
    for (let k = 0; k < 4; k++) {
      const together = [...shards[0].subarray(k * 8, k * 8 + 8), ...shards[1].subarray(k * 8, k * 8 + 8)];
      expect(together).toEqual([...global.subarray(k * 16, k * 16 + 16)]);
    }
    expect(() => shardPermutation(perm, 0, 3, 16)).toThrow('not divisible by the number of processes (3)');
  });

  test('torchrun variables', () => {
    expect(rendezvousFromEnv({})).toBeUndefined();
    expect(rendezvousFromEnv({ RANK: '1', WORLD_SIZE: '2', MASTER_ADDR: '10.0.0.1', MASTER_PORT: '1234' })).toEqual({
      rank: 1,
      worldSize: 2,
      localRank: 1,
      masterAddr: '10.0.0.1',
      masterPort: 1234,
    });
    expect(rendezvousFromEnv({ RANK: '0', WORLD_SIZE: '4', LOCAL_WORLD_SIZE: '2', REPOPT_RENDEZVOUS_FILE: '/tmp/x/store' })).toEqual({
      rank: 0,
      worldSize: 4,
      localRank: 0,
      localWorldSize: 2,
      masterAddr: '127.0.0.1',
      masterPort: 29500,
      storeFile: '/tmp/x/store',
    });
    expect(() => rendezvousFromEnv({ RANK: '2', WORLD_SIZE: '2' })).toThrow('RANK=2 must be an integer in [0, 1]');
    expect(() => rendezvousFromEnv({ WORLD_SIZE: '2' })).toThrow('RANK is not');
  });

  test('bad process-group options are JS errors naming the option', () => {
    const PG = native().ProcessGroup;
    expect(() => new PG({ rank: 2, worldSize: 2, masterAddr: '127.0.0.1', masterPort: 1 })).toThrow('options.rank');
    expect(() => new PG({ rank: 0, worldSize: 1, masterAddr: '127.0.0.1', masterPort: 70000 })).toThrow('options.masterPort');
    expect(() => new PG({ rank: 0, worldSize: 1, masterAddr: '127.0.0.1', masterPort: 1, backend: 'mpi' as 'gloo' })).toThrow(
      "must be 'gloo' or 'nccl'",
    );
  });

  test('a one-process group: collectives, attach rules, BatchNorm modes', async () => {
    const b = native();
    const pg = new b.ProcessGroup({ rank: 0, worldSize: 1, masterAddr: '127.0.0.1', masterPort: await freePort(), timeoutMs: 10_000 });
    expect([pg.rank, pg.worldSize, pg.backend]).toEqual([0, 1, 'gloo']);
    const t = b.Tensor.fromArray(new Float32Array([1, 2, 3]));
    expect(Array.from(pg.allreduce(t, 'mean').toArray())).toEqual([1, 2, 3]);
    expect(Array.from(pg.broadcast(t, 0).toArray())).toEqual([1, 2, 3]);
    expect(() => pg.allreduce(t, 'prod' as 'sum')).toThrow("argument 'op' must be 'sum', 'mean', 'max' or 'min', got 'prod'");
    expect(() => pg.broadcast(t, 1)).toThrow("argument 'root'");
    pg.barrier();
    const net = new b.Network(networkSpec('RepOpt-VGG-XS', { mode: 'target', numClasses: 4, inChannels: 1 }), { seed: 1 });
    expect(() => net.setBatchNormMode('sync' as 'batch')).toThrow('set by ProcessGroup.attach');
    expect(() => net.setBatchNormMode('off' as 'batch')).toThrow("must be 'batch' or 'frozen', got 'off'");
    expect(pg.attach(net, { syncBatchNorm: true }).buckets).toBeGreaterThanOrEqual(1);
    expect(() => pg.attach(net)).toThrow('already attached');
    expect(() => net.setBatchNormMode('frozen')).toThrow('uses SyncBatchNorm');
    expect(() => pg.attach({} as never)).toThrow("argument 'network' must be a Network");
    pg.detach(net);
    net.setBatchNormMode('frozen');
    expect(() => pg.attach(net, { syncBatchNorm: true })).toThrow('exclude each other');
    pg.dispose();
    expect(() => pg.barrier()).toThrow('disposed');
    net.dispose();
  });

  test('while an attached network runs an asynchronous step, the group and the networks attached to it refuse collectives', async () => {
    const b = native();
    const pg = new b.ProcessGroup({ rank: 0, worldSize: 1, masterAddr: '127.0.0.1', masterPort: await freePort(), timeoutMs: 10_000 });
    const spec = networkSpec('RepOpt-VGG-XS', { mode: 'target', numClasses: 4, inChannels: 1 });
    const config = nativeOptimizerConfig(resolveOptimizerSpec({ type: 'sgd', lr: 0.05 }, parameterInfo(spec)));
    const N = 32;
    const dataset = (label = (n: number) => n % 4) =>
      new b.Dataset(
        Uint8Array.from({ length: N * 256 }, (_, i) => (i * 2654435761) % 251),
        [N, 1, 16, 16],
        Int32Array.from({ length: N }, (_, n) => label(n)),
        { mean: [0.5], std: [0.25] },
      );
    const [net, other, third] = [1, 2, 3].map((seed) => new b.Network(spec, { seed }));
    const [opt, otherOpt] = [net, other].map((n) => n.createOptimizer(config));
    const [ds, otherDs, badDs] = [dataset(), dataset(), dataset(() => 9)]; // badDs: labels out of range
    pg.attach(net);
    pg.attach(other);
    const t = b.Tensor.fromArray(new Float32Array([1, 2, 3]));
    const busy = (method: string) =>
      `ProcessGroup.${method}: an asynchronous step is running on a network attached to this group; await it first`;
    const step = net.trainBatchAsync(opt, ds, ds.permutation(0, 0), 0, 8, {}, 2);
    expect(thrown(() => pg.allreduce(t)).message).toBe(busy('allreduce'));
    expect(thrown(() => pg.broadcast(t)).message).toBe(busy('broadcast'));
    expect(thrown(() => pg.barrier()).message).toBe(busy('barrier'));
    expect(thrown(() => pg.broadcastState(other)).message).toBe(busy('broadcastState'));
    expect(thrown(() => pg.attach(third)).message).toBe(busy('attach'));
    expect(thrown(() => pg.detach(other)).message).toBe(busy('detach'));
    expect(thrown(() => pg.dispose()).message).toBe(busy('dispose'));
    // Another network of the group would run the group's collectives on the JS thread.
    expect(thrown(() => other.trainBatch(otherOpt, otherDs, otherDs.permutation(0, 0), 0, 8)).message).toBe(
      "Network.trainBatch: an asynchronous step is running on another network attached to this network's process group; await it first",
    );
    expect(() => other.trainBatchAsync(otherOpt, otherDs, otherDs.permutation(0, 0), 0, 8)).toThrow(/another network attached/);
    // A network of no group is free.
    third.evaluate(otherDs, 16);
    await step;
    // Settled (also when the step fails): everything works again.
    await expect(net.trainBatchAsync(opt, badDs, badDs.permutation(0, 0), 0, 8)).rejects.toThrow(/out of bounds/);
    expect(Array.from(pg.allreduce(t, 'sum').toArray())).toEqual([1, 2, 3]);
    pg.barrier();
    other.trainBatch(otherOpt, otherDs, otherDs.permutation(0, 0), 0, 8);
    expect(opt.steps).toBe(2);
    pg.detach(net);
    pg.detach(other);
    pg.dispose();
    for (const x of [opt, otherOpt, net, other, third, ds, otherDs, badDs]) x.dispose();
  });
});

describe('data parallel == one process on the whole batch', () => {
  test('RepOpt-VGG (GradMults on the averaged gradient), frozen BN: 2 processes x 32 == 1 process x 64 after 8 steps', () => {
    const args = [
      'train',
      ...DATA,
      '--mode',
      'target',
      '--scales',
      scalesFile(),
      '--batch-size',
      '64',
      '--epochs',
      '1',
      '--lr',
      '0.4',
      '--batch-norm',
      'frozen',
    ];
    run([...args, '--threads', '1', '--out', path.join(tmp, 'one')]);
    const r = run([...args, '--nproc', '2', '--out', path.join(tmp, 'two')]);
    expect(r.stderr).toContain('rank 1 of 2 started');
    const [one, two] = [model(path.join(tmp, 'one')), model(path.join(tmp, 'two'))];
    expect(two.meta.step).toBe(8);
    const { diff, key } = maxRelDiff(one.model, two.model);
    expect([key, diff]).toEqual([key, expect.any(Number)]);
    expect(diff).toBeLessThan(1e-5);
    // The weights moved (the comparison is not of two untouched initialisations).
    const init = new NativeBackendNetwork(
      networkSpec('RepOpt-VGG-XS', { mode: 'target', numClasses: 10, inChannels: 1 }),
      'float32',
      0,
    ).stateTensors();
    expect(maxRelDiff(init, one.model).diff).toBeGreaterThan(1e-2);
    // Rank 0 alone wrote the metrics: one record per step, not two.
    const lines = fs
      .readFileSync(path.join(tmp, 'two', 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.filter((l) => l.type === 'train')).toHaveLength(8);
  });

  test('SyncBatchNorm: 2 processes x 8 == BatchNorm in 1 process x 16 (float64, 3 steps, 1e-10)', async () => {
    const worker = path.join(__dirname, 'fixtures', 'sync-bn-worker.js');
    const port = await freePort();
    const one = path.join(tmp, 'sync-one.json');
    const r1 = spawnSync(process.execPath, [worker, one, '3', '16'], { encoding: 'utf8', env: workerEnv(), timeout: 60_000 });
    expect(r1.stderr).toBe('');
    const children = [0, 1].map((rank) =>
      spawn(process.execPath, [worker, path.join(tmp, `sync-${rank}.json`), '3', '16'], {
        env: workerEnv({ RANK: String(rank), WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port) }),
        stdio: ['ignore', 'ignore', 'pipe'],
      }),
    );
    const codes = await Promise.all(children.map(exitOf));
    expect(codes.map((c) => c.code)).toEqual([0, 0]);
    const ref = JSON.parse(fs.readFileSync(one, 'utf8')) as Record<string, number[]>;
    for (const rank of [0, 1]) {
      const got = JSON.parse(fs.readFileSync(path.join(tmp, `sync-${rank}.json`), 'utf8')) as Record<string, number[]>;
      let worst = 0;
      let moved = 0;
      for (const [k, v] of Object.entries(ref))
        v.forEach((x, i) => {
          worst = Math.max(worst, Math.abs(x - got[k][i]) / Math.max(1, Math.abs(x)));
        });
      for (const [k, v] of Object.entries(ref)) if (k.endsWith('running_mean')) moved = Math.max(moved, ...v.map(Math.abs));
      expect(worst).toBeLessThan(1e-10);
      expect(moved).toBeGreaterThan(1e-3); // running statistics were updated from global batch statistics
    }
  });
});

describe('per-process BatchNorm (the default)', () => {
  test('training converges and all ranks hold identical parameters after every step; resume continues the run', async () => {
    const args = [
      'train',
      ...DATA,
      '--mode',
      'vgg',
      '--batch-size',
      '64',
      '--epochs',
      '2',
      '--lr',
      '0.8',
      '--nproc',
      '2',
      '--check-replicas',
    ];
    const whole = path.join(tmp, 'bn-whole');
    const r = run([...args, '--out', whole]);
    expect(r.stdout).toMatch(/test accuracy [\d.]+% after 16 steps/);
    const lines = fs
      .readFileSync(path.join(whole, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const replicas = lines.filter((l) => l.type === 'replicas');
    expect(replicas.map((l) => l.step)).toEqual(Array.from({ length: 16 }, (_, i) => i + 1));
    expect(replicas.every((l) => l.identical === true && l.ranks === 2)).toBe(true);
    const evals = lines.filter((l) => l.type === 'eval');
    expect(evals).toHaveLength(2);
    expect(evals[1].testAccuracy).toBeGreaterThan(0.4); // 10 classes: chance is 0.1
    const train = lines.filter((l) => l.type === 'train');
    expect(train[train.length - 1].loss).toBeLessThan(train[0].loss - 0.3);

    // Stopped after 5 steps, then resumed through `repopt launch` (torchrun-style variables).
    const split = path.join(tmp, 'bn-split');
    run([...args, '--stop-after-steps', '5', '--out', split]);
    expect(model(split).meta.step).toBe(5);
    const withoutNproc = args.filter((a, i) => a !== '--nproc' && args[i - 1] !== '--nproc');
    const launched = run([
      'launch',
      '--nproc',
      '2',
      '--master-port',
      String(await freePort()),
      ...withoutNproc,
      '--resume',
      '--out',
      split,
    ]);
    expect(launched.stdout).toMatch(/after 16 steps/);
    const { diff, key } = maxRelDiff(model(whole).model, model(split).model);
    expect([key, diff]).toEqual([key, 0]);
  });
});

function exitOf(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string; ms: number }> {
  const start = Date.now();
  let stderr = '';
  child.stderr?.on('data', (d) => (stderr += d));
  return new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal, stderr, ms: Date.now() - start })));
}

async function waitFor(what: string, check: () => boolean, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const LONG = ['train', ...DATA, '--mode', 'vgg', '--batch-size', '16', '--epochs', '200', '--lr', '0.1'];

describe('failures', () => {
  test('a killed worker stops the launcher and the other worker with a message naming it, within seconds', async () => {
    const out = path.join(tmp, 'killed');
    const launcher = spawn(process.execPath, [cli, ...LONG, '--nproc', '2', '--out', out], {
      env: workerEnv(),
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const exit = exitOf(launcher);
    let stderr = '';
    launcher.stderr!.on('data', (d) => (stderr += d));
    await waitFor('the first checkpoint', () => fs.existsSync(path.join(out, 'checkpoints', 'latest')));
    const pid = Number(/rank 1 of 2 started \(pid (\d+)\)/.exec(stderr)![1]);
    const rank0 = Number(/rank 0 of 2 started \(pid (\d+)\)/.exec(stderr)![1]);
    const killedAt = Date.now();
    process.kill(pid, 'SIGKILL');
    const r = await exit;
    expect(Date.now() - killedAt).toBeLessThan(15_000);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`worker rank 1 (pid ${pid}) was killed by SIGKILL; stopping the other workers`);
    expect(r.stderr).toContain('repopt: worker rank 1');
    expect(() => process.kill(rank0, 0)).toThrow(); // rank 0 is gone too

    // --resume continues from the last complete checkpoint.
    const last = model(out).meta.step;
    run([...LONG, '--nproc', '2', '--resume', '--stop-after-steps', String(last + 3), '--out', out]);
    expect(model(out).meta.step).toBe(last + 3);
    const steps = fs
      .readFileSync(path.join(out, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
      .filter((l) => l.type === 'train')
      .map((l) => l.step);
    expect(steps.slice(-3)).toEqual([last + 1, last + 2, last + 3]);
  });

  test('without a launcher (one process per host), the surviving rank exits with a clear error when its peer dies', async () => {
    const out = path.join(tmp, 'peer-died');
    const port = await freePort();
    const env = (rank: number) => workerEnv({ RANK: String(rank), WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port) });
    const workers = [0, 1].map((rank) =>
      spawn(process.execPath, [cli, ...LONG, '--threads', '1', '--dist-timeout', '20', '--out', out], {
        env: env(rank),
        stdio: ['ignore', 'ignore', 'pipe'],
      }),
    );
    const exits = workers.map(exitOf);
    await waitFor(
      'training to start',
      () => fs.existsSync(path.join(out, 'metrics.jsonl')) && fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').includes('"train"'),
    );
    const killedAt = Date.now();
    workers[1].kill('SIGKILL');
    const r = await exits[0];
    expect(Date.now() - killedAt).toBeLessThan(15_000);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('repopt: rank 0 of 2: lost contact with the other workers');
    expect(r.stderr).toContain('--resume');
    await exits[1];
  });

  test('a rank that cannot reach the store says which address it tried', async () => {
    const port = await freePort(); // nobody listens there
    const t0 = Date.now();
    const r = spawnSync(
      process.execPath,
      [cli, ...LONG, '--threads', '1', '--dist-connect-timeout', '2', '--out', path.join(tmp, 'nostore')],
      {
        encoding: 'utf8',
        env: workerEnv({ RANK: '1', WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port) }),
        timeout: 60_000,
      },
    );
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`rank 1 could not reach the rendezvous store at 127.0.0.1:${port} within 2 s`);
    expect(Date.now() - t0).toBeLessThan(30_000);
  });
});

/** The TCP addresses process `pid` listens on ("127.0.0.1:5000", "[::]:29500"), from /proc. */
function listeningOn(pid: number): string[] {
  const inodes = new Set<string>();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]);
    } catch {
      // closed meanwhile
    }
  }
  // /proc/net/tcp{,6}: local address as hex 32-bit words in host (little-endian) byte order.
  const bytesOf = (hex: string) =>
    hex.match(/.{8}/g)!.flatMap((word) =>
      word
        .match(/../g)!
        .reverse()
        .map((b) => parseInt(b, 16)),
    );
  const format = (bytes: number[]) => {
    if (bytes.length === 4) return bytes.join('.');
    const groups = Array.from({ length: 8 }, (_, i) => ((bytes[2 * i] << 8) | bytes[2 * i + 1]).toString(16));
    return `[${groups
      .join(':')
      .replace(/^(0:)+0$/, '::')
      .replace(/^(0:)+1$/, '::1')}]`;
  };
  const out: string[] = [];
  for (const table of ['tcp', 'tcp6']) {
    for (const line of fs.readFileSync(`/proc/${pid}/net/${table}`, 'utf8').trim().split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f[3] !== '0A' || !inodes.has(f[9])) continue; // 0A: LISTEN
      const [address, port] = f[1].split(':');
      out.push(`${format(bytesOf(address))}:${parseInt(port, 16)}`);
    }
  }
  return out;
}

const isLoopback = (address: string) => address.startsWith('127.') || address.startsWith('[::1]:');

describe('bounds on processes and threads', () => {
  const cores = os.availableParallelism();

  test('--nproc above the cores is refused, naming --nproc, the cores and --allow-oversubscribe; with that flag the workers start', () => {
    const refusal = `--nproc ${cores + 1} is more than the ${cores} cores of this host`;
    for (const args of [
      ['train', ...DATA, '--nproc', String(cores + 1), '--out', path.join(tmp, 'too-many')],
      ['launch', '--nproc', String(cores + 1), 'info'],
    ]) {
      const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: workerEnv(), timeout: 60_000 });
      expect([r.status, r.stderr]).toEqual([1, expect.stringContaining(refusal)]);
      expect(r.stderr).toContain(`use --nproc ${cores} or less, or --allow-oversubscribe`);
      expect(r.stderr).not.toContain('started');
      expect(fs.existsSync(path.join(tmp, 'too-many'))).toBe(false);
    }
    // Accepted with the flag (the workers run `info`: cheap).
    const r = run(['launch', '--nproc', String(cores + 1), '--allow-oversubscribe', 'info', '--json']);
    expect(r.stderr).toContain(`rank ${cores} of ${cores + 1} started`);
    expect(JSON.parse(r.stdout).torchVersion).toMatch(/^\d+\.\d+/); // rank 0's output
  });

  test('threads above the cores: capped to the cores with a warning (API: a warning event; CLI: on stderr; setNumThreads)', async () => {
    const { info, setNumThreads, train } = await import('../lib');
    const outDir = path.join(tmp, 'many-threads');
    const run = train({
      arch: 'RepOpt-VGG-XS',
      mode: 'vgg',
      data: { kind: 'fashion-mnist', trainSubset: 64, testSubset: 20 },
      epochs: 1,
      batchSize: 32,
      threads: 1000,
      stopAfterSteps: 1,
      outDir,
    });
    const warnings: string[] = [];
    let threadsWhileTraining = 0;
    run.on('warning', (e) => warnings.push(e.message));
    run.on('step', () => (threadsWhileTraining = info().threads));
    const r = await run.result;
    r.network.dispose();
    expect(warnings).toContain(`threads 1000 is more than the ${cores} cores of this machine: using ${cores} threads`);
    expect(threadsWhileTraining).toBe(cores);
    expect(await native().threadsAsync()).toBe(cores); // what the native worker threads run with

    // The public setter caps too, with a process warning, and returns the count set.
    const emitWarning = jest.spyOn(process, 'emitWarning').mockImplementation(() => {});
    expect(setNumThreads(1000)).toBe(cores);
    expect(emitWarning.mock.calls).toEqual([[`threads 1000 is more than the ${cores} cores of this machine: using ${cores} threads`]]);
    emitWarning.mockRestore();
    expect(setNumThreads(1)).toBe(1);
    expect(info().threads).toBe(1);
    setNumThreads(Number(process.env.REPOPT_TEST_THREADS ?? 2));

    // The command line names its flag.
    const cliRun = spawnSync(process.execPath, [cli, 'eval', '--threads', '1000', '--checkpoint', outDir], {
      encoding: 'utf8',
      env: workerEnv(),
      timeout: 60_000,
    });
    expect(cliRun.status).toBe(0);
    expect(cliRun.stderr).toContain(
      `repopt: warning: --threads 1000 is more than the ${cores} cores of this machine: using ${cores} threads`,
    );
  });
});

describe('rendezvous', () => {
  test('a rank that never starts: rank 0 reports who is missing while it waits, then fails after --dist-connect-timeout naming the address, the missing rank and the flag', async () => {
    const port = await freePort();
    const rank0 = spawn(
      process.execPath,
      [cli, ...LONG, '--threads', '1', '--dist-connect-timeout', '4', '--out', path.join(tmp, 'never-joined')],
      {
        // A second node (one worker per node) that never starts.
        env: workerEnv({
          RANK: '0',
          WORLD_SIZE: '2',
          LOCAL_WORLD_SIZE: '1',
          MASTER_ADDR: '127.0.0.1',
          MASTER_PORT: String(port),
          REPOPT_DIST_REPORT_SECONDS: '1',
        }),
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    const exit = exitOf(rank0);
    let stderr = '';
    rank0.stderr!.on('data', (d) => (stderr += d));
    // While it waits: the store's socket. libtorch 2.x binds it to MASTER_ADDR alone; 1.x's TCPStore
    // can only listen on every interface (the documented limit of multi-host runs there).
    await waitFor('the first report', () => stderr.includes('waiting for'));
    const sockets = listeningOn(rank0.pid!);
    const major = Number(native().info().torchVersion.split('.')[0]);
    expect(sockets).toEqual([major >= 2 ? `127.0.0.1:${port}` : `[::]:${port}`]);

    const r = await exit;
    expect(r.code).toBe(1);
    expect(r.ms).toBeLessThan(4_000 + 6_000);
    const reports = r.stderr.split('\n').filter((l) => l.startsWith('warning: waiting for'));
    expect(reports.length).toBeGreaterThanOrEqual(2);
    expect(reports[0]).toMatch(
      new RegExp(
        `^warning: waiting for rank 1 \\(node 1\\) to join the rendezvous at 127\\.0\\.0\\.1:${port} \\(joined: rank 0 \\(node 0\\); \\d s of 4 s\\)$`,
      ),
    );
    expect(r.stderr).toContain(
      `repopt: rank 0 of 2: rank 1 (node 1) did not join the rendezvous at 127.0.0.1:${port} within 4 s (--dist-connect-timeout); ` +
        'joined: rank 0 (node 0).',
    );
  });

  test('two workers with one RANK: the second is refused at once naming the rank; rank 0 names the ranks still missing', async () => {
    const port = await freePort();
    const env = (rank: number) =>
      workerEnv({
        RANK: String(rank),
        WORLD_SIZE: '4',
        MASTER_ADDR: '127.0.0.1',
        MASTER_PORT: String(port),
        REPOPT_DIST_REPORT_SECONDS: '0.5',
      });
    const start = (rank: number) =>
      spawn(process.execPath, [cli, ...LONG, '--threads', '1', '--dist-connect-timeout', '6', '--out', path.join(tmp, 'same-rank')], {
        env: env(rank),
        stdio: ['ignore', 'ignore', 'pipe'],
      });
    const rank0 = start(0);
    const exit0 = exitOf(rank0);
    let stderr0 = '';
    rank0.stderr!.on('data', (d) => (stderr0 += d));
    const first = exitOf(start(1)); // the exit may come before it is awaited
    await waitFor('rank 1 to join', () => stderr0.includes('joined: ranks 0-1;'));
    const twin = await exitOf(start(1));
    expect(twin.code).toBe(1);
    expect(twin.stderr).toContain(`repopt: rank 1: another worker already joined the rendezvous at 127.0.0.1:${port} as rank 1`);
    const r = await exit0;
    expect(r.stderr).toContain(`rank 0 of 4: ranks 2-3 did not join the rendezvous at 127.0.0.1:${port} within 6 s`);
    expect(r.stderr).toContain('joined: ranks 0-1.');
    expect((await first).code).toBe(1); // the store went with rank 0
  });

  test('one host: nothing listens on another interface; Ctrl-C to the launcher stops the workers with a checkpoint (exit 130) that --resume continues', async () => {
    const out = path.join(tmp, 'ctrl-c');
    // Its own process group, as a terminal's foreground job: the Ctrl-C below reaches every process in it.
    const launcher = spawn(process.execPath, [cli, ...LONG, '--nproc', '2', '--out', out], {
      env: workerEnv(),
      stdio: ['ignore', 'ignore', 'pipe'],
      detached: true,
    });
    const exit = exitOf(launcher);
    let stderr = '';
    launcher.stderr!.on('data', (d) => (stderr += d));
    try {
      const metrics = path.join(out, 'metrics.jsonl');
      await waitFor('training to start', () => fs.existsSync(metrics) && fs.readFileSync(metrics, 'utf8').includes('"train"'));
      const pids = [0, 1].map((rank) => Number(new RegExp(`rank ${rank} of 2 started \\(pid (\\d+)\\)`).exec(stderr)![1]));
      const sockets = [launcher.pid!, ...pids].flatMap(listeningOn);
      expect(sockets.filter((s) => !isLoopback(s))).toEqual([]);

      process.kill(-launcher.pid!, 'SIGINT');
      const r = await exit;
      expect(r.code).toBe(130);
      expect(r.stderr).toContain('repopt launch: Ctrl-C: the workers stop after the step in flight and write a checkpoint');
      const stopped = /repopt: interrupted after (\d+) steps; checkpoint (\S+);/.exec(r.stderr)!;
      expect(stopped).not.toBeNull();
      const step = Number(stopped[1]);
      expect(model(out).meta.step).toBe(step);
      expect(r.stderr).not.toMatch(/killed by|exited with code/);
      for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();

      run([...LONG, '--nproc', '2', '--resume', '--stop-after-steps', String(step + 2), '--out', out]);
      const steps = fs
        .readFileSync(path.join(out, 'metrics.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l))
        .filter((l) => l.type === 'train')
        .map((l) => l.step);
      expect(steps.slice(-3)).toEqual([step, step + 1, step + 2]);
    } finally {
      if (launcher.exitCode === null) process.kill(-launcher.pid!, 'SIGKILL');
    }
  });
});

describe('the launcher and Ctrl-C', () => {
  // Workers that note each signal in a file and do not stop on SIGINT (a step that never ends).
  const stubborn = path.join(tmp, 'stubborn-worker.js');
  fs.writeFileSync(
    stubborn,
    "const fs = require('fs'); const note = (what) => fs.appendFileSync(process.argv[2] + '/' + process.env.RANK + '.' + what, 'x');\n" +
      "process.on('SIGINT', () => note('sigint')); setInterval(() => {}, 1000); note('ready');\n",
  );
  const noted = (dir: string, what: string) => [0, 1].every((rank) => fs.existsSync(path.join(dir, `${rank}.${what}`)));

  test.each([
    ['a second Ctrl-C', 60_000, true, 'repopt launch: Ctrl-C again; stopping the workers'],
    [
      'workers that do not stop within interruptTimeoutMs',
      1_000,
      false,
      'repopt launch: the workers did not stop within 1 s of Ctrl-C; stopping the workers',
    ],
  ])('%s: SIGINT is passed on once, then the workers get SIGTERM; exit 130', async (_, interruptTimeoutMs, again, message) => {
    const dir = fs.mkdtempSync(path.join(tmp, 'stubborn-'));
    const lines: string[] = [];
    const result = launch({
      nproc: 2,
      nnodes: 1,
      nodeRank: 0,
      masterAddr: '127.0.0.1',
      masterPort: 29500,
      script: stubborn,
      args: [dir],
      log: (l) => lines.push(l),
      interruptTimeoutMs,
    });
    await waitFor('the workers to start', () => noted(dir, 'ready'));
    process.emit('SIGINT', 'SIGINT');
    await waitFor('the workers to get SIGINT', () => noted(dir, 'sigint'));
    if (again) process.emit('SIGINT', 'SIGINT');
    expect(await result).toEqual({ exitCode: 130 });
    expect(lines).toContain(message);
    for (const rank of [0, 1]) expect(fs.readFileSync(path.join(dir, `${rank}.sigint`), 'utf8')).toBe('x'); // once
    expect(lines.filter((l) => l.includes('killed by') || l.includes('exited with'))).toEqual([]);
    expect(process.listenerCount('SIGINT')).toBe(0); // the launcher's handlers are gone
  });
});
