// PyTorch `torch.save` files (the zip format of PyTorch >= 1.6), read and written without Python: a small
// pickle VM and the zip container (read here with every header cross-checked and every entry's CRC-32
// verified; written by fflate). We write flat dicts of tensors; we read what checkpoints hold: nested
// dicts / lists / tuples of tensors (fp16 and bf16 widened to fp32) and plain values.
//
// Layout of such a file: `<prefix>/data.pkl` (pickle protocol 2 of an OrderedDict whose values are
// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)` calls, each storage a
// persistent id ('storage', torch.XStorage, key, location, numel)), `<prefix>/data/<key>` (raw little-endian
// storage bytes), `<prefix>/version`.
//
// The VM runs no pickled code and imports nothing: it interprets a few whitelisted reconstructors
// (tensors, storages, OrderedDict, Parameter). Any other class or function a pickle names (a training
// config object, a numpy scalar) becomes a PthUnreadable leaf, refused only if a caller needs that entry;
// functions that pickles use to run code (eval, os.system, ...) get the whole file refused.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { readInputFile } from './input-file';
// Writing through fflate: zero dependencies, synchronous, and it writes STORED entries with caller-chosen
// extra fields, which is how we pad entry data to PyTorch's 64-byte alignment (yazl and jszip cannot, and
// jszip is async only). Reading is our own: fflate checks no CRC-32 and trusts the headers, and a damaged
// file must give an error, never a wrong value.
import { zipSync, type Zippable } from 'fflate';

export type PthDtype = 'float32' | 'float64' | 'int64' | 'int32' | 'uint8';
export type PthData = Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array;

/** A dense row-major tensor. */
export interface PthTensor {
  readonly dtype: PthDtype;
  readonly shape: readonly number[];
  readonly data: PthData;
}

interface DtypeInfo {
  /** torch's legacy storage class, the name a pickled storage refers to. */
  readonly storage: string;
  readonly array: { new (buffer: ArrayBuffer, byteOffset: number, length: number): PthData; readonly BYTES_PER_ELEMENT: number };
}

const DTYPES: Readonly<Record<PthDtype, DtypeInfo>> = {
  float32: { storage: 'FloatStorage', array: Float32Array },
  float64: { storage: 'DoubleStorage', array: Float64Array },
  int64: { storage: 'LongStorage', array: BigInt64Array },
  int32: { storage: 'IntStorage', array: Int32Array },
  uint8: { storage: 'ByteStorage', array: Uint8Array },
};

const DTYPE_BY_STORAGE = new Map(Object.entries(DTYPES).map(([dtype, info]) => [info.storage, dtype as PthDtype]));

/** Half-precision storages, read widened to float32 (exactly: every fp16 and bf16 value is a float32 value). */
const HALF_STORAGES: ReadonlyMap<string, HalfKind> = new Map([
  ['HalfStorage', 'float16'],
  ['BFloat16Storage', 'bfloat16'],
]);
type HalfKind = 'float16' | 'bfloat16';

const SUPPORTED_STORAGES = [...DTYPE_BY_STORAGE.keys(), ...HALF_STORAGES.keys()].map((s) => `torch.${s}`).join(', ');

/** What a read file holds where it is not a tensor, a container or a plain value: an object of a class the
 * reader does not rebuild, or a tensor of an unsupported dtype. `what` says which. */
export class PthUnreadable {
  constructor(
    readonly what: string,
    /** A tensor of an unsupported dtype (else an object). */
    readonly tensor = false,
  ) {}
}

/** A dict key as read: Python's str, int, bool and None keys. */
export type PthKey = string | number | bigint | boolean | null;

/** A value as read: tensors, dicts (OrderedDict included), lists and tuples (both arrays), str, int
 * (bigint beyond 2^53), float, bool, None. */
export type PthValue = PthTensor | PthDict | readonly PthValue[] | PthKey | PthUnreadable;

export type PthDict = ReadonlyMap<PthKey, PthValue>;

export function isPthTensor(value: PthValue): value is PthTensor {
  return (
    typeof value === 'object' && value !== null && !(value instanceof Map) && !Array.isArray(value) && !(value instanceof PthUnreadable)
  );
}

/** A short description of a read value, for messages ('a tensor', 'a dict', 'an object made by yacs.config.CfgNode'). */
export function describePthValue(value: PthValue): string {
  if (value === null) return 'None';
  if (value instanceof PthUnreadable) return value.what;
  if (value instanceof Map) return 'a dict';
  if (Array.isArray(value)) return `a list or tuple of ${value.length}`;
  if (isPthTensor(value)) return 'a tensor';
  return `${typeof value === 'bigint' ? 'int' : typeof value} ${JSON.stringify(typeof value === 'bigint' ? value.toString() : value)}`;
}

/** Why `value` is not a (readable) tensor: 'number 3, not a tensor', or an unsupported dtype. */
export function notATensor(value: Exclude<PthValue, PthTensor>): string {
  return value instanceof PthUnreadable && value.tensor ? value.what : `${describePthValue(value)}, not a tensor`;
}

/** The dotted path of an entry ('model.stage1.0.conv.weight', 'optimizer.param_groups.0'), as errors name it. */
export function pthPath(parts: readonly PthKey[]): string {
  return parts.map(String).join('.');
}

/** The zip folder torch.save names every entry under. */
const ARCHIVE_PREFIX = 'archive';
/** Serialization format version torch.save (1.6 to 2.x) writes in `<prefix>/version`. */
const FORMAT_VERSION = '3\n';
/** PyTorch aligns each entry's data to this many bytes, so storages can be memory-mapped. */
const DATA_ALIGNMENT = 64;
/** Zip extra-field id PyTorch pads with ('FB'). */
const PADDING_FIELD_ID = 0x4246;
/** What PyTorch fills it with ('Z'). */
const PADDING_BYTE = 0x5a;
/** Fixed entry time, so the same tensors always give the same bytes. */
const ENTRY_MTIME = new Date(1980, 0, 1);

function fail(message: string): never {
  throw new Error(message);
}

/** Typed arrays here view memory as it lies; torch stores little-endian. */
function requireLittleEndianHost(): void {
  if (os.endianness() !== 'LE') fail('.pth files hold little-endian data; this host is big-endian');
}

/** Runs `body`, prefixing any error with the file's name (said once, whatever layer threw). */
function withFileName<T>(name: string, body: () => T): T {
  try {
    return body();
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    throw new Error(`${name}: ${message}`, { cause: e });
  }
}

// ---------------------------------------------------------------------------------------------------------
// Reading

/** Parses the bytes of any torch.save zip file into its tree of values. `name` appears in errors. */
export function parsePthTree(bytes: Uint8Array, name: string): PthValue {
  return withFileName(name, () => {
    requireLittleEndianHost();
    const entries = readZipEntries(bytes);
    const pickleNames = [...entries.stored.keys(), ...entries.compressed.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n));
    if (pickleNames.length === 0) fail("missing data.pkl: no '<prefix>/data.pkl' entry, so this zip is not a torch.save file");
    if (pickleNames.length > 1) fail(`several data.pkl entries (${pickleNames.join(', ')})`);
    const prefix = pickleNames[0].slice(0, -'/data.pkl'.length);
    const pickle = runPickle(entries.get(pickleNames[0]));
    const root = new Materialiser(new StorageLoader(entries, prefix)).value(pickle.root, []);
    // A code-running function that no entry holds (popped, or a dict key) is refused all the same.
    if (pickle.codeRunners.length > 0) fail(codeRunnerMessage(pickle.codeRunners[0], undefined));
    return root;
  });
}

