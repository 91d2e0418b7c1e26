import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { unzipSync, zipSync, type Zippable } from 'fflate';
import { parsePth, readPth, serializePth, writePth, type PthTensor } from '../lib/pth';
import { runTorch, thrown } from './helpers';

const FIXTURES = path.join(__dirname, 'fixtures', 'official-scales');
const B1 = path.join(FIXTURES, 'RepOpt-VGG-B1-scales.pth');
const B2 = path.join(FIXTURES, 'RepOpt-VGG-B2-scales.pth');

/** Python: prints, for each .pth file in argv, [key, dtype, shape, hex of the contiguous bytes] per entry. */
const DUMP_PY = `
import sys, json, torch
def dump(d): return [[k, str(v.dtype).replace('torch.', ''), list(v.shape), v.contiguous().numpy().tobytes().hex()] for k, v in d.items()]
out = {}
for f in sys.argv[1:]:
    d = torch.load(f, weights_only=True)
    out[f] = {'type': type(d).__name__, 'tensors': dump(d)}
print(json.dumps(out))
`;

type Dumped = Array<[string, string, number[], string]>;

function hexOf(t: PthTensor): string {
  return Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).toString('hex');
}

function dumpOf(tensors: ReadonlyMap<string, PthTensor>): Dumped {
  return [...tensors].map(([k, t]) => [k, t.dtype, [...t.shape], hexOf(t)]);
}

let tempDir: string;
beforeAll(() => {
  tempDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pth-test-'));
});
afterAll(() => fs.rmSync(tempDir, { recursive: true, force: true }));

/** Tensors of every dtype, with the awkward cases: scalar, empty, NaN payload, -0, huge int64. */
function sampleTensors(): Map<string, PthTensor> {
  const floats = new Float32Array([1.5, -0, Number.NaN, Infinity, -Infinity, 1e-45, 3.4028234663852886e38, -2.25]);
  new Uint32Array(floats.buffer)[2] = 0x7fc12345; // a NaN with a payload
  return new Map<string, PthTensor>([
    ['stage0.scale_conv.weight', { dtype: 'float32', shape: [2, 4], data: floats }],
    ['doubles', { dtype: 'float64', shape: [3], data: new Float64Array([Math.PI, -1e-300, 5e-324]) }],
    ['longs', { dtype: 'int64', shape: [2, 2], data: new BigInt64Array([-(2n ** 63n), -1n, 2n ** 40n, 2n ** 63n - 1n]) }],
    ['ints', { dtype: 'int32', shape: [1, 3], data: new Int32Array([-(2 ** 31), 0, 2 ** 31 - 1]) }],
    ['bytes', { dtype: 'uint8', shape: [4], data: new Uint8Array([0, 1, 128, 255]) }],
    ['scalar', { dtype: 'float32', shape: [], data: new Float32Array([7]) }],
    ['empty', { dtype: 'float64', shape: [3, 0], data: new Float64Array(0) }],
    ['unicode ключ ✓', { dtype: 'uint8', shape: [1], data: new Uint8Array([9]) }],
  ]);
}

// A tiny pickle assembler for hand-made data.pkl files.
const str = (s: string): number[] => {
  const b = Buffer.from(s, 'utf8');
  return [0x58, b.length & 255, (b.length >> 8) & 255, 0, 0, ...b];
};
const glob = (module: string, name: string): number[] => [0x63, ...Buffer.from(`${module}\n${name}\n`, 'latin1')];
const PROTO2 = [0x80, 2];
const STOP = 0x2e;

function zipOf(entries: Record<string, Uint8Array>): Uint8Array {
  const zippable: Zippable = {};
  for (const [name, data] of Object.entries(entries)) zippable[name] = data;
  return zipSync(zippable, { level: 0 });
}

function pthOfPickle(pickle: number[], storages: Record<string, Uint8Array> = {}): Uint8Array {
  const entries: Record<string, Uint8Array> = { 'archive/data.pkl': Uint8Array.from(pickle) };
  for (const [key, bytes] of Object.entries(storages)) entries[`archive/data/${key}`] = bytes;
  return zipOf({ ...entries, 'archive/version': Buffer.from('3\n') });
}

