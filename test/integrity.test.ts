// No silent data loss: every file and byte string we read is verified before use. Fuzzed optimizer
// states, .pth files and checkpoint meta.json files (bit flips, truncations, byte edits, deleted keys)
// are refused with errors naming what is damaged, never loaded as other values and never crash the
// process; a damaged newest checkpoint is passed over with a warning that names it and says why.
// REPOPT_FUZZ_SEED sets the seed.
import { spawnSync } from 'child_process';
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { unzipSync } from 'fflate';
import { quantize, readInt8Model, train, type TrainOptions } from '../lib';
import { NativeBackendNetwork } from '../lib/native-backend';
import { OPTIMIZER_STATE_HEADER_BYTES, unframeOptimizerState } from '../lib/optimizer-state';
import { type PthTensor, parsePth, readPth } from '../lib/pth';
import type { NetworkSpec } from '../lib/spec';
import { Random } from '../lib/reference/random';
import { parseSafetensors, serializeSafetensors } from '../lib/safetensors';
import { type DamagedCheckpoint, readCheckpoint, readLatestCheckpoint } from '../lib/train/checkpoint';
import { checkpointAt } from '../lib/train/load';
import { thrown, useTestThreads } from './helpers';

beforeAll(useTestThreads);

const SEED = Number(process.env.REPOPT_FUZZ_SEED ?? 20240614);
const cli = path.join(__dirname, '..', 'dist', 'cli.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'repopt-integrity-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

// A real run: Fashion-MNIST subsets, checkpoints after step 4 (epoch 1) and step 8 (epoch 2).
const runOptions = (out: string, extra: Partial<TrainOptions> = {}): TrainOptions => ({
  arch: 'RepOpt-VGG-XS',
  mode: 'vgg',
  data: { kind: 'fashion-mnist', trainSubset: 256, testSubset: 64 },
  epochs: 2,
  batchSize: 64,
  logEvery: 4,
  threads: Number(process.env.REPOPT_TEST_THREADS ?? 2),
  outDir: path.join(tmp, out),
  ...extra,
});
const ckptDir = (out: string, step: number) => path.join(tmp, out, 'checkpoints', `ckpt-${String(step).padStart(9, '0')}`);

/** A fresh copy of the fixture run's folder. */
function copyRun(name: string): string {
  fs.cpSync(path.join(tmp, 'run'), path.join(tmp, name), { recursive: true });
  return name;
}

beforeAll(async () => {
  const r = await train(runOptions('run')).result;
  expect(r.steps).toBe(8);
}, 120_000);

/** Damage drawn from a seeded generator: 1-4 bit flips, a truncation, 1-4 bytes overwritten, or a
 * range cut out. Always on a copy (a Buffer's slice() would share the original's memory). */
function damager(seed: number) {
  const random = new Random(seed);
  const int = (n: number) => Math.floor(random.nextDouble() * n);
  return {
    int,
    flips(bytes: Uint8Array): { damaged: Uint8Array; at: number[] } {
      const damaged = new Uint8Array(bytes);
      const at = Array.from({ length: 1 + int(4) }, () => int(bytes.length));
      for (const p of at) damaged[p] ^= 1 << int(8);
      return { damaged, at };
    },
    any(bytes: Uint8Array): { damaged: Uint8Array; at?: number[] } {
      switch (int(4)) {
        case 0:
          return this.flips(bytes);
        case 1:
          return { damaged: new Uint8Array(bytes.subarray(0, int(bytes.length))) };
        case 2: {
          const damaged = new Uint8Array(bytes);
          const at = Array.from({ length: 1 + int(4) }, () => int(bytes.length));
          for (const p of at) damaged[p] = int(256);
          return { damaged, at };
        }
        default: {
          const start = int(bytes.length);
          const end = Math.min(bytes.length, start + 1 + int(64));
          const damaged = new Uint8Array(bytes.length - (end - start));
          damaged.set(bytes.subarray(0, start));
          damaged.set(bytes.subarray(end), start);
          return { damaged };
        }
      }
    },
  };
}

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');
const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.length).equals(b);
const hexOf = (t: PthTensor) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).toString('hex');
const dump = (tensors: ReadonlyMap<string, PthTensor>) => JSON.stringify([...tensors].map(([k, t]) => [k, t.dtype, t.shape, hexOf(t)]));

