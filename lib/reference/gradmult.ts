// GradMult: checking the compact form and expanding it to the full multiplier tensor M.
import type { GradMult } from '../backend';
import type { ParamInfo, Precision } from '../spec';
import { FloatArray, allocate, formatShape, rounder, sameShape, sizeOf } from './numeric';

/** Checks a GradMult's own consistency (lengths, groups, identity); throws naming its parameter. */
export function checkGradMult(gm: GradMult): void {
  const where = `GradMult for '${gm.param}'`;
  if (!Array.isArray(gm.shape) || gm.shape.length !== 4 || !gm.shape.every((d) => Number.isInteger(d) && d > 0)) {
    throw new RangeError(`${where}: shape must be 4 positive integers [O, I/groups, kH, kW], got ${JSON.stringify(gm.shape)}`);
  }
  const [outChannels, groupChannels] = gm.shape;
  if (!Number.isInteger(gm.groups) || gm.groups < 1 || outChannels % gm.groups !== 0) {
    throw new RangeError(`${where}: groups must be a positive integer dividing ${outChannels} output channels, got ${gm.groups}`);
  }
  for (const [what, vector] of [
    ['base', gm.base],
    ['centre', gm.centre],
  ] as const) {
    if (!(vector instanceof Float64Array) || vector.length !== outChannels) {
      throw new RangeError(`${where}: ${what} must be a Float64Array of ${outChannels} values (one per output channel)`);
    }
    if (!vector.every(Number.isFinite)) throw new RangeError(`${where}: ${what} holds a non-finite value`);
  }
  if (typeof gm.identity !== 'boolean') throw new TypeError(`${where}: identity must be a boolean`);
  // An identity branch keeps the channel count: O == I.
  if (gm.identity && outChannels !== groupChannels * gm.groups) {
    throw new RangeError(`${where}: identity needs as many output as input channels, shape ${formatShape(gm.shape)} with groups ${gm.groups} has ${outChannels} and ${groupChannels * gm.groups}`);
  }
}

/** Checks that `gm` fits a trainable conv parameter of a network (whose convs have groups 1). */
export function checkGradMultTarget(gm: GradMult, param: ParamInfo | undefined): void {
  if (param === undefined) throw new RangeError(`GradMult names '${gm.param}', which is not a parameter of the network`);
  if (!param.trainable) throw new RangeError(`GradMult names '${gm.param}', which is a constant (not trainable) parameter`);
  if (!sameShape(gm.shape, param.shape)) {
    throw new RangeError(`GradMult for '${gm.param}' has shape ${formatShape(gm.shape)} but the parameter has shape ${formatShape(param.shape)}`);
  }
  if (gm.groups !== 1) throw new RangeError(`GradMult for '${gm.param}' has groups ${gm.groups}, but the network's convolutions have groups 1`);
}

/** The full multiplier, shaped like the weight:
 * M[o,i,p,q] = base[o] (+ centre[o] at the kernel centre) (+ 1 at the centre where identity and i == o % (I/groups)),
 * summed in `precision` in that order. */
export function expandGradMult(gm: GradMult, precision: Precision): FloatArray {
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
