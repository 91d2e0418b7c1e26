import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

// The shipped package: `npm pack`, install the tarball into an empty folder (no build/, no compiler
// step), and use the prebuild through node-gyp-build.
const root = path.join(__dirname, '..');
const prebuild = path.join(root, 'prebuilds', 'linux-x64', 'repopt.node');

describe('npm pack + install', () => {
  let work: string;
  beforeAll(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'repopt-pack-'));
  });
  afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

  test('the installed tarball loads the prebuild and runs libtorch', () => {
    expect(fs.existsSync(prebuild)).toBe(true); // made by `npm run prebuildify` (scripts/setup.sh --with-prebuild)
    const npm = (args: string[], cwd: string) =>
      execFileSync('npm', args, { cwd, encoding: 'utf8', env: { ...process.env, npm_config_audit: 'false', npm_config_fund: 'false' } });

    const [packed] = JSON.parse(npm(['pack', '--json', '--pack-destination', work], root));
    const files: string[] = packed.files.map((f: { path: string }) => f.path);
    expect(files).toContain('prebuilds/linux-x64/repopt.node');
    expect(files).toContain('dist/index.js');
    expect(files).toContain('binding.gyp');
    expect(files.some((f) => f.startsWith('build/'))).toBe(false);

    const app = path.join(work, 'app');
    fs.mkdirSync(app);
    const tarball = path.join(work, packed.filename);
    // npm 11 runs a dependency's install script only once approved: approve it, so the install path
    // (`node-gyp-build-test || cmake-js compile`) really runs and must succeed on the prebuild alone.
    const manifest = { name: 'app', version: '1.0.0', private: true, allowScripts: { [`file:${tarball}`]: true } };
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify(manifest));
    const log = npm(['install', '--prefer-offline', '--foreground-scripts', tarball], app);
    expect(log).toMatch(/node-gyp-build-test \|\| cmake-js compile/);
    expect(log).not.toMatch(/Building CXX|-- Configuring/);

    const installed = path.join(app, 'node_modules', 'repopt');
    expect(fs.existsSync(path.join(installed, 'build'))).toBe(false);

    const script = `
      const r = require('repopt');
      const a = r.Tensor.fromArray(new Float32Array([1, 2, 3, 4]), [2, 2]);
      console.log(JSON.stringify({ info: r.info(), product: Array.from(a.matmul(a).toArray()) }));`;
    const out = JSON.parse(execFileSync(process.execPath, ['-e', script], { cwd: app, encoding: 'utf8' }));
    expect(out.product).toEqual([7, 10, 15, 22]);
    expect(out.info.binary).toBe('prebuild');
    expect(out.info.binaryPath).toBe(path.join(fs.realpathSync(installed), 'prebuilds', 'linux-x64', 'repopt.node'));

    const cli = JSON.parse(execFileSync('npx', ['--no-install', 'repopt', 'info', '--json'], { cwd: app, encoding: 'utf8' }));
    expect(cli.binary).toBe('prebuild');
    expect(cli.torchVersion).toBe(out.info.torchVersion);
  });
});