describe('optimizer state', () => {
  /** A small real network and an SGD optimizer with momentum after two steps (a small state keeps the
   * fuzz fast: each try hashes the whole payload). */
  function trainedOptimizer() {
    const spec: NetworkSpec = {
      mode: 'target',
      inChannels: 1,
      numClasses: 4,
      blocks: [
        { name: 'stage0', inChannels: 1, outChannels: 4, stride: 2 },
        { name: 'stage1', inChannels: 4, outChannels: 8, stride: 2 },
      ],
    };
    const network = new NativeBackendNetwork(spec, 'float32', SEED);
    const optimizer = network.createOptimizer({ type: 'sgd', lr: 0.05, momentum: 0.9, weightDecay: 1e-4 });
    const random = new Random(SEED);
    for (let s = 0; s < 2; s++) {
      const x = { shape: [4, 1, 8, 8], data: Float32Array.from({ length: 4 * 64 }, () => random.nextDouble()) };
      network.trainStep(optimizer, x, Int32Array.from([0, 1, 2, 3]));
    }
    return { network, optimizer };
  }

  test("stateBytes() is framed: 'RPOS', version 1, payload length, SHA-256; the frame loads back", () => {
    const { network, optimizer } = trainedOptimizer();
    const framed = Buffer.from(optimizer.stateBytes());
    expect(framed.toString('latin1', 0, 4)).toBe('RPOS');
    expect(framed.readUInt32LE(4)).toBe(1);
    expect(Number(framed.readBigUInt64LE(8))).toBe(framed.length - OPTIMIZER_STATE_HEADER_BYTES);
    const payload = framed.subarray(OPTIMIZER_STATE_HEADER_BYTES);
    expect(framed.subarray(16, 48).toString('hex')).toBe(sha256(payload));
    const fresh = network.createOptimizer({ type: 'sgd', lr: 0.05, momentum: 0.9, weightDecay: 1e-4 });
    fresh.loadStateBytes(framed);
    expect(fresh.steps).toBe(2);
    expect(same(fresh.stateBytes(), framed)).toBe(true);
    // libtorch's bytes alone are refused: the frame is the only way in.
    expect(thrown(() => fresh.loadStateBytes(payload)).message).toBe(
      "optimizer state: no 'RPOS' mark at the start (damaged, or not from stateBytes())",
    );
    network.dispose();
  });

  const FLIPPED = 6000;
  test(`${FLIPPED} bit-flipped states, 500 truncations, 500 random byte strings: all refused before libtorch, none loaded`, () => {
    const { network, optimizer } = trainedOptimizer();
    const original = optimizer.stateBytes();
    const target = network.createOptimizer({ type: 'sgd', lr: 0.05, momentum: 0.9, weightDecay: 1e-4 });
    const before = target.stateBytes();
    const d = damager(SEED + 1);
    const counts = { flipped: 0, unchanged: 0, truncated: 0, random: 0, refused: 0, loaded: 0 };
    const reasons = new Map<string, number>();
    const attempt = (bytes: Uint8Array) => {
      try {
        target.loadStateBytes(bytes);
        counts.loaded++;
      } catch (e) {
        const reason = (e as Error).message.replace(/\d+/g, 'N');
        reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
        counts.refused++;
      }
    };
    for (let i = 0; i < FLIPPED; i++) {
      const { damaged } = d.flips(original);
      if (same(damaged, original)) counts.unchanged++;
      else {
        counts.flipped++;
        attempt(damaged);
      }
    }
    for (let i = 0; i < 500; i++) {
      counts.truncated++;
      attempt(original.slice(0, d.int(original.length)));
    }
    for (let i = 0; i < 500; i++) {
      counts.random++;
      const words = new Uint32Array(d.int(1024));
      for (let k = 0; k < words.length; k++) words[k] = d.int(2 ** 32);
      const bytes = new Uint8Array(words.buffer);
      // Half of them with a plausible header: magic, version and the right length, a wrong digest.
      if (i % 2 === 0 && bytes.length >= OPTIMIZER_STATE_HEADER_BYTES) {
        Buffer.from(bytes.buffer).write('RPOS', 0, 'latin1');
        Buffer.from(bytes.buffer).writeUInt32LE(1, 4);
        Buffer.from(bytes.buffer).writeBigUInt64LE(BigInt(bytes.length - OPTIMIZER_STATE_HEADER_BYTES), 8);
      }
      attempt(bytes);
    }
    console.log(`optimizer state fuzz: ${JSON.stringify(counts)}; reasons ${JSON.stringify(Object.fromEntries(reasons))}`);
    expect(counts.loaded).toBe(0);
    expect(counts.refused).toBe(counts.flipped + counts.truncated + counts.random);
    // Only the frame check speaks like this: libtorch's own errors start 'Optimizer.loadStateBytes:'.
    expect([...reasons.keys()].filter((r) => !r.startsWith('optimizer state: '))).toEqual([]);
    expect(counts.flipped).toBeGreaterThanOrEqual(FLIPPED - 10);
    expect(reasons.get('optimizer state: SHA-N mismatch (damaged)')).toBeGreaterThan(FLIPPED / 2);
    // Nothing reached the optimizer: its state is as before, and the original still loads.
    expect(same(target.stateBytes(), before)).toBe(true);
    target.loadStateBytes(original);
    expect(target.steps).toBe(2);
    network.dispose();
  });

  test('unframeOptimizerState refuses what is not a Uint8Array, naming what it got', () => {
    expect(thrown(() => unframeOptimizerState(null as never)).message).toBe(
      'optimizer state: expected a Uint8Array from stateBytes(), got null',
    );
    expect(thrown(() => unframeOptimizerState(new Float32Array(16) as never)).message).toMatch(/^optimizer state: expected a Uint8Array/);
  });
});