/** Parses the bytes of a torch.save zip file holding a flat dict of tensors. `name` appears in errors. */
export function parsePth(bytes: Uint8Array, name: string): Map<string, PthTensor> {
  const root = parsePthTree(bytes, name);
  return withFileName(name, () => {
    if (!(root instanceof Map)) fail(`data.pkl holds ${describePthValue(root)}, not a dict of tensors`);
    const out = new Map<string, PthTensor>();
    for (const [key, value] of root) {
      if (typeof key !== 'string') fail(`dict key ${describePthValue(key)} is not a string`);
      if (!isPthTensor(value)) fail(`entry '${key}' is ${notATensor(value)}`);
      out.set(key, value);
    }
    return out;
  });
}

/** Reads a torch.save zip file holding a flat dict (dict or OrderedDict) of tensors. */
export function readPth(file: string): Map<string, PthTensor> {
  return parsePth(readInputFile(file, '.pth file'), file);
}

/** Reads any torch.save zip file (a checkpoint: nested dicts, lists, tensors, plain values) into its tree.
 * `what` names the file's role in errors about the file itself. */
export function readPthTree(file: string, what = '.pth file'): PthValue {
  return parsePthTree(readInputFile(file, what), file);
}

class ZipEntries {
  readonly stored = new Map<string, Uint8Array>();
  /** Entries we did not extract, with their compression method: torch.save never compresses. */
  readonly compressed = new Map<string, number>();

  get(name: string): Uint8Array {
    const bytes = this.stored.get(name);
    if (bytes) return bytes;
    const method = this.compressed.get(name);
    if (method !== undefined) fail(`zip entry '${name}' is compressed (method ${method}); torch.save files store entries uncompressed`);
    return fail(`zip entry '${name}' is missing`);
  }
}

const ZIP_LOCAL_HEADER_MAGIC = [0x50, 0x4b, 0x03, 0x04];
const ZIP_EMPTY_MAGIC = [0x50, 0x4b, 0x05, 0x06];
const END_MAGIC = Buffer.from(ZIP_EMPTY_MAGIC);

/** Record signatures, as little-endian numbers ('PK' and two bytes). */
const SIGNATURE = {
  local: 0x04034b50,
  central: 0x02014b50,
  end: 0x06054b50,
  end64: 0x06064b50,
  locator64: 0x07064b50,
  descriptor: 0x08074b50,
} as const;
const END_BYTES = 22;
const LOCATOR64_BYTES = 20;
const END64_BYTES = 56;
const CENTRAL_BYTES = 46;
const LOCAL_BYTES = 30;
const MAX_COMMENT_BYTES = 0xffff;
/** A 16- or 32-bit field holding this says "the value is in the zip64 record". */
const U16_ZIP64 = 0xffff;
const U32_ZIP64 = 0xffffffff;
const ZIP64_EXTRA_ID = 0x0001;
/** General-purpose flag: CRC and sizes follow the data (torch.save sets it). */
const FLAG_DATA_DESCRIPTOR = 0x0008;
/** General-purpose flag: the name is UTF-8. */
const FLAG_UTF8 = 0x0800;

function startsWith(bytes: Uint8Array, magic: readonly number[]): boolean {
  return magic.every((b, i) => bytes[i] === b);
}

/** Little-endian reads that treat any field past the end of the file as damage. */
class ZipView {
  private readonly view: DataView;

