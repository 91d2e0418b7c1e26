// Fuzzing the native boundary: every exported function, constructor and method, called with random
// wrong arguments (types, counts, NaN/Infinity/negative/huge numbers, bad shapes, disposed objects,
// objects of other classes). Each call must return or throw a JS Error with a message; an abort or a
// crash fails the suite. REPOPT_FUZZ_CALLS sets the budget (CI: the default), REPOPT_FUZZ_SEED the seed.
import { native } from '../lib/native';
import { nativeOptimizerConfig, resolveOptimizerSpec } from '../lib/optimizer-spec';
import { parameterInfo, type NetworkSpec } from '../lib/spec';
import { Random } from '../lib/reference/random';
import { useTestThreads } from './helpers';

beforeAll(useTestThreads);

const CALLS = Number(process.env.REPOPT_FUZZ_CALLS ?? 20000);
const SEED = Number(process.env.REPOPT_FUZZ_SEED ?? 12345);

test(`${CALLS} random calls across the native API never crash and throw only Errors`, async () => {
  const b = native();
  const random = new Random(SEED);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random.nextDouble() * xs.length)];

  // Live objects of every class, some disposed, to pass as arguments and to call methods on.
  const spec = { mode: 'target', inChannels: 1, numClasses: 3, blocks: [{ name: 'stage0', inChannels: 1, outChannels: 2, stride: 2 }] };
  const make = {
    tensor: () => b.Tensor.fromArray(new Float32Array([1, 2, 3, 4]), [2, 2]),
    network: () => new b.Network(spec),
    dataset: () => new b.Dataset(new Uint8Array(4 * 16), [4, 1, 4, 4], new Int32Array([0, 1, 2, 0]), { mean: [0.5], std: [0.25] }),
  };
  const pool: object[] = [];
  const refill = () => {
    const t = make.tensor();
    const n = make.network();
    const d = make.dataset();
    const o = n.createOptimizer(nativeOptimizerConfig(resolveOptimizerSpec({ type: 'sgd', lr: 0.1 }, parameterInfo(spec as NetworkSpec))));
    pool.push(t, n, d, o, d.permutation(0, 0), b.Tensor.zeros([2], 'int64'));
    if (random.nextDouble() < 0.3) pick([t, n, d, o] as { dispose(): void }[]).dispose();
  };
  for (let k = 0; k < 4; k++) refill();

  const numbers = [0, 1, -1, 2, 3, 0.5, NaN, Infinity, -Infinity, 2 ** 31, 2 ** 53, -(2 ** 53), 1e300, Number.MIN_VALUE, 64, 1023];
  const value = (depth = 0): unknown => {
    switch (Math.floor(random.nextDouble() * 14)) {
      case 0:
        return pick(numbers);
      case 1:
        return pick([
          '',
          'cpu',
          'cuda',
          'cuda:7',
          'float32',
          'int64',
          'target',
          'sgd',
          'adamw',
          'fused',
          'bf16',
          '\u0000',
          'x'.repeat(300),
        ]);
      case 2:
        return pick([true, false, null, undefined]);
      case 3:
        return BigInt(Math.floor(random.nextDouble() * 100) - 50) * (random.nextDouble() < 0.1 ? 2n ** 70n : 1n);
      case 4:
        return Array.from({ length: Math.floor(random.nextDouble() * 5) }, () => (depth < 2 ? value(depth + 1) : pick(numbers)));
      case 5:
        return pick([
          new Float32Array(3),
          new Float64Array(0),
          new Int32Array(4),
          new BigInt64Array(2),
          new Uint8Array(16),
          new Int16Array(2),
          new Uint8Array(new SharedArrayBuffer(8)),
        ]);
      case 6:
        return pick(pool);
      case 7:
        return depth < 2 ? { ...spec, ...(random.nextDouble() < 0.5 ? { blocks: value(depth + 1) } : { mode: value(depth + 1) }) } : {};
      case 8:
        return depth < 2
          ? { type: pick(['sgd', 'adamw', 'x']), lr: value(depth + 1), groups: value(depth + 1), gradMults: value(depth + 1) }
          : {};
      case 9:
        return depth < 2
          ? {
              pad: value(depth + 1),
              flip: value(depth + 1),
              resizedCrop: value(depth + 1),
              labelSmoothing: value(depth + 1),
              autocast: value(depth + 1),
            }
          : {};
      case 10:
        return Object.create(pick(pool));
      case 11:
        return () => 1;
      case 12:
        return Symbol('s');
      default:
        return pick(numbers.filter((n) => Number.isInteger(n) && n >= 0 && n < 100));
    }
  };
  const args = () => Array.from({ length: Math.floor(random.nextDouble() * 8) }, () => value());

  const statics: [string, (...a: unknown[]) => unknown][] = [
    ['info', b.info],
    ['memory', b.memory],
    ['setNumThreads', b.setNumThreads],
    ['manualSeed', b.manualSeed],
    ['cudaMemory', b.cudaMemory],
    ['observeRange', b.observeRange],
    ['channelScales', b.channelScales],
    ['Tensor.fromArray', b.Tensor.fromArray],
    ['Tensor.zeros', b.Tensor.zeros],
    ['Tensor.randn', b.Tensor.randn],
  ] as [string, (...a: unknown[]) => unknown][];
  const loose = b as unknown as Record<string, new (...a: unknown[]) => unknown>;
  const constructors = { Network: loose.Network, Dataset: loose.Dataset, Tensor: loose.Tensor, Optimizer: loose.Optimizer };

  let threw = 0;
  const pending: Promise<void>[] = [];
  // Async methods report through their promise: it must settle, and reject only with Errors.
  const settle = (result: unknown, what: string) => {
    // (typeof, not instanceof: the addon's promises belong to another realm than jest's)
    if (typeof result === 'object' && result !== null && typeof (result as Promise<unknown>).then === 'function') {
      pending.push(
        (result as Promise<unknown>).then(
          () => undefined,
          (e: Error) => {
            if (!(typeof e?.message === 'string' && /Error$/.test(e.name)))
              throw new Error(`${what} rejected with something that is not an Error: ${String(e)}`);
          },
        ),
      );
    }
  };
  for (let call = 0; call < CALLS; call++) {
    if (call % 500 === 0) refill();
    const r = random.nextDouble();
    let what = '';
    try {
      if (r < 0.2) {
        const [name, fn] = pick(statics);
        what = name;
        settle(fn(...args()), what);
      } else if (r < 0.3) {
        const name = pick(Object.keys(constructors));
        what = `new ${name}`;
        new constructors[name as keyof typeof constructors](...args());
      } else {
        const target = pick(pool) as Record<string, unknown>;
        const proto = Object.getPrototypeOf(target);
        const names = Object.getOwnPropertyNames(proto).filter((n) => n !== 'constructor');
        const name = pick(names);
        what = `${proto.constructor.name}.${name}`;
        const desc = Object.getOwnPropertyDescriptor(proto, name)!;
        if (desc.get) desc.get.call(random.nextDouble() < 0.1 ? pick(pool) : target);
        else if (name === 'setNumThreads' || name === 'dispose') continue;
        else settle((desc.value as (...a: unknown[]) => unknown).call(random.nextDouble() < 0.1 ? pick(pool) : target, ...args()), what);
      }
    } catch (e) {
      threw++;
      const err = e as Error;
      if (!(typeof err?.message === 'string' && err.message.length > 0 && /Error$/.test(err.name))) {
        throw new Error(`call ${call} (${what}) threw something that is not an Error: ${String(e)}`);
      }
    }
  }
  await Promise.all(pending);
  b.setNumThreads(2);
  // Most random calls are wrong and must have been refused.
  expect(threw).toBeGreaterThan(CALLS / 2);
  // The addon still works afterwards.
  expect(
    Array.from(
      b.Tensor.fromArray(new Float64Array([2]), [1, 1])
        .matmul(b.Tensor.fromArray(new Float64Array([3]), [1, 1]))
        .toArray(),
    ),
  ).toEqual([6]);
}, 300000);
