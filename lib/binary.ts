// Which native binary to load. The package ships one prebuild per libtorch it supports (prebuilds/
// <platform>-<arch>/repopt.<variant>.napi.node, each with a .json manifest naming the shared libraries
// it links); a prebuild is loaded only when every libtorch library it needs is installed, so a binary
// for another libtorch is never dlopen'ed (that would fail or, with a same-named library of another
// ABI, crash). node-gyp-build's tag parser still decides platform, arch, N-API and libc; it cannot tell
// libtorch builds apart, which is what the manifest adds. A source build (build/Release) comes first;
// among prebuilds that can load, the newest libtorch, CUDA before CPU.
import * as fs from 'fs';
import * as path from 'path';
import nodeGypBuild from 'node-gyp-build';

export interface PrebuildManifest {
  /** e.g. 'libtorch2_6-cuda12_4' */
  variant: string;
  /** libtorch's version, e.g. '2.6.0' */
  torchVersion: string;
  /** CUDA version the libtorch was built for, or null (CPU only) */
  cuda: string | null;
  /** Shared libraries of libtorch (and CUDA) the binary links, by soname. */
  needed: string[];
  /** Where it was built, in words (e.g. 'Debian 13, libtorch-cuda-dev 2.6'). */
  builtWith: string;
}

export interface Prebuild extends PrebuildManifest {
  file: string;
  /** Needed libraries that are not installed here (empty: it can load). */
  missing: string[];
}

/** A libtorch found in the dynamic linker's directories. */
export interface FoundLibtorch {
  /** the soname's version, e.g. '1.13' or '2.6' */
  version: string;
  cuda: boolean;
  dir: string;
}

const SYSTEM_DIRS = [
  '/lib/x86_64-linux-gnu',
  '/usr/lib/x86_64-linux-gnu',
  '/lib/aarch64-linux-gnu',
  '/usr/lib/aarch64-linux-gnu',
  '/lib64',
  '/usr/lib64',
  '/lib',
  '/usr/lib',
];

function readConf(file: string, seen: Set<string>, out: string[]): void {
  if (seen.has(file) || !fs.existsSync(file)) return;
  seen.add(file);
  for (const raw of fs.readFileSync(file, 'utf8').split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) continue;
    const include = /^include\s+(.+)$/.exec(line);
    if (!include) {
      out.push(line);
      continue;
    }
    const pattern = path.resolve(path.dirname(file), include[1].trim());
    const dir = path.dirname(pattern);
    const base = new RegExp(
      '^' +
        path
          .basename(pattern)
          .replace(/[.+^${}()|[\]\\]/g, '\\$&')
          .replace(/\*/g, '.*')
          .replace(/\?/g, '.') +
        '$',
    );
    if (!fs.existsSync(dir)) continue;
    for (const f of fs.readdirSync(dir).sort()) if (base.test(f)) readConf(path.join(dir, f), seen, out);
  }
}

/** The directories the dynamic linker searches: LD_LIBRARY_PATH, /etc/ld.so.conf, the defaults. */
export function libraryDirs(): string[] {
  const dirs = (process.env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean);
  readConf('/etc/ld.so.conf', new Set(), dirs);
  // One entry per real directory: with merged /usr, /lib/x86_64-linux-gnu is /usr/lib/x86_64-linux-gnu.
  const seen = new Set<string>();
  return [...dirs, ...SYSTEM_DIRS].filter((d) => {
    if (!fs.existsSync(d)) return false;
    const real = fs.realpathSync(d);
    if (seen.has(real)) return false;
    seen.add(real);
    return true;
  });
}

function findLibrary(soname: string, dirs: string[]): string | undefined {
  return dirs.find((d) => fs.existsSync(path.join(d, soname)));
}

/** Every libtorch whose versioned sonames (libtorch_cpu.so.X.Y) lie in the linker's directories. */
export function installedLibtorch(dirs = libraryDirs()): FoundLibtorch[] {
  const found: FoundLibtorch[] = [];
  for (const dir of dirs) {
    let entries: string[];
    try {
      entries = fs.readdirSync(dir);
    } catch {
      continue; // an unreadable LD_LIBRARY_PATH entry is no libtorch
    }
    for (const f of entries) {
      const m = /^libtorch_cpu\.so\.(\d+\.\d+)$/.exec(f);
      if (m) found.push({ version: m[1], cuda: fs.existsSync(path.join(dir, `libtorch_cuda.so.${m[1]}`)), dir });
    }
  }
  return found;
}

export function describeLibtorch(found: FoundLibtorch[]): string {
  if (found.length === 0) return 'no libtorch shared libraries (libtorch_cpu.so.X.Y) in the linker path';
  return found.map((f) => `libtorch ${f.version} ${f.cuda ? 'with CUDA' : 'CPU only'} in ${f.dir}`).join('; ');
}

