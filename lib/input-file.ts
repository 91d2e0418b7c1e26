// Every input file is read through here: a regular file (not a folder, device or FIFO: /dev/zero would
// grow memory without bound) under a size cap, with errors that name the file and what it was for.
import * as fs from 'fs';

/** Caps by kind of file: generous for real inputs, small enough that a wrong path fails at once. */
export const INPUT_LIMITS = {
  /** Scale files, meta.json, JSON configs. */
  small: 256 * 1024 * 1024,
  /** Weights, checkpoints, data sets. */
  large: 64 * 1024 * 1024 * 1024,
} as const;

/** Why a file cannot be used as input: its path and what it was meant to be. */
export class InputFileError extends Error {
  constructor(
    readonly file: string,
    message: string,
  ) {
    super(message);
    this.name = 'InputFileError';
  }
}

/** Checks that `file` is a regular file of at most `maxBytes`; returns its size. `what` names the
 * input in messages (e.g. "--scales", "scale file"). */
export function checkInputFile(file: string, what: string, maxBytes: number = INPUT_LIMITS.large): number {
  if (typeof file !== 'string' || file === '')
    throw new InputFileError(String(file), `${what}: expected a file path, got ${JSON.stringify(file)}`);
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new InputFileError(file, `${what} ${file}: ${code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  if (stat.isDirectory()) throw new InputFileError(file, `${what} ${file}: is a folder, not a file`);
  if (!stat.isFile()) throw new InputFileError(file, `${what} ${file}: not a regular file (a device, FIFO or socket)`);
  if (stat.size > maxBytes)
    throw new InputFileError(file, `${what} ${file}: ${stat.size} bytes, over the ${maxBytes}-byte limit for this kind of file`);
  return stat.size;
}

/** Reads a checked input file whole. */
export function readInputFile(file: string, what: string, maxBytes: number = INPUT_LIMITS.large): Buffer {
  checkInputFile(file, what, maxBytes);
  try {
    return fs.readFileSync(file);
  } catch (e) {
    throw new InputFileError(file, `${what} ${file}: cannot read: ${(e as Error).message}`);
  }
}