/** Our serialized file with its entries edited. */
function editEntries(bytes: Uint8Array, edit: (entries: Record<string, Uint8Array>) => void): Uint8Array {
  const entries = unzipSync(bytes);
  edit(entries);
  return zipOf(entries);
}

function expectPthError(bytes: Uint8Array, pattern: RegExp): void {
  const e = thrown(() => parsePth(bytes, 'test.pth'));
  expect(e.message).toMatch(/^test\.pth: /);
  expect(e.message).toMatch(pattern);
}

describe('reading the official scale files', () => {
  test('B1: 79 one-dimensional float32 tensors in file order, 13 with negative values', () => {
    const tensors = readPth(B1);
    expect(tensors.size).toBe(79);
    const keys = [...tensors.keys()];
    expect(keys.slice(0, 3)).toEqual(['stage0.scale_1x1.weight', 'stage0.scale_conv.weight', 'stage1.0.scale_1x1.weight']);
    expect(keys).toContain('stage1.1.scale_identity.weight');
    for (const t of tensors.values()) {
      expect(t.dtype).toBe('float32');
      expect(t.shape).toHaveLength(1);
      expect(t.data).toBeInstanceOf(Float32Array);
      expect(t.data.length).toBe(t.shape[0]);
    }
    const withNegatives = [...tensors.values()].filter((t) => (t.data as Float32Array).some((v) => v < 0));
    expect(withNegatives).toHaveLength(13);
    expect(tensors.get('stage0.scale_1x1.weight')?.shape).toEqual([64]);
  });

  test('B1 (an OrderedDict) and B2 (a plain dict) read exactly as torch.load reads them', () => {
    const torchView = JSON.parse(runTorch(DUMP_PY, [B1, B2])) as Record<string, { type: string; tensors: Dumped }>;
    expect([torchView[B1].type, torchView[B2].type]).toEqual(['OrderedDict', 'dict']);
    for (const file of [B1, B2]) expect(dumpOf(readPth(file))).toEqual(torchView[file].tensors);
  });
});

describe('files written by real PyTorch', () => {
  test('float64, int64, int32, uint8, transposed, offset, strided, expanded, shared storages, _metadata, plain dict, Parameter', () => {
    const files = ['mixed.pth', 'bn.pth', 'plain.pth'].map((f) => path.join(tempDir, f));
    const script = `
import sys, json, collections, torch
torch.manual_seed(0)
base = torch.arange(12, dtype=torch.float32) * 0.5 - 2
m = torch.randn(3, 4, dtype=torch.float64)
counts = torch.arange(10, dtype=torch.int32)
sd = collections.OrderedDict()
sd['matrix'] = m
sd['transposed'] = m.t()                      # non-contiguous, shares the storage of 'matrix'
sd['longs'] = torch.tensor([-(2**40), -1, 0, 7, 2**62], dtype=torch.int64)
sd['offset'] = base[5:9]                      # storage offset 5
sd['base'] = base
sd['strided'] = base.view(3, 4)[1:, ::2]       # offset 4, strides (4, 2)
sd['ints'] = counts[2:8].view(2, 3)
sd['bytes'] = torch.tensor([0, 1, 255], dtype=torch.uint8)
sd['scalar'] = torch.tensor(2.5)
sd['empty'] = torch.zeros(0, 3)
sd['expanded'] = torch.tensor([1., 2.]).expand(3, 2)   # stride 0
torch.save(sd, sys.argv[1])
bn = torch.nn.BatchNorm2d(3)
torch.save(bn.state_dict(), sys.argv[2])      # an OrderedDict with _metadata (BUILD)
plain = {'weight': torch.nn.Parameter(torch.ones(2, 2)), 'b': torch.full((2,), -3.0)}
torch.save(plain, sys.argv[3])                # a plain dict, a Parameter
dump = lambda d: [[k, str(v.dtype).replace('torch.', ''), list(v.shape), v.detach().contiguous().numpy().tobytes().hex()] for k, v in d.items()]
print(json.dumps([dump(sd), dump(bn.state_dict()), dump(plain)]))
`;
    const expected = JSON.parse(runTorch(script, files)) as Dumped[];
    files.forEach((file, i) => {
      expect(dumpOf(readPth(file))).toEqual(expected[i]);
    });
    const mixed = readPth(files[0]);
    expect(Array.from(mixed.get('offset')?.data as Float32Array)).toEqual([0.5, 1, 1.5, 2]);
    expect(Array.from(mixed.get('strided')?.data as Float32Array)).toEqual([0, 1, 2, 3]);
    expect(mixed.get('scalar')?.shape).toEqual([]);
    expect(readPth(files[1]).get('num_batches_tracked')).toEqual({ dtype: 'int64', shape: [], data: new BigInt64Array([0n]) });
  });
});

