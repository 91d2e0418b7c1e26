// A run folder belongs to one run at a time: a lock file names the process that owns it, a folder that
// holds another run is only continued (resume) or moved aside whole (overwrite), a resumed run must
// match its checkpoint's settings, and what an interrupted run left half-written is cleared away.
import { randomBytes } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { OptionError } from '../option-error';
import type { TrainConfig } from './config';
import type { Emit } from './run';

export const LOCK_FILE = 'run.lock';

/** What the lock file says about the run that owns the folder. */
export interface LockHolder {
  readonly pid: number;
  readonly host: string;
  /** ISO time the run took the folder. */
  readonly startedAt: string;
  /** The process's start time in clock ticks since boot (/proc/PID/stat), which tells a reused pid
   * from the process that wrote the lock. */
  readonly processStart?: string;
  readonly command: string;
  /** Tells this lock from a later one at the same path. */
  readonly token: string;
}

/** The folder taken by a run; release() gives it up (only the lock this run wrote is removed). */
export interface RunFolder {
  release(): void;
}

// Kernel file systems: nothing a run writes belongs there, and Node's recursive mkdir never returns
// under /proc. /dev/shm is ordinary memory-backed storage.
const KERNEL_ROOTS = ['/proc', '/sys', '/dev'];
const SHARED_MEMORY = '/dev/shm';

const isUnder = (p: string, root: string) => p === root || p.startsWith(root + '/');

/** The path with its longest existing prefix resolved through symbolic links. */
function realPathOf(p: string): string {
  let existing = path.resolve(p);
  const rest: string[] = [];
  while (!fs.existsSync(existing) && path.dirname(existing) !== existing) {
    rest.unshift(path.basename(existing));
    existing = path.dirname(existing);
  }
  try {
    return path.join(fs.realpathSync(existing), ...rest);
  } catch {
    return path.resolve(p);
  }
}

/** Refuses an output folder path that cannot hold a run: empty, or on a kernel file system. `option`
 * names the parameter (outDir, out) in messages. */
export function checkOutDirPath(dir: string, option: string): void {
  if (typeof dir !== 'string' || dir === '')
    throw new OptionError(option, `${option} must name the run folder, got ${dir === '' ? 'an empty path' : String(dir)}`);
  for (const where of [path.resolve(dir), realPathOf(dir)]) {
    const root = KERNEL_ROOTS.find((r) => isUnder(where, r));
    if (root && !isUnder(where, SHARED_MEMORY))
      throw new OptionError(option, `${option} ${dir} is under ${root}, a kernel file system: choose a folder on a disk`);
  }
}

/** Creates the output folder (checked first with checkOutDirPath) and makes sure files can be written
 * in it, so that a bad path fails before any work. */
