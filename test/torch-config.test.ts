import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

// libtorch discovery (scripts/torch-config.js), the one place both build descriptions ask.
const script = path.join(__dirname, '..', 'scripts', 'torch-config.js');

function run(field: string, env: Record<string, string | undefined>) {
  const clean = { ...process.env };
  delete clean.LIBTORCH;
  delete clean.REPOPT_TORCH;
  return spawnSync(process.execPath, [script, field], { encoding: 'utf8', env: { ...clean, ...env } });
}

describe('torch-config', () => {
  test('finds this machine’s libtorch', () => {
    const r = run('json', {});
    expect(r.status).toBe(0);
    const t = JSON.parse(r.stdout);
    expect(['system', 'python', 'LIBTORCH']).toContain(t.source);
    for (const dir of t.includeDirs) expect(fs.existsSync(dir)).toBe(true);
    expect(
      fs.existsSync(path.join(t.libDir, 'libtorch.so')) || fs.readdirSync(t.libDir).some((f: string) => f.startsWith('libtorch.so')),
    ).toBe(true);
  });

  test('LIBTORCH=<tree> wins, with CUDA libs, its ABI flag and an rpath', () => {
    const tree = fs.mkdtempSync(path.join(os.tmpdir(), 'libtorch-'));
    try {
      fs.mkdirSync(path.join(tree, 'include', 'torch'), { recursive: true });
      fs.mkdirSync(path.join(tree, 'include', 'gloo'));
      fs.writeFileSync(path.join(tree, 'include', 'gloo', 'algorithm.h'), '');
      fs.writeFileSync(path.join(tree, 'include', 'nccl.h'), '');
      fs.mkdirSync(path.join(tree, 'lib'));
      for (const l of ['torch', 'torch_cpu', 'c10', 'torch_cuda', 'c10_cuda']) fs.writeFileSync(path.join(tree, 'lib', `lib${l}.so`), '');
      fs.writeFileSync(
        path.join(tree, 'include', 'torch', 'version.h'),
        '#define TORCH_VERSION_MAJOR 2\n#define TORCH_VERSION_MINOR 6\n#define TORCH_VERSION_PATCH 0\n',
      );
      fs.writeFileSync(path.join(tree, 'include', 'cuda_runtime_api.h'), '#define CUDART_VERSION  12040\n');
      fs.mkdirSync(path.join(tree, 'share', 'cmake', 'Torch'), { recursive: true });
      fs.writeFileSync(
        path.join(tree, 'share', 'cmake', 'Torch', 'TorchConfig.cmake'),
        'set(TORCH_CXX_FLAGS "-D_GLIBCXX_USE_CXX11_ABI=0")\n',
      );
      const t = JSON.parse(run('json', { LIBTORCH: tree }).stdout);
      expect(t).toMatchObject({ source: 'LIBTORCH', cuda: true, cxx11abi: false, libDir: path.join(tree, 'lib'), systemLibDir: false });
      expect(t.libs).toEqual(['torch', 'torch_cpu', 'c10', 'torch_cuda', 'c10_cuda']);
      // The prebuild variant: libtorch's version from its headers, CUDA's from cuda_runtime_api.h.
      expect(t).toMatchObject({ torchVersion: '2.6.0', cudaVersion: '12.4', variant: 'libtorch2_6-cuda12_4' });
      expect(run('variant', { LIBTORCH: tree }).stdout).toBe('libtorch2_6-cuda12_4\n');
      expect(run('ldflags', { LIBTORCH: tree }).stdout.split('\n')).toEqual(
        expect.arrayContaining(['-Wl,--no-as-needed', `-Wl,-rpath,${path.join(tree, 'lib')}`]),
      );
      // The c10d headers: Gloo and NCCL where their headers are (this tree ships gloo's and nccl.h); the
      // tree lacks the dist-autograd header, so native/compat joins the includes.
      // A CUDA libtorch turns on the addon's CUDA code in both build descriptions.
      expect(run('defines', { LIBTORCH: tree }).stdout.trim().split('\n')).toEqual([
        '_GLIBCXX_USE_CXX11_ABI=0',
        'USE_DISTRIBUTED',
        'USE_C10D_GLOO',
        'USE_C10D_NCCL',
        'REPOPT_CUDA=1',
      ]);
      expect(t.defines).toEqual(['USE_DISTRIBUTED', 'USE_C10D_GLOO', 'USE_C10D_NCCL']);
      expect(run('includes', { LIBTORCH: tree }).stdout.trim().split('\n').pop()).toBe(path.join(__dirname, '..', 'native', 'compat'));
      fs.rmSync(path.join(tree, 'include', 'nccl.h'));
      // Without the tree's nccl.h, NCCL comes only from a system nccl.h (Debian 13's libnccl-dev).
      const systemNccl = ['/usr/include', '/usr/local/include', '/usr/local/cuda/include'].some((d) =>
        fs.existsSync(path.join(d, 'nccl.h')),
      );
      expect(JSON.parse(run('json', { LIBTORCH: tree }).stdout).defines.includes('USE_C10D_NCCL')).toBe(systemNccl);
    } finally {
      fs.rmSync(tree, { recursive: true, force: true });
    }
  });

  test('failures say what to do', () => {
    const bad = run('json', { LIBTORCH: '/nonexistent/libtorch' });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/LIBTORCH points at \/nonexistent\/libtorch, which has no include\/torch/);

    const noPython = run('json', { REPOPT_TORCH: 'python', PYTHON: '/nonexistent/python3' });
    expect(noPython.status).toBe(1);
    expect(noPython.stderr).toMatch(/REPOPT_TORCH=python but `\/nonexistent\/python3 -c "import torch"` failed/);

    const unknown = run('json', { REPOPT_TORCH: 'conda' });
    expect(unknown.status).toBe(1);
    expect(unknown.stderr).toMatch(/REPOPT_TORCH=conda is not one of libtorch, python, system/);
    for (const way of ['LIBTORCH=', 'REPOPT_TORCH=python', 'apt-get install libtorch-dev']) expect(unknown.stderr).toContain(way);
  });

  test('the source list covers every native/{core,js}/*.cc', () => {
    const listed = run('sources', {}).stdout.trim().split('\n');
    const onDisk = ['core', 'js'].flatMap((d) =>
      fs
        .readdirSync(path.join(__dirname, '..', 'native', d))
        .filter((f) => f.endsWith('.cc'))
        .map((f) => `native/${d}/${f}`),
    );
    expect(listed.sort()).toEqual(onDisk.sort());
    // Only those two folders hold sources (compat: headers only).
    expect(fs.readdirSync(path.join(__dirname, '..', 'native')).filter((f) => f.endsWith('.cc'))).toEqual([]);
  });
});