describe('writing', () => {
  test('round trip: keys, order, dtypes, shapes and bits survive', () => {
    const tensors = sampleTensors();
    const back = parsePth(serializePth(tensors), 'memory');
    expect(dumpOf(back)).toEqual(dumpOf(tensors));
    const official = readPth(B1);
    expect(dumpOf(parsePth(serializePth(official), 'memory'))).toEqual(dumpOf(official));
  });

  test('the same tensors always give the same bytes', () => {
    expect(Buffer.from(serializePth(sampleTensors())).equals(Buffer.from(serializePth(sampleTensors())))).toBe(true);
  });

  test("stored entries, each one's data 64-byte aligned, with version and byteorder", () => {
    const bytes = Buffer.from(serializePth(sampleTensors()));
    const names: string[] = [];
    let offset = 0;
    while (bytes.readUInt32LE(offset) === 0x04034b50) {
      const method = bytes.readUInt16LE(offset + 8);
      const size = bytes.readUInt32LE(offset + 18);
      const nameLength = bytes.readUInt16LE(offset + 26);
      const extraLength = bytes.readUInt16LE(offset + 28);
      const name = bytes.toString('utf8', offset + 30, offset + 30 + nameLength);
      const dataStart = offset + 30 + nameLength + extraLength;
      expect({ name, method, aligned: dataStart % 64 }).toEqual({ name, method: 0, aligned: 0 });
      names.push(name);
      offset = dataStart + size;
    }
    expect(names).toEqual([
      'archive/data.pkl',
      'archive/byteorder',
      ...[...Array(8).keys()].map((i) => `archive/data/${i}`),
      'archive/version',
    ]);
    const entries = unzipSync(bytes);
    expect(Buffer.from(entries['archive/version']).toString()).toBe('3\n');
    expect(Buffer.from(entries['archive/byteorder']).toString()).toBe('little');
  });

  test('torch.load (weights_only) reads our file as the same OrderedDict', () => {
    const file = path.join(tempDir, 'ours.pth');
    const tensors = sampleTensors();
    writePth(file, tensors);
    const torchView = (JSON.parse(runTorch(DUMP_PY, [file])) as Record<string, { type: string; tensors: Dumped }>)[file];
    expect(torchView.type).toBe('OrderedDict');
    expect(torchView.tensors).toEqual(dumpOf(tensors));
  });

  test('writes atomically: replaces whole, leaves the old file and no temporary on failure', () => {
    const dir = fs.mkdtempSync(path.join(tempDir, 'atomic-'));
    const file = path.join(dir, 'w.pth');
    writePth(file, sampleTensors());
    writePth(file, new Map([['only', { dtype: 'uint8', shape: [1], data: new Uint8Array([1]) }]]));
    expect([...readPth(file).keys()]).toEqual(['only']);
    const before = fs.readFileSync(file);
    const bad = new Map<string, PthTensor>([['bad', { dtype: 'float32', shape: [3], data: new Float32Array(2) }]]);
    expect(thrown(() => writePth(file, bad)).message).toMatch(/w\.pth: tensor 'bad': shape \[3\] holds 3 elements but data has 2/);
    expect(fs.readFileSync(file).equals(before)).toBe(true);
    expect(fs.readdirSync(dir)).toEqual(['w.pth']);
    expect(() => writePth(path.join(dir, 'missing-dir', 'x.pth'), sampleTensors())).toThrow(
      /x\.pth: cannot write it: the folder .*missing-dir does not exist/,
    );
    expect(fs.readdirSync(dir)).toEqual(['w.pth']);
  });

  test('rejects tensors it cannot write, naming them', () => {
    const write = (t: unknown) => thrown(() => serializePth(new Map([['k', t as PthTensor]]), 'out.pth')).message;
    expect(write({ dtype: 'float16', shape: [1], data: new Uint8Array(2) })).toMatch(/^out\.pth: tensor 'k': unsupported dtype 'float16'/);
    expect(write({ dtype: 'float32', shape: [2], data: new Float64Array(2) })).toMatch(/dtype float32 needs its data in a Float32Array/);
    expect(write({ dtype: 'int32', shape: [-1], data: new Int32Array(0) })).toMatch(/shape \[-1\] is not a list of non-negative integers/);
  });
});

