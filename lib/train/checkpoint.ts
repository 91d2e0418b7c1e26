// Checkpoints: a folder per save (model.pth, optimizer.bin, meta.json with SHA-256 of both files),
// written under a temporary name and renamed, then `latest` pointed at it (also by rename). A crash at
// any moment leaves the previous complete checkpoint reachable; loading verifies the checksums.
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { type PthTensor, readPth, serializePth, writeFileAtomic } from '../pth';

export const CHECKPOINT_FORMAT = 'repopt-checkpoint';
export const CHECKPOINT_VERSION = 1;

export interface CheckpointMeta<C = unknown, E = Record<string, unknown>> {
  readonly format: typeof CHECKPOINT_FORMAT;
  readonly version: number;
  readonly step: number;
  readonly epoch: number;
  readonly config: C;
  /** Base64 of the data augmentation generator's state. */
  readonly rngState: string;
  readonly files: Record<string, string>;
  readonly extra?: E;
}

export interface Checkpoint<C = unknown, E = Record<string, unknown>> {
  readonly dir: string;
  readonly meta: CheckpointMeta<C, E>;
  readonly model: Map<string, PthTensor>;
  readonly optimizer: Uint8Array;
}

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

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
    optimizer: Uint8Array;
    extra?: E;
  },
): string {
  fs.mkdirSync(root, { recursive: true, mode: 0o700 });
  const name = checkpointName(content.step);
  const tmp = fs.mkdtempSync(path.join(root, `.${name}.tmp-`));
  const model = serializePth(content.model, 'model.pth');
  const files: Record<string, Uint8Array> = { 'model.pth': model, 'optimizer.bin': content.optimizer };
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
  writeFileAtomic(path.join(tmp, 'meta.json'), new TextEncoder().encode(JSON.stringify(meta, null, 2) + '\n'));
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

/** Reads and verifies one checkpoint folder; throws naming the file on any mismatch. */
export function readCheckpoint<C, E = Record<string, unknown>>(dir: string): Checkpoint<C, E> {
  const metaFile = path.join(dir, 'meta.json');
  let meta: CheckpointMeta<C, E>;
  try {
    meta = JSON.parse(fs.readFileSync(metaFile, 'utf8')) as CheckpointMeta<C, E>;
  } catch (e) {
    throw new Error(`checkpoint ${metaFile}: unreadable (${(e as Error).message})`);
  }
  if (meta.format !== CHECKPOINT_FORMAT || meta.version !== CHECKPOINT_VERSION)
    throw new Error(`checkpoint ${metaFile}: not a ${CHECKPOINT_FORMAT} v${CHECKPOINT_VERSION} file`);
  const bytes: Record<string, Uint8Array> = {};
  for (const [file, digest] of Object.entries(meta.files)) {
    const full = path.join(dir, file);
    bytes[file] = fs.readFileSync(full);
    if (sha256(bytes[file]) !== digest) throw new Error(`checkpoint ${full}: checksum mismatch (corrupt or truncated)`);
  }
  return { dir, meta, model: readPth(path.join(dir, 'model.pth')), optimizer: bytes['optimizer.bin'] };
}

/** The newest complete checkpoint under root: `latest` if it verifies, else the newest one that does. */
export function readLatestCheckpoint<C, E = Record<string, unknown>>(root: string): Checkpoint<C, E> | undefined {
  if (!fs.existsSync(root)) return undefined;
  const candidates = fs
    .readdirSync(root)
    .filter((f) => /^ckpt-\d{9}$/.test(f))
    .sort()
    .reverse();
  const latestFile = path.join(root, 'latest');
  const latest = fs.existsSync(latestFile) ? fs.readFileSync(latestFile, 'utf8').trim() : undefined;
  const order = latest && candidates.includes(latest) ? [latest, ...candidates.filter((c) => c !== latest)] : candidates;
  const errors: string[] = [];
  for (const name of order) {
    try {
      return readCheckpoint<C, E>(path.join(root, name));
    } catch (e) {
      errors.push((e as Error).message);
    }
  }
  if (errors.length) throw new Error(`no complete checkpoint under ${root}:\n  ${errors.join('\n  ')}`);
  return undefined;
}
