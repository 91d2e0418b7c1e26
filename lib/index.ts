// Training: runs are EventEmitters ('start', 'step', 'epoch', 'checkpoint', 'finished') with `result`.
export {
  channelStats,
  convert,
  createProcessGroup,
  evaluate,
  exportOnnx,
  exportWeights,
  hyperSearch,
  loadData,
  loadSplit,
  plotScales,
  quantize,
  rendezvousFromEnv,
  scaleStatistics,
  scaleTable,
  scaleWarnings,
  train,
  uploadDataset,
} from './api';
export type { ImageDataset } from './data';
// Image folders larger than memory: batches decoded on the addon's loader threads.
export { ImageFolderStream, IMAGE_STREAM_DEFAULTS } from './data/image-stream';
export type { BatchesOptions, ImageStreamOptions, SkippedImage, StreamAugment, StreamBatch } from './data/image-stream';
export { IMAGENET_NORMALIZATION } from './train/stream-data';
export { parseRandAugment } from './data/randaugment';
export type { RandAugmentSpec } from './data/randaugment';
export type { NativeDataset, NativeProcessGroup, EpochMetrics } from './native';
export type {
  ConvertResult,
  EvaluateOptions,
  EvaluateResult,
  ExportOnnxOptions,
  ExportOnnxResult,
  HyperSearchOptions,
  QuantizeOptions,
  QuantizeOutcome,
  QuantizeRow,
  RunOptions,
} from './api';
export {
  EVALUATE_DEFAULTS,
  EXPORT_ONNX_DEFAULTS,
  HYPER_SEARCH_DEFAULTS,
  MIXUP_DEFAULTS,
  QUANTIZE_DEFAULTS,
  RECIPES,
  TRAIN_DEFAULTS,
} from './defaults';
export type { Augment, TrainConfig, TrainMode, TrainOptions } from './train/config';
export type { MixupConfig } from './train/mixup';
export type { DataSpec, FolderSpec, Normalization, TrainTestData } from './train/data';
export { TrainingRun } from './train/run';
export type { CheckpointEvent, EpochEvent, StartEvent, StepEvent, TrainEvents, WarningEvent } from './train/run';
export type { TrainResult } from './train/trainer';
export type { BranchStats, HyperSearchResult } from './hypersearch';
export { NativeBackendNetwork, NativeBackendOptimizer } from './native-backend';
export { Tensor, isTensor } from './tensor';
export type { DType, TensorData, ArrayOf, DTypeOf } from './tensor';
export { info, memory, setNumThreads, manualSeed } from './runtime';
export type { RuntimeInfo, MemoryInfo } from './runtime';
export type {
  Backend,
  BackendName,
  GradMult,
  HostTensor,
  Network,
  Optimizer,
  OptimizerSpec,
  ParamGroupSpec,
  TrainStepOptions,
} from './backend';
export { nativeBackend } from './native-backend';
export { referenceBackend } from './reference';
export * from './spec';
export { ARCHS, archConfig, networkSpec } from './configs';
export type { ArchConfig, ArchName, SpecOptions } from './configs';
export { applyInitRule, freshKernel1x1, fullGradMult, gradMultOf, mergedKernel, repConvsOf } from './repopt';
export type { BranchScales, InitRuleOptions, RepConv } from './repopt';
export {
  ScaleSet,
  checkScaleValues,
  loadScales,
  MAX_SCALE_MAGNITUDE,
  saveScales,
  scaleValueWarnings,
  validateScales,
  scalesFromNetworkState,
} from './scales';
export { OptionError } from './option-error';
export {
  readPth,
  writePth,
  parsePth,
  serializePth,
  readPthTree,
  parsePthTree,
  isPthTensor,
  PthUnreadable,
  type PthValue,
  type PthDict,
  type PthKey,
} from './pth';
export { officialStateDict, readOfficialStateDict } from './official';
export type { PthTensor, PthDtype } from './pth';
export { deploySpec, foldRepVGG, foldTarget, foldToDeploy } from './fold';
export { deployNetwork, quantizeDeploy, readInt8Model, spreadTable, weightSpread, writeInt8Model } from './quant';
export type { CalibrationOptions, Int8Model, Int8ModelMeta, LayerSpread, PtqResult } from './quant';
export type { QuantOptions, QuantParams, QuantPointParams, QuantizedLayer } from './native';

import { nativeBackend } from './native-backend';
import { referenceBackend } from './reference';
import type { Backend, BackendName } from './backend';

/** A backend by name: 'native' (libtorch) or 'reference' (pure TypeScript, slow, no addon needed). */
export function backend(name: BackendName): Backend {
  return name === 'native' ? nativeBackend : referenceBackend;
}
