// A small seeded PRNG (xoshiro128**, state filled by splitmix32), so that a seed gives the same
// initial weights on every machine and Node version.

function splitmix32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

export class Random {
  private readonly state = new Uint32Array(4);

  /** `seed`: any safe integer (negative ones too); both 32-bit halves feed the state. */
  constructor(seed: number) {
    if (!Number.isSafeInteger(seed)) throw new RangeError(`random seed must be a safe integer, got ${seed}`);
    const low = seed >>> 0;
    const high = Math.floor(seed / 2 ** 32) >>> 0;
    const mix = splitmix32(low ^ Math.imul(high, 0x27d4eb2d));
    const mixHigh = splitmix32(high + 0x6a09e667);
    for (let i = 0; i < 4; i++) this.state[i] = (mix() ^ mixHigh()) >>> 0;
    if (this.state.every((word) => word === 0)) this.state[0] = 1; // the all-zero state is a fixed point
  }

  nextUint32(): number {
    const s = this.state;
    const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** Uniform in [0, 1) with 53 random bits. */
  nextDouble(): number {
    const high = this.nextUint32() >>> 5; // 27 bits
    const low = this.nextUint32() >>> 6; // 26 bits
    return (high * 2 ** 26 + low) / 2 ** 53;
  }

  /** Uniform in [low, high) (as torch's uniform_: low + (high - low) * u). */
  uniform(low: number, high: number): number {
    return low + (high - low) * this.nextDouble();
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
