// Checkpoints: a folder per save (model.pth, optimizer.bin, ema.pth when the run keeps an EMA of the
// weights, meta.json with the SHA-256 of each file),
// written under a temporary name and renamed, then `latest` pointed at it (also by rename). A crash at
// any moment leaves the previous complete checkpoint reachable; loading verifies everything it reads.
//
// meta.json (version 2) vouches for itself: a `checksum` key and its exact text (lib/sealed-json.ts,
// indent 2). Version 1 (no checksum, but the same text; optimizer.bin holds libtorch's bytes without the
// frame of lib/optimizer-state.ts) is still read.
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { INPUT_LIMITS, readInputFile } from '../input-file';
import { frameOptimizerState } from '../optimizer-state';
import { type PthTensor, parsePth, serializePth, writeFileAtomic } from '../pth';
import { jsonText, sealedJsonText, sealProblem } from '../sealed-json';

export const CHECKPOINT_FORMAT = 'repopt-checkpoint';
export const CHECKPOINT_VERSION = 2;
/** Versions readCheckpoint reads. */
const READABLE_VERSIONS = [1, 2];
const FILES = ['model.pth', 'optimizer.bin'] as const;
/** Kept only by runs that have it. */
const OPTIONAL_FILES = ['ema.pth'] as const;
const META_INDENT = 2;

export interface CheckpointMeta<C = unknown, E = Record<string, unknown>> {
  readonly format: typeof CHECKPOINT_FORMAT;
  readonly version: number;
  readonly step: number;
  readonly epoch: number;
  readonly config: C;
  /** Base64 of the data augmentation generator's state. */
  readonly rngState: string;
  /** SHA-256 (hex) of each file. */
  readonly files: Record<string, string>;
  readonly extra?: E;
  /** SHA-256 (hex) of JSON.stringify of the keys above (version 2). */
  readonly checksum?: string;
}

export interface Checkpoint<C = unknown, E = Record<string, unknown>> {
  readonly dir: string;
  readonly meta: CheckpointMeta<C, E>;
  readonly model: Map<string, PthTensor>;
  /** The optimizer's framed state (NativeBackendOptimizer.loadStateBytes takes it). */
  readonly optimizer: Uint8Array;
  /** The EMA of the weights (a run with ema). */
  readonly ema?: Map<string, PthTensor>;
}

/** A checkpoint folder readLatestCheckpoint passed over, and why. */
export interface DamagedCheckpoint {
  readonly dir: string;
  readonly reason: string;
}

/** The warning to show for a damaged checkpoint passed over. */
export function damagedCheckpointWarning(damaged: DamagedCheckpoint): string {
  return `checkpoint ${damaged.dir} is damaged, so an older one is used: ${damaged.reason}`;
}

const sha256 = (bytes: Uint8Array | string) => createHash('sha256').update(bytes).digest('hex');
const SHA256_HEX = /^[0-9a-f]{64}$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

export function checkpointName(step: number): string {
  return `ckpt-${String(step).padStart(9, '0')}`;
}

export function saveCheckpoint<C, E>(
  root: string,
  content: {
    step: number;
    epoch: number;
    config: C;
    rngState: Uint8Array;
    model: ReadonlyMap<string, PthTensor>;
    /** The optimizer's framed state (stateBytes()). */
    optimizer: Uint8Array;
    /** The EMA of the weights, when the run keeps one. */
    ema?: ReadonlyMap<string, PthTensor>;
    extra?: E;
  },
): string {
  fs.mkdirSync(root, { recursive: true, mode: 0o700 });
  const name = checkpointName(content.step);
  const tmp = fs.mkdtempSync(path.join(root, `.${name}.tmp-`));
  const model = serializePth(content.model, 'model.pth');
  const files: Record<string, Uint8Array> = {
    'model.pth': model,
    'optimizer.bin': content.optimizer,
    ...(content.ema ? { 'ema.pth': serializePth(content.ema, 'ema.pth') } : {}),
  };
  for (const [file, bytes] of Object.entries(files)) writeFileAtomic(path.join(tmp, file), bytes);
  const meta: CheckpointMeta<C, E> = {
    format: CHECKPOINT_FORMAT,
    version: CHECKPOINT_VERSION,
    step: content.step,
    epoch: content.epoch,
    config: content.config,
    rngState: Buffer.from(content.rngState).toString('base64'),
    files: Object.fromEntries(Object.entries(files).map(([f, b]) => [f, sha256(b)])),
    ...(content.extra ? { extra: content.extra } : {}),
  };
  writeFileAtomic(path.join(tmp, 'meta.json'), new TextEncoder().encode(sealedJsonText(meta, META_INDENT)));
  const final = path.join(root, name);
  fs.rmSync(final, { recursive: true, force: true });
  fs.renameSync(tmp, final);
  fsyncDir(root);
  writeFileAtomic(path.join(root, 'latest'), new TextEncoder().encode(name + '\n'));
  pruneCheckpoints(root, KEEP_CHECKPOINTS);
  return final;
}

/** Complete checkpoints kept: the newest and one before it (a fallback should the newest be damaged). */
export const KEEP_CHECKPOINTS = 2;

