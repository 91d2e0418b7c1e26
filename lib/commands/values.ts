// Parsers of command-line option values (commander), shared by every command.
import { InvalidArgumentError } from 'commander';
import { threadCount } from '../runtime';

/** An integer >= min (and <= max when given). */
export function integer(min: number, max?: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || (max !== undefined && n > max)) {
      throw new InvalidArgumentError(max === undefined ? `expected an integer >= ${min}` : `expected an integer in [${min}, ${max}]`);
    }
    return n;
  };
}

/** A finite number >= min. */
export function real(min: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n) || n < min) throw new InvalidArgumentError(`expected a number >= ${min}`);
    return n;
  };
}

/** --threads: an integer >= 1, capped to the cores (with a warning: more threads than cores only wait on each other). */
export function threadsFlag(value: string): number {
  const { threads, warning } = threadCount(integer(1)(value), '--threads');
  if (warning) process.stderr.write(`repopt: warning: ${warning}\n`);
  return threads;
}
