// exportOnnx(): a run's deploy network as an ONNX model, float (from a checkpoint) or INT8 QDQ (from
// the int8 export that `quantize` writes: its calibrated ranges, int8 weights and int32 biases).
import * as fs from 'fs';
import * as path from 'path';
import { EXPORT_ONNX_DEFAULTS, withDefaults } from '../defaults';
import { foldToDeploy } from '../fold';
import { deployOnnxModel, type OnnxLayer, type OnnxNormalization } from '../onnx/model';
import { OptionError } from '../option-error';
import { writeFileAtomic } from '../pth';
import { INT8_JSON, readInt8Model } from '../quant';
import { checkpointAt, runDirOf, specOfCheckpoint } from '../train/load';
import { normalizationOf } from './checkpoint';

export interface ExportOnnxOptions {
  /** Float: a checkpoint folder, a checkpoints/ folder or a run folder (its newest checkpoint) of a
   * target, vgg or repvgg run. int8: the folder of `quantize`'s int8 export (model.int8.json), or a run
   * (or one of its checkpoints) whose `<run>/int8` holds one. */
  readonly checkpoint: string;
  /** The model file, *.onnx. */
  readonly out: string;
  /** The INT8 QDQ model (QuantizeLinear/DequantizeLinear pairs) instead of the float one. */
  readonly int8?: boolean;
  /** 'graph' (default): the model takes pixels in [0, 1] and normalises them; 'none': the caller
   * normalises ((pixel - mean) / std, both in the model's metadata 'repopt.normalization'). */
  readonly normalization?: OnnxNormalization;
}

export interface ExportOnnxResult {
  readonly out: string;
  /** The checkpoint folder, or the int8 export's model.int8.json, the model was made from. */
  readonly source: string;
  readonly int8: boolean;
  readonly bytes: number;
}

type ResolvedOptions = ExportOnnxOptions & Required<Pick<ExportOnnxOptions, 'int8' | 'normalization'>>;

function checkOnnxOptions(o: ResolvedOptions): void {
  if (typeof o.out !== 'string' || !o.out.endsWith('.onnx'))
    throw new OptionError('out', `out must be a file named *.onnx, got '${String(o.out)}'`);
  const dir = path.dirname(o.out);
  if (!fs.existsSync(dir)) throw new OptionError('out', `out ${o.out}: the folder ${dir} does not exist`);
  if (!fs.statSync(dir).isDirectory()) throw new OptionError('out', `out ${o.out}: ${dir} is not a folder`);
  if (fs.existsSync(o.out) && fs.statSync(o.out).isDirectory()) throw new OptionError('out', `out ${o.out} is a folder; name a file in it`);
  if (o.normalization !== 'graph' && o.normalization !== 'none')
    throw new OptionError('normalization', `normalization must be graph or none, got ${String(o.normalization)}`);
  if (typeof o.int8 !== 'boolean') throw new OptionError('int8', `int8 must be true or false, got ${String(o.int8)}`);
}

/** The folder holding the int8 export for `where`: itself, or the int8/ folder of its run. */
function int8Dir(where: string): string {
  if (fs.existsSync(path.join(where, INT8_JSON))) return where;
  let runDir: string;
  try {
    runDir = runDirOf(checkpointAt(where));
  } catch (e) {
    throw new OptionError('checkpoint', `checkpoint ${where}: no ${INT8_JSON} there, and not a run (${(e as Error).message})`);
  }
  const dir = path.join(runDir, 'int8');
  if (!fs.existsSync(path.join(dir, INT8_JSON)))
    throw new OptionError(
      'checkpoint',
      `checkpoint ${where}: the int8 model comes from quantize's export, and neither ${where} nor ${dir} holds a ${INT8_JSON}; ` +
        'run quantize on this run first (or name the folder it wrote)',
    );
  return dir;
}