/** Byte offsets of a zip (without zip64, as we write it) that no reader can check: each central
 * record's "version made by" and its internal and external attributes. */
function uncheckableBytes(zip: Buffer): Set<number> {
  const end = zip.length - 22;
  expect(zip.readUInt32LE(end)).toBe(0x06054b50);
  const free = new Set<number>();
  let at = zip.readUInt32LE(end + 16);
  for (let i = 0; i < zip.readUInt16LE(end + 10); i++) {
    for (const offset of [4, 5, 36, 37, 38, 39, 40, 41]) free.add(at + offset);
    at += 46 + zip.readUInt16LE(at + 28) + zip.readUInt16LE(at + 30) + zip.readUInt16LE(at + 32);
  }
  return free;
}

describe('.pth files', () => {
  test('one flipped tensor byte: a CRC-32 error naming the file, where an unchecked reader gets a wrong value', () => {
    const source = path.join(ckptDir('run', 8), 'model.pth');
    const original = fs.readFileSync(source);
    const weight = readPth(source).get('linear.weight')!;
    const at = original.indexOf(Buffer.from(weight.data.buffer, weight.data.byteOffset, weight.data.byteLength));
    expect(at).toBeGreaterThan(0);
    const damaged = Buffer.from(original);
    damaged[at + 5] ^= 0x04;
    const file = path.join(tmp, 'flipped.pth');
    fs.writeFileSync(file, damaged);
    const entry = `archive/data/${[...readPth(source).keys()].indexOf('linear.weight')}`;
    expect(thrown(() => readPth(file)).message).toBe(
      `${file}: damaged zip entry '${entry}' (CRC-32 mismatch: its data is not what was written)`,
    );
    // What the check prevents: fflate, which checks no CRC, hands out the changed weight.
    const unchecked = Buffer.from(unzipSync(damaged)[entry]);
    expect(unchecked.length).toBe(weight.data.byteLength);
    expect(unchecked.equals(Buffer.from(weight.data.buffer, weight.data.byteOffset, weight.data.byteLength))).toBe(false);
  });

  test("our files' CRC-32s are right: Python's zipfile tests every entry", () => {
    const r = spawnSync(
      'python3',
      ['-c', 'import sys, zipfile; print(zipfile.ZipFile(sys.argv[1]).testzip())', path.join(ckptDir('run', 8), 'model.pth')],
      {
        encoding: 'utf8',
      },
    );
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('None\n');
  });

  const DAMAGED_PTH = 1500;
  test(`${DAMAGED_PTH} damaged .pth files: readPth refuses each naming the file; the only loads are of identical values, damage confined to bytes no reader can check`, () => {
    const original = fs.readFileSync(path.join(ckptDir('run', 8), 'model.pth'));
    const expected = dump(parsePth(original, 'original'));
    const free = uncheckableBytes(original);
    const file = path.join(tmp, 'fuzz.pth');
    const d = damager(SEED + 2);
    const counts = { damaged: 0, unchanged: 0, refused: 0, identicalLoads: 0, wrongLoads: 0, loadsDamagedOutsideUncheckable: 0 };
    for (let i = 0; i < DAMAGED_PTH; i++) {
      const { damaged, at } = d.any(original);
      if (same(damaged, original)) {
        counts.unchanged++;
        continue;
      }
      counts.damaged++;
      fs.writeFileSync(file, damaged);
      let loaded: Map<string, PthTensor>;
      try {
        loaded = readPth(file);
      } catch (e) {
        expect((e as Error).message.startsWith(`${file}: `)).toBe(true);
        counts.refused++;
        continue;
      }
      if (dump(loaded) !== expected) counts.wrongLoads++;
      else counts.identicalLoads++;
      if (!at?.every((p) => damaged[p] === original[p] || free.has(p))) counts.loadsDamagedOutsideUncheckable++;
    }
    console.log(`.pth fuzz (readPth): ${JSON.stringify(counts)}`);
    expect(counts.wrongLoads).toBe(0);
    expect(counts.loadsDamagedOutsideUncheckable).toBe(0);
    expect(counts.damaged).toBeGreaterThanOrEqual(DAMAGED_PTH - 10);
    expect(counts.refused).toBeGreaterThan(counts.damaged * 0.97);
  });

  test(`${DAMAGED_PTH} damaged model.pth files in a checkpoint: readCheckpoint refuses every one, naming model.pth`, () => {
    const dir = ckptDir(copyRun('pth-in-checkpoint'), 8);
    const file = path.join(dir, 'model.pth');
    const original = fs.readFileSync(file);
    const d = damager(SEED + 3);
    const counts = { damaged: 0, unchanged: 0, refused: 0, loaded: 0 };
    for (let i = 0; i < DAMAGED_PTH; i++) {
      const { damaged } = d.any(original);
      if (same(damaged, original)) {
        counts.unchanged++;
        continue;
      }
      counts.damaged++;
      fs.writeFileSync(file, damaged);
      try {
        readCheckpoint(dir);
        counts.loaded++;
      } catch (e) {
        expect((e as Error).message).toBe(`checkpoint ${file}: checksum mismatch (corrupt or truncated)`);
        counts.refused++;
      }
    }
    console.log(`.pth fuzz (readCheckpoint): ${JSON.stringify(counts)}`);
    expect(counts.loaded).toBe(0);
    expect(counts.refused).toBe(counts.damaged);
    expect(counts.damaged).toBeGreaterThanOrEqual(DAMAGED_PTH - 10);
  });
});

