// Reading data set files whole, and the one error every malformed or missing data file raises.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { readInputFile } from '../input-file';

/** A data set file that is missing, unreadable or malformed. `file` is the full path; `offset`, where known,
 * is the byte at which the problem was found, counted in the decompressed contents for gzipped files. */
export class DataFormatError extends Error {
  override readonly name = 'DataFormatError';

  constructor(
    readonly file: string,
    readonly offset: number | undefined,
    message: string,
  ) {
    super(message);
  }
}

/** A file's contents as the parsers see them: decompressed if it was gzipped. */
export interface DataFile {
  readonly path: string;
  /** How messages name the file: its base name, marked when offsets count decompressed bytes. */
  readonly label: string;
  readonly bytes: Uint8Array;
}

/** A DataFormatError about `file`; `problem` says where, as "at byte N", when there is a where. */
export function formatError(file: DataFile, offset: number | undefined, problem: string): DataFormatError {
  return new DataFormatError(file.path, offset, `${file.label}: ${problem}`);
}

/** The error for a data file that is not there, naming what was looked for. */
function missingFile(file: string, hint = ''): DataFormatError {
  return new DataFormatError(file, undefined, `${path.basename(file)}: not found in ${path.dirname(file)}${hint}`);
}

/** Reads a whole file, gunzipping it when it starts with the gzip magic (whatever its name says). */
export function readDataFile(file: string): DataFile {
  if (!fs.existsSync(file)) throw missingFile(file);
  let raw: Buffer;
  try {
    raw = readInputFile(file, path.basename(file));
  } catch (e) {
    throw new DataFormatError(file, undefined, (e as Error).message);
  }
  const name = path.basename(file);
  if (raw.length < 2 || raw[0] !== 0x1f || raw[1] !== 0x8b) return { path: file, label: name, bytes: raw };
  try {
    return { path: file, label: `${name} (decompressed)`, bytes: gunzipSync(raw) };
  } catch (e) {
    throw new DataFormatError(file, undefined, `${name}: corrupt gzip data: ${(e as Error).message}`);
  }
}

/** The first of `candidates` that exists, else a missing-file error naming them all. */
export function firstExisting(candidates: readonly string[]): string {
  const found = candidates.find((file) => fs.existsSync(file));
  if (found !== undefined) return found;
  const others = candidates.slice(1).map((file) => path.relative(path.dirname(candidates[0]), file));
  throw missingFile(candidates[0], others.length > 0 ? ` (nor ${others.join(', ')})` : '');
}

/** `count` labels, one byte each, `stride` bytes apart from byte `start`, each checked to lie in [0, numClasses). */
export function readLabels(file: DataFile, start: number, stride: number, count: number, numClasses: number): Int32Array {
  const labels = new Int32Array(count);
  const bytes = file.bytes;
  for (let i = 0, at = start; i < count; i++, at += stride) {
    const label = bytes[at];
    if (label >= numClasses) {
      throw formatError(file, at, `label ${label} at byte ${at} is out of range [0, ${numClasses})`);
    }
    labels[i] = label;
  }
  return labels;
}
