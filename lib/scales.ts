// Branch scale sets (the s, t, g vectors of hs / csla blocks that hyper-search learns): a typed, immutable
// container, JSON and .pth files, and strict validation against a network spec. The official loader takes
// scale files with strict=False and silently ignores mismatches; here a file either fits whole or is refused.
import { createHash } from 'node:crypto';
import * as path from 'node:path';
import type { HostTensor } from './backend';
import { INPUT_LIMITS, readInputFile } from './input-file';
import { parameterInfo, type NetworkSpec } from './spec';
import { officialStateDict, scaleEntries } from './official';
import { parsePthTree, serializePth, writeFileAtomic, type PthTensor } from './pth';

export type ScaleRole = 'scale_conv' | 'scale_1x1' | 'scale_identity';

const SCALE_ROLES: readonly ScaleRole[] = ['scale_conv', 'scale_1x1', 'scale_identity'];

/** The official state-dict key of a block's scale: 'stage1.0' + 'scale_1x1' -> 'stage1.0.scale_1x1.weight'. */
export function scaleKey(block: string, role: ScaleRole): string {
  return `${block}.${role}.weight`;
}

/** One block's branch scales: s (3x3 branch), t (1x1 branch), g (identity; only blocks that keep channels and
 * resolution have one). */
export interface BlockScales {
  readonly s: Float32Array;
  readonly t: Float32Array;
  readonly g?: Float32Array;
}

/** An immutable map from official scale key to its vector. Values are copied in and copied out. */
export class ScaleSet {
  private readonly values: ReadonlyMap<string, Float32Array>;

  private constructor(values: Map<string, Float32Array>) {
    this.values = values;
  }

  /** Copies `entries` (converted to float32) in their order. */
  static from(entries: Iterable<readonly [string, ArrayLike<number>]>): ScaleSet {
    const values = new Map<string, Float32Array>();
    for (const [key, vector] of entries) {
      if (values.has(key)) throw new Error(`scale set: key '${key}' given twice`);
      values.set(key, Float32Array.from(vector));
    }
    return new ScaleSet(values);
  }

  get size(): number {
    return this.values.size;
  }

  keys(): string[] {
    return [...this.values.keys()];
  }

  has(key: string): boolean {
    return this.values.has(key);
  }

  /** A copy of the vector stored under `key`; throws naming the key when absent. */
  get(key: string): Float32Array {
    const vector = this.values.get(key);
    if (!vector) throw new Error(`scale set: no key '${key}'`);
    return vector.slice();
  }

  /** Copies of every entry, in order. */
  entries(): Array<[string, Float32Array]> {
    return [...this.values].map(([key, vector]) => [key, vector.slice()]);
  }

  /** The block's (s, t, g) vectors; g is absent when the set has no identity scale for the block. */
  block(name: string): BlockScales {
    const s = this.get(scaleKey(name, 'scale_conv'));
    const t = this.get(scaleKey(name, 'scale_1x1'));
    const identityKey = scaleKey(name, 'scale_identity');
    return this.has(identityKey) ? { s, t, g: this.get(identityKey) } : { s, t };
  }
}

/** What validateScales expects: every scale parameter of the spec's blocks in hs mode, with its length. */
function expectedScaleLengths(spec: NetworkSpec): Map<string, number> {
  const scaleRoles: ReadonlySet<string> = new Set(SCALE_ROLES);
  return new Map(
    parameterInfo({ ...spec, mode: 'hs' })
      .filter((p) => scaleRoles.has(p.role))
      .map((p) => [p.name, p.shape[0]]),
  );
}

/** Up to `limit` items, then how many more. */
function listed(items: readonly string[], limit = 10): string {
  const shown = items.slice(0, limit).join(', ');
  return items.length > limit ? `${shown}, ... and ${items.length - limit} more` : shown;
}

