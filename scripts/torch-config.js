#!/usr/bin/env node
'use strict';
// libtorch discovery shared by CMakeLists.txt and binding.gyp, so both build descriptions agree on
// which libtorch they use. Order: LIBTORCH=<dir>, a Python whose `import torch` works
// (REPOPT_TORCH=python forces it), Debian's system libtorch. REPOPT_TORCH=libtorch|python|system forces one.
//
//   node scripts/torch-config.js json            full description (used by CMake)
//   node scripts/torch-config.js variant         the prebuild variant name (libtorch2_6-cuda12_4)
//   node scripts/torch-config.js <field>         one gyp list: includes | libdirs | libs | ldflags | defines | sources
const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');

const SYSTEM_CONFIG_DIRS = ['/usr/lib/x86_64-linux-gnu/cmake/Torch', '/usr/lib/aarch64-linux-gnu/cmake/Torch', '/usr/lib/cmake/Torch'];
const SYSTEM_LIB_DIRS = new Set(['/usr/lib', '/usr/lib64', '/lib', '/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu']);

const HOW_TO =
  'repopt: no libtorch found. Provide one of:\n' +
  '  1. LIBTORCH=/path/to/libtorch        (an unpacked libtorch tree with include/ and lib/)\n' +
  '  2. REPOPT_TORCH=python               (a python3 whose `import torch` works; PYTHON=/path/to/python to pick one)\n' +
  '  3. Debian/Ubuntu system libtorch:     apt-get install libtorch-dev';

class DiscoveryError extends Error {}

function fromTree(source, root, cmakePrefix, cxx11abi) {
  const lib = path.join(root, 'lib');
  if (!fs.existsSync(path.join(root, 'include', 'torch')) || !fs.existsSync(lib)) {
    throw new DiscoveryError(`repopt: ${source} points at ${root}, which has no include/torch and lib/ (not a libtorch tree)`);
  }
  const has = (name) => fs.existsSync(path.join(lib, `lib${name}.so`));
  const libs = ['torch', 'torch_cpu', 'c10'].concat(has('torch_cuda') ? ['torch_cuda', 'c10_cuda'] : []);
  return {
    source,
    root,
    cmakePrefixPath: cmakePrefix,
    includeDirs: [path.join(root, 'include'), path.join(root, 'include', 'torch', 'csrc', 'api', 'include')],
    libDir: lib,
    libs,
    cuda: has('torch_cuda'),
    cxx11abi,
  };
}

function abiFromLibrary(root) {
  // A libtorch zip states its C++ ABI in TorchConfig.cmake (TORCH_CXX_FLAGS).
  const cfg = path.join(root, 'share', 'cmake', 'Torch', 'TorchConfig.cmake');
  if (fs.existsSync(cfg)) {
    const m = /_GLIBCXX_USE_CXX11_ABI=([01])/.exec(fs.readFileSync(cfg, 'utf8'));
    if (m) return m[1] === '1';
  }
  return true;
}

function fromLibtorchEnv(dir) {
  const root = path.resolve(dir);
  return fromTree('LIBTORCH', root, path.join(root, 'share', 'cmake'), abiFromLibrary(root));
}

function fromPython(required) {
  const python = process.env.PYTHON || 'python3';
  let out;
  try {
    out = execFileSync(
      python,
      [
        '-c',
        'import json,os,torch,torch.utils;print(json.dumps([os.path.dirname(torch.__file__),torch.utils.cmake_prefix_path,bool(torch._C._GLIBCXX_USE_CXX11_ABI)]))',
      ],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
    );
  } catch (e) {
    if (required)
      throw new DiscoveryError(
        `repopt: REPOPT_TORCH=python but \`${python} -c "import torch"\` failed:\n${(e.stderr || e.message).toString().trim()}`,
      );
    return null;
  }
  const [root, cmakePrefix, abi] = JSON.parse(out.trim().split('\n').pop());
  if (!fs.existsSync(path.join(cmakePrefix, 'Torch', 'TorchConfig.cmake'))) {
    // Debian's python3-torch has no cmake files; its C++ side is the system libtorch.
    if (required)
      throw new DiscoveryError(`repopt: ${python}'s torch (${root}) ships no TorchConfig.cmake; use the system libtorch instead`);
    return null;
  }
  return fromTree('python', root, cmakePrefix, abi);
}

