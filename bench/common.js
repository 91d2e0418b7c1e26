// Shared by the benchmarks: a seeded generator, and GradMults for every block of a network spec.
const { gradMultOf } = require('../dist');

/** Park-Miller minimal standard generator: numbers in (0, 1), the same on every machine. */
function seededRandom(seed = 1) {
  let state = seed;
  return () => {
    state = (state * 16807) % 2147483647;
    return state / 2147483647;
  };
}

/** RepOptSGD GradMults of every block of `spec`; scale(blockIndex, channel, 's' | 't') gives the branch
 * scales, asked for block by block, all s of a block before its t. */
function blockGradMults(spec, scale) {
  return spec.blocks.map((b, k) =>
    gradMultOf(
      {
        param: `${b.name}.conv.weight`,
        shape: [b.outChannels, b.inChannels, 3, 3],
        groups: 1,
        identity: b.inChannels === b.outChannels && b.stride === 1,
        scales: {
          s: Float64Array.from({ length: b.outChannels }, (_, o) => scale(k, o, 's')),
          t: Float64Array.from({ length: b.outChannels }, (_, o) => scale(k, o, 't')),
        },
      },
      'sgd',
    ),
  );
}

module.exports = { seededRandom, blockGradMults };