  constructor(readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  private check(at: number, size: number, what: string): void {
    if (!(at >= 0 && at + size <= this.bytes.length)) fail(`truncated or damaged zip archive (${what} lies past the end of the file)`);
  }

  u16(at: number, what: string): number {
    this.check(at, 2, what);
    return this.view.getUint16(at, true);
  }

  u32(at: number, what: string): number {
    this.check(at, 4, what);
    return this.view.getUint32(at, true);
  }

  u64(at: number, what: string): number {
    this.check(at, 8, what);
    const value = this.view.getBigUint64(at, true);
    if (value > BigInt(this.bytes.length)) fail(`damaged zip archive (${what} is ${value}, in a file of ${this.bytes.length} bytes)`);
    return Number(value);
  }
}

interface CentralDirectory {
  readonly offset: number;
  /** Where the records must end: the zip64 end record, or the end record. */
  readonly end: number;
  readonly entries: number;
}

/** The central directory's place and entry count, from the end record and its zip64 form; the two
 * must agree, and the directory must end where they begin. */
function findCentralDirectory(zip: ZipView): CentralDirectory {
  const { bytes } = zip;
  // The end record closes the file, followed only by a comment of the length it states.
  const haystack = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const lowest = Math.max(0, bytes.length - END_BYTES - MAX_COMMENT_BYTES);
  let end = bytes.length >= END_BYTES ? haystack.lastIndexOf(END_MAGIC, bytes.length - END_BYTES) : -1;
  while (end >= lowest && end + END_BYTES + zip.u16(end + 20, 'comment length') !== bytes.length)
    end = end > 0 ? haystack.lastIndexOf(END_MAGIC, end - 1) : -1;
  if (end < lowest) fail('truncated or damaged zip archive (no end-of-central-directory record)');
  const fields = {
    disk: zip.u16(end + 4, 'disk number'),
    directoryDisk: zip.u16(end + 6, 'disk number'),
    entriesOnDisk: zip.u16(end + 8, 'entry count'),
    entries: zip.u16(end + 10, 'entry count'),
    size: zip.u32(end + 12, 'central directory size'),
    offset: zip.u32(end + 16, 'central directory offset'),
  };
  let directoryEnd = end;
  const locator = end - LOCATOR64_BYTES;
  if (locator >= 0 && zip.u32(locator, 'zip64 locator') === SIGNATURE.locator64) {
    if (zip.u32(locator + 4, 'zip64 locator') !== 0 || zip.u32(locator + 16, 'zip64 locator') !== 1)
      fail('damaged zip64 locator (it speaks of several disks)');
    const at = zip.u64(locator + 8, 'zip64 end record offset');
    if (
      at + END64_BYTES > locator ||
      zip.u32(at, 'zip64 end record') !== SIGNATURE.end64 ||
      at + 12 + zip.u64(at + 4, 'zip64 end record size') !== locator
    )
      fail('damaged zip64 end-of-central-directory record');
    const wide = {
      disk: zip.u32(at + 16, 'disk number'),
      directoryDisk: zip.u32(at + 20, 'disk number'),
      entriesOnDisk: zip.u64(at + 24, 'entry count'),
      entries: zip.u64(at + 32, 'entry count'),
      size: zip.u64(at + 40, 'central directory size'),
      offset: zip.u64(at + 48, 'central directory offset'),
    };
    for (const key of Object.keys(fields) as (keyof typeof fields)[]) {
      const marker = key === 'size' || key === 'offset' ? U32_ZIP64 : U16_ZIP64;
      if (fields[key] !== marker && fields[key] !== wide[key]) fail(`damaged zip archive (its two end records disagree on the ${key})`);
      fields[key] = wide[key];
    }
    directoryEnd = at;
  }
  if (fields.disk !== 0 || fields.directoryDisk !== 0 || fields.entriesOnDisk !== fields.entries)
    fail('damaged zip archive (its end record speaks of several disks)');
  if (fields.offset + fields.size !== directoryEnd) fail('damaged zip central directory (its offset and size do not meet the end record)');
  return { offset: fields.offset, end: directoryEnd, entries: fields.entries };
}

interface CentralRecord {
  readonly name: string;
  readonly nameBytes: Uint8Array;
  readonly versionNeeded: number;
  readonly flags: number;
  readonly method: number;
  readonly time: number;
  readonly date: number;
  readonly crc: number;
  readonly compressedSize: number;
  readonly size: number;
  readonly localOffset: number;
}

function readCentralRecords(zip: ZipView, directory: CentralDirectory): CentralRecord[] {
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  const latin1 = new TextDecoder('latin1');
  const records: CentralRecord[] = [];
  let at = directory.offset;
  for (let i = 0; i < directory.entries; i++) {
    const where = `central directory record ${i + 1} of ${directory.entries}`;
    if (at + CENTRAL_BYTES > directory.end || zip.u32(at, where) !== SIGNATURE.central) fail(`damaged zip ${where}`);
    const flags = zip.u16(at + 8, where);
    const nameLength = zip.u16(at + 28, where);
    const extraStart = at + CENTRAL_BYTES + nameLength;
    const extraEnd = extraStart + zip.u16(at + 30, where);
    const next = extraEnd + zip.u16(at + 32, where);
    if (next > directory.end) fail(`damaged zip ${where} (it runs past the directory)`);
    const nameBytes = zip.bytes.subarray(at + CENTRAL_BYTES, extraStart);
    let name: string;
    try {
      name = (flags & FLAG_UTF8 ? utf8 : latin1).decode(nameBytes);
    } catch {
      return fail(`damaged zip ${where} (its name is not UTF-8)`);
    }
    if (name === '') fail(`damaged zip ${where} (an entry without a name)`);
    if (zip.u16(at + 34, where) !== 0) fail(`damaged zip ${where} (it places its entry on another disk)`);
    const zip64Field = readExtraFields(zip, extraStart, extraEnd, where);
    // Fields marked for zip64 follow, 8 bytes each and in this order, in the zip64 extra field.
    let size = zip.u32(at + 24, where);
    let compressedSize = zip.u32(at + 20, where);
    let localOffset = zip.u32(at + 42, where);
    if (size === U32_ZIP64 || compressedSize === U32_ZIP64 || localOffset === U32_ZIP64) {
      let field = zip64Field ?? fail(`damaged zip ${where} (a zip64 size without its zip64 field)`);
      const wide = (): number => {
        if (field + 8 > extraEnd) fail(`damaged zip ${where} (its zip64 field is short)`);
        field += 8;
        return zip.u64(field - 8, where);
      };
      if (size === U32_ZIP64) size = wide();
      if (compressedSize === U32_ZIP64) compressedSize = wide();
      if (localOffset === U32_ZIP64) localOffset = wide();
    }
    records.push({
      name,
      nameBytes,
      versionNeeded: zip.u16(at + 6, where),
      flags,
      method: zip.u16(at + 10, where),
      time: zip.u16(at + 12, where),
      date: zip.u16(at + 14, where),
      crc: zip.u32(at + 16, where),
      compressedSize,
      size,
      localOffset,
    });
    at = next;
  }
  if (at !== directory.end) fail('damaged zip central directory (its records do not fill it)');
  return records;
}

/** Checks the extra fields in [start, end): (id, size, data) records filling it exactly, padding fields
 * holding only padding bytes. Returns where the zip64 field's data starts, if there is one. */
function readExtraFields(zip: ZipView, start: number, end: number, where: string): number | undefined {
  let zip64: number | undefined;
  for (let at = start; at < end; ) {
    const dataEnd = at + 4 + (at + 4 <= end ? zip.u16(at + 2, where) : 0);
    if (dataEnd > end) fail(`damaged zip ${where} (its extra fields do not add up)`);
    const id = zip.u16(at, where);
    if (id === ZIP64_EXTRA_ID) zip64 = at + 4;
    if (id === PADDING_FIELD_ID && zip.bytes.subarray(at + 4, dataEnd).some((b) => b !== PADDING_BYTE))
      fail(`damaged zip ${where} (its padding holds other bytes than padding)`);
    at = dataEnd;
  }
  return zip64;
}

/** Where an entry's data descriptor (CRC and sizes after the data, with an optional signature, sizes of
 * 4 or 8 bytes) ends, once it agrees with the directory record. */
function dataDescriptorEnd(zip: ZipView, at: number, r: CentralRecord): number {
  const what = `the data descriptor of '${r.name}'`;
  const start = zip.u32(at, what) === SIGNATURE.descriptor ? at + 4 : at;
  for (const sizeBytes of [4, 8]) {
    if (start + 4 + 2 * sizeBytes > zip.bytes.length) continue;
    const read = (p: number) => (sizeBytes === 8 ? zip.u64(p, what) : zip.u32(p, what));
    if (zip.u32(start, what) === r.crc && read(start + 4) === r.compressedSize && read(start + 4 + sizeBytes) === r.size)
      return start + 4 + 2 * sizeBytes;
  }
  return fail(`damaged zip entry '${r.name}' (its data descriptor and directory record disagree)`);
}

/** Every entry, each checked against its local header, its data descriptor and its CRC-32, laid out
 * without overlaps before the central directory. */
function readZipEntries(file: Uint8Array): ZipEntries {
  // Entries are views of a plain Uint8Array, whose slice() copies (a Buffer's would share the file's
  // memory with the tensors made from them).
  const bytes = new Uint8Array(file.buffer, file.byteOffset, file.byteLength);
  if (!startsWith(bytes, ZIP_LOCAL_HEADER_MAGIC) && !startsWith(bytes, ZIP_EMPTY_MAGIC)) {
    const legacy = bytes[0] === 0x80 ? ' (it looks like a pickle: the legacy pre-1.6 torch.save format is not supported)' : '';
    fail(`not a zip archive${legacy}; torch.save files of PyTorch >= 1.6 are zip archives`);
  }
  const zip = new ZipView(bytes);
  const directory = findCentralDirectory(zip);
  const entries = new ZipEntries();
  const spans: Array<readonly [number, number, string]> = [];
  for (const r of readCentralRecords(zip, directory)) {
    const damaged = (why: string): never => fail(`damaged zip entry '${r.name}' (${why})`);
    if (entries.stored.has(r.name) || entries.compressed.has(r.name)) fail(`zip entry '${r.name}' appears twice`);
    const where = `the local header of '${r.name}'`;
    const local = r.localOffset;
    if (zip.u32(local, where) !== SIGNATURE.local) damaged('no local header where the directory says');
    const nameStart = local + LOCAL_BYTES;
    const nameEnd = nameStart + zip.u16(local + 26, where);
    const dataStart = nameEnd + zip.u16(local + 28, where);
    if (dataStart > directory.offset) damaged('its local header runs into the central directory');
    readExtraFields(zip, nameEnd, dataStart, where);
    const sizeAgrees = (at: number, value: number) => [value, U32_ZIP64].includes(zip.u32(at, where));
    if (
      zip.u16(local + 4, where) !== r.versionNeeded ||
      zip.u16(local + 6, where) !== r.flags ||
      zip.u16(local + 8, where) !== r.method ||
      zip.u16(local + 10, where) !== r.time ||
      zip.u16(local + 12, where) !== r.date ||
      !Buffer.from(bytes.subarray(nameStart, nameEnd)).equals(r.nameBytes) ||
      (!(r.flags & FLAG_DATA_DESCRIPTOR) &&
        (zip.u32(local + 14, where) !== r.crc || !sizeAgrees(local + 18, r.compressedSize) || !sizeAgrees(local + 22, r.size)))
    )
      damaged('its local header and directory record disagree');
    const dataEnd = dataStart + r.compressedSize;
    const end = r.flags & FLAG_DATA_DESCRIPTOR ? dataDescriptorEnd(zip, dataEnd, r) : dataEnd;
    if (end > directory.offset) damaged('its data runs into the central directory');
    spans.push([local, end, r.name]);
    if (r.method !== 0) {
      entries.compressed.set(r.name, r.method);
      continue;
    }
    if (r.compressedSize !== r.size) damaged(`stored uncompressed, yet ${r.compressedSize} bytes stand for ${r.size}`);
    const data = bytes.subarray(dataStart, dataEnd);
    if (crc32(data) !== r.crc) damaged('CRC-32 mismatch: its data is not what was written');
    entries.stored.set(r.name, data);
  }
  spans.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < spans.length; i++)
    if (spans[i][0] < spans[i - 1][1]) fail(`damaged zip archive (entries '${spans[i - 1][2]}' and '${spans[i][2]}' overlap)`);
  return entries;
}