function readManifest(file: string): PrebuildManifest | string {
  if (!fs.existsSync(file)) return `has no manifest ${path.basename(file)}`;
  try {
    const m = JSON.parse(fs.readFileSync(file, 'utf8')) as PrebuildManifest;
    if (typeof m.variant !== 'string' || typeof m.torchVersion !== 'string' || !Array.isArray(m.needed))
      return `has a damaged manifest ${path.basename(file)}`;
    return m;
  } catch {
    return `has a damaged manifest ${path.basename(file)}`;
  }
}

// Newer libtorch first, numerically (2.10 after 2.6).
function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) if ((pa[i] ?? 0) !== (pb[i] ?? 0)) return (pb[i] ?? 0) - (pa[i] ?? 0);
  return 0;
}

/** The shipped prebuilds for this platform, each with the libraries it would miss here: those that
 * can load first, then the newest libtorch, then CUDA before CPU. `unusable` gets one line per binary
 * passed over for its manifest. */
export function prebuilds(packageRoot: string, dirs = libraryDirs(), unusable: string[] = []): Prebuild[] {
  const dir = path.join(packageRoot, 'prebuilds', `${process.platform}-${process.arch}`);
  if (!fs.existsSync(dir)) return [];
  const fits = nodeGypBuild.matchTags('node', process.versions.modules);
  const out: Prebuild[] = [];
  for (const f of fs.readdirSync(dir).sort()) {
    const tags = nodeGypBuild.parseTags(f);
    if (!tags || !fits(tags)) continue;
    const manifest = readManifest(path.join(dir, f.replace(/\.napi.*\.node$|\.node$/, '.json')));
    if (typeof manifest === 'string') {
      unusable.push(`${f} ${manifest}`);
      continue;
    }
    out.push({ ...manifest, file: path.join(dir, f), missing: manifest.needed.filter((so) => !findLibrary(so, dirs)) });
  }
  return out.sort(
    (a, b) =>
      Number(a.missing.length > 0) - Number(b.missing.length > 0) ||
      compareVersions(a.torchVersion, b.torchVersion) ||
      Number(!a.cuda) - Number(!b.cuda),
  );
}

export const HOW_TO_FIX = [
  'Ways to fix it:',
  '  1. install the libtorch a shipped prebuild is for (Debian 12: apt-get install libtorch1.13;',
  '     Debian 13: apt-get install libtorch2.6, or libtorch-cuda-2.6 for CUDA), or',
  '  2. build from source against your libtorch: install its development files (apt-get install libtorch-dev,',
  '     LIBTORCH=/path/to/libtorch, or REPOPT_TORCH=python with a pip PyTorch), then run',
  '     `npx cmake-js compile` in the repopt package folder (needs cmake and a C++17 compiler), or',
  '  3. put the directory of a libtorch a prebuild is for on LD_LIBRARY_PATH (REPOPT_PREBUILD=<variant>',
  '     picks one of several prebuilds that can load).',
].join('\n');

export interface BinaryChoice {
  /** Binaries to try in order: a source build, then the prebuilds that can load here. */
  candidates: { file: string; kind: 'source' | 'prebuild'; prebuild?: Prebuild }[];
  /** Why the others were passed over, one line each. */
  passedOver: string[];
  found: FoundLibtorch[];
}

function missingLine(p: Prebuild): string {
  return (
    `prebuild ${p.variant} (libtorch ${p.torchVersion}${p.cuda ? `, CUDA ${p.cuda}` : ''}) needs ` +
    `${p.missing.join(', ')}, not installed`
  );
}

/** What loadNative() will try. REPOPT_PREBUILD=<variant> asks for one prebuild and nothing else. */
export function chooseBinary(packageRoot: string): BinaryChoice {
  const dirs = libraryDirs();
  const found = installedLibtorch(dirs);
  const passedOver: string[] = [];
  const all = prebuilds(packageRoot, dirs, passedOver);
  const forced = process.env.REPOPT_PREBUILD;
  const candidates: BinaryChoice['candidates'] = [];
  if (forced) {
    const p = all.find((q) => q.variant === forced);
    if (!p) {
      passedOver.push(`REPOPT_PREBUILD=${forced}: no such prebuild (shipped: ${all.map((q) => q.variant).join(', ') || 'none'})`);
    } else if (p.missing.length > 0) {
      passedOver.push(missingLine(p));
    } else {
      candidates.push({ file: p.file, kind: 'prebuild', prebuild: p });
    }
    return { candidates, passedOver, found };
  }
  for (const sub of ['Release', 'Debug']) {
    const file = path.join(packageRoot, 'build', sub, 'repopt.node');
    if (fs.existsSync(file)) candidates.push({ file, kind: 'source' });
  }
  for (const p of all) {
    if (p.missing.length === 0) candidates.push({ file: p.file, kind: 'prebuild', prebuild: p });
    else passedOver.push(missingLine(p));
  }
  return { candidates, passedOver, found };
}
