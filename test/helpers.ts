import { spawnSync } from 'node:child_process';
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

// Debian's python3-torch lives with the system interpreter only; the python3 on PATH has no torch.
const TORCH_PYTHON = '/usr/bin/python3';
let torchChecked = false;

/** Runs a Python script under real PyTorch and returns its stdout. Fails (never skips) without torch. */
export function runTorch(script: string, args: string[]): string {
  const run = (code: string, argv: string[]) =>
    spawnSync(TORCH_PYTHON, ['-c', code, ...argv], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, OMP_NUM_THREADS: '1' } });
  if (!torchChecked) {
    const probe = run('import torch', []);
    if (probe.status !== 0)
      throw new Error(
        `${TORCH_PYTHON} cannot import torch (${probe.error?.message ?? probe.stderr.trim().split('\n').pop()}); install it: apt-get install python3-torch`,
      );
    torchChecked = true;
  }
  const result = run(script, args);
  if (result.status !== 0) throw new Error(`python failed (${result.status}): ${result.stderr}`);
  return result.stdout;
}
