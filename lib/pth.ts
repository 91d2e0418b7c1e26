// PyTorch `torch.save` files (the zip format of PyTorch >= 1.6) holding a flat dict of tensors, read and
// written without Python: a small pickle VM for the opcodes torch.save emits for a state dict, and the zip
// container (read here with every header cross-checked and every entry's CRC-32 verified; written by fflate).
//
// Layout of such a file: `<prefix>/data.pkl` (pickle protocol 2 of an OrderedDict whose values are
// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)` calls, each storage a
// persistent id ('storage', torch.XStorage, key, location, numel)), `<prefix>/data/<key>` (raw little-endian
// storage bytes), `<prefix>/version`.
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
const SUPPORTED_STORAGES = [...DTYPE_BY_STORAGE.keys()].map((s) => `torch.${s}`).join(', ');

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

/** Parses the bytes of a torch.save zip file holding a flat dict of tensors. `name` appears in errors. */
export function parsePth(bytes: Uint8Array, name: string): Map<string, PthTensor> {
  return withFileName(name, () => {
    requireLittleEndianHost();
    const entries = readZipEntries(bytes);
    const pickleNames = [...entries.stored.keys(), ...entries.compressed.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n));
    if (pickleNames.length === 0) fail("missing data.pkl: no '<prefix>/data.pkl' entry, so this zip is not a torch.save file");
    if (pickleNames.length > 1) fail(`several data.pkl entries (${pickleNames.join(', ')})`);
    const prefix = pickleNames[0].slice(0, -'/data.pkl'.length);
    const root = runPickle(entries.get(pickleNames[0]));
    return materialiseDict(root, new StorageLoader(entries, prefix));
  });
}

