// The public training API: runs as EventEmitters with a result promise, checkpoint tools, quantize.
export { hyperSearch, train } from './train';
export type { HyperSearchOptions, RunOptions } from './train';
export { convert, evaluate, exportWeights, writeWeights } from './checkpoint';
export type { ConvertResult, EvaluateOptions, EvaluateResult } from './checkpoint';
export { quantize } from './quantize';
export type { QuantizeOptions, QuantizeOutcome, QuantizeRow } from './quantize';