/** How a storage class's elements are read: their size, and the dtype of the tensors made from them
 * (float32 for the widened half types); undefined for a storage class not read. */
function storageFormat(storageClass: string): StorageFormat | undefined {
  const dtype = DTYPE_BY_STORAGE.get(storageClass);
  if (dtype) return { itemBytes: DTYPES[dtype].array.BYTES_PER_ELEMENT, dtype, stored: dtype };
  const half = HALF_STORAGES.get(storageClass);
  return half ? { itemBytes: 2, dtype: 'float32', stored: half, half } : undefined;
}

interface StorageFormat {
  readonly itemBytes: number;
  readonly dtype: PthDtype;
  /** The element type in the file. */
  readonly stored: string;
  readonly half?: HalfKind;
}

/** Reads each storage entry once, checked against the size the storage class and numel imply. */
class StorageLoader {
  private readonly loaded = new Map<string, { storageClass: string; numel: number; bytes: Uint8Array }>();

  constructor(
    private readonly entries: ZipEntries,
    private readonly prefix: string,
  ) {}

  load(ref: StorageRef, format: StorageFormat): Uint8Array {
    const previous = this.loaded.get(ref.key);
    if (previous) {
      if (previous.storageClass !== ref.storageClass || previous.numel !== ref.numel) {
        fail(
          `storage '${ref.key}' is referred to as ${previous.numel} elements of torch.${previous.storageClass} and as ` +
            `${ref.numel} of torch.${ref.storageClass}`,
        );
      }
      return previous.bytes;
    }
    const entryName = `${this.prefix}/data/${ref.key}`;
    const bytes = this.entries.get(entryName);
    const needed = ref.numel * format.itemBytes;
    if (bytes.length < needed)
      fail(
        `storage entry '${entryName}' has ${bytes.length} bytes, too short for ${ref.numel} ${format.stored} elements (${needed} bytes)`,
      );
    this.loaded.set(ref.key, { storageClass: ref.storageClass, numel: ref.numel, bytes });
    return bytes;
  }
}

/** Deeper nesting than any checkpoint has; also keeps a hostile file from overflowing the JS stack. */
const MAX_NESTING = 256;

/** Turns the pickle's objects into PthValues, each object once (a file may share one object many times),
 * naming the entry's path in every error. */
class Materialiser {
  private readonly done = new Map<object, PthValue>();
  private readonly open = new Set<object>();

  constructor(private readonly storages: StorageLoader) {}

  value(v: PyValue, path: PthKey[]): PthValue {
    if (v === null || typeof v !== 'object') return v;
    const cached = this.done.get(v);
    if (cached !== undefined) return cached;
    if (this.open.has(v)) return new PthUnreadable('a container that holds itself');
    if (path.length > MAX_NESTING) fail(`entry '${pthPath(path.slice(0, 8))}...' is nested deeper than ${MAX_NESTING} levels`);
    this.open.add(v);
    const result = this.build(v, path);
    this.open.delete(v);
    this.done.set(v, result);
    return result;
  }

  private build(v: Exclude<PyValue, PthKey>, path: PthKey[]): PthValue {
    if (v instanceof TensorRef) return this.tensor(v, path);
    if (v instanceof PyList || v instanceof PyTuple) return v.items.map((item, i) => this.value(item, [...path, i]));
    if (v instanceof PyDict) {
      const out = new Map<PthKey, PthValue>();
      for (const [key, item] of v.entries) {
        if (key !== null && typeof key === 'object') return new PthUnreadable(`a dict with ${describe(key)} as a key`);
        out.set(key, this.value(item, [...path, key]));
      }
      return out;
    }
    const global = v instanceof PyGlobal ? v : v instanceof PyOpaque ? v.made : undefined;
    if (global?.runsCode) fail(codeRunnerMessage(global.qualifiedName, path));
    if (v instanceof PyOpaque) return new PthUnreadable(`an object made by ${v.made.qualifiedName}`);
    return new PthUnreadable(describe(v));
  }

  private tensor(ref: TensorRef, path: PthKey[]): PthValue {
    const format = storageFormat(ref.storage.storageClass);
    if (!format)
      return new PthUnreadable(
        `a tensor of torch.${ref.storage.storageClass}, an unsupported dtype (supported: ${SUPPORTED_STORAGES})`,
        true,
      );
    return materialiseTensor(pthPath(path), ref, format, this.storages.load(ref.storage, format));
  }
}

/** Copies a (possibly strided, offset) view of a storage into a fresh contiguous tensor; half types widened. */
function materialiseTensor(key: string, ref: TensorRef, format: StorageFormat, storageBytes: Uint8Array): PthTensor {
  const storageNumel = ref.storage.numel;
  const { size, stride, offset } = ref;
  const numel = size.reduce((a, b) => a * b, 1);
  if (!Number.isSafeInteger(numel)) fail(`tensor '${key}' has too many elements (size [${size.join(', ')}])`);
  if (numel > 0) {
    const lastElement = offset + size.reduce((sum, n, d) => sum + (n - 1) * stride[d], 0);
    if (lastElement >= storageNumel) {
      fail(
        `tensor '${key}' (size [${size.join(', ')}], stride [${stride.join(', ')}], offset ${offset}) reaches element ` +
          `${lastElement} of a storage of ${storageNumel}`,
      );
    }
  }
  const itemSize = format.itemBytes;
  let bytes: Uint8Array;
  if (isContiguous(size, stride)) {
    bytes = storageBytes.slice(offset * itemSize, (offset + numel) * itemSize);
  } else {
    // Gather whole elements as integers (never through floats, which could alter NaN payloads).
    const wordBytes = Math.min(itemSize, 4);
    const source = wordsView(storageBytes, wordBytes);
    const target =
      wordBytes === 1 ? new Uint8Array(numel) : wordBytes === 2 ? new Uint16Array(numel) : new Uint32Array((numel * itemSize) / 4);
    gatherStrided(source, target, itemSize / wordBytes, size, stride, offset);
    bytes = new Uint8Array(target.buffer);
  }
  if (format.half) return { dtype: 'float32', shape: [...size], data: widenHalf(wordsView(bytes, 2) as Uint16Array, format.half) };
  return {
    dtype: format.dtype,
    shape: [...size],
    data: new DTYPES[format.dtype].array(bytes.buffer as ArrayBuffer, bytes.byteOffset, numel),
  };
}

/** fp16 or bf16 bit patterns as float32 values; exact, NaN payloads and -0 kept. */
function widenHalf(halves: Uint16Array, kind: HalfKind): Float32Array {
  const out = new Float32Array(halves.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < halves.length; i++) {
    const h = halves[i];
    if (kind === 'bfloat16') {
      bits[i] = h << 16;
      continue;
    }
    const sign = (h & 0x8000) << 16;
    const exponent = (h >> 10) & 0x1f;
    const fraction = h & 0x3ff;
    if (exponent === 0x1f) bits[i] = sign | 0x7f800000 | (fraction << 13);
    else if (exponent !== 0) bits[i] = sign | ((exponent + 112) << 23) | (fraction << 13);
    else out[i] = (sign ? -1 : 1) * fraction * 2 ** -24; // zero or subnormal: a normal float32
  }
  return out;
}