describe('checkpoint meta.json', () => {
  const metaOf = (dir: string) => path.join(dir, 'meta.json');
  const readJson = (dir: string) => JSON.parse(fs.readFileSync(metaOf(dir), 'utf8'));
  const writeJson = (dir: string, meta: unknown) => fs.writeFileSync(metaOf(dir), JSON.stringify(meta, null, 2) + '\n');

  test('an edited step is refused; so is a reformatted file; so is one without its checksum', () => {
    const dir = ckptDir(copyRun('meta-edits'), 8);
    const pristine = fs.readFileSync(metaOf(dir));
    const meta = readJson(dir);
    expect(meta.step).toBe(8);
    expect(meta.version).toBe(2);
    expect(meta.checksum).toMatch(/^[0-9a-f]{64}$/);
    writeJson(dir, { ...meta, step: 4 });
    expect(thrown(() => readCheckpoint(dir)).message).toBe(
      `checkpoint ${metaOf(dir)}: checksum mismatch: its content was edited or damaged`,
    );
    fs.writeFileSync(metaOf(dir), JSON.stringify(meta) + '\n');
    expect(thrown(() => readCheckpoint(dir)).message).toBe(`checkpoint ${metaOf(dir)}: not byte for byte as written (edited or damaged)`);
    const { checksum: _, ...unsealed } = meta;
    writeJson(dir, unsealed);
    expect(thrown(() => readCheckpoint(dir)).message).toBe(`checkpoint ${metaOf(dir)}: no 'checksum' of 64 hex digits (damaged or edited)`);
    fs.writeFileSync(metaOf(dir), pristine);
    expect(readCheckpoint(dir).meta.step).toBe(8);
  });

  test('without files: a clear error naming meta.json; other missing or mistyped keys likewise', () => {
    const dir = ckptDir(copyRun('meta-shape'), 8);
    const meta = readJson(dir);
    const refusal = (edit: (m: Record<string, unknown>) => void) => {
      const m = structuredClone(meta);
      edit(m);
      writeJson(dir, m);
      return thrown(() => readCheckpoint(dir)).message.replace(`checkpoint ${metaOf(dir)}: `, '');
    };
    expect(refusal((m) => delete m.files)).toBe(
      "'files' is missing or not an object (it lists model.pth and optimizer.bin with their SHA-256)",
    );
    expect(refusal((m) => delete (m.files as Record<string, string>)['optimizer.bin'])).toBe(
      `'files' lists "model.pth", expected model.pth and optimizer.bin`,
    );
    expect(refusal((m) => ((m.files as Record<string, string>)['../../etc/passwd'] = '0'.repeat(64)))).toMatch(
      /^'files' lists "\.\.\/\.\.\/etc\/passwd", /,
    );
    expect(refusal((m) => ((m.files as Record<string, string>)['model.pth'] = 'abc'))).toBe(
      "'files' gives model.pth no SHA-256 of 64 hex digits",
    );
    expect(refusal((m) => (m.step = '8'))).toBe(`'step' is "8", not a non-negative integer`);
    expect(refusal((m) => (m.epoch = 1.5))).toBe("'epoch' is 1.5, not a non-negative integer");
    expect(refusal((m) => delete m.config)).toBe("'config' is not an object");
    expect(refusal((m) => (m.rngState = 'not base64!'))).toBe("'rngState' is not a base64 string");
    expect(refusal((m) => (m.version = 3))).toBe('format "repopt-checkpoint" version 3 is not repopt-checkpoint 1 or 2');
    expect(refusal((m) => (m.surprise = 1))).toBe('unknown keys "surprise" (damaged)');
    fs.writeFileSync(metaOf(dir), '[1, 2]\n');
    expect(thrown(() => readCheckpoint(dir)).message).toBe(`checkpoint ${metaOf(dir)}: not a JSON object`);
    fs.rmSync(metaOf(dir));
    expect(thrown(() => readCheckpoint(dir)).message).toBe(`checkpoint meta.json ${metaOf(dir)}: no such file`);
  });

  test('a version 1 checkpoint (no checksum, unframed optimizer state) is still read, its state framed', () => {
    const dir = ckptDir(copyRun('version-1'), 8);
    const { checksum: _, ...meta } = readJson(dir);
    const payload = unframeOptimizerState(fs.readFileSync(path.join(dir, 'optimizer.bin')));
    fs.writeFileSync(path.join(dir, 'optimizer.bin'), payload);
    writeJson(dir, { ...meta, version: 1, files: { ...meta.files, 'optimizer.bin': sha256(payload) } });
    const ckpt = readCheckpoint(dir);
    expect(ckpt.meta.step).toBe(8);
    expect(same(unframeOptimizerState(ckpt.optimizer), payload)).toBe(true);
    // A version 1 file carrying a checksum is a damaged version 2 one.
    writeJson(dir, { ...readJson(dir), checksum: '0'.repeat(64) });
    expect(thrown(() => readCheckpoint(dir)).message).toBe(`checkpoint ${metaOf(dir)}: a version 1 file with a checksum (damaged)`);
  });

  const DAMAGED_META = 1500;
  test(`${DAMAGED_META} damaged meta.json files (bit flips, truncations, byte edits, cuts, deleted keys): every one refused naming meta.json`, () => {
    const dir = ckptDir(copyRun('meta-fuzz'), 8);
    const original = fs.readFileSync(metaOf(dir));
    const parsed = JSON.parse(original.toString('utf8'));
    // Every key path of the meta, to delete one at a time.
    const keyPaths: string[][] = [];
    const walk = (value: unknown, at: string[]) => {
      if (typeof value !== 'object' || value === null) return;
      for (const k of Object.keys(value)) {
        keyPaths.push([...at, k]);
        walk((value as Record<string, unknown>)[k], [...at, k]);
      }
    };
    walk(parsed, []);
    const d = damager(SEED + 4);
    const counts = { damaged: 0, deletedKeys: 0, unchanged: 0, refused: 0, loaded: 0 };
    for (let i = 0; i < DAMAGED_META; i++) {
      let damaged: Uint8Array;
      if (i % 5 === 4) {
        const copy = structuredClone(parsed);
        const keyPath = keyPaths[d.int(keyPaths.length)];
        const parent = keyPath.slice(0, -1).reduce((o: Record<string, unknown>, k) => o[k] as Record<string, unknown>, copy);
        if (Array.isArray(parent)) parent.splice(Number(keyPath[keyPath.length - 1]), 1);
        else delete parent[keyPath[keyPath.length - 1]];
        damaged = Buffer.from(JSON.stringify(copy, null, 2) + '\n');
        counts.deletedKeys++;
      } else damaged = d.any(original).damaged;
      if (same(damaged, original)) {
        counts.unchanged++;
        continue;
      }
      counts.damaged++;
      fs.writeFileSync(metaOf(dir), damaged);
      try {
        readCheckpoint(dir);
        counts.loaded++;
      } catch (e) {
        expect((e as Error).message).toMatch(
          new RegExp(`^checkpoint (meta\\.json )?${metaOf(dir).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: \\S`),
        );
        counts.refused++;
      }
    }
    console.log(`meta.json fuzz: ${JSON.stringify(counts)}`);
    expect(counts.loaded).toBe(0);
    expect(counts.refused).toBe(counts.damaged);
    expect(counts.damaged).toBeGreaterThanOrEqual(DAMAGED_META - 10);
    fs.writeFileSync(metaOf(dir), original);
    expect(readCheckpoint(dir).meta.step).toBe(8);
  });
});

