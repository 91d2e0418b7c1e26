import * as fs from 'node:fs';
import * as path from 'node:path';

export interface JsonlWriter<T extends object = Record<string, unknown>> {
  /** The file being written. */
  readonly file: string;
  /** Writes one record as one line; it reaches the OS before this returns. */
  append(record: T): void;
  close(): void;
}

/**
 * Opens `file` for appending JSON lines (creating it and its folder if needed). Each append is a
 * synchronous write, not a buffered stream, so a crash or a kill loses nothing already appended.
 * Non-finite numbers become null, as JSON.stringify writes them.
 */
export function writeJsonl<T extends object = Record<string, unknown>>(file: string): JsonlWriter<T> {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  let fd: number | null = fs.openSync(file, 'a');
  return {
    file,
    append(record: T): void {
      if (fd === null) throw new Error(`writeJsonl: ${file} is closed`);
      fs.writeSync(fd, JSON.stringify(record) + '\n');
    },
    close(): void {
      if (fd === null) return;
      fs.closeSync(fd);
      fd = null;
    },
  };
}
