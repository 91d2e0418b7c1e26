import { spawnSync } from 'child_process';
import * as path from 'path';
import { info, setNumThreads } from '../lib';

describe('runtime', () => {
  test('info reports libtorch and the loaded binary', () => {
    const i = info();
    expect(i.torchVersion).toMatch(/^\d+\.\d+\.\d+/);
    expect(typeof i.cuda).toBe('boolean');
    expect(i.deviceCount).toBe(i.cuda ? i.deviceCount : 0);
    expect(i.cudnnVersion === null || i.cudnnVersion > 0).toBe(true);
    expect(['prebuild', 'source']).toContain(i.binary);
    expect(i.binaryPath).toMatch(/\.node$/);
  });

  test('setNumThreads takes effect', () => {
    setNumThreads(1);
    expect(info().threads).toBe(1);
    setNumThreads(2);
    expect(info().threads).toBe(2);
  });

  test('setCudaMath sets and reports libtorch’s CUDA math switches', () => {
    const { native } = require('../lib/native');
    const before = native().setCudaMath({});
    expect(native().setCudaMath({ tf32: false, deterministic: true, benchmark: false })).toEqual({
      tf32: false,
      deterministic: true,
      benchmark: false,
    });
    expect(native().setCudaMath({ tf32: true, deterministic: false })).toEqual({ tf32: true, deterministic: false, benchmark: false });
    native().setCudaMath(before);
    expect(() => native().setCudaMath({ tf32: 'yes' })).toThrow(/setCudaMath: options\.tf32/);
  });

  test('`repopt info --json` prints the runtime as JSON', () => {
    const cli = path.join(__dirname, '..', 'dist', 'cli.js');
    const r = spawnSync(process.execPath, [cli, 'info', '--json'], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const j = JSON.parse(r.stdout);
    for (const k of ['torchVersion', 'cuda', 'deviceCount', 'threads', 'binary']) expect(j).toHaveProperty(k);
    expect(j.binary).toBe('source');
  });

  test('an unknown command exits non-zero with help', () => {
    const cli = path.join(__dirname, '..', 'dist', 'cli.js');
    const r = spawnSync(process.execPath, [cli, 'frobnicate'], { encoding: 'utf8' });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/unknown command 'frobnicate'/);
  });
});