/** Reads a torch.save zip file holding a flat dict (dict or OrderedDict) of tensors. */
export function readPth(file: string): Map<string, PthTensor> {
  return parsePth(readInputFile(file, '.pth file'), file);
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

/** Reads each storage entry once, typed by the storage class that refers to it. */
class StorageLoader {
  private readonly loaded = new Map<string, { dtype: PthDtype; numel: number; bytes: Uint8Array }>();

  constructor(
    private readonly entries: ZipEntries,
    private readonly prefix: string,
  ) {}

  load(ref: StorageRef): Uint8Array {
    const previous = this.loaded.get(ref.key);
    if (previous) {
      if (previous.dtype !== ref.dtype || previous.numel !== ref.numel) {
        fail(`storage '${ref.key}' is referred to as ${previous.numel} ${previous.dtype} and as ${ref.numel} ${ref.dtype} elements`);
      }
      return previous.bytes;
    }
    const entryName = `${this.prefix}/data/${ref.key}`;
    const bytes = this.entries.get(entryName);
    const needed = ref.numel * DTYPES[ref.dtype].array.BYTES_PER_ELEMENT;
    if (bytes.length < needed)
      fail(`storage entry '${entryName}' has ${bytes.length} bytes, too short for ${ref.numel} ${ref.dtype} elements (${needed} bytes)`);
    this.loaded.set(ref.key, { dtype: ref.dtype, numel: ref.numel, bytes });
    return bytes;
  }
}

function materialiseDict(root: PyValue, storages: StorageLoader): Map<string, PthTensor> {
  if (!(root instanceof PyDict)) fail(`data.pkl holds ${describe(root)}, not a dict of tensors`);
  const out = new Map<string, PthTensor>();
  for (const [key, value] of root.entries) {
    if (typeof key !== 'string') fail(`dict key ${describe(key)} is not a string`);
    if (!(value instanceof TensorRef)) fail(`entry '${key}' is ${describe(value)}, not a tensor`);
    out.set(key, materialiseTensor(key, value, storages.load(value.storage)));
  }
  return out;
}

/** Copies a (possibly strided, offset) view of a storage into a fresh contiguous tensor. */
function materialiseTensor(key: string, ref: TensorRef, storageBytes: Uint8Array): PthTensor {
  const { dtype, numel: storageNumel } = ref.storage;
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
  const itemSize = DTYPES[dtype].array.BYTES_PER_ELEMENT;
  let bytes: Uint8Array;
  if (isContiguous(size, stride)) {
    bytes = storageBytes.slice(offset * itemSize, (offset + numel) * itemSize);
  } else {
    // Gather whole elements as integers (never through floats, which could alter NaN payloads).
    const wordBytes = itemSize === 1 ? 1 : 4;
    const source = wordBytes === 1 ? storageBytes : uint32View(storageBytes);
    const target = wordBytes === 1 ? new Uint8Array(numel) : new Uint32Array((numel * itemSize) / 4);
    gatherStrided(source, target, itemSize / wordBytes, size, stride, offset);
    bytes = new Uint8Array(target.buffer);
  }
  return { dtype, shape: [...size], data: new DTYPES[dtype].array(bytes.buffer as ArrayBuffer, bytes.byteOffset, numel) };
}

/** The bytes as 32-bit words (copied first when they do not start at a 4-byte-aligned address). */
function uint32View(bytes: Uint8Array): Uint32Array {
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  return new Uint32Array(aligned.buffer, aligned.byteOffset, Math.floor(aligned.length / 4));
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
  source: Uint8Array | Uint32Array,
  target: Uint8Array | Uint32Array,
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
// The pickle VM: only what torch.save writes for a dict of tensors.

class PyTuple {
  constructor(readonly items: readonly PyValue[]) {}
}

class PyDict {
  readonly entries = new Map<PyValue, PyValue>();
}

class PyGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
  get qualifiedName(): string {
    return `${this.module}.${this.name}`;
  }
}

class StorageRef {
  constructor(
    readonly key: string,
    readonly dtype: PthDtype,
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

type PyValue = null | boolean | number | bigint | string | PyTuple | PyDict | PyGlobal | StorageRef | TensorRef;

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

/** Opcodes written by pickle protocol 2 for what torch.save stores: dicts, tuples, ints, bools, strings, globals. */
const OP = {
  MARK: 0x28,
  STOP: 0x2e,
  BININT: 0x4a,
  BININT1: 0x4b,
  BININT2: 0x4d,
  NONE: 0x4e,
  BINPERSID: 0x51,
  REDUCE: 0x52,
  BINUNICODE: 0x58,
  BUILD: 0x62,
  GLOBAL: 0x63,
  EMPTY_DICT: 0x7d,
  BINGET: 0x68,
  LONG_BINGET: 0x6a,
  BINPUT: 0x71,
  LONG_BINPUT: 0x72,
  SETITEM: 0x73,
  TUPLE: 0x74,
  EMPTY_TUPLE: 0x29,
  SETITEMS: 0x75,
  PROTO: 0x80,
  TUPLE1: 0x85,
  TUPLE2: 0x86,
  TUPLE3: 0x87,
  NEWTRUE: 0x88,
  NEWFALSE: 0x89,
  LONG1: 0x8a,
} as const;

const REBUILD_TENSOR = 'torch._utils._rebuild_tensor_v2';
const REBUILD_PARAMETER = 'torch._utils._rebuild_parameter';
const ORDERED_DICT = 'collections.OrderedDict';

function describe(value: PyValue): string {
  if (value === null) return 'None';
  if (value instanceof PyTuple) return `a tuple of ${value.items.length}`;
  if (value instanceof PyDict) return 'a dict';
  if (value instanceof PyGlobal) return `the global ${value.qualifiedName}`;
  if (value instanceof StorageRef) return 'a storage';
  if (value instanceof TensorRef) return 'a tensor';
  return `${typeof value === 'bigint' ? 'int' : typeof value} ${JSON.stringify(typeof value === 'bigint' ? value.toString() : value)}`;
}

function runPickle(bytes: Uint8Array): PyValue {
  const stack: PyValue[] = [];
  /** Stack heights at each open MARK. */
  const marks: number[] = [];
  const memo = new Map<number, PyValue>();
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
  const setItems = (dict: PyValue, items: PyValue[]) => {
    if (!(dict instanceof PyDict)) fail(`${where()} sets items on ${describe(dict)}, not on a dict`);
    for (let i = 0; i + 1 < items.length; i += 2) dict.entries.set(items[i], items[i + 1]);
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
      case OP.STOP:
        if (stack.length !== 1 || marks.length > 0) fail(`data.pkl stops with ${stack.length} values on the stack instead of 1`);
        return stack[0];
      case OP.MARK:
        marks.push(stack.length);
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
      case OP.LONG1: {
        const digits = take(uint(1));
        const value = BigInt.asIntN(
          digits.length * 8,
          digits.reduceRight((acc, b) => (acc << 8n) | BigInt(b), 0n),
        );
        stack.push(value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value);
        break;
      }
      case OP.BINUNICODE: {
        const raw = take(uint(4));
        try {
          stack.push(utf8.decode(raw));
        } catch {
          fail(`invalid UTF-8 in a string (${where()})`);
        }
        break;
      }
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
      case OP.EMPTY_DICT:
        stack.push(new PyDict());
        break;
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
      case OP.BINPUT:
        memo.set(uint(1), top());
        break;
      case OP.LONG_BINPUT:
        memo.set(uint(4), top());
        break;
      case OP.BINGET:
      case OP.LONG_BINGET: {
        const index = uint(code === OP.BINGET ? 1 : 4);
        if (!memo.has(index)) fail(`memo entry ${index} is not set (${where()})`);
        stack.push(memo.get(index) as PyValue);
        break;
      }
      case OP.GLOBAL:
        stack.push(resolveGlobal(line(), line()));
        break;
      case OP.BINPERSID:
        stack.push(storageFromPersistentId(pop()));
        break;
      case OP.REDUCE: {
        const args = pop();
        const callable = pop();
        stack.push(reduce(callable, args));
        break;
      }
      case OP.BUILD: {
        // torch.save(module.state_dict()) sets the OrderedDict's `_metadata` attribute this way; a flat dict of
        // tensors does not need it, so instance state on dicts is dropped.
        const state = pop();
        const target = top();
        if (!(target instanceof PyDict) || !(state instanceof PyDict))
          fail(`BUILD of ${describe(target)} from ${describe(state)} is not supported`);
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

function resolveGlobal(module: string, name: string): PyGlobal {
  const global = new PyGlobal(module, name);
  if (module === 'torch' && DTYPE_BY_STORAGE.has(name)) return global;
  if (module === 'torch' && name.endsWith('Storage')) fail(`unsupported dtype: torch.${name} (supported: ${SUPPORTED_STORAGES})`);
  if ([ORDERED_DICT, REBUILD_TENSOR, REBUILD_PARAMETER].includes(global.qualifiedName)) return global;
  return fail(`unsupported pickle global ${global.qualifiedName}`);
}

function isCount(value: PyValue): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function countsOf(value: PyValue, what: string): number[] {
  if (!(value instanceof PyTuple) || !value.items.every(isCount))
    fail(`tensor ${what} is ${describe(value)}, not a tuple of non-negative integers`);
  return value.items as number[];
}

/** ('storage', torch.XStorage, key, location, numel) -> a reference to `<prefix>/data/<key>`. */
function storageFromPersistentId(pid: PyValue): StorageRef {
  if (!(pid instanceof PyTuple) || pid.items.length !== 5 || pid.items[0] !== 'storage')
    fail(`persistent id ${describe(pid)} is not a ('storage', ...) tuple of 5`);
  const [, storageClass, key, location, numel] = pid.items;
  if (!(storageClass instanceof PyGlobal) || !DTYPE_BY_STORAGE.has(storageClass.name))
    fail(`storage type ${describe(storageClass)} is not a torch storage class`);
  if (typeof key !== 'string' || key === '' || key.includes('/')) fail(`storage key ${describe(key)} is not a plain name`);
  if (typeof location !== 'string') fail(`storage location ${describe(location)} is not a string`);
  if (!isCount(numel)) fail(`storage size ${describe(numel)} is not a non-negative integer`);
  return new StorageRef(key, DTYPE_BY_STORAGE.get(storageClass.name) as PthDtype, numel);
}

function reduce(callable: PyValue, args: PyValue): PyValue {
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
      return fail(`REDUCE of ${callable.qualifiedName} is not supported`);
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
