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

/** Intra-op threads of libtorch. Set it explicitly: more OpenMP threads than free cores is very slow. */
export function setNumThreads(threads: number): void {
  loadNative().binding.setNumThreads(threads);
}

/** Seeds libtorch's CPU generator and every CUDA device's. */
export function manualSeed(seed: number | bigint): void {
  loadNative().binding.manualSeed(seed);
}

/** Tensor memory owned by JS, as this environment reported it to V8. */
export function memory(): MemoryInfo {
  return loadNative().binding.memory();
}
