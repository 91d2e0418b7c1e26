// A folder of encoded images, one sub-folder per class (torchvision's ImageFolder layout), decoded, resized
// and centre-cropped to one size, as ImageNet recipes' eval transform does.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
// sharp: libvips prebuilt for each platform and shipped through npm (no system libraries), decodes JPEG, PNG,
// WebP, TIFF, GIF, AVIF, and resizes with a centre crop on libuv's threads, off the event loop.
import sharp from 'sharp';
import type { ImageDataset } from './dataset';
import { DataFormatError } from './files';

export interface ImageFolderOptions {
  readonly height: number;
  readonly width: number;
  /** 3 (RGB, default) or 1 (greyscale, Rec. 601 luma as PIL computes it); alpha is dropped, not composited. */
  readonly channels?: 1 | 3;
  /** Images decoded at once; default: os.availableParallelism(). */
  readonly concurrency?: number;
  /** Default: the folder's name. */
  readonly name?: string;
}

/** Reads `dir/<class>/**` into memory (listed as listImageFolder does). Each image is scaled so that it covers
 * height x width, then centre-cropped to it; EXIF orientation is ignored, as in PIL-based pipelines. Every file
 * must decode: a bad one fails the load, naming it. For data sets larger than memory, see ImageFolderStream. */
export async function loadImageFolder(dir: string, options: ImageFolderOptions): Promise<ImageDataset> {
  const { height, width, channels = 3, concurrency = os.availableParallelism() } = options;
  for (const [what, value] of [
    ['height', height],
    ['width', width],
    ['concurrency', concurrency],
  ] as const) {
    if (!Number.isInteger(value) || value < 1) throw new RangeError(`loadImageFolder: ${what} ${value} is not a positive integer`);
  }
  if (channels !== 1 && channels !== 3) throw new RangeError(`loadImageFolder: channels ${String(channels)} is not 1 or 3`);

  const { classNames, files, labels: fileLabels } = listImageFolder(dir);

  const imageSize = channels * height * width;
  const images = new Uint8Array(files.length * imageSize);
  let next = 0;
  const decodeRemaining = async (): Promise<void> => {
    while (next < files.length) {
      const i = next++;
      try {
        await decodeInto(files[i], images.subarray(i * imageSize, (i + 1) * imageSize), height, width, channels);
      } catch (e) {
        next = files.length; // the load has failed: the other workers stop taking files
        throw new DataFormatError(files[i], undefined, `${path.relative(dir, files[i])}: cannot decode: ${(e as Error).message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, files.length) }, decodeRemaining));

  return {
    name: options.name ?? path.basename(path.resolve(dir)),
    images,
    labels: fileLabels,
    count: files.length,
    channels,
    height,
    width,
    numClasses: classNames.length,
    classNames,
  };
}

/** The files of an image folder and their labels, in torchvision's ImageFolder order. */
export interface ImageFolderListing {
  readonly classNames: string[];
  readonly files: string[];
  readonly labels: Int32Array;
}

/** Lists `dir/<class>/**` (hidden entries skipped; class k is the k-th folder in code-unit order). A folder
 * without class sub-folders, a class folder without files, or a FIFO / device among them is an error naming it. */
export function listImageFolder(dir: string): ImageFolderListing {
  const classNames = listClasses(dir);
  const files: string[] = [];
  const labels: number[] = [];
  classNames.forEach((className, label) => {
    const classFiles = listFilesUnder(path.join(dir, className));
    if (classFiles.length === 0)
      throw new DataFormatError(path.join(dir, className), undefined, `${className}/: no images in class folder`);
    for (const file of classFiles) {
      files.push(file);
      labels.push(label);
    }
  });
  return { classNames, files, labels: Int32Array.from(labels) };
}

function isHidden(name: string): boolean {
  return name.startsWith('.');
}

function byCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The sorted names of the visible sub-folders of `dir` (symbolic links followed); files beside them are ignored. */
function listClasses(dir: string): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (e) {
    throw new DataFormatError(dir, undefined, `${dir}: cannot list: ${(e as Error).message}`);
  }
  const classes = names.filter((name) => !isHidden(name) && fs.statSync(path.join(dir, name)).isDirectory()).sort(byCodeUnits);
  if (classes.length === 0)
    throw new DataFormatError(dir, undefined, `${dir}: no class sub-folders (expected one folder of images per class)`);
  return classes;
}

/** Every visible file below `folder`, at any depth, in torchvision's order: folders sorted by path, the files
 * of each sorted by name (so that subsets taken by index match PyTorch runs on the same folder). */
function listFilesUnder(folder: string): string[] {
  const folders: { readonly folder: string; readonly files: string[] }[] = [];
  const walk = (current: string): void => {
    const files: string[] = [];
    folders.push({ folder: current, files });
    for (const name of fs.readdirSync(current).filter((entry) => !isHidden(entry))) {
      const entry = path.join(current, name);
      const stat = fs.statSync(entry);
      if (stat.isDirectory()) walk(entry);
      // A FIFO or device would block or never end the decoder.
      else if (stat.isFile()) files.push(entry);
      else
        throw new DataFormatError(
          entry,
          undefined,
          `${path.join(path.basename(folder), path.relative(folder, entry))}: not a regular file (a device, FIFO or socket)`,
        );
    }
  };
  walk(folder);
  folders.sort((a, b) => byCodeUnits(a.folder, b.folder));
  return folders.flatMap(({ files }) => files.sort(byCodeUnits));
}

/** Decodes `file`, fits it to height x width, and writes it to `out` as CHW bytes. */
async function decodeInto(file: string, out: Uint8Array, height: number, width: number, channels: 1 | 3): Promise<void> {
  // Always decoded to RGB: libvips's own greyscale is L* (red becomes 127), PIL's and torchvision's is Rec. 601
  // luma (red becomes 76), which we compute below.
  const { data, info } = await sharp(file)
    .resize(width, height, { fit: 'cover', position: 'centre' })
    .removeAlpha()
    .toColourspace('srgb')
    .raw()
    .toBuffer({ resolveWithObject: true });
  const plane = height * width;
  if (info.channels !== 3 || info.width !== width || info.height !== height || data.length !== 3 * plane) {
    throw new Error(`decoded to ${info.channels}x${info.height}x${info.width} (${data.length} bytes), not 3x${height}x${width}`);
  }
  if (channels === 1) {
    // PIL's Image.convert('L') arithmetic: 16-bit fixed-point weights 0.299, 0.587, 0.114, rounded.
    for (let p = 0, from = 0; p < plane; p++, from += 3) {
      out[p] = (data[from] * 19595 + data[from + 1] * 38470 + data[from + 2] * 7471 + 0x8000) >> 16;
    }
    return;
  }
  for (let c = 0; c < 3; c++) {
    for (let p = 0, from = c; p < plane; p++, from += 3) out[c * plane + p] = data[from];
  }
}
