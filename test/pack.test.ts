import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { installedLibtorch, prebuilds } from '../lib/binary';

// The shipped package: `npm pack`, install the tarball into an empty folder with no compiler on PATH
// (so no source build can rescue it), and train a step with the prebuild the loader picks for this
// machine's libtorch. Prebuilds for other libtorch builds are in the same tarball and must be refused
// with a message, never loaded.
const root = path.join(__dirname, '..');
const prebuildDir = path.join(root, 'prebuilds', 'linux-x64');
const variant = execFileSync(process.execPath, [path.join(root, 'scripts', 'torch-config.js'), 'variant'], { encoding: 'utf8' }).trim();
// CI builds every variant before the suites run and lists them here; a local run has its own only.
const expected = (process.env.REPOPT_EXPECT_PREBUILDS ?? variant).split(',').filter(Boolean);

// A bin folder with node, npm, npx and sh only: no cc, c++, g++, cmake, make.
function compilerFreePath(dir: string): string {
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin);
  const which = (name: string) => execFileSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).trim();
  for (const name of ['node', 'npm', 'npx', 'sh']) fs.symlinkSync(fs.realpathSync(which(name)), path.join(bin, name));
  return bin;
}

describe('npm pack + install', () => {
  let work: string;
  let app: string;
  let env: NodeJS.ProcessEnv;
  beforeAll(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'repopt-pack-'));
    env = { ...process.env, PATH: compilerFreePath(work), npm_config_audit: 'false', npm_config_fund: 'false' };
    delete env.REPOPT_PREBUILD;
  });
  afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

  test('the tarball ships a prebuild and manifest per libtorch; installed without a compiler, it trains a step', () => {
    for (const v of expected) expect(fs.existsSync(path.join(prebuildDir, `repopt.${v}.napi.node`))).toBe(true); // scripts/setup.sh --with-prebuild
    const [packed] = JSON.parse(execFileSync('npm', ['pack', '--json', '--pack-destination', work], { cwd: root, encoding: 'utf8', env }));
    const files: string[] = packed.files.map((f: { path: string }) => f.path);
    for (const v of expected) {
      expect(files).toContain(`prebuilds/linux-x64/repopt.${v}.napi.node`);
      expect(files).toContain(`prebuilds/linux-x64/repopt.${v}.json`);
    }
    for (const f of ['dist/index.js', 'dist/binary.js', 'scripts/install.js', 'binding.gyp', 'CMakeLists.txt']) expect(files).toContain(f);
    expect(files.some((f) => f.startsWith('build/') || f.startsWith('.debian13/'))).toBe(false);

    app = path.join(work, 'app');
    fs.mkdirSync(app);
    const tarball = path.join(work, packed.filename);
    // npm 11 runs a dependency's install script only once approved: approve it, so the install step
    // really runs and must succeed on the prebuild alone.
    const manifest = { name: 'app', version: '1.0.0', private: true, allowScripts: { [`file:${tarball}`]: true } };
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify(manifest));
    // --offline: the dependencies come from npm's cache (filled by `npm ci`), never the network, so
    // this runs the same inside scripts/debian13.sh's root.
    const log = execFileSync('npm', ['install', '--offline', '--foreground-scripts', tarball], {
      cwd: app,
      encoding: 'utf8',
      env,
      timeout: 300_000,
    });
    expect(log).toContain(`repopt: using prebuild ${variant} (prebuilds/linux-x64/repopt.${variant}.napi.node)`);
    expect(log).not.toMatch(/building from source|Building CXX|-- Configuring/);

    const installed = path.join(app, 'node_modules', 'repopt');
    expect(fs.existsSync(path.join(installed, 'build'))).toBe(false);

    const script = `
      const r = require('repopt');
      r.setNumThreads(1);
      const spec = r.networkSpec('RepOpt-VGG-XS', { mode: 'target', numClasses: 3, inChannels: 1 });
      const net = r.nativeBackend.createNetwork(spec, { seed: 1 });
      const opt = net.createOptimizer({ type: 'sgd', lr: 0.1, momentum: 0.9 });
      const x = { shape: [4, 1, 16, 16], data: Float32Array.from({ length: 4 * 256 }, (_, i) => Math.sin(i)) };
      const y = Int32Array.from([0, 1, 2, 0]);
      const before = net.stateDict().get('linear.weight').data.slice();
      const loss = net.trainStep(opt, x, y);
      const after = net.stateDict().get('linear.weight').data;
      console.log(JSON.stringify({ info: r.info(), loss, moved: after.some((v, i) => v !== before[i]) }));`;
    const out = JSON.parse(execFileSync(process.execPath, ['-e', script], { cwd: app, encoding: 'utf8', env }));
    expect(Number.isFinite(out.loss) && out.loss > 0).toBe(true);
    expect(out.moved).toBe(true);
    expect(out.info).toMatchObject({ binary: 'prebuild', prebuild: variant });
    expect(out.info.binaryPath).toBe(path.join(fs.realpathSync(installed), 'prebuilds', 'linux-x64', `repopt.${variant}.napi.node`));

    const cli = JSON.parse(execFileSync('npx', ['--no-install', 'repopt', 'info', '--json'], { cwd: app, encoding: 'utf8', env }));
    expect(cli).toMatchObject({ binary: 'prebuild', prebuild: variant, torchVersion: out.info.torchVersion });
  });

  test('a prebuild for another libtorch is refused with what was found, and never loaded', () => {
    const installed = path.join(app, 'node_modules', 'repopt');
    const dir = path.join(installed, 'prebuilds', 'linux-x64');
    // One that no machine has (always), plus every shipped prebuild whose libtorch is not installed here.
    fs.copyFileSync(path.join(dir, `repopt.${variant}.napi.node`), path.join(dir, 'repopt.libtorch0_1-cpu.napi.node'));
    fs.writeFileSync(
      path.join(dir, 'repopt.libtorch0_1-cpu.json'),
      JSON.stringify({
        variant: 'libtorch0_1-cpu',
        torchVersion: '0.1.0',
        cuda: null,
        needed: ['libtorch_cpu.so.0.1', 'libc10.so.0.1'],
        builtWith: 'test',
      }),
    );
    const foreign = prebuilds(installed).filter((p) => p.missing.length > 0);
    expect(foreign.map((m) => m.variant)).toContain('libtorch0_1-cpu');
    const here = installedLibtorch();
    for (const m of foreign) {
      const r = spawnSync(process.execPath, ['-e', "console.log(JSON.stringify(require('repopt').info()))"], {
        cwd: app,
        encoding: 'utf8',
        env: { ...env, REPOPT_PREBUILD: m.variant },
      });
      expect(r.status).toBe(1);
      expect(r.signal).toBeNull();
      expect(r.stderr).toContain(`Passed over: prebuild ${m.variant} (libtorch ${m.torchVersion}`);
      expect(r.stderr).toMatch(/needs lib\S+\.so\.\S+.*not installed/);
      expect(r.stderr).toContain(`Found here: libtorch ${here[0].version}`);
      expect(r.stderr).toContain('Ways to fix it:');
      // Even loaded by hand (bypassing the check), the binary fails to open: an error, not a crash.
      const direct = spawnSync(
        process.execPath,
        [
          '-e',
          `try { require(${JSON.stringify(path.join(dir, `repopt.${m.variant}.napi.node`))}); console.log('loaded') } catch (e) { console.log('refused: ' + e.message.split('\\n')[0]) }`,
        ],
        { encoding: 'utf8', env },
      );
      if (m.variant !== 'libtorch0_1-cpu') {
        expect(direct.status).toBe(0);
        expect(direct.stdout).toMatch(/^refused: .*cannot open shared object file/);
      }
    }
  });
});
