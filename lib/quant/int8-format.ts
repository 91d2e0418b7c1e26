// The int8 deployment export: a JSON description plus one binary file of int8 weights and int32 biases.
//
// model.int8.json: { format: 'repopt-int8', version: 2, spec (the deploy network), normalization
// ({ mean, std } per input channel, applied to [0, 1] pixels before the 'input' point), activations
// ({ dtype, observer, percentile }), points ([{ name, min, max, scale, zeroPoint, qmin, qmax }] in
// network order), layers ([{ key, input, output, shape, stride, padding, relu, weight: { offset,
// length }, weightScales: number[], bias: { offset, length } }]), data ({ file, bytes, sha256 }),
// checksum }: the file vouches for itself as lib/sealed-json.ts describes (indent 1). Version 1, the same
// without the checksum, is still read.
//
// model.int8.bin: each layer's weight as int8 in the float weight's layout (OIHW for convs, [out, in]
// for the linear layer), zero point 0, real value = q * weightScales[o]; then its bias as little-endian
// int32 with real value = q * points[input].scale * weightScales[o]. offset and length count bytes;
// every section starts on a 16-byte boundary. Between the last conv and the linear layer sits a global
// average pool re-quantized at point 'pool'; the linear layer's output is point 'logits'.
import { createHash } from 'node:crypto';
import * as fs from 'fs';
import * as path from 'path';
import type { QuantizedLayer, QuantParams } from '../native';
import { INPUT_LIMITS, readInputFile } from '../input-file';
import { writeFileAtomic } from '../pth';
import { sealedJsonText, sealProblem } from '../sealed-json';
import type { NetworkSpec } from '../spec';

export const INT8_JSON = 'model.int8.json';
export const INT8_BIN = 'model.int8.bin';
const INT8_VERSION = 2;
const JSON_INDENT = 1;

interface Section {
  offset: number;
  length: number;
}

export interface Int8LayerMeta {
  key: string;
  input: string;
  output: string;
  shape: number[];
  stride: number;
  padding: number;
  relu: boolean;
  weight: Section;
  weightScales: number[];
  bias: Section;
}

export interface Int8ModelMeta {
  format: 'repopt-int8';
  version: 1 | 2;
  spec: NetworkSpec;
  normalization: { mean: number[]; std: number[] };
  activations: { dtype: 'uint8' | 'int8'; observer: string; percentile: number };
  points: QuantParams['points'];
  layers: Int8LayerMeta[];
  data: { file: string; bytes: number; sha256: string };
  /** Version 2: see lib/sealed-json.ts. */
  checksum?: string;
}

export interface Int8Model {
  meta: Int8ModelMeta;
  layers: { meta: Int8LayerMeta; weight: Int8Array; bias: Int32Array }[];
}

const align = (n: number) => Math.ceil(n / 16) * 16;

