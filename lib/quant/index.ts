// INT8 quantization: post-training (calibrated observers), simulated and real int8 evaluation, the
// weight-spread diagnostics and the int8 deployment export.
export { calibrate, checkCalibrationBatches, deployNetwork, quantizeDeploy, rangesOf } from './ptq';
export type { CalibrationNames, CalibrationOptions, PtqResult } from './ptq';
export { spreadTable, weightSpread } from './spread';
export type { LayerSpread } from './spread';
export { INT8_BIN, INT8_JSON, readInt8Model, writeInt8Model } from './int8-format';
export type { Int8LayerMeta, Int8Model, Int8ModelMeta } from './int8-format';
