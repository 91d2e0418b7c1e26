import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp, { type Sharp } from 'sharp';
import { DataFormatError, loadImageFolder, type ImageDataset, type ImageFolderOptions } from '../lib/data';

let root: string;
/** The well-formed folder most tests read: classes blue, gradient, red, plus entries that must be ignored. */
let good: string;

function solid(width: number, height: number, r: number, g: number, b: number): Sharp {
  return sharp({ create: { width, height, channels: 3, background: { r, g, b } } });
}

/** A grey image whose value is 4 * x in column x (0 to 252). */
function horizontalGradient(width: number, height: number): Sharp {
  const pixels = Buffer.alloc(width * height);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) pixels[y * width + x] = 4 * x;
  return sharp(pixels, { raw: { width, height, channels: 1 } });
}

async function write(file: string, image: Sharp | Buffer | string): Promise<void> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  if (typeof image === 'string' || Buffer.isBuffer(image)) fs.writeFileSync(file, image);
  else await image.toFile(file);
}

beforeAll(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'repopt-folder-'));
  good = path.join(root, 'good');
  await write(path.join(good, 'blue', 'tall.jpg'), solid(20, 40, 0, 0, 255).jpeg({ quality: 95 }));
  await write(path.join(good, 'blue', '.DS_Store'), 'not an image, but hidden');
  await write(path.join(good, 'gradient', 'wide.png'), horizontalGradient(64, 32).png());
  // A one-channel PNG in a nested folder: still class 'gradient', and grey comes out as R = G = B.
  await write(
    path.join(good, 'gradient', 'nested', 'grey.png'),
    sharp(Buffer.alloc(30 * 30, 200), { raw: { width: 30, height: 30, channels: 1 } }).png(),
  );
  // Half-transparent red: alpha is dropped, not blended with a background.
  await write(
    path.join(good, 'red', 'translucent.png'),
    sharp({ create: { width: 40, height: 20, channels: 4, background: { r: 255, g: 0, b: 0, alpha: 0.5 } } }).png(),
  );
  await write(path.join(good, '.hidden-class', 'x.png'), solid(4, 4, 0, 255, 0).png());
  await write(path.join(good, 'README.txt'), 'files beside the class folders are not classes');
});
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

/** Channel c of image i, as a height x width array of rows. */
function plane(ds: ImageDataset, i: number, c: number): number[][] {
  const size = ds.height * ds.width;
  const start = (i * ds.channels + c) * size;
  return Array.from({ length: ds.height }, (_, y) => Array.from(ds.images.subarray(start + y * ds.width, start + (y + 1) * ds.width)));
}

/** Every pixel of image i within `tolerance` of `colour` (one value per channel). */
function expectSolid(ds: ImageDataset, i: number, colour: readonly number[], tolerance: number): void {
  colour.forEach((value, c) => {
    for (const row of plane(ds, i, c)) for (const v of row) expect(Math.abs(v - value)).toBeLessThanOrEqual(tolerance);
  });
}

/** Every row of every channel of image i within 4 of `expectedRow`. */
function expectColumns(ds: ImageDataset, i: number, expectedRow: readonly number[]): void {
  for (let c = 0; c < ds.channels; c++) {
    for (const row of plane(ds, i, c))
      row.forEach((v, x) => {
        expect(Math.abs(v - expectedRow[x])).toBeLessThanOrEqual(4);
      });
  }
}