/** Checks `set` against the scale parameters `spec` has in hs mode: every key present, no other keys, each
 * vector of its block's output width, every value finite. Throws one Error listing every problem. */
export function validateScales(spec: NetworkSpec, set: ScaleSet): void {
  const expected = expectedScaleLengths(spec);
  const missing = [...expected.keys()].filter((key) => !set.has(key));
  const unexpected = set.keys().filter((key) => !expected.has(key));
  const misshaped: string[] = [];
  const nonFinite: string[] = [];
  let nonFiniteValues = 0;
  for (const [key, vector] of set.entries()) {
    const length = expected.get(key);
    if (length !== undefined && vector.length !== length) misshaped.push(`${key} has ${vector.length} values, expected ${length}`);
    const first = vector.findIndex((v) => !Number.isFinite(v));
    if (first >= 0) {
      const count = vector.reduce((n, v) => (Number.isFinite(v) ? n : n + 1), 0);
      nonFiniteValues += count;
      nonFinite.push(`${key} has ${count} (first at [${first}]: ${vector[first]})`);
    }
  }
  const problems = [
    missing.length ? `missing keys (${missing.length}): ${listed(missing)}` : '',
    unexpected.length ? `unexpected keys (${unexpected.length}): ${listed(unexpected)}` : '',
    misshaped.length ? `wrong lengths (${misshaped.length}): ${listed(misshaped)}` : '',
    nonFinite.length ? `non-finite values (${nonFiniteValues} in ${nonFinite.length} keys): ${listed(nonFinite)}` : '',
  ].filter(Boolean);
  if (problems.length > 0) {
    throw new Error(`scales do not fit the network (${expected.size} scale keys expected, ${set.size} given):\n  ${problems.join('\n  ')}`);
  }
}

/** The scale parameters of an hs / csla network's state dict (what hyper-search produces), validated. */
export function scalesFromNetworkState(spec: NetworkSpec, state: ReadonlyMap<string, HostTensor>): ScaleSet {
  if (spec.mode !== 'hs' && spec.mode !== 'csla')
    throw new Error(`scalesFromNetworkState: a '${spec.mode}' network has no branch scales (hs or csla needed)`);
  const expected = expectedScaleLengths(spec);
  const missing = [...expected.keys()].filter((key) => !state.has(key));
  if (missing.length > 0)
    throw new Error(`scalesFromNetworkState: the state dict lacks ${missing.length} scale parameters: ${listed(missing)}`);
  const set = ScaleSet.from([...expected.keys()].map((key): [string, ArrayLike<number>] => [key, (state.get(key) as HostTensor).data]));
  validateScales(spec, set);
  return set;
}

// ---------------------------------------------------------------------------------------------------------
// Files

export type ScaleFileFormat = 'json' | 'pth';

export const SCALE_JSON_FORMAT = 'repopt-scales';
export const SCALE_JSON_VERSION = 1;

/** The JSON scale file: {"format": "repopt-scales", "version": 1, "sha256": ..., "scales": {key: [numbers], ...}}.
 * Numbers are float32 values written in the shortest form that reads back to the same float32 (-0
 * included). sha256 (written always, checked when present) covers the keys and float32 values, so a
 * damaged file is detected; remove it after editing values by hand. */
export interface ScaleFileJson {
  readonly format: typeof SCALE_JSON_FORMAT;
  readonly version: typeof SCALE_JSON_VERSION;
  readonly sha256?: string;
  readonly scales: Readonly<Record<string, readonly number[]>>;
}

/** SHA-256 over each key (UTF-8, then a NUL) and its float32 values (little-endian), in order. */
export function scalesDigest(entries: ReadonlyArray<readonly [string, Float32Array]>): string {
  const hash = createHash('sha256');
  for (const [key, vector] of entries) {
    hash.update(Buffer.from(key + '\0', 'utf8'));
    hash.update(Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength));
  }
  return hash.digest('hex');
}