function fromSystem() {
  const cfg = SYSTEM_CONFIG_DIRS.find((d) => fs.existsSync(path.join(d, 'TorchConfig.cmake')));
  if (!cfg) return null;
  const prefix = path.resolve(cfg, '..', '..', '..', '..');
  const libDir = path.resolve(cfg, '..', '..');
  // Debian's libtorch-cuda-dev installs libtorch_cuda.so next to the CPU libraries.
  const cuda = fs.existsSync(path.join(libDir, 'libtorch_cuda.so'));
  return {
    source: 'system',
    root: prefix,
    cmakePrefixPath: '',
    includeDirs: [path.join(prefix, 'include'), path.join(prefix, 'include', 'torch', 'csrc', 'api', 'include')],
    libDir,
    libs: ['torch', 'torch_cpu', 'c10'].concat(cuda ? ['torch_cuda', 'c10_cuda'] : []),
    cuda,
    cxx11abi: true,
  };
}

// "2.6.0", from the C++ headers (the same number the addon reports at run time).
function torchVersion(t) {
  for (const dir of t.includeDirs) {
    const header = path.join(dir, 'torch', 'version.h');
    if (!fs.existsSync(header)) continue;
    const text = fs.readFileSync(header, 'utf8');
    const part = (name) => (new RegExp(`#define TORCH_VERSION_${name}\\s+(\\d+)`).exec(text) || [])[1];
    if (part('MAJOR')) return `${part('MAJOR')}.${part('MINOR')}.${part('PATCH')}`;
  }
  return null;
}

// CUDA runtime version of a CUDA build ("12.4"), from cuda_runtime_api.h: the toolkit's, or pip's
// nvidia-cuda-runtime package next to torch.
function cudaVersion(t) {
  if (!t.cuda) return null;
  const dir = headerDir(t, 'cuda_runtime_api.h', [path.join(t.root, '..', 'nvidia', 'cuda_runtime', 'include')]);
  if (!dir) return null;
  const m = /#define CUDART_VERSION\s+(\d+)/.exec(fs.readFileSync(path.join(dir, 'cuda_runtime_api.h'), 'utf8'));
  return m ? `${Math.floor(Number(m[1]) / 1000)}.${(Number(m[1]) % 1000) / 10}` : null;
}

// The prebuild variant name of a build against t: 'libtorch1_13-cpu', 'libtorch2_6-cuda12_4'. No dots:
// node-gyp-build splits file names at dots into tags.
function variant(t) {
  const v = (torchVersion(t) || 'unknown').split('.').slice(0, 2).join('_');
  const c = cudaVersion(t);
  return `libtorch${v}-${t.cuda ? `cuda${c ? c.replace('.', '_') : ''}` : 'cpu'}`;
}

function discover() {
  const forced = process.env.REPOPT_TORCH;
  if (forced && !['libtorch', 'python', 'system'].includes(forced)) {
    throw new DiscoveryError(`repopt: REPOPT_TORCH=${forced} is not one of libtorch, python, system\n${HOW_TO}`);
  }
  if (forced === 'libtorch' || (!forced && process.env.LIBTORCH)) {
    if (!process.env.LIBTORCH) throw new DiscoveryError(`repopt: REPOPT_TORCH=libtorch needs LIBTORCH=<dir>\n${HOW_TO}`);
    return fromLibtorchEnv(process.env.LIBTORCH);
  }
  if (forced === 'python') return fromPython(true);
  if (!forced) {
    const py = fromPython(false);
    if (py) return py;
  }
  const sys = fromSystem();
  if (sys) return sys;
  throw new DiscoveryError(HOW_TO);
}

// c10d (native/core/distributed.cc): its headers compile the Gloo process group only under USE_C10D_GLOO
// and NCCL only under USE_C10D_NCCL. Each is defined where its headers are found: gloo's (Debian:
// libgloo-dev; some libtorch trees ship them) and, for CUDA builds, nccl.h (the CUDA toolkit, or pip's
// nvidia-nccl package next to torch). Without them the addon builds and its ProcessGroup says what is
// missing. libtorch itself was built with USE_DISTRIBUTED.
const HEADER_DIRS = ['/usr/include', '/usr/local/include', '/usr/local/cuda/include'];