describe('errors name the file and what is wrong', () => {
  const good = () => serializePth(new Map([['w', { dtype: 'float32', shape: [2], data: new Float32Array([1, 2]) }]]));

  test('not a zip, legacy pickle format, truncated, empty zip', () => {
    expectPthError(Buffer.from('hello world'), /not a zip archive; torch.save files of PyTorch >= 1\.6 are zip archives/);
    expectPthError(new Uint8Array(0), /not a zip archive/);
    expectPthError(Uint8Array.from([0x80, 2, 0x8a, 0x0a]), /legacy pre-1\.6 torch\.save format/);
    const fixture = fs.readFileSync(B1);
    expectPthError(fixture.subarray(0, fixture.length - 10), /truncated or damaged zip archive/);
    expectPthError(fixture.subarray(0, 1000), /truncated or damaged zip archive/);
    expectPthError(zipOf({}), /missing data\.pkl/);
  });

  test('missing data.pkl, missing or short storage entries, compressed entries', () => {
    expectPthError(zipOf({ 'archive/version': Buffer.from('3\n') }), /missing data\.pkl/);
    expectPthError(
      editEntries(good(), (e) => delete e['archive/data/0']),
      /zip entry 'archive\/data\/0' is missing/,
    );
    expectPthError(
      editEntries(good(), (e) => (e['archive/data/0'] = new Uint8Array(5))),
      /storage entry 'archive\/data\/0' has 5 bytes, too short for 2 float32 elements \(8 bytes\)/,
    );
    const entries = unzipSync(good());
    const compressed = zipSync({ ...entries, 'archive/data/0': [entries['archive/data/0'], { level: 9 }] }, { level: 0 });
    expectPthError(compressed, /zip entry 'archive\/data\/0' is compressed \(method 8\)/);
  });

  test('unsupported opcodes, code-running globals and dtypes; non-tensor values', () => {
    const ext1 = [...PROTO2, 0x82, 1, STOP];
    expectPthError(pthOfPickle(ext1), /unsupported pickle opcode EXT1 \(0x82\) at byte 2 of data\.pkl/);
    expectPthError(pthOfPickle([...PROTO2, 0xff, STOP]), /unknown pickle opcode 0xff at byte 2/);
    expectPthError(
      pthOfPickle([...PROTO2, ...glob('os', 'system'), STOP]),
      /data\.pkl \(its root\) refers to os\.system, a function that runs code/,
    );
    // Named, then dropped: still refused.
    const popped = [...PROTO2, ...glob('builtins', 'eval'), 0x30, 0x7d, STOP];
    expectPthError(pthOfPickle(popped), /data\.pkl refers to builtins\.eval/);
    const complex = editEntries(good(), (e) => {
      e['archive/data.pkl'] = Buffer.from(
        Buffer.from(e['archive/data.pkl']).toString('latin1').replace('FloatStorage', 'ComplexFloatStorage'),
        'latin1',
      );
    });
    expectPthError(complex, /entry 'w' is a tensor of torch\.ComplexFloatStorage, an unsupported dtype \(supported: torch\.FloatStorage, /);
    expectPthError(pthOfPickle([...PROTO2, 0x7d, ...str('a'), 0x4b, 3, 0x73, STOP]), /entry 'a' is number 3, not a tensor/);
    expectPthError(pthOfPickle([...PROTO2, 0x29, STOP]), /data\.pkl holds a list or tuple of 0, not a dict of tensors/);
    expectPthError(pthOfPickle([...PROTO2, 0x7d]), /data\.pkl is truncated \(.* at byte 3/);
    expectPthError(pthOfPickle([...PROTO2, 0x73, STOP]), /stack underflow \(SETITEM at byte 3/);
  });

  test('a tensor reaching past its storage; big sizes in LONG1', () => {
    // {'w': _rebuild_tensor_v2(storage(FloatStorage, '0', numel), 0, size, (1,), False, {})}
    const tensorPickle = (numel: number[], size: number) => [
      ...PROTO2,
      0x7d,
      ...str('w'),
      ...glob('torch._utils', '_rebuild_tensor_v2'),
      0x28,
      0x28,
      ...str('storage'),
      ...glob('torch', 'FloatStorage'),
      ...str('0'),
      ...str('cpu'),
      ...numel,
      0x74,
      0x51,
      0x4b,
      0,
      0x4b,
      size,
      0x85,
      0x4b,
      1,
      0x85,
      0x89,
      0x7d,
      0x74,
      0x52,
      0x73,
      STOP,
    ];
    const storage = { '0': new Uint8Array(16) };
    expect(parsePth(pthOfPickle(tensorPickle([0x4b, 4], 4), storage), 't').get('w')).toEqual({
      dtype: 'float32',
      shape: [4],
      data: new Float32Array(4),
    });
    expectPthError(
      pthOfPickle(tensorPickle([0x4b, 4], 5), storage),
      /tensor 'w' \(size \[5\], stride \[1\], offset 0\) reaches element 4 of a storage of 4/,
    );
    const numel2to32 = [0x8a, 5, 0, 0, 0, 0, 1];
    expectPthError(pthOfPickle(tensorPickle(numel2to32, 4), storage), /has 16 bytes, too short for 4294967296 float32 elements/);
  });
});

/** Deterministic pseudo-random numbers (mulberry32). */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('garbage never crashes or hangs, it only gets Errors naming the file', () => {
  const outcomes = { parsed: 0, errors: 0 };
  function tryParse(bytes: Uint8Array): void {
    try {
      parsePth(bytes, 'fuzz.pth');
      outcomes.parsed++;
    } catch (e) {
      expect(e).toBeInstanceOf(Error);
      expect((e as Error).message).toMatch(/^fuzz\.pth: \S/);
      outcomes.errors++;
    }
  }
  const fixture = new Uint8Array(fs.readFileSync(B1));
  const next = random(12345);
  const int = (n: number) => Math.floor(next() * n);

  test('random bytes, with and without a zip signature', () => {
    for (let i = 0; i < 200; i++) {
      const bytes = Uint8Array.from({ length: int(3000) }, () => int(256));
      if (i % 2 === 0) bytes.set([0x50, 0x4b, 0x03, 0x04].slice(0, bytes.length));
      tryParse(bytes);
    }
  });

  test('truncated fixture', () => {
    for (let i = 0; i < 150; i++) tryParse(fixture.subarray(0, int(fixture.length)));
    for (let cut = 1; cut <= 100; cut++) tryParse(fixture.subarray(0, fixture.length - cut));
  });

  test('bit-flipped fixture, anywhere and in the central directory', () => {
    const centralStart = fixture.length - 8000;
    for (let i = 0; i < 400; i++) {
      const bytes = fixture.slice();
      const at = i % 2 === 0 ? int(bytes.length) : centralStart + int(8000);
      bytes[at] ^= 1 << int(8);
      tryParse(bytes);
    }
  });

  test('mutated data.pkl in a sound zip', () => {
    const entries = unzipSync(fixture);
    const pickle = entries['archive/data.pkl'];
    for (let i = 0; i < 300; i++) {
      const mutated = pickle.slice(0, i % 10 === 0 ? int(pickle.length) : pickle.length);
      for (let k = 1 + int(3); k > 0; k--) mutated[int(mutated.length)] = int(256);
      tryParse(zipOf({ ...entries, 'archive/data.pkl': mutated }));
    }
    expect(outcomes.errors).toBeGreaterThan(500);
  });
});