/** The fewest significant digits that read back to the same float32 (9 always do); '-0' keeps the sign that
 * JSON.stringify would drop. */
function shortestFloat32Text(value: number): string {
  if (Object.is(value, -0)) return '-0';
  for (let digits = 1; digits < 9; digits++) {
    const text = String(Number(value.toPrecision(digits)));
    if (Math.fround(Number(text)) === value) return text;
  }
  return String(Number(value.toPrecision(9)));
}

/** The JSON text of a scale set, one key per line. Non-finite values cannot be written (JSON has none). */
export function scalesToJson(set: ScaleSet): string {
  const lines = set.entries().map(([key, vector]) => {
    const bad = vector.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) throw new Error(`scales to JSON: ${key}[${bad}] is ${vector[bad]}, which JSON cannot store`);
    const numbers = Array.from(vector, shortestFloat32Text);
    return `    ${JSON.stringify(key)}: [${numbers.join(', ')}]`;
  });
  const digest = scalesDigest(set.entries());
  return (
    `{\n  "format": "${SCALE_JSON_FORMAT}",\n  "version": ${SCALE_JSON_VERSION},\n  "sha256": "${digest}",\n  ` +
    `"scales": {\n${lines.join(',\n')}\n  }\n}\n`
  );
}

/** Parses scale JSON; `name` appears in errors. */
export function scalesFromJson(text: string, name: string): ScaleSet {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new Error(`${name}: not valid JSON (${(e as Error).message})`);
  }
  const doc = parsed as Partial<Record<keyof ScaleFileJson, unknown>> | null;
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc) || doc.format !== SCALE_JSON_FORMAT) {
    throw new Error(`${name}: not a scale file (expected an object with "format": "${SCALE_JSON_FORMAT}")`);
  }
  if (doc.version !== SCALE_JSON_VERSION)
    throw new Error(
      `${name}: scale file version ${JSON.stringify(doc.version)} is not supported (this reader knows version ${SCALE_JSON_VERSION})`,
    );
  const scales = doc.scales;
  if (typeof scales !== 'object' || scales === null || Array.isArray(scales))
    throw new Error(`${name}: "scales" must be an object mapping keys to arrays of numbers`);
  const entries = Object.entries(scales as Record<string, unknown>).map(([key, vector]): [string, Float32Array] => {
    if (!Array.isArray(vector)) throw new Error(`${name}: scales["${key}"] is not an array of numbers`);
    const values = Float32Array.from(vector as unknown[], (v, i) => {
      if (typeof v !== 'number') throw new Error(`${name}: scales["${key}"][${i}] is ${JSON.stringify(v)}, not a number`);
      return v;
    });
    const overflow = values.findIndex((v) => !Number.isFinite(v));
    if (overflow >= 0) throw new Error(`${name}: scales["${key}"][${overflow}] = ${vector[overflow]} is outside the float32 range`);
    return [key, values];
  });
  if (doc.sha256 !== undefined && doc.sha256 !== scalesDigest(entries)) {
    throw new Error(`${name}: checksum mismatch, the file is damaged (if you edited its values on purpose, delete the "sha256" line)`);
  }
  return ScaleSet.from(entries);
}

/** The bytes of a torch.save file holding the set as an OrderedDict of 1-D float32 tensors (the official
 * scale file layout). */
export function scalesToPth(set: ScaleSet, name?: string): Uint8Array {
  const tensors = new Map<string, PthTensor>(
    set.entries().map(([key, vector]) => [key, { dtype: 'float32', shape: [vector.length], data: vector }]),
  );
  return serializePth(tensors, name);
}

/** Parses a torch.save scale file: a dict of 1-D float tensors (float64 is rounded to float32, fp16 / bf16
 * widened), or an official hyper-search checkpoint (its state dict, flat or under 'model' / 'state_dict',
 * 'module.' prefixes allowed): its scale entries. */