function headerDir(t, rel, extra = []) {
  return [...t.includeDirs, ...extra, ...HEADER_DIRS].find((d) => fs.existsSync(path.join(d, rel)));
}

function ncclDir(t) {
  return t.cuda ? headerDir(t, 'nccl.h', [path.join(t.root, '..', 'nvidia', 'nccl', 'include')]) : undefined;
}

function distributedDefines(t) {
  return [
    'USE_DISTRIBUTED',
    ...(headerDir(t, path.join('gloo', 'algorithm.h')) ? ['USE_C10D_GLOO'] : []),
    ...(ncclDir(t) ? ['USE_C10D_NCCL'] : []),
  ];
}

// Include directories beyond libtorch's: headers libtorch's own headers include but some
// distributions leave out (native/compat: see there), and nccl.h where it lies apart.
function compatIncludes(t) {
  const missing = t.includeDirs.every(
    (d) => !fs.existsSync(path.join(d, 'torch', 'csrc', 'distributed', 'autograd', 'context', 'context.h')),
  );
  const nccl = ncclDir(t);
  return [
    ...(missing ? [path.join(__dirname, '..', 'native', 'compat')] : []),
    ...(nccl && !HEADER_DIRS.includes(nccl) && !t.includeDirs.includes(nccl) ? [nccl] : []),
  ];
}

// System libraries the addon links besides libtorch (CMakeLists.txt finds the same with find_package).
const IMAGE_LIBS = ['-ljpeg', '-lpng16'];

// The addon's source folders under native/; each is also an include root ("core/network.h").
const SOURCE_DIRS = ['core', 'js'];

function gypField(t, field) {
  const nativeDir = path.join(__dirname, '..', 'native');
  switch (field) {
    case 'includes':
      return [...t.includeDirs, nativeDir, ...compatIncludes(t)];
    case 'libdirs':
      return [t.libDir];
    // The image loader's decoders (native/core/image_decode.cc): libjpeg-turbo and libpng.
    case 'libs':
      return [...t.libs.map((l) => `-l${l}`), ...IMAGE_LIBS];
    case 'ldflags': {
      const flags = ['-Wl,--no-as-needed', `-L${t.libDir}`];
      if (!SYSTEM_LIB_DIRS.has(t.libDir)) flags.push(`-Wl,-rpath,${t.libDir}`, '-Wl,--enable-new-dtags');
      return flags;
    }
    case 'defines':
      return [`_GLIBCXX_USE_CXX11_ABI=${t.cxx11abi ? 1 : 0}`, ...distributedDefines(t), ...(t.cuda ? ['REPOPT_CUDA=1'] : [])];
    // native/core (libtorch, no Node-API) and native/js (the Node-API layer); native/compat holds headers only.
    case 'sources':
      return SOURCE_DIRS.flatMap((d) =>
        fs
          .readdirSync(path.join(nativeDir, d))
          .filter((f) => f.endsWith('.cc'))
          .sort()
          .map((f) => `native/${d}/${f}`),
      );
    default:
      throw new DiscoveryError(`repopt: unknown torch-config field '${field}'`);
  }
}

// Everything the build descriptions and the prebuild manifest need to know.
function describe(t = discover()) {
  return {
    ...t,
    systemLibDir: SYSTEM_LIB_DIRS.has(t.libDir),
    defines: distributedDefines(t),
    compatIncludes: compatIncludes(t),
    torchVersion: torchVersion(t),
    cudaVersion: cudaVersion(t),
    variant: variant(t),
  };
}

function main() {
  const field = process.argv[2] || 'json';
  try {
    if (field === 'sources') {
      process.stdout.write(gypField(null, 'sources').join('\n') + '\n');
      return;
    }
    const t = discover();
    if (field === 'json') process.stdout.write(JSON.stringify(describe(t)) + '\n');
    else if (field === 'variant') process.stdout.write(variant(t) + '\n');
    else process.stdout.write(gypField(t, field).join('\n') + '\n');
  } catch (e) {
    process.stderr.write((e instanceof DiscoveryError ? e.message : e.stack) + '\n');
    process.exit(1);
  }
}

if (require.main === module) main();
module.exports = { discover, describe, HOW_TO };