function pruneCheckpoints(root: string, keep: number): void {
  const names = fs
    .readdirSync(root)
    .filter((f) => /^ckpt-\d{9}$/.test(f))
    .sort();
  for (const old of names.slice(0, Math.max(0, names.length - keep))) fs.rmSync(path.join(root, old), { recursive: true, force: true });
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** meta.json parsed, its checksum and text verified (version 2) and its shape checked; throws naming the file. */
function readMeta<C, E>(metaFile: string): CheckpointMeta<C, E> {
  const fail = (why: string): never => {
    throw new Error(`checkpoint ${metaFile}: ${why}`);
  };
  const bytes = readInputFile(metaFile, 'checkpoint meta.json', INPUT_LIMITS.small);
  let text = '';
  let parsed: unknown;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    parsed = JSON.parse(text);
  } catch (e) {
    fail(`unreadable (${(e as Error).message})`);
  }
  if (!isRecord(parsed)) return fail('not a JSON object');
  if (parsed.format !== CHECKPOINT_FORMAT || !READABLE_VERSIONS.includes(parsed.version as number))
    fail(
      `format ${JSON.stringify(parsed.format)} version ${JSON.stringify(parsed.version)} ` +
        `is not ${CHECKPOINT_FORMAT} ${READABLE_VERSIONS.join(' or ')}`,
    );
  const { checksum, ...unchecked } = parsed;
  const known = ['format', 'version', 'step', 'epoch', 'config', 'rngState', 'files', 'extra'];
  const unknown = Object.keys(unchecked).filter((k) => !known.includes(k));
  if (unknown.length) fail(`unknown keys ${unknown.map((k) => JSON.stringify(k)).join(', ')} (damaged)`);
  if (!isCount(unchecked.step)) fail(`'step' is ${JSON.stringify(unchecked.step)}, not a non-negative integer`);
  if (!isCount(unchecked.epoch)) fail(`'epoch' is ${JSON.stringify(unchecked.epoch)}, not a non-negative integer`);
  if (!isRecord(unchecked.config)) fail("'config' is not an object");
  if (typeof unchecked.rngState !== 'string' || !BASE64.test(unchecked.rngState)) fail("'rngState' is not a base64 string");
  if (unchecked.extra !== undefined && !isRecord(unchecked.extra)) fail("'extra' is not an object");
  const files = unchecked.files;
  if (!isRecord(files)) return fail(`'files' is missing or not an object (it lists ${FILES.join(' and ')} with their SHA-256)`);
  const names = Object.keys(files).sort();
  const required = names.filter((n) => !(OPTIONAL_FILES as readonly string[]).includes(n));
  if (required.join() !== [...FILES].sort().join())
    fail(`'files' lists ${names.length ? names.map((n) => JSON.stringify(n)).join(', ') : 'nothing'}, expected ${FILES.join(' and ')}`);
  for (const name of names)
    if (typeof files[name] !== 'string' || !SHA256_HEX.test(files[name])) fail(`'files' gives ${name} no SHA-256 of 64 hex digits`);
  // Integrity last: a file missing a key or holding a mistyped one is told which, not just "checksum mismatch".
  if (parsed.version === 1) {
    // Version 1 has no checksum: only its text can be checked.
    if (checksum !== undefined) fail('a version 1 file with a checksum (damaged)');
    if (text !== jsonText(parsed, META_INDENT)) fail('not byte for byte as written (edited or damaged)');
  } else {
    const problem = sealProblem(parsed, text, META_INDENT);
    if (problem) fail(problem);
  }
  return parsed as unknown as CheckpointMeta<C, E>;
}

/** Reads and verifies one checkpoint folder; throws naming the file on any mismatch. */
export function readCheckpoint<C, E = Record<string, unknown>>(dir: string): Checkpoint<C, E> {
  const meta = readMeta<C, E>(path.join(dir, 'meta.json'));
  const bytes: Record<string, Uint8Array> = {};
  for (const file of Object.keys(meta.files)) {
    const full = path.join(dir, file);
    bytes[file] = readInputFile(full, `checkpoint ${file}`);
    if (sha256(bytes[file]) !== meta.files[file]) throw new Error(`checkpoint ${full}: checksum mismatch (corrupt or truncated)`);
  }
  return {
    dir,
    meta,
    model: parsePth(bytes['model.pth'], path.join(dir, 'model.pth')),
    // Version 1 wrote libtorch's bytes unframed; their digest in meta.json vouches for them.
    optimizer: meta.version === 1 ? frameOptimizerState(bytes['optimizer.bin']) : bytes['optimizer.bin'],
    ...(bytes['ema.pth'] ? { ema: parsePth(bytes['ema.pth'], path.join(dir, 'ema.pth')) } : {}),
  };
}

/** The newest complete checkpoint under root: `latest` if it verifies, else the newest one that does.
 * Each damaged one passed over on the way goes to `onDamaged`; when none verifies, the error lists them. */
export function readLatestCheckpoint<C, E = Record<string, unknown>>(
  root: string,
  options: { onDamaged?: (damaged: DamagedCheckpoint) => void } = {},
): Checkpoint<C, E> | undefined {
  if (!fs.existsSync(root)) return undefined;
  const candidates = fs
    .readdirSync(root)
    .filter((f) => /^ckpt-\d{9}$/.test(f))
    .sort()
    .reverse();
  const latest = latestName(root);
  const order = latest && candidates.includes(latest) ? [latest, ...candidates.filter((c) => c !== latest)] : candidates;
  const damaged: DamagedCheckpoint[] = [];
  for (const name of order) {
    const dir = path.join(root, name);
    try {
      const checkpoint = readCheckpoint<C, E>(dir);
      for (const d of damaged) options.onDamaged?.(d);
      return checkpoint;
    } catch (e) {
      damaged.push({ dir, reason: (e as Error).message });
    }
  }
  if (damaged.length) throw new Error(`no complete checkpoint under ${root}:\n  ${damaged.map((d) => d.reason).join('\n  ')}`);
  return undefined;
}

/** The folder `latest` names; a missing or unreadable `latest` leaves the order to the names (newest first). */
function latestName(root: string): string | undefined {
  try {
    return readInputFile(path.join(root, 'latest'), 'checkpoint pointer', INPUT_LIMITS.small).toString('utf8').trim();
  } catch {
    return undefined;
  }
}
