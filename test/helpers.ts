import { setNumThreads } from '../lib/runtime';

/** Torch threads for native tests: explicit, and never more than this machine's 2 cores. */
export function useTestThreads(): void {
  setNumThreads(Number(process.env.REPOPT_TEST_THREADS ?? 2));
}

/** The error fn throws. Errors made by the addon belong to Node's realm, not jest's, so tests match
 * name and message rather than `instanceof`. */
export function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a throw, but the call returned');
}