export function makeOutDir(dir: string, option: string): void {
  checkOutDirPath(dir, option);
  if (fs.existsSync(dir) && !fs.statSync(dir).isDirectory()) throw new OptionError(option, `${option} ${dir} is a file, not a folder`);
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw new OptionError(option, `${option} ${dir}: cannot create the folder (${(e as Error).message})`);
  }
  const probe = path.join(dir, `.write-test-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    fs.writeFileSync(probe, '');
    fs.rmSync(probe);
  } catch (e) {
    throw new OptionError(option, `${option} ${dir}: cannot write files there (${(e as Error).message})`);
  }
}

/** Field 22 of /proc/PID/stat (after the command name, which may hold spaces and parentheses). */
function processStartOf(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** The lock's holder, undefined if the file is gone; throws if it cannot be read as a lock. */
function readLock(file: string): LockHolder | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  let holder: Partial<LockHolder> | undefined;
  try {
    holder = JSON.parse(text) as Partial<LockHolder>;
  } catch {
    holder = undefined;
  }
  if (!holder || !Number.isInteger(holder.pid) || holder.pid! <= 0 || typeof holder.host !== 'string')
    throw new OptionError(
      'outDir',
      `outDir is locked by a lock file that cannot be read (${JSON.stringify(text.slice(0, 80))}); ` +
        `if no run uses the folder, delete ${file}`,
    );
  return holder as LockHolder;
}

function isRunning(holder: LockHolder): boolean {
  try {
    process.kill(holder.pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return false;
  }
  const start = processStartOf(holder.pid);
  return holder.processStart === undefined || start === undefined || start === holder.processStart;
}

const describeHolder = (h: LockHolder) => `pid ${h.pid} on host ${h.host}, started ${h.startedAt} (${h.command})`;

/** Creates the lock exclusively, or says why not: held by a live run, or stale (then taken over). */
function lockFolder(dir: string, emit: Emit): RunFolder {
  const file = path.join(dir, LOCK_FILE);
  const processStart = processStartOf(process.pid);
  const mine: LockHolder = {
    pid: process.pid,
    host: os.hostname(),
    startedAt: new Date().toISOString(),
    ...(processStart !== undefined ? { processStart } : {}),
    command: process.argv.slice(1).join(' '),
    token: randomBytes(8).toString('hex'),
  };
  // A few rounds: a lock can vanish or turn stale between our attempts.
  for (let round = 0; round < 3; round++) {
    try {
      fs.writeFileSync(file, JSON.stringify(mine) + '\n', { flag: 'wx' });
      return {
        release() {
          // Only our own lock: after an overwrite or a takeover the file may be another run's.
          try {
            if (readLock(file)?.token === mine.token) fs.rmSync(file);
          } catch {
            // an unreadable lock is not ours
          }
        },
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST')
        throw new OptionError('outDir', `outDir ${dir}: cannot create ${LOCK_FILE} (${(e as Error).message})`);
    }
    const holder = readLock(file);
    if (!holder) continue;
    if (holder.host !== mine.host)
      throw new OptionError(
        'outDir',
        `outDir is in use by ${describeHolder(holder)}, which this host cannot check; if that run has ended, delete ${file}`,
      );
    if (isRunning(holder))
      throw new OptionError(
        'outDir',
        `outDir is in use by another run: ${describeHolder(holder)}; wait for it to end or choose another folder (${dir})`,
      );
    if (takeOverStale(file, holder))
      emit('warning', { message: `${dir}: took over the lock of a run that is no longer running (${describeHolder(holder)})` });
  }
  throw new OptionError('outDir', `outDir ${dir}: could not take ${LOCK_FILE}; other runs keep taking it`);
}

/** Removes a stale lock, unless another run replaced it since it was read (that one is put back);
 * says whether it was removed. */
function takeOverStale(file: string, stale: LockHolder): boolean {
  const aside = `${file}.stale-${randomBytes(6).toString('hex')}`;
  try {
    fs.renameSync(file, aside);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
  let same = false;
  try {
    same = readLock(aside)?.token === stale.token;
  } catch {
    // unreadable: not the lock we judged stale
  }
  if (same) fs.rmSync(aside);
  else fs.renameSync(aside, file);
  return same;
}

/** What in a folder shows that a run used it: checkpoints, metrics. */
function runFilesIn(dir: string): string[] {
  const checkpoints = path.join(dir, 'checkpoints');
  const ckpts = fs.existsSync(checkpoints) ? fs.readdirSync(checkpoints).filter((f) => /^ckpt-\d{9}$/.test(f)) : [];
  return [
    ...(ckpts.length ? [`checkpoints/${ckpts.sort().join(', ')}`] : []),
    ...(fs.existsSync(path.join(dir, 'metrics.jsonl')) ? ['metrics.jsonl'] : []),
  ];
}

/** A sibling name for a replaced run: R.replaced-20250102T030405Z (-2, -3 should it be taken). */
function asideName(dir: string): string {
  const stamp = new Date()
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
  const base = `${path.resolve(dir)}.replaced-${stamp}`;
  let name = base;
  for (let n = 2; fs.existsSync(name); n++) name = `${base}-${n}`;
  return name;
}

/** Deletes what interrupted checkpoint writes left in checkpoints/ (temporary folders and files that
 * were never renamed into place); the caller owns the folder. */
function removeUnfinishedWrites(dir: string, emit: Emit): void {
  const checkpoints = path.join(dir, 'checkpoints');
  if (!fs.existsSync(checkpoints)) return;
  const leftovers = fs
    .readdirSync(checkpoints)
    .sort()
    .filter((f) => /^\.ckpt-\d{9}\.tmp-/.test(f) || /^\.latest\.\d+\.[0-9a-f]+\.tmp$/.test(f));
  if (!leftovers.length) return;
  for (const f of leftovers) fs.rmSync(path.join(checkpoints, f), { recursive: true, force: true });
  emit('warning', { message: `removed what interrupted checkpoint writes left in ${checkpoints}: ${leftovers.join(', ')}` });
}

/** Takes a run's output folder before anything is written there: creates and checks it, locks it,
 * refuses one holding another run unless resuming or overwriting (which moves the old run aside), and
 * clears unfinished checkpoint writes. Release the result when the run ends, however it ends. */
export function takeRunFolder(config: TrainConfig, emit: Emit): RunFolder {
  const dir = config.outDir;
  makeOutDir(dir, 'outDir');
  let folder = lockFolder(dir, emit);
  try {
    const found = runFilesIn(dir);
    if (found.length && !config.resume) {
      if (!config.overwrite)
        throw new OptionError(
          'outDir',
          `outDir already holds a run (${found.join('; ')}): continue it with resume, or start a new run there with overwrite ` +
            `(the old run is moved aside whole, to a sibling folder named <folder>.replaced-<UTC time>). Folder: ${dir}`,
          ['resume', 'overwrite'],
        );
      if (config.finetune && isUnder(path.resolve(config.finetune), path.resolve(dir)))
        throw new OptionError(
          'finetune',
          `finetune ${config.finetune} lies in the run that overwrite would move aside; choose another outDir`,
        );
      const aside = asideName(dir);
      // Moved with our lock inside, so no other run can take the old folder meanwhile.
      try {
        fs.renameSync(path.resolve(dir), aside);
      } catch (e) {
        throw new OptionError(
          'overwrite',
          `overwrite: cannot move the old run in ${dir} to ${aside} (${(e as Error).message}); move it yourself`,
        );
      }
      try {
        fs.mkdirSync(dir, { recursive: true });
        folder = lockFolder(dir, emit);
      } finally {
        fs.rmSync(path.join(aside, LOCK_FILE), { force: true });
      }
      emit('warning', { message: `${dir} held a run (${found.join('; ')}): moved it to ${aside}` });
    }
    removeUnfinishedWrites(dir, emit);
    return folder;
  } catch (e) {
    folder.release();
    throw e;
  }
}

/** One setting a resumed run gives differently from its checkpoint. */
export interface ConfigChange {
  readonly option: string;
  readonly checkpoint: unknown;
  readonly given: unknown;
}

/** Settings a resumed run compares with its checkpoint's. */
const RESUME_COMPARED = [
  'arch',
  'mode',
  'data.kind',
  'data.dir',
  'data.trainSubset',
  'data.testSubset',
  'data.size',
  'data.loader',
  'data.cropFraction',
  'augment.randAugment',
  'batchSize',
  'lr',
  'epochs',
  'warmupEpochs',
  'momentum',
  'nesterov',
  'weightDecay',
  'seed',
  'scales',
  'strides',
  'quant',
] as const;
/** What the checkpoint's network and optimizer were built from: never changed on resume. */
const RESUME_FIXED: readonly string[] = ['arch', 'mode', 'data.kind'];
const PATHS: readonly string[] = ['data.dir', 'scales'];

function valueAt(config: unknown, option: string): unknown {
  return option
    .split('.')
    .reduce<unknown>((v, key) => (v && typeof v === 'object' ? (v as Record<string, unknown>)[key] : undefined), config);
}

/** Comparable text of a setting: keys sorted, paths resolved. */
function canonical(option: string, v: unknown): string {
  if (v === undefined || v === null) return 'none';
  if (PATHS.includes(option) && typeof v === 'string') return path.resolve(v);
  if (Array.isArray(v)) return v.join(',');
  if (typeof v === 'object')
    return JSON.stringify(
      Object.fromEntries(
        Object.entries(v as object)
          .filter(([, x]) => x !== undefined)
          .sort(([a], [b]) => a.localeCompare(b)),
      ),
    );
  return String(v);
}

/** The settings in which `given` differs from the checkpoint's config. */
export function configChanges(checkpointConfig: TrainConfig, given: TrainConfig): ConfigChange[] {
  return RESUME_COMPARED.filter((o) => canonical(o, valueAt(checkpointConfig, o)) !== canonical(o, valueAt(given, o))).map((option) => ({
    option,
    checkpoint: valueAt(checkpointConfig, option),
    given: valueAt(given, option),
  }));
}

export function describeChanges(changes: readonly ConfigChange[]): string {
  return changes.map((c) => `${c.option}: checkpoint ${canonical('', c.checkpoint)}, given ${canonical('', c.given)}`).join('; ');
}

/** Checks a resumed run's config against its checkpoint's before any weights load: returns the
 * differences when allowConfigChange permits them, throws naming each otherwise. */
export function checkResumedConfig(
  given: TrainConfig,
  ckpt: { readonly dir: string; readonly meta: { readonly config: TrainConfig } },
): ConfigChange[] {
  const changes = configChanges(ckpt.meta.config, given);
  if (!changes.length) return [];
  const options = changes.map((c) => c.option);
  if (options.some((o) => RESUME_FIXED.includes(o)))
    throw new OptionError(
      'resume',
      `resume: the settings differ from the checkpoint's: ${describeChanges(changes)}. The network (architecture, block ` +
        `type, data set) cannot change when resuming: give the checkpoint's, or start a new run in another folder. Checkpoint: ${ckpt.dir}`,
      options,
    );
  if (!given.allowConfigChange)
    throw new OptionError(
      'resume',
      `resume: the settings differ from the checkpoint's: ${describeChanges(changes)}. Give the checkpoint's values, or add ` +
        `allowConfigChange to continue with the given ones (the changes are recorded in metrics.jsonl). Checkpoint: ${ckpt.dir}`,
      [...options, 'allowConfigChange'],
    );
  return changes;
}