export function scalesFromPth(bytes: Uint8Array, name: string): ScaleSet {
  const tensors = scaleEntries(officialStateDict(parsePthTree(bytes, name), name), name);
  const notVectors = [...tensors].filter(([, t]) => t.shape.length !== 1 || (t.dtype !== 'float32' && t.dtype !== 'float64'));
  if (notVectors.length > 0) {
    const described = notVectors.map(([key, t]) => `${key} (${t.dtype} [${t.shape.join(', ')}])`);
    throw new Error(`${name}: scales must be 1-D float tensors; ${notVectors.length} are not: ${listed(described)}`);
  }
  return ScaleSet.from([...tensors].map(([key, t]): [string, ArrayLike<number>] => [key, t.data as Float32Array | Float64Array]));
}

const ZIP_MAGIC = 'PK';

function formatOfName(file: string): ScaleFileFormat | undefined {
  const extension = path.extname(file).toLowerCase();
  if (extension === '.json') return 'json';
  if (extension === '.pth' || extension === '.pt') return 'pth';
  return undefined;
}

/** Reads a scale file: JSON for '.json', torch.save for '.pth' / '.pt' (a scale file or an official
 * hyper-search checkpoint), otherwise told apart by content. Refuses scales no network can train with
 * (checkScaleValues). `what` names the file's role in errors about the file itself (missing, a folder,
 * too big). */
export function loadScales(file: string, what = 'scale file'): ScaleSet {
  let format = formatOfName(file);
  // A hyper-search checkpoint holds the whole model (and optimizer): a weights file's limit.
  const bytes = readInputFile(file, what, format === 'pth' ? INPUT_LIMITS.large : INPUT_LIMITS.small);
  if (format === undefined) {
    if (bytes.subarray(0, 2).toString('latin1') === ZIP_MAGIC) format = 'pth';
    else if (bytes.toString('utf8').trimStart().startsWith('{')) format = 'json';
    else throw new Error(`${file}: neither a JSON scale file nor a torch.save zip (name it .json or .pth to say which)`);
  }
  const set = format === 'json' ? scalesFromJson(bytes.toString('utf8'), file) : scalesFromPth(bytes, file);
  checkScaleValues(set, file);
  return set;
}

/** Writes a scale file atomically; the format defaults to the one the extension names ('.json', '.pth', '.pt'). */
export function saveScales(file: string, set: ScaleSet, format: ScaleFileFormat | undefined = formatOfName(file)): void {
  if (format === undefined) throw new Error(`${file}: cannot tell the scale file format from the name; pass 'json' or 'pth'`);
  writeFileAtomic(file, format === 'json' ? Buffer.from(scalesToJson(set), 'utf8') : scalesToPth(set, file));
}

// ---------------------------------------------------------------------------------------------------------
// Degenerate values. As RepOpt-VGG constants a block's scales set its conv's gradient multiplier (s^2
// everywhere, + t^2 at the kernel centre, + 1 on the identity's diagonal) and its initial weights
// (s*W3 + t*W1 + g*I). Some sets cannot train at all (refused); some are legitimate but worth a word.

/** Largest |scale| accepted: SGD multiplies a 3x3 gradient by s^2, so |s| = 1e4 already scales it by
 * 1e8, far past anything a usable lr survives (hyper-searched scales stay within about 1..10, and
 * scaleWarnings calls |s| > 100 exploding). Also keeps s^2 far inside float32. */
export const MAX_SCALE_MAGNITUDE = 1e4;

const BRANCH_OF_ROLE: Readonly<Record<ScaleRole, string>> = { scale_conv: 's', scale_1x1: 't', scale_identity: 'g' };