async function loadError(dir: string, options: ImageFolderOptions = { height: 8, width: 8 }): Promise<DataFormatError> {
  const err = await loadImageFolder(dir, options).then(
    () => new Error('expected loadImageFolder to reject'),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(DataFormatError);
  return err as DataFormatError;
}

describe('image folders that are well formed', () => {
  test('classes and files in name order, nested files included, hidden entries and loose files skipped, RGB', async () => {
    const ds = await loadImageFolder(good, { height: 16, width: 16 });
    expect(ds.name).toBe('good');
    expect(ds.classNames).toEqual(['blue', 'gradient', 'red']);
    expect([ds.count, ds.channels, ds.height, ds.width, ds.numClasses]).toEqual([4, 3, 16, 16, 3]);
    // torchvision's order: a folder's own files before its sub-folders' (blue/tall.jpg, gradient/wide.png,
    // gradient/nested/grey.png, red/translucent.png).
    expect(Array.from(ds.labels)).toEqual([0, 1, 1, 2]);
    expect(ds.images.length).toBe(4 * 3 * 16 * 16);
    expectSolid(ds, 0, [0, 0, 255], 8);
    // 64x32 scaled by 1/2 to cover 16x16, then columns 8..23 of the 32 kept: column j is original x = 16.5 + 2j.
    expectColumns(
      ds,
      1,
      Array.from({ length: 16 }, (_, j) => 4 * (16.5 + 2 * j)),
    );
    expectSolid(ds, 2, [200, 200, 200], 1);
    expectSolid(ds, 3, [255, 0, 0], 1);
  });

  test('a wide target scales without cropping when the aspect ratios match', async () => {
    const ds = await loadImageFolder(good, { height: 8, width: 16 });
    expect(plane(ds, 0, 0)).toHaveLength(8);
    expectColumns(
      ds,
      1,
      Array.from({ length: 16 }, (_, j) => 4 * (1.5 + 4 * j)),
    );
  });

  test('a tall target crops the centre columns', async () => {
    const ds = await loadImageFolder(good, { height: 16, width: 8 });
    // 64x32 scaled by 1/2 to 32x16 covers 8x16; columns 12..19 kept: column j is original x = 24.5 + 2j.
    expectColumns(
      ds,
      1,
      Array.from({ length: 8 }, (_, j) => 4 * (24.5 + 2 * j)),
    );
  });

  test('greyscale is Rec. 601 luma, as PIL computes it', async () => {
    const ds = await loadImageFolder(good, { height: 12, width: 12, channels: 1, name: 'grey' });
    expect(ds.name).toBe('grey');
    expect(ds.channels).toBe(1);
    expect(ds.images.length).toBe(4 * 12 * 12);
    expectSolid(ds, 0, [29], 3); // blue: 0.114 * 255
    expectSolid(ds, 2, [200], 1);
    expectSolid(ds, 3, [76], 1); // red: 0.299 * 255
  });

  test('one decoder at a time gives the same bytes as several', async () => {
    const serial = await loadImageFolder(good, { height: 10, width: 10, concurrency: 1 });
    const parallel = await loadImageFolder(good, { height: 10, width: 10, concurrency: 4 });
    expect(Buffer.from(serial.images).equals(Buffer.from(parallel.images))).toBe(true);
    expect(Array.from(serial.labels)).toEqual(Array.from(parallel.labels));
  });

  test('options that make no sense', async () => {
    await expect(loadImageFolder(good, { height: 0, width: 8 })).rejects.toThrow(RangeError);
    await expect(loadImageFolder(good, { height: 8, width: 8.5 })).rejects.toThrow(RangeError);
    await expect(loadImageFolder(good, { height: 8, width: 8, concurrency: 0 })).rejects.toThrow(RangeError);
  });
});

describe('image folders that are malformed', () => {
  test('a file that is not an image fails the load, naming it', async () => {
    const dir = path.join(root, 'undecodable');
    await write(path.join(dir, 'cats', 'a.png'), solid(8, 8, 10, 20, 30).png());
    await write(path.join(dir, 'cats', 'notes.jpg'), 'this is text');
    await write(path.join(dir, 'dogs', 'b.png'), solid(8, 8, 30, 20, 10).png());
    const err = await loadError(dir);
    expect(err.message).toMatch(/^cats\/notes\.jpg: cannot decode: /);
    expect(err.file).toBe(path.join(dir, 'cats', 'notes.jpg'));
    expect(err.offset).toBeUndefined();
  });

  test('a FIFO among the images fails the load at once, naming it (the decoder would wait on it forever)', async () => {
    const dir = path.join(root, 'fifo');
    await write(path.join(dir, 'cats', 'a.png'), solid(8, 8, 10, 20, 30).png());
    execFileSync('mkfifo', [path.join(dir, 'cats', 'b.png')]);
    const err = await loadError(dir);
    expect(err.message).toBe('cats/b.png: not a regular file (a device, FIFO or socket)');
    expect(err.file).toBe(path.join(dir, 'cats', 'b.png'));
  });

  test('a truncated PNG fails the load, naming it', async () => {
    const dir = path.join(root, 'truncated');
    const png = await solid(64, 64, 1, 2, 3).png({ compressionLevel: 0 }).toBuffer();
    await write(path.join(dir, 'only', 'cut.png'), png.subarray(0, png.length >> 1));
    const err = await loadError(dir);
    expect(err.message).toMatch(/^only\/cut\.png: cannot decode: /);
  });

  test('an empty folder', async () => {
    const dir = path.join(root, 'empty');
    fs.mkdirSync(dir);
    const err = await loadError(dir);
    expect(err.message).toBe(`${dir}: no class sub-folders (expected one folder of images per class)`);
    expect(err.file).toBe(dir);
  });

  test('a class folder holding only hidden files', async () => {
    const dir = path.join(root, 'hollow');
    await write(path.join(dir, 'full', 'a.png'), solid(8, 8, 0, 0, 0).png());
    await write(path.join(dir, 'hollow', '.keep'), '');
    const err = await loadError(dir);
    expect(err.message).toBe('hollow/: no images in class folder');
    expect(err.file).toBe(path.join(dir, 'hollow'));
  });

  test('a folder that is not there', async () => {
    const dir = path.join(root, 'absent');
    expect((await loadError(dir)).message).toMatch(new RegExp(`^${dir}: cannot list: ENOENT`));
  });
});
