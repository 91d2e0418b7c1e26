// Which binary the loader picks (lib/binary.ts), and what it says when libtorch's own libraries are
// incomplete.
import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { chooseBinary, installedLibtorch, libraryDirs } from '../lib/binary';
import { info } from '../lib/runtime';

const root = path.join(__dirname, '..');
const variant = execFileSync(process.execPath, [path.join(root, 'scripts', 'torch-config.js'), 'variant'], { encoding: 'utf8' }).trim();

// Whether this process may make a private mount namespace with an overlay in it.
function overlayWorks(): boolean {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'repopt-overlay-'));
  try {
    for (const d of ['lower', 'upper', 'work', 'merged']) fs.mkdirSync(path.join(dir, d));
    const probe = `mount -t overlay overlay -o lowerdir=${dir}/lower,upperdir=${dir}/upper,workdir=${dir}/work ${dir}/merged`;
    return spawnSync('unshare', ['-m', 'sh', '-c', probe]).status === 0;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe('binary selection', () => {
  test('finds the libtorch the addon runs on, and the prebuild made for it', () => {
    const i = info();
    const here = installedLibtorch();
    const [major, minor] = i.torchVersion.split('.');
    expect(here.map((t) => t.version)).toContain(`${major}.${minor}`);
    expect(here.find((t) => t.version === `${major}.${minor}`)!.cuda).toBe(i.cudaBuild);
    expect(libraryDirs()).toContain(here[0].dir);
    const choice = chooseBinary(root);
    // A source build first (build/Release), then the prebuild for this libtorch (setup.sh --with-prebuild).
    expect(choice.candidates[0]).toMatchObject({ kind: 'source', file: path.join(root, 'build', 'Release', 'repopt.node') });
    const prebuild = choice.candidates.find((c) => c.kind === 'prebuild')!;
    expect(prebuild.prebuild).toMatchObject({ variant, missing: [] });
    expect(prebuild.prebuild!.torchVersion).toBe(i.torchVersion);
    expect(prebuild.prebuild!.needed).toEqual(expect.arrayContaining([`libtorch_cpu.so.${major}.${minor}`, `libc10.so.${major}.${minor}`]));
    expect(prebuild.prebuild!.needed.some((so) => so.startsWith('libtorch_cuda.so'))).toBe(i.cudaBuild);
    expect(variant).toMatch(
      i.cudaBuild ? new RegExp(`^libtorch${major}_${minor}-cuda\\d+_\\d+$`) : new RegExp(`^libtorch${major}_${minor}-cpu$`),
    );
  });

  // A CUDA libtorch whose cuDNN is missing: hidden in a private mount namespace (an overlay over the
  // library directory with libcudnn removed), so nothing outside this one child process changes.
  const cudnn = installedLibtorch().find((t) => t.cuda && fs.existsSync(path.join(t.dir, 'libcudnn.so.9')));
  const canHide = cudnn !== undefined && process.getuid?.() === 0 && overlayWorks();
  (canHide ? test : test.skip)(
    canHide
      ? 'a CUDA libtorch without cuDNN: the load fails with the missing library named'
      : 'a CUDA libtorch without cuDNN — skipped: needs a CUDA libtorch with cuDNN installed, root, and overlay mounts in a private mount namespace (scripts/debian13.sh)',
    () => {
      const dir = cudnn!.dir;
      const work = fs.mkdtempSync(path.join(os.tmpdir(), 'repopt-nocudnn-'));
      try {
        fs.mkdirSync(path.join(work, 'upper'));
        fs.mkdirSync(path.join(work, 'work'));
        const script = [
          `mount -t overlay overlay -o lowerdir=${dir},upperdir=${work}/upper,workdir=${work}/work ${dir}`,
          `rm -f ${dir}/libcudnn.so*`,
          `exec ${process.execPath} -e "require('${path.join(root, 'dist', 'native.js')}').loadNative()"`,
        ].join(' && ');
        const r = spawnSync('unshare', ['-m', 'sh', '-c', script], { encoding: 'utf8' });
        expect(r.signal).toBeNull();
        expect(r.status).toBe(1);
        expect(r.stderr).toContain(`Found here: libtorch ${cudnn!.version} with CUDA in ${dir}`);
        expect(r.stderr).toMatch(/Failed to load: .*repopt\.node: libcudnn\.so\.9: cannot open shared object file.*needs cuDNN/);
        expect(r.stderr).toContain('Ways to fix it:');
      } finally {
        fs.rmSync(work, { recursive: true, force: true });
      }
    },
  );
});