/** Writes model.int8.json and model.int8.bin into `dir`. */
export function writeInt8Model(
  dir: string,
  spec: NetworkSpec,
  params: QuantParams,
  layers: readonly QuantizedLayer[],
  normalization: { mean: number[]; std: number[] },
): string {
  if (spec.mode !== 'deploy') throw new RangeError(`the int8 export takes deploy networks, got '${spec.mode}'`);
  if (layers.length !== spec.blocks.length + 1)
    throw new RangeError(`the int8 export needs ${spec.blocks.length + 1} layers, got ${layers.length}`);
  const metas: Int8LayerMeta[] = [];
  let offset = 0;
  const sections: { offset: number; bytes: Uint8Array }[] = [];
  const place = (bytes: Uint8Array): Section => {
    const s = { offset, length: bytes.byteLength };
    sections.push({ offset, bytes });
    offset = align(offset + bytes.byteLength);
    return s;
  };
  layers.forEach((l, i) => {
    if (!l.bias) throw new RangeError(`the int8 export: layer ${l.key} has no bias (is the network folded?)`);
    const linear = i === spec.blocks.length;
    metas.push({
      key: l.key,
      input: params.points[linear ? i + 1 : i].name,
      output: params.points[linear ? i + 2 : i + 1].name,
      shape: [...l.shape],
      stride: linear ? 1 : spec.blocks[i].stride,
      padding: linear ? 0 : 1,
      relu: !linear,
      weight: place(new Uint8Array(l.weight.buffer, l.weight.byteOffset, l.weight.byteLength)),
      weightScales: Array.from(l.scales),
      bias: place(new Uint8Array(l.bias.buffer, l.bias.byteOffset, l.bias.byteLength)),
    });
  });
  const bin = new Uint8Array(offset);
  for (const s of sections) bin.set(s.bytes, s.offset);
  const meta: Int8ModelMeta = {
    format: 'repopt-int8',
    version: INT8_VERSION,
    spec,
    normalization,
    activations: { dtype: params.activations, observer: params.observer, percentile: params.percentile },
    points: params.points.map((p) => ({ ...p })),
    layers: metas,
    data: { file: INT8_BIN, bytes: bin.byteLength, sha256: createHash('sha256').update(bin).digest('hex') },
  };
  fs.mkdirSync(dir, { recursive: true });
  writeFileAtomic(path.join(dir, INT8_BIN), bin);
  writeFileAtomic(path.join(dir, INT8_JSON), new TextEncoder().encode(sealedJsonText(meta, JSON_INDENT)));
  return path.join(dir, INT8_JSON);
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isSection = (v: unknown): v is Section => isRecord(v) && isCount(v.offset) && isCount(v.length);

function isLayer(v: unknown): v is Int8LayerMeta {
  return (
    isRecord(v) &&
    typeof v.key === 'string' &&
    Array.isArray(v.shape) &&
    v.shape.every(isCount) &&
    Array.isArray(v.weightScales) &&
    v.weightScales.every((s) => typeof s === 'number') &&
    isSection(v.weight) &&
    isSection(v.bias)
  );
}

/** model.int8.json parsed, its shape checked and (version 2) its checksum and text verified. */
function readInt8Meta(jsonFile: string): Int8ModelMeta {
  const fail = (why: string): never => {
    throw new Error(`${jsonFile}: ${why}`);
  };
  const bytes = readInputFile(jsonFile, 'int8 export', INPUT_LIMITS.small);
  let text = '';
  let parsed: unknown;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    parsed = JSON.parse(text);
  } catch (e) {
    fail(`not a readable int8 export (${(e as Error).message})`);
  }
  if (!isRecord(parsed)) return fail('not a JSON object');
  if (parsed.format !== 'repopt-int8' || (parsed.version !== 1 && parsed.version !== INT8_VERSION))
    fail(`format ${JSON.stringify(parsed.format)} version ${JSON.stringify(parsed.version)} is not repopt-int8 version 1 or 2`);
  const data = parsed.data;
  if (!isRecord(data) || data.file !== INT8_BIN || !isCount(data.bytes) || typeof data.sha256 !== 'string')
    fail(`'data' does not give ${INT8_BIN} with its size and SHA-256 (damaged)`);
  if (!Array.isArray(parsed.layers) || !parsed.layers.every(isLayer))
    fail("'layers' is not a list of layers with key, shape, weightScales and weight and bias sections (damaged)");
  if (parsed.version === INT8_VERSION) {
    const problem = sealProblem(parsed, text, JSON_INDENT);
    if (problem) fail(problem);
  }
  return parsed as unknown as Int8ModelMeta;
}

/** Reads an int8 export back, checking its format, checksums and section bounds. */
export function readInt8Model(dir: string): Int8Model {
  const jsonFile = path.join(dir, INT8_JSON);
  const meta = readInt8Meta(jsonFile);
  const binFile = path.join(dir, INT8_BIN);
  const bin = new Uint8Array(readInputFile(binFile, 'int8 export data'));
  if (bin.byteLength !== meta.data.bytes || createHash('sha256').update(bin).digest('hex') !== meta.data.sha256) {
    throw new Error(`${binFile}: size or SHA-256 differs from ${INT8_JSON}; the export is damaged`);
  }
  const section = (s: Section, key: string, itemBytes: number) => {
    if (!(s.offset % 16 === 0 && s.length % itemBytes === 0 && s.offset + s.length <= bin.byteLength))
      throw new Error(`${jsonFile}: a section of ${key} lies outside the data or is misaligned`);
    return bin.slice(s.offset, s.offset + s.length).buffer;
  };
  return {
    meta,
    layers: meta.layers.map((l) => ({
      meta: l,
      weight: new Int8Array(section(l.weight, l.key, Int8Array.BYTES_PER_ELEMENT)),
      bias: new Int32Array(section(l.bias, l.key, Int32Array.BYTES_PER_ELEMENT)),
    })),
  };
}
