export { Tensor, isTensor } from './tensor';
export type { DType, TensorData, ArrayOf, DTypeOf } from './tensor';
export { info, memory, setNumThreads, manualSeed } from './runtime';
export type { RuntimeInfo, MemoryInfo } from './runtime';
