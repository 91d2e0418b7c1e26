// GradMult: the one check of the compact form and the one expansion to the full multiplier tensor M,
// shared by both backends (the optimizer-spec resolver calls the check; lib/repopt.ts's RepConv
// checks reuse its structural part).
import type { GradMult } from './backend';
import { allocate, formatShape, type FloatArray, rounder, sameShape, sizeOf } from './reference/numeric';
import type { ParamInfo, Precision } from './spec';

/** The structure of a conv weight [O, I/groups, k, k] with (optionally) an identity branch; throws
 * "<where>: ..." naming what is wrong. */
export function checkConvStructure(where: string, shape: readonly number[], groups: number, identity: boolean): void {
  if (!Array.isArray(shape) || shape.length !== 4 || !shape.every((d) => Number.isInteger(d) && d > 0)) {
    throw new RangeError(`${where}: shape must be 4 positive integers [O, I/groups, kH, kW], got ${JSON.stringify(shape)}`);
  }
  const [outChannels, groupChannels, kh, kw] = shape;
  if (kh !== kw || kh % 2 !== 1) throw new RangeError(`${where}: the kernel must be square and odd, got ${kh}x${kw}`);
  if (!Number.isInteger(groups) || groups < 1 || outChannels % groups !== 0) {
    throw new RangeError(`${where}: groups must be a positive integer dividing ${outChannels} output channels, got ${groups}`);
  }
  if (typeof identity !== 'boolean') throw new TypeError(`${where}: identity must be a boolean`);
  // An identity branch keeps the channel count: O == I.
  if (identity && outChannels !== groupChannels * groups) {
    throw new RangeError(
      `${where}: identity needs as many output as input channels, shape ${formatShape(shape)} with groups ${groups} ` +
        `has ${outChannels} and ${groupChannels * groups}`,
    );
  }
}

/** Checks a GradMult's own consistency (shape, lengths, groups, identity) and, given the parameter it
 * names, that it fits a trainable conv of the network (whose convs have groups 1). */
export function checkGradMult(gm: GradMult, param?: ParamInfo | null): void {
  const where = `GradMult for '${gm.param}'`;
  checkConvStructure(where, gm.shape, gm.groups, gm.identity);
  const outChannels = gm.shape[0];
  for (const [what, vector] of [
    ['base', gm.base],
    ['centre', gm.centre],
  ] as const) {
    if (!(vector instanceof Float64Array) || vector.length !== outChannels) {
      throw new RangeError(`${where}: ${what} must be a Float64Array of ${outChannels} values (one per output channel)`);
    }
    if (!vector.every(Number.isFinite)) throw new RangeError(`${where}: ${what} holds a non-finite value`);
  }
  if (param === undefined) return;
  if (param === null) throw new RangeError(`GradMult names '${gm.param}', which is not a parameter of the network`);
  if (!param.trainable) throw new RangeError(`GradMult names '${gm.param}', which is a constant (not trainable) parameter`);
  if (!sameShape(gm.shape, param.shape)) {
    throw new RangeError(
      `GradMult for '${gm.param}' has shape ${formatShape(gm.shape)} but the parameter has shape ${formatShape(param.shape)}`,
    );
  }
  if (gm.groups !== 1)
    throw new RangeError(`GradMult for '${gm.param}' has groups ${gm.groups}, but the network's convolutions have groups 1`);
}

/** The full multiplier (the official storage), shaped like the weight:
 * M[o,i,p,q] = base[o] (+ centre[o] at the kernel centre) (+ 1 at the centre where identity and i == o % (I/groups)),
 * summed in `precision` in that order. */
export function fullGradMult(gm: GradMult, precision: Precision = 'float32'): FloatArray {
  checkGradMult(gm);
  const round = rounder(precision);
  const [outChannels, groupChannels, kernelH, kernelW] = gm.shape;
  const centreY = kernelH >> 1;
  const centreX = kernelW >> 1;
  const m = allocate(precision, sizeOf(gm.shape));
  for (let o = 0; o < outChannels; o++) {
    const base = round(gm.base[o]);
    const atCentre = round(base + round(gm.centre[o]));
    for (let i = 0; i < groupChannels; i++) {
      const offset = (o * groupChannels + i) * kernelH * kernelW;
      m.fill(base, offset, offset + kernelH * kernelW);
      const identityHere = gm.identity && i === o % groupChannels;
      m[offset + centreY * kernelW + centreX] = identityHere ? round(atCentre + 1) : atCentre;
    }
  }
  return m;
}
