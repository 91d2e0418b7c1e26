// The public training API: runs as EventEmitters with a result promise, checkpoint tools, quantize.
export { hyperSearch, train } from './train';
export type { HyperSearchOptions, RunOptions } from './train';
export { convert, evaluate, exportWeights, writeWeights } from './checkpoint';
export type { ConvertResult, EvaluateOptions, EvaluateResult } from './checkpoint';
export { quantize } from './quantize';
export { exportOnnx } from './onnx';
export type { ExportOnnxOptions, ExportOnnxResult } from './onnx';
export type { QuantizeOptions, QuantizeOutcome, QuantizeRow } from './quantize';
// What scripts need around a run: data (loaded, normalised, uploaded to a device), scale statistics.
export { channelStats, loadData, loadSplit, uploadDataset } from '../train/data';
export { plotScales, scaleStatistics, scaleTable, scaleWarnings } from '../hypersearch';
export { createProcessGroup, rendezvousFromEnv } from '../distributed/worker';