/** The set's scale vectors grouped by block ('stage1.0' -> role -> vector); other keys are left out. */
function scalesByBlock(set: ScaleSet): Map<string, Map<ScaleRole, Float32Array>> {
  const blocks = new Map<string, Map<ScaleRole, Float32Array>>();
  for (const [key, vector] of set.entries()) {
    const match = /^(.+)\.(scale_conv|scale_1x1|scale_identity)\.weight$/.exec(key);
    if (!match) continue;
    const [, block, role] = match as unknown as [string, string, ScaleRole];
    if (!blocks.has(block)) blocks.set(block, new Map());
    blocks.get(block)!.set(role, vector);
  }
  return blocks;
}

const allZero = (v: Float32Array) => v.every((x) => x === 0);
const branchNames = (roles: Iterable<ScaleRole>) => [...roles].map((r) => `${r} (${BRANCH_OF_ROLE[r]})`).join(', ');

/** Refuses scale values no network trains with: non-finite or beyond MAX_SCALE_MAGNITUDE, every scale 0,
 * or a block whose every branch is 0 (its conv starts at 0 and its gradient multiplier is 0: it never
 * learns). `name` (the file) starts each message. */
export function checkScaleValues(set: ScaleSet, name: string): void {
  const blocks = scalesByBlock(set);
  for (const [block, roles] of blocks) {
    for (const [role, vector] of roles) {
      const bad = vector.findIndex((v) => !(Math.abs(v) <= MAX_SCALE_MAGNITUDE));
      if (bad < 0) continue;
      const value = vector[bad]!;
      throw new Error(
        `${name}: ${scaleKey(block, role)}[${bad}] is ${value}: ` +
          (Number.isFinite(value)
            ? `beyond the |scale| <= ${MAX_SCALE_MAGNITUDE} a network can train with (the gradient is multiplied by its square)`
            : 'scales must be finite numbers (the hyper-search run that wrote it diverged)'),
      );
    }
  }
  const vectors = [...blocks.values()].flatMap((roles) => [...roles.values()]);
  if (vectors.length > 0 && vectors.every(allZero)) {
    const count = vectors.reduce((n, v) => n + v.length, 0);
    throw new Error(
      `${name}: every scale is 0 (${count} values in ${vectors.length} tensors): no block could train; ` +
        'this is not a hyper-searched scale file',
    );
  }
  for (const [block, roles] of blocks) {
    if ([...roles.values()].every(allZero))
      throw new Error(`${name}: block ${block} has every branch scale 0 (${branchNames(roles.keys())}): its conv could never train`);
  }
}

/** What is legitimate in a scale set but worth knowing: negative values (hyper-search learns some), a
 * branch that is 0 throughout (that branch adds nothing), output channels whose every branch is 0 (they
 * never train). `name` (the file) starts each warning. */
export function scaleValueWarnings(set: ScaleSet, name: string): string[] {
  const warnings: string[] = [];
  const negative: string[] = [];
  for (const [block, roles] of scalesByBlock(set)) {
    for (const [role, vector] of roles) {
      const count = vector.filter((v) => v < 0).length;
      if (count > 0) negative.push(`${scaleKey(block, role)} (${count} of ${vector.length})`);
    }
    const zeroBranches = [...roles].filter(([, v]) => allZero(v)).map(([role]) => role);
    if (zeroBranches.length > 0 && zeroBranches.length < roles.size)
      warnings.push(`${name}: block ${block} has ${branchNames(zeroBranches)} 0 throughout: that branch adds nothing to the block`);
    const vectors = [...roles.values()];
    const width = Math.min(...vectors.map((v) => v.length));
    let dead = 0;
    for (let o = 0; o < width; o++) if (vectors.every((v) => v[o] === 0)) dead++;
    if (dead > 0 && zeroBranches.length < roles.size)
      warnings.push(`${name}: block ${block} has ${dead} of ${width} output channels with every branch scale 0: they never train`);
  }
  if (negative.length > 0)
    warnings.push(
      `${name}: negative scales in ${negative.length} tensors (accepted: hyper-search learns some; with SGD the ` +
        `gradient multiplier uses their squares): ${listed(negative)}`,
    );
  return warnings;
}
