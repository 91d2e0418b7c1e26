import * as os from 'os';
import { loadNative, type MemoryInfo, type NativeRuntimeInfo } from './native';

export type { MemoryInfo } from './native';

export interface RuntimeInfo extends NativeRuntimeInfo {
  /** Whether the loaded addon is a shipped prebuild or a local source build. */
  binary: 'prebuild' | 'source';
  binaryPath: string;
  /** The prebuild's variant ('libtorch1_13-cpu', 'libtorch2_6-cpu', 'libtorch2_6-cuda12_4'), null for a source build. */
  prebuild: string | null;
}

export function info(): RuntimeInfo {
  const { binding, kind, path, prebuild } = loadNative();
  return { ...binding.info(), binary: kind, binaryPath: path, prebuild };
}

/** The cores this process may run on (its CPU affinity). */
export function coreCount(): number {
  return os.availableParallelism();
}

/** A thread count to use, and why it is not the one asked for. */
export interface ThreadCount {
  readonly threads: number;
  readonly warning?: string;
}

/** The torch thread count for a request: at most the cores, since OpenMP threads beyond them wait on
 * each other at every op (a step can take 100 times longer). `option` names the request in the warning. */
export function threadCount(requested: number, option: string): ThreadCount {
  const cores = coreCount();
  // A non-number goes on to the native setter, whose error names it.
  if (!(requested > cores)) return { threads: requested };
  return { threads: cores, warning: `${option} ${requested} is more than the ${cores} cores of this machine: using ${cores} threads` };
}

/** Sets libtorch's intra-op threads to `threadCount(requested, option)`; a capped request goes to
 * `warn`. Returns the count set. */
export function useThreads(requested: number, option: string, warn: (message: string) => void): number {
  const { threads, warning } = threadCount(requested, option);
  if (warning) warn(warning);
  loadNative().binding.setNumThreads(threads);
  return threads;
}

/** Intra-op threads of libtorch. Set it explicitly: more OpenMP threads than free cores is very slow.
 * A count above the cores is capped to them, with a process warning. Returns the count set. */
export function setNumThreads(threads: number): number {
  return useThreads(threads, 'threads', (message) => process.emitWarning(message));
}

/** Seeds libtorch's CPU generator and every CUDA device's. */
export function manualSeed(seed: number | bigint): void {
  loadNative().binding.manualSeed(seed);
}

/** Tensor memory owned by JS, as this environment reported it to V8. */
export function memory(): MemoryInfo {
  return loadNative().binding.memory();
}