/** Float: the folded deploy network of a trained checkpoint. */
async function floatModel(checkpoint: string, normalization: OnnxNormalization): Promise<{ bytes: Uint8Array; source: string }> {
  const ckpt = checkpointAt(checkpoint);
  const c = ckpt.meta.config;
  if (c.mode === 'hs')
    throw new Error(
      `${ckpt.dir}: the ONNX export takes trained repvgg, target and vgg checkpoints; this one is a hyper-search (mode hs) model`,
    );
  const host = new Map(
    [...ckpt.model].map(([k, t]) => [k, { shape: t.shape, data: Float64Array.from(t.data as ArrayLike<number>, Number) }]),
  );
  const folded = foldToDeploy(specOfCheckpoint(ckpt), host);
  const layerOf = (key: string): OnnxLayer => {
    const weight = folded.state.get(`${key}.weight`)!;
    return {
      key: `${key}.weight`,
      shape: weight.shape,
      weight: Float32Array.from(weight.data),
      bias: Float32Array.from(folded.state.get(`${key}.bias`)!.data),
    };
  };
  const layers = [...folded.spec.blocks.map((b) => layerOf(`${b.name}.rbr_reparam`)), layerOf('linear')];
  const bytes = deployOnnxModel(
    { spec: folded.spec, layers, normalization: await normalizationOf(ckpt) },
    { normalization, metadata: { 'repopt.arch': c.arch, 'repopt.mode': c.mode, 'repopt.checkpoint': ckpt.dir } },
  );
  return { bytes, source: ckpt.dir };
}

/** INT8 QDQ: the int8 export's points, int8 weights and int32 biases (as the float32 values they stand for). */
function int8Model(where: string, normalization: OnnxNormalization): { bytes: Uint8Array; source: string } {
  const dir = int8Dir(where);
  const { meta, layers } = readInt8Model(dir);
  const points = new Map(meta.points.map((p) => [p.name, p]));
  const fround = Math.fround;
  const onnxLayers = layers.map(({ meta: l, weight, bias }): OnnxLayer => {
    const inputScale = fround(points.get(l.input)?.scale ?? NaN);
    // As repopt's fake-quantized bias: float32 q x float32 (weight scale x input scale).
    return {
      key: l.key,
      shape: l.shape,
      weight: { q: weight, scales: l.weightScales },
      bias: Float32Array.from(bias, (q, o) => fround(q) * fround(l.weightScales[o] * inputScale)),
    };
  });
  const source = path.join(dir, INT8_JSON);
  if (onnxLayers.some((l) => l.bias.some((b) => !Number.isFinite(b))))
    throw new Error(`${source}: a layer's input point is missing from 'points' (damaged export)`);
  const bytes = deployOnnxModel(
    {
      spec: meta.spec,
      layers: onnxLayers,
      normalization: meta.normalization,
      quant: { activations: meta.activations.dtype, points: meta.points },
    },
    {
      normalization,
      metadata: {
        'repopt.int8': JSON.stringify({ source, observer: meta.activations.observer, percentile: meta.activations.percentile }),
      },
    },
  );
  return { bytes, source };
}

/** Writes a run's deploy network as ONNX (opset 13, dynamic batch, input NCHW float32, output logits):
 * float from a checkpoint, or with `int8` the QDQ model of `quantize`'s int8 export. */
export async function exportOnnx(options: ExportOnnxOptions): Promise<ExportOnnxResult> {
  const o: ResolvedOptions = withDefaults<Required<Pick<ExportOnnxOptions, 'int8' | 'normalization'>>, ExportOnnxOptions>(
    EXPORT_ONNX_DEFAULTS,
    options,
  );
  checkOnnxOptions(o);
  const { bytes, source } = o.int8 ? int8Model(o.checkpoint, o.normalization) : await floatModel(o.checkpoint, o.normalization);
  writeFileAtomic(o.out, bytes);
  return { out: o.out, source, int8: o.int8, bytes: bytes.byteLength };
}