/** The bytes as 1-, 2- or 4-byte words (copied first when they do not start at an aligned address). */
function wordsView(bytes: Uint8Array, wordBytes: number): Uint8Array | Uint16Array | Uint32Array {
  if (wordBytes === 1) return bytes;
  const aligned = bytes.byteOffset % wordBytes === 0 ? bytes : bytes.slice();
  const count = Math.floor(aligned.length / wordBytes);
  return wordBytes === 2
    ? new Uint16Array(aligned.buffer, aligned.byteOffset, count)
    : new Uint32Array(aligned.buffer, aligned.byteOffset, count);
}

/** Row-major contiguity; dimensions of size 1 may have any stride. */
function isContiguous(size: readonly number[], stride: readonly number[]): boolean {
  let expected = 1;
  for (let d = size.length - 1; d >= 0; d--) {
    if (size[d] === 0) return true;
    if (size[d] !== 1 && stride[d] !== expected) return false;
    expected *= size[d];
  }
  return true;
}

function gatherStrided(
  source: Uint8Array | Uint16Array | Uint32Array,
  target: Uint8Array | Uint16Array | Uint32Array,
  wordsPerItem: number,
  size: readonly number[],
  stride: readonly number[],
  offset: number,
): void {
  const numel = target.length / wordsPerItem;
  const index = new Array<number>(size.length).fill(0);
  let element = offset;
  for (let i = 0; i < numel; i++) {
    for (let w = 0; w < wordsPerItem; w++) target[i * wordsPerItem + w] = source[element * wordsPerItem + w];
    // Odometer step over the multi-index, last dimension fastest.
    for (let d = size.length - 1; d >= 0; d--) {
      index[d]++;
      element += stride[d];
      if (index[d] < size[d]) break;
      element -= stride[d] * size[d];
      index[d] = 0;
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// The pickle VM: what torch.save writes for checkpoints (protocols 2 to 5), running no pickled code.

class PyTuple {
  constructor(readonly items: readonly PyValue[]) {}
}

class PyList {
  readonly items: PyValue[] = [];
}

class PyDict {
  readonly entries = new Map<PyValue, PyValue>();
}

/** Modules whose every function can run code or touch the system, and such builtins: what malicious
 * pickles call. No checkpoint needs them, so a file naming one is refused even where it is not read. */
const CODE_RUNNING_MODULES = new Set([
  'os',
  'posix',
  'nt',
  'subprocess',
  'sys',
  'socket',
  'shutil',
  'runpy',
  'importlib',
  'pickle',
  '_pickle',
  'marshal',
  'ctypes',
  'code',
  'pty',
  'webbrowser',
  'commands',
  'multiprocessing',
  'asyncio',
]);
const CODE_RUNNING_BUILTINS = new Set([
  'eval',
  'exec',
  'execfile',
  'compile',
  'open',
  '__import__',
  'getattr',
  'setattr',
  'delattr',
  'globals',
  'locals',
  'vars',
  'input',
  'breakpoint',
  'apply',
]);

class PyGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
  get qualifiedName(): string {
    return `${this.module}.${this.name}`;
  }
  get runsCode(): boolean {
    const root = this.module.split('.')[0];
    return CODE_RUNNING_MODULES.has(root) || ((root === 'builtins' || root === '__builtin__') && CODE_RUNNING_BUILTINS.has(this.name));
  }
}

/** An object the VM does not rebuild: what a call of `made` (a class or function) returned. Items and
 * state given to it are dropped. */
class PyOpaque {
  constructor(readonly made: PyGlobal) {}
}

class StorageRef {
  constructor(
    readonly key: string,
    /** torch's storage class name ('FloatStorage'), read or not. */
    readonly storageClass: string,
    readonly numel: number,
  ) {}
}

class TensorRef {
  constructor(
    readonly storage: StorageRef,
    readonly offset: number,
    readonly size: readonly number[],
    readonly stride: readonly number[],
  ) {}
}

type PyValue = null | boolean | number | bigint | string | PyTuple | PyList | PyDict | PyGlobal | PyOpaque | StorageRef | TensorRef;

function codeRunnerMessage(global: string, path: PthKey[] | undefined): string {
  const where = path === undefined ? 'data.pkl' : path.length === 0 ? 'data.pkl (its root)' : `entry '${pthPath(path)}'`;
  return (
    `${where} refers to ${global}, a function that runs code or touches the system: no checkpoint needs it, so the file is ` +
    'refused (it is not run; open it only if you trust where it came from)'
  );
}

const OPCODE_NAMES: Readonly<Record<number, string>> = {
  0x28: 'MARK',
  0x2e: 'STOP',
  0x30: 'POP',
  0x31: 'POP_MARK',
  0x32: 'DUP',
  0x46: 'FLOAT',
  0x49: 'INT',
  0x4a: 'BININT',
  0x4b: 'BININT1',
  0x4c: 'LONG',
  0x4d: 'BININT2',
  0x4e: 'NONE',
  0x50: 'PERSID',
  0x51: 'BINPERSID',
  0x52: 'REDUCE',
  0x53: 'STRING',
  0x54: 'BINSTRING',
  0x55: 'SHORT_BINSTRING',
  0x56: 'UNICODE',
  0x58: 'BINUNICODE',
  0x61: 'APPEND',
  0x62: 'BUILD',
  0x63: 'GLOBAL',
  0x64: 'DICT',
  0x7d: 'EMPTY_DICT',
  0x65: 'APPENDS',
  0x67: 'GET',
  0x68: 'BINGET',
  0x69: 'INST',
  0x6a: 'LONG_BINGET',
  0x6c: 'LIST',
  0x5d: 'EMPTY_LIST',
  0x6f: 'OBJ',
  0x70: 'PUT',
  0x71: 'BINPUT',
  0x72: 'LONG_BINPUT',
  0x73: 'SETITEM',
  0x74: 'TUPLE',
  0x29: 'EMPTY_TUPLE',
  0x75: 'SETITEMS',
  0x47: 'BINFLOAT',
  0x80: 'PROTO',
  0x81: 'NEWOBJ',
  0x82: 'EXT1',
  0x83: 'EXT2',
  0x84: 'EXT4',
  0x85: 'TUPLE1',
  0x86: 'TUPLE2',
  0x87: 'TUPLE3',
  0x88: 'NEWTRUE',
  0x89: 'NEWFALSE',
  0x8a: 'LONG1',
  0x8b: 'LONG4',
  0x42: 'BINBYTES',
  0x43: 'SHORT_BINBYTES',
  0x8c: 'SHORT_BINUNICODE',
  0x8d: 'BINUNICODE8',
  0x8e: 'BINBYTES8',
  0x8f: 'EMPTY_SET',
  0x90: 'ADDITEMS',
  0x91: 'FROZENSET',
  0x92: 'NEWOBJ_EX',
  0x93: 'STACK_GLOBAL',
  0x94: 'MEMOIZE',
  0x95: 'FRAME',
  0x96: 'BYTEARRAY8',
  0x97: 'NEXT_BUFFER',
  0x98: 'READONLY_BUFFER',
};

/** Opcodes of pickle protocols 2 to 5 for what checkpoints hold: containers, numbers, strings, bytes,
 * globals and calls. (Text-protocol opcodes, which torch.save never writes, stay unsupported.) */
const OP = {
  MARK: 0x28,
  STOP: 0x2e,
  POP: 0x30,
  POP_MARK: 0x31,
  DUP: 0x32,
  BINFLOAT: 0x47,
  BININT: 0x4a,
  BININT1: 0x4b,
  BININT2: 0x4d,
  NONE: 0x4e,
  BINPERSID: 0x51,
  REDUCE: 0x52,
  BINUNICODE: 0x58,
  BINBYTES: 0x42,
  SHORT_BINBYTES: 0x43,
  EMPTY_LIST: 0x5d,
  APPEND: 0x61,
  BUILD: 0x62,
  GLOBAL: 0x63,
  DICT: 0x64,
  APPENDS: 0x65,
  EMPTY_DICT: 0x7d,
  BINGET: 0x68,
  LONG_BINGET: 0x6a,
  LIST: 0x6c,
  BINPUT: 0x71,
  LONG_BINPUT: 0x72,
  SETITEM: 0x73,
  TUPLE: 0x74,
  EMPTY_TUPLE: 0x29,
  SETITEMS: 0x75,
  PROTO: 0x80,
  NEWOBJ: 0x81,
  TUPLE1: 0x85,
  TUPLE2: 0x86,
  TUPLE3: 0x87,
  NEWTRUE: 0x88,
  NEWFALSE: 0x89,
  LONG1: 0x8a,
  LONG4: 0x8b,
  SHORT_BINUNICODE: 0x8c,
  BINUNICODE8: 0x8d,
  BINBYTES8: 0x8e,
  EMPTY_SET: 0x8f,
  ADDITEMS: 0x90,
  FROZENSET: 0x91,
  NEWOBJ_EX: 0x92,
  STACK_GLOBAL: 0x93,
  MEMOIZE: 0x94,
  FRAME: 0x95,
} as const;

const REBUILD_TENSOR = 'torch._utils._rebuild_tensor_v2';
const REBUILD_PARAMETER = 'torch._utils._rebuild_parameter';
const ORDERED_DICT = 'collections.OrderedDict';
/** Integers wider than this many bytes are no checkpoint's (and would cost quadratic time to decode). */
const MAX_LONG_BYTES = 64;
/** Stand-ins for values the VM keeps only as opaque objects. */
const BYTES = new PyGlobal('builtins', 'bytes');
const SET = new PyGlobal('builtins', 'set');

function describe(value: PyValue): string {
  if (value === null) return 'None';
  if (value instanceof PyTuple) return `a tuple of ${value.items.length}`;
  if (value instanceof PyList) return `a list of ${value.items.length}`;
  if (value instanceof PyDict) return 'a dict';
  if (value instanceof PyGlobal) return `the global ${value.qualifiedName}`;
  if (value instanceof PyOpaque) return `an object made by ${value.made.qualifiedName}`;
  if (value instanceof StorageRef) return 'a storage';
  if (value instanceof TensorRef) return 'a tensor';
  return `${typeof value === 'bigint' ? 'int' : typeof value} ${JSON.stringify(typeof value === 'bigint' ? value.toString() : value)}`;
}

interface Pickle {
  readonly root: PyValue;
  /** Code-running globals the pickle names (qualified names). */
  readonly codeRunners: string[];
}

function runPickle(bytes: Uint8Array): Pickle {
  const stack: PyValue[] = [];
  /** Stack heights at each open MARK. */
  const marks: number[] = [];
  const memo = new Map<number, PyValue>();
  const codeRunners: string[] = [];
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  const latin1 = new TextDecoder('latin1');
  let pos = 0;
  let opName = '';

  const where = () => `${opName} at byte ${pos} of data.pkl`;
  const take = (n: number): Uint8Array => {
    if (pos + n > bytes.length) fail(`data.pkl is truncated (${where()} needs ${n} more bytes)`);
    const slice = bytes.subarray(pos, pos + n);
    pos += n;
    return slice;
  };
  const uint = (n: number): number => take(n).reduceRight((acc, b) => acc * 256 + b, 0);
  const line = (): string => {
    const end = bytes.indexOf(0x0a, pos);
    if (end < 0) fail(`data.pkl is truncated (${where()} has no end of line)`);
    return latin1.decode(take(end - pos + 1).subarray(0, -1));
  };
  const text = (n: number) => {
    const raw = take(n);
    try {
      return utf8.decode(raw);
    } catch {
      return fail(`invalid UTF-8 in a string (${where()})`);
    }
  };
  const signed = (digits: Uint8Array): number | bigint => {
    if (digits.length > MAX_LONG_BYTES) fail(`an integer of ${digits.length} bytes (${where()}); at most ${MAX_LONG_BYTES} are read`);
    const value = BigInt.asIntN(
      Math.max(digits.length * 8, 1),
      digits.reduceRight((acc, b) => (acc << 8n) | BigInt(b), 0n),
    );
    return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
  };
  const pop = (): PyValue => {
    if (stack.length === 0 || (marks.length > 0 && marks[marks.length - 1] === stack.length)) fail(`stack underflow (${where()})`);
    return stack.pop() as PyValue;
  };
  const top = (): PyValue => {
    const value = pop();
    stack.push(value);
    return value;
  };
  const popToMark = (): PyValue[] => {
    const mark = marks.pop();
    if (mark === undefined) fail(`no MARK to pop to (${where()})`);
    return stack.splice(mark);
  };
  const global = (module: PyValue, name: PyValue): PyGlobal => {
    if (typeof module !== 'string' || typeof name !== 'string')
      fail(`${where()} names ${describe(module)}.${describe(name)}, not a global`);
    const g = new PyGlobal(module, name);
    if (g.runsCode) codeRunners.push(g.qualifiedName);
    return g;
  };
  // Items given to an object the VM does not rebuild (a dict or list subclass, a set) are dropped.
  const setItems = (dict: PyValue, items: PyValue[]) => {
    if (dict instanceof PyOpaque) return;
    if (!(dict instanceof PyDict)) fail(`${where()} sets items on ${describe(dict)}, not on a dict`);
    for (let i = 0; i + 1 < items.length; i += 2) dict.entries.set(items[i], items[i + 1]);
  };
  const append = (list: PyValue, items: PyValue[]) => {
    if (list instanceof PyOpaque) return;
    if (!(list instanceof PyList)) fail(`${where()} appends to ${describe(list)}, not to a list`);
    list.items.push(...items);
  };

  for (;;) {
    const opPos = pos;
    const code = take(1)[0];
    opName = OPCODE_NAMES[code] ?? `0x${code.toString(16).padStart(2, '0')}`;
    switch (code) {
      case OP.PROTO: {
        const protocol = uint(1);
        if (protocol > 5) fail(`unknown pickle protocol ${protocol}`);
        break;
      }
      case OP.FRAME:
        uint(8); // frames only group opcodes for buffered readers
        break;
      case OP.STOP:
        if (stack.length !== 1 || marks.length > 0) fail(`data.pkl stops with ${stack.length} values on the stack instead of 1`);
        return { root: stack[0], codeRunners };
      case OP.MARK:
        marks.push(stack.length);
        break;
      case OP.POP:
        pop();
        break;
      case OP.POP_MARK:
        popToMark();
        break;
      case OP.DUP:
        stack.push(top());
        break;
      case OP.NONE:
        stack.push(null);
        break;
      case OP.NEWTRUE:
        stack.push(true);
        break;
      case OP.NEWFALSE:
        stack.push(false);
        break;
      case OP.BININT1:
        stack.push(uint(1));
        break;
      case OP.BININT2:
        stack.push(uint(2));
        break;
      case OP.BININT:
        stack.push(uint(4) | 0);
        break;
      case OP.LONG1:
        stack.push(signed(take(uint(1))));
        break;
      case OP.LONG4:
        stack.push(signed(take(uint(4))));
        break;
      case OP.BINFLOAT: {
        const raw = take(8);
        stack.push(new DataView(raw.buffer, raw.byteOffset, 8).getFloat64(0, false));
        break;
      }
      case OP.SHORT_BINUNICODE:
        stack.push(text(uint(1)));
        break;
      case OP.BINUNICODE:
        stack.push(text(uint(4)));
        break;
      case OP.BINUNICODE8:
        stack.push(text(uint(8)));
        break;
      case OP.SHORT_BINBYTES:
      case OP.BINBYTES:
      case OP.BINBYTES8:
        take(uint(code === OP.SHORT_BINBYTES ? 1 : code === OP.BINBYTES ? 4 : 8));
        stack.push(new PyOpaque(BYTES));
        break;
      case OP.EMPTY_TUPLE:
        stack.push(new PyTuple([]));
        break;
      case OP.TUPLE1:
      case OP.TUPLE2:
      case OP.TUPLE3: {
        const n = code - OP.TUPLE1 + 1;
        const items: PyValue[] = [];
        for (let i = 0; i < n; i++) items.unshift(pop());
        stack.push(new PyTuple(items));
        break;
      }
      case OP.TUPLE:
        stack.push(new PyTuple(popToMark()));
        break;
      case OP.EMPTY_LIST:
        stack.push(new PyList());
        break;
      case OP.LIST: {
        const list = new PyList();
        list.items.push(...popToMark());
        stack.push(list);
        break;
      }
      case OP.APPEND: {
        const value = pop();
        append(top(), [value]);
        break;
      }
      case OP.APPENDS: {
        const items = popToMark();
        append(top(), items);
        break;
      }
      case OP.EMPTY_DICT:
        stack.push(new PyDict());
        break;
      case OP.DICT: {
        const items = popToMark();
        if (items.length % 2 !== 0) fail(`DICT with an odd number of values (${where()})`);
        const dict = new PyDict();
        setItems(dict, items);
        stack.push(dict);
        break;
      }
      case OP.SETITEM: {
        const value = pop();
        const key = pop();
        setItems(top(), [key, value]);
        break;
      }
      case OP.SETITEMS: {
        const items = popToMark();
        if (items.length % 2 !== 0) fail(`SETITEMS with an odd number of values (${where()})`);
        setItems(top(), items);
        break;
      }
      case OP.EMPTY_SET:
        stack.push(new PyOpaque(SET));
        break;
      case OP.ADDITEMS: {
        popToMark();
        const set = top();
        if (!(set instanceof PyOpaque)) fail(`${where()} adds items to ${describe(set)}, not to a set`);
        break;
      }
      case OP.FROZENSET:
        popToMark();
        stack.push(new PyOpaque(SET));
        break;
      case OP.BINPUT:
        memo.set(uint(1), top());
        break;
      case OP.LONG_BINPUT:
        memo.set(uint(4), top());
        break;
      case OP.MEMOIZE:
        memo.set(memo.size, top());
        break;
      case OP.BINGET:
      case OP.LONG_BINGET: {
        const index = uint(code === OP.BINGET ? 1 : 4);
        if (!memo.has(index)) fail(`memo entry ${index} is not set (${where()})`);
        stack.push(memo.get(index) as PyValue);
        break;
      }
      case OP.GLOBAL:
        stack.push(global(line(), line()));
        break;
      case OP.STACK_GLOBAL: {
        const name = pop();
        stack.push(global(pop(), name));
        break;
      }
      case OP.BINPERSID:
        stack.push(storageFromPersistentId(pop()));
        break;
      case OP.REDUCE: {
        const args = pop();
        const callable = pop();
        stack.push(reduce(callable, args));
        break;
      }
      case OP.NEWOBJ:
      case OP.NEWOBJ_EX: {
        if (code === OP.NEWOBJ_EX) pop(); // keyword arguments
        const args = pop();
        const cls = pop();
        if (!(cls instanceof PyGlobal)) fail(`${where()} instantiates ${describe(cls)}, not a class`);
        if (!(args instanceof PyTuple)) fail(`${where()} passes ${describe(args)} to ${cls.qualifiedName}, not a tuple`);
        stack.push(cls.qualifiedName === ORDERED_DICT ? new PyDict() : new PyOpaque(cls));
        break;
      }
      case OP.BUILD: {
        // Instance state: a state dict's `_metadata` (torch.save(module.state_dict())), an unread object's
        // attributes. Neither is needed, so it is dropped.
        pop();
        const target = top();
        if (!(target instanceof PyDict) && !(target instanceof PyOpaque)) fail(`BUILD of ${describe(target)} is not supported`);
        break;
      }
      default:
        fail(
          code in OPCODE_NAMES
            ? `unsupported pickle opcode ${opName} (0x${code.toString(16)}) at byte ${opPos} of data.pkl`
            : `unknown pickle opcode ${opName} at byte ${opPos} of data.pkl`,
        );
    }
  }
}

function isCount(value: PyValue): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function countsOf(value: PyValue, what: string): number[] {
  if (!(value instanceof PyTuple) || !value.items.every(isCount))
    fail(`tensor ${what} is ${describe(value)}, not a tuple of non-negative integers`);
  return value.items as number[];
}

/** ('storage', torch.XStorage, key, location, numel) -> a reference to `<prefix>/data/<key>`. Storage
 * classes not read are kept by name: a tensor on one is unreadable, not the file. */
function storageFromPersistentId(pid: PyValue): StorageRef {
  if (!(pid instanceof PyTuple) || pid.items.length !== 5 || pid.items[0] !== 'storage')
    fail(`persistent id ${describe(pid)} is not a ('storage', ...) tuple of 5`);
  const [, storageClass, key, location, numel] = pid.items;
  if (!(storageClass instanceof PyGlobal) || storageClass.module !== 'torch' || !storageClass.name.endsWith('Storage'))
    fail(`storage type ${describe(storageClass)} is not a torch storage class`);
  if (typeof key !== 'string' || key === '' || key.includes('/')) fail(`storage key ${describe(key)} is not a plain name`);
  if (typeof location !== 'string') fail(`storage location ${describe(location)} is not a string`);
  if (!isCount(numel)) fail(`storage size ${describe(numel)} is not a non-negative integer`);
  return new StorageRef(key, storageClass.name, numel);
}

/** A call: the whitelisted reconstructors are interpreted; anything else gives an opaque object. */
function reduce(callable: PyValue, args: PyValue): PyValue {
  if (callable instanceof PyOpaque) return new PyOpaque(callable.made);
  if (!(callable instanceof PyGlobal)) fail(`REDUCE calls ${describe(callable)}, not a global`);
  if (!(args instanceof PyTuple)) fail(`REDUCE passes ${describe(args)} to ${callable.qualifiedName}, not a tuple`);
  const a = args.items;
  switch (callable.qualifiedName) {
    case ORDERED_DICT:
      if (a.length !== 0) fail(`${ORDERED_DICT} called with ${a.length} arguments; torch.save passes none`);
      return new PyDict();
    case REBUILD_TENSOR: {
      // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
      if (a.length !== 6 && a.length !== 7) fail(`${REBUILD_TENSOR} called with ${a.length} arguments, expected 6 or 7`);
      const [storage, offset] = a;
      if (!(storage instanceof StorageRef)) fail(`${REBUILD_TENSOR} gets ${describe(storage)}, not a storage`);
      if (!isCount(offset)) fail(`tensor storage offset ${describe(offset)} is not a non-negative integer`);
      const size = countsOf(a[2], 'size');
      const stride = countsOf(a[3], 'stride');
      if (size.length !== stride.length) fail(`tensor size [${size.join(', ')}] and stride [${stride.join(', ')}] differ in length`);
      return new TensorRef(storage, offset, size, stride);
    }
    case REBUILD_PARAMETER:
      // (data, requires_grad, backward_hooks): an nn.Parameter is its tensor here.
      if (a.length !== 3 || !(a[0] instanceof TensorRef)) fail(`${REBUILD_PARAMETER} called without a tensor`);
      return a[0];
    default:
      return new PyOpaque(callable);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Writing

/** Builds a protocol-2 pickle the way Python's pickler writes torch.save's objects. */
class PickleWriter {
  private readonly bytes: number[] = [];

  op(code: number): this {
    this.bytes.push(code);
    return this;
  }

  uint(value: number, size: number): this {
    for (let i = 0; i < size; i++) this.bytes.push(Math.floor(value / 256 ** i) % 256);
    return this;
  }

  /** A non-negative integer (all torch.save needs: sizes, strides, offsets), in Python's smallest encoding. */
  count(value: number): this {
    if (value < 0x100) return this.op(OP.BININT1).uint(value, 1);
    if (value < 0x10000) return this.op(OP.BININT2).uint(value, 2);
    if (value < 0x80000000) return this.op(OP.BININT).uint(value, 4);
    // LONG1: little-endian two's complement, one byte more when the top bit would read as a sign.
    let length = 1;
    while (256 ** length <= value) length++;
    if (Math.floor(value / 256 ** (length - 1)) >= 0x80) length++;
    return this.op(OP.LONG1).uint(length, 1).uint(value, length);
  }

  string(value: string): this {
    const utf8 = Buffer.from(value, 'utf8');
    return this.op(OP.BINUNICODE).uint(utf8.length, 4).raw(utf8);
  }

  global(module: string, name: string): this {
    return this.op(OP.GLOBAL).raw(Buffer.from(`${module}\n${name}\n`, 'latin1'));
  }

  tuple(build: () => void, length: number): this {
    if (length === 0) return this.op(OP.EMPTY_TUPLE);
    if (length > 3) this.op(OP.MARK);
    build();
    return this.op(length > 3 ? OP.TUPLE : OP.TUPLE1 + length - 1);
  }

  intTuple(values: readonly number[]): this {
    return this.tuple(() => {
      for (const v of values) this.count(v);
    }, values.length);
  }

  emptyOrderedDict(): this {
    return this.global('collections', 'OrderedDict').op(OP.EMPTY_TUPLE).op(OP.REDUCE);
  }

  raw(values: ArrayLike<number>): this {
    for (let i = 0; i < values.length; i++) this.bytes.push(values[i]);
    return this;
  }

  result(): Uint8Array {
    return Uint8Array.from(this.bytes);
  }
}

/** torch's contiguous strides (a size-0 dimension counts as 1, as in torch). */
function contiguousStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let step = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    strides[d] = step;
    step *= Math.max(shape[d], 1);
  }
  return strides;
}

function checkTensor(key: string, t: PthTensor): void {
  const info = DTYPES[t.dtype];
  if (info === undefined) fail(`tensor '${key}': unsupported dtype '${String(t.dtype)}' (supported: ${Object.keys(DTYPES).join(', ')})`);
  if (!(t.data instanceof info.array)) fail(`tensor '${key}': dtype ${t.dtype} needs its data in a ${info.array.name}`);
  if (!t.shape.every((n) => Number.isSafeInteger(n) && n >= 0))
    fail(`tensor '${key}': shape [${t.shape.join(', ')}] is not a list of non-negative integers`);
  const numel = t.shape.reduce((a, b) => a * b, 1);
  if (numel !== t.data.length) fail(`tensor '${key}': shape [${t.shape.join(', ')}] holds ${numel} elements but data has ${t.data.length}`);
}

/** The bytes of a torch.save zip file holding `tensors` as an OrderedDict, in their order. */
export function serializePth(tensors: ReadonlyMap<string, PthTensor>, name = 'serializePth'): Uint8Array {
  return withFileName(name, () => {
    requireLittleEndianHost();
    const pickle = new PickleWriter().op(OP.PROTO).uint(2, 1).emptyOrderedDict().op(OP.MARK);
    const storages: Array<[string, Uint8Array]> = [];
    for (const [key, t] of tensors) {
      checkTensor(key, t);
      const storageKey = String(storages.length);
      storages.push([storageKey, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)]);
      pickle.string(key).global('torch._utils', '_rebuild_tensor_v2');
      pickle.tuple(() => {
        pickle.tuple(
          () => pickle.string('storage').global('torch', DTYPES[t.dtype].storage).string(storageKey).string('cpu').count(t.data.length),
          5,
        );
        pickle.op(OP.BINPERSID).count(0).intTuple(t.shape).intTuple(contiguousStrides(t.shape)).op(OP.NEWFALSE).emptyOrderedDict();
      }, 6);
      pickle.op(OP.REDUCE);
    }
    pickle.op(OP.SETITEMS).op(OP.STOP);
    const entries: Array<[string, Uint8Array]> = [
      [`${ARCHIVE_PREFIX}/data.pkl`, pickle.result()],
      [`${ARCHIVE_PREFIX}/byteorder`, Buffer.from('little', 'latin1')],
      ...storages.map(([key, bytes]): [string, Uint8Array] => [`${ARCHIVE_PREFIX}/data/${key}`, bytes]),
      [`${ARCHIVE_PREFIX}/version`, Buffer.from(FORMAT_VERSION, 'latin1')],
    ];
    return zipSync(alignedZippable(entries), { level: 0, mtime: ENTRY_MTIME });
  });
}

/** Adds to each entry a padding extra field so that its data starts at a multiple of DATA_ALIGNMENT.
 * fflate lays entries out back to back, each a 30-byte local header, the name, the extra fields, the data. */
function alignedZippable(entries: ReadonlyArray<readonly [string, Uint8Array]>): Zippable {
  const zippable: Zippable = {};
  let offset = 0;
  for (const [name, data] of entries) {
    const headerBytes = 30 + Buffer.byteLength(name, 'utf8') + 4;
    const padding = (DATA_ALIGNMENT - ((offset + headerBytes) % DATA_ALIGNMENT)) % DATA_ALIGNMENT;
    zippable[name] = [data, { extra: { [PADDING_FIELD_ID]: new Uint8Array(padding).fill(PADDING_BYTE) } }];
    offset += headerBytes + padding + data.length;
  }
  return zippable;
}

/** Writes `tensors` as a torch.save file that torch.load reads back as an OrderedDict. Atomic: the file is
 * either replaced whole or left as it was. */
export function writePth(file: string, tensors: ReadonlyMap<string, PthTensor>): void {
  writeFileAtomic(file, serializePth(tensors, file));
}

/** Writes a temporary file beside `file`, flushes it to disk, then renames it over `file`. */
export function writeFileAtomic(file: string, bytes: Uint8Array): void {
  const temp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    const fd = fs.openSync(temp, 'wx');
    try {
      let written = 0;
      while (written < bytes.length) written += fs.writeSync(fd, bytes, written, bytes.length - written);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(temp, file);
  } catch (e) {
    fs.rmSync(temp, { force: true });
    throw writeError(file, temp, e as NodeJS.ErrnoException);
  }
}

/** An error naming the file the caller asked for, not the temporary file it is written through; the
 * errno code stays (callers may act on ENOSPC). */
function writeError(file: string, temp: string, e: NodeJS.ErrnoException): Error {
  const dir = path.dirname(file);
  const reason =
    e.code === 'ENOENT' && !fs.existsSync(dir)
      ? `the folder ${dir} does not exist`
      : e.code === 'EISDIR'
        ? 'it is a folder'
        : e.message.split(temp).join(file);
  return Object.assign(new Error(`${file}: cannot write it: ${reason}`), { code: e.code });
}