describe('a damaged newest checkpoint is passed over, with a warning that names it and says why', () => {
  test('resume: the run continues from the previous checkpoint and emits the warning', async () => {
    const out = copyRun('resume');
    const model = path.join(ckptDir(out, 8), 'model.pth');
    const bytes = fs.readFileSync(model);
    bytes[bytes.length - 200] ^= 0x01;
    fs.writeFileSync(model, bytes);
    const run = train(runOptions(out, { resume: true }));
    const warnings: string[] = [];
    let startedAt = -1;
    run.on('warning', (e) => warnings.push(e.message));
    run.on('start', (e) => (startedAt = e.step));
    const r = await run.result;
    expect(startedAt).toBe(4);
    expect(r.steps).toBe(8);
    expect(warnings).toEqual([
      `checkpoint ${ckptDir(out, 8)} is damaged, so an older one is used: checkpoint ${model}: checksum mismatch (corrupt or truncated)`,
    ]);
  }, 120_000);

  test('eval (CLI): evaluates the previous checkpoint and says why on stderr; checkpointAt reports to a callback', () => {
    const out = copyRun('eval');
    const meta = path.join(ckptDir(out, 8), 'meta.json');
    fs.writeFileSync(meta, fs.readFileSync(meta, 'utf8').replace('"step": 8', '"step": 9'));
    const r = spawnSync(process.execPath, [cli, 'eval', '--checkpoint', path.join(tmp, out), '--threads', '1'], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^${ckptDir(out, 4)}: test accuracy \\d+\\.\\d+%`));
    expect(r.stderr).toBe(
      `warning: checkpoint ${ckptDir(out, 8)} is damaged, so an older one is used: checkpoint ${meta}: checksum mismatch: its content was edited or damaged\n`,
    );
    const reported: DamagedCheckpoint[] = [];
    expect(checkpointAt(path.join(tmp, out), (d) => reported.push(d)).meta.step).toBe(4);
    expect(reported).toEqual([
      { dir: ckptDir(out, 8), reason: `checkpoint ${meta}: checksum mismatch: its content was edited or damaged` },
    ]);
    // With both damaged, nothing is used: the error lists both.
    fs.truncateSync(path.join(ckptDir(out, 4), 'optimizer.bin'), 10);
    expect(() => readLatestCheckpoint(path.join(tmp, out, 'checkpoints'))).toThrow(
      /^no complete checkpoint under .*\n {2}checkpoint .*ckpt-000000008\/meta\.json: checksum mismatch.*\n {2}checkpoint .*ckpt-000000004\/optimizer\.bin: checksum mismatch/,
    );
  });
});

describe('int8 export', () => {
  test('model.int8.json vouches for itself: an edited scale, a missing key, a damaged file are refused naming it', async () => {
    const out = path.join(tmp, 'int8');
    await quantize({ checkpoint: path.join(tmp, 'run'), calibBatches: 1, threads: 1, out });
    const jsonFile = path.join(out, 'model.int8.json');
    const pristine = fs.readFileSync(jsonFile, 'utf8');
    const meta = JSON.parse(pristine);
    expect(meta.version).toBe(2);
    expect(readInt8Model(out).layers).toHaveLength(meta.layers.length);
    const refusal = (text: string) => {
      fs.writeFileSync(jsonFile, text);
      return thrown(() => readInt8Model(out)).message;
    };
    const edited = structuredClone(meta);
    edited.layers[0].weightScales[0] *= 2;
    expect(refusal(JSON.stringify(edited, null, 1) + '\n')).toBe(`${jsonFile}: checksum mismatch: its content was edited or damaged`);
    const { data: _, ...withoutData } = meta;
    expect(refusal(JSON.stringify(withoutData, null, 1) + '\n')).toBe(
      `${jsonFile}: 'data' does not give model.int8.bin with its size and SHA-256 (damaged)`,
    );
    const d = damager(SEED + 6);
    const counts = { damaged: 0, refused: 0, loaded: 0 };
    const misnamed: string[] = [];
    for (let i = 0; i < 300; i++) {
      const damaged = d.any(Buffer.from(pristine)).damaged;
      if (Buffer.from(damaged).toString('utf8') === pristine) continue;
      counts.damaged++;
      fs.writeFileSync(jsonFile, damaged);
      try {
        readInt8Model(out);
        counts.loaded++;
      } catch (e) {
        if (!(e as Error).message.includes(jsonFile)) misnamed.push((e as Error).message);
        counts.refused++;
      }
    }
    expect(misnamed).toEqual([]);
    expect(counts.loaded).toBe(0);
    expect(counts.refused).toBe(counts.damaged);
    fs.writeFileSync(jsonFile, pristine);
    expect(readInt8Model(out).meta.checksum).toBe(meta.checksum);
  }, 120_000);
});

describe('safetensors', () => {
  test('500 damaged files: errors naming the file or loads of the same shapes, never a crash', () => {
    const tensors = readPth(path.join(ckptDir('run', 8), 'model.pth'));
    const original = serializeSafetensors(tensors);
    const d = damager(SEED + 5);
    let refused = 0;
    const misnamed: string[] = [];
    const malformed: string[] = [];
    for (let i = 0; i < 500; i++) {
      const { damaged } = d.any(original);
      let back: Map<string, PthTensor>;
      try {
        back = parseSafetensors(damaged, 'w.safetensors');
      } catch (e) {
        if (!/^w\.safetensors: \S/.test((e as Error).message)) misnamed.push((e as Error).message);
        refused++;
        continue;
      }
      // No checksum in this format: a load must at least hold whole tensors of the shapes it states.
      for (const [key, t] of back) if (t.data.length !== t.shape.reduce((a, b) => a * b, 1)) malformed.push(key);
    }
    expect(misnamed).toEqual([]);
    expect(malformed).toEqual([]);
    expect(refused).toBeGreaterThan(50);
    // A dtype named like an Object.prototype member is an unknown dtype, not a crash.
    const header = Buffer.from('{"w":{"dtype":"constructor","shape":[1],"data_offsets":[0,4]}}');
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(header.length));
    expect(thrown(() => parseSafetensors(Buffer.concat([length, header, Buffer.alloc(4)]), 'p.safetensors')).message).toBe(
      'p.safetensors: tensor \'w\' has unsupported dtype "constructor"',
    );
  });
});
