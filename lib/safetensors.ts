// safetensors files (https://github.com/huggingface/safetensors): an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}}, then the raw little-endian data. Written
// here because no maintained npm package provides it; the format is this small.
import { readInputFile } from './input-file';
import { type PthDtype, type PthTensor, writeFileAtomic } from './pth';

const CODES: Record<PthDtype, string> = { float32: 'F32', float64: 'F64', int64: 'I64', int32: 'I32', uint8: 'U8' };
const DTYPES = Object.fromEntries(Object.entries(CODES).map(([d, c]) => [c, d as PthDtype])) as Record<string, PthDtype>;
const VIEWS = { float32: Float32Array, float64: Float64Array, int64: BigInt64Array, int32: Int32Array, uint8: Uint8Array } as const;

export function serializeSafetensors(
  tensors: ReadonlyMap<string, PthTensor>,
  metadata: Record<string, string> = { format: 'pt' },
): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const [name, t] of tensors) {
    const bytes = t.data.byteLength;
    header[name] = { dtype: CODES[t.dtype], shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8); // data starts 8-byte aligned
  const head = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + head.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  let at = 8 + head.length;
  for (const t of tensors.values()) {
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), at);
    at += t.data.byteLength;
  }
  return out;
}

export function parseSafetensors(bytes: Uint8Array, name: string): Map<string, PthTensor> {
  const fail = (what: string): never => {
    throw new Error(`${name}: ${what}`);
  };
  if (bytes.length < 8) fail('too short for a safetensors header');
  const headerLength = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  if (headerLength > bytes.length - 8) fail(`header of ${headerLength} bytes runs past the end of the file (${bytes.length} bytes)`);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + headerLength)));
  } catch (e) {
    return fail(`header is not JSON (${(e as Error).message})`);
  }
  if (!isRecord(header)) return fail('header is not a JSON object');
  const dataStart = 8 + headerLength;
  const out = new Map<string, PthTensor>();
  for (const [key, entry] of Object.entries(header)) {
    if (key === '__metadata__') continue;
    // No checksum in this format: damage is caught where it breaks the structure.
    if (!isRecord(entry) || !isCountList(entry.shape) || !isCountList(entry.data_offsets) || entry.data_offsets.length !== 2)
      return fail(`tensor '${key}' is not {dtype, shape, data_offsets}`);
    const { shape, data_offsets: offsets } = entry;
    const dtype =
      typeof entry.dtype === 'string' && Object.hasOwn(DTYPES, entry.dtype)
        ? DTYPES[entry.dtype]
        : fail(`tensor '${key}' has unsupported dtype ${JSON.stringify(entry.dtype)}`);
    const [begin, end] = offsets;
    const View = VIEWS[dtype];
    const count = shape.reduce((a, b) => a * b, 1);
    if (begin > end || end - begin !== count * View.BYTES_PER_ELEMENT || dataStart + end > bytes.length)
      fail(`tensor '${key}' has offsets [${begin}, ${end}] that do not fit its shape or the file`);
    const copy = bytes.slice(dataStart + begin, dataStart + end);
    out.set(key, { dtype, shape, data: new View(copy.buffer, 0, count) } as PthTensor);
  }
  return out;
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isCountList = (v: unknown): v is number[] =>
  Array.isArray(v) && v.every((n) => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0);

export function writeSafetensors(file: string, tensors: ReadonlyMap<string, PthTensor>): void {
  writeFileAtomic(file, serializeSafetensors(tensors));
}

export function readSafetensors(file: string): Map<string, PthTensor> {
  return parseSafetensors(readInputFile(file, 'safetensors file'), file);
}
