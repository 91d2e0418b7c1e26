// The launcher: starts this node's workers with the environment torchrun gives its workers, passes
// their output through (ranks other than 0 prefixed), and when one fails stops the others and says
// which one failed and how.
import { type ChildProcess, spawn } from 'child_process';
import * as net from 'net';
import * as readline from 'readline';

export interface LaunchOptions {
  /** Workers on this node. */
  readonly nproc: number;
  readonly nnodes: number;
  readonly nodeRank: number;
  readonly masterAddr: string;
  readonly masterPort: number;
  /** Worker command: node `script` `args` (by default this CLI). */
  readonly script: string;
  readonly args: readonly string[];
  /** Extra environment for every worker (e.g. OMP_NUM_THREADS). */
  readonly env?: NodeJS.ProcessEnv;
  /** Where the launcher's own messages and the prefixed worker output go. */
  readonly log?: (line: string) => void;
  /** Grace period between SIGTERM and SIGKILL when stopping workers. */
  readonly killAfterMs?: number;
}

export interface LaunchResult {
  /** 0 when every worker succeeded. */
  readonly exitCode: number;
  /** What failed first, or undefined. */
  readonly failure?: string;
}

/** A TCP port that was free a moment ago on 127.0.0.1 (for single-host runs). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

export function checkLaunchOptions(o: LaunchOptions): void {
  const positive = (v: number) => Number.isInteger(v) && v > 0;
  if (!positive(o.nproc)) throw new RangeError(`--nproc must be a positive integer, got ${o.nproc}`);
  if (!positive(o.nnodes)) throw new RangeError(`--nnodes must be a positive integer, got ${o.nnodes}`);
  if (!Number.isInteger(o.nodeRank) || o.nodeRank < 0 || o.nodeRank >= o.nnodes)
    throw new RangeError(`--node-rank must be in [0, ${o.nnodes - 1}], got ${o.nodeRank}`);
  if (!Number.isInteger(o.masterPort) || o.masterPort < 1 || o.masterPort > 65535)
    throw new RangeError(`--master-port must be in [1, 65535], got ${o.masterPort}`);
  if (!o.masterAddr) throw new RangeError('--master-addr must not be empty');
}

/** Runs this node's workers to the end; resolves with the exit code the launcher should exit with. */
export function launch(o: LaunchOptions): Promise<LaunchResult> {
  checkLaunchOptions(o);
  const log = o.log ?? ((line: string) => process.stderr.write(line + '\n'));
  const worldSize = o.nproc * o.nnodes;
  const workers: { rank: number; child: ChildProcess; done: boolean }[] = [];
  let failure: string | undefined;
  let stopping = false;

  const stopAll = (signal: NodeJS.Signals) => {
    for (const w of workers) if (!w.done) w.child.kill(signal);
  };
  const stopOthers = (why: string) => {
    if (stopping) return;
    stopping = true;
    failure = why;
    log(`repopt launch: ${why}; stopping the other workers`);
    stopAll('SIGTERM');
    const timer = setTimeout(() => stopAll('SIGKILL'), o.killAfterMs ?? 5000);
    timer.unref();
  };
  const onSignal = (signal: NodeJS.Signals) => stopOthers(`received ${signal}`);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  return new Promise((resolve) => {
    let remaining = o.nproc;
    for (let local = 0; local < o.nproc; local++) {
      const rank = o.nodeRank * o.nproc + local;
      const env = {
        ...process.env,
        ...o.env,
        RANK: String(rank),
        WORLD_SIZE: String(worldSize),
        LOCAL_RANK: String(local),
        LOCAL_WORLD_SIZE: String(o.nproc),
        GROUP_RANK: String(o.nodeRank),
        MASTER_ADDR: o.masterAddr,
        MASTER_PORT: String(o.masterPort),
      };
      // Rank 0 keeps the terminal (progress output); the others' lines are prefixed.
      const child = spawn(process.execPath, [o.script, ...o.args], { env, stdio: rank === 0 ? 'inherit' : ['ignore', 'pipe', 'pipe'] });
      const w = { rank, child, done: false };
      workers.push(w);
      log(`repopt launch: rank ${rank} of ${worldSize} started (pid ${child.pid})`);
      for (const stream of [child.stdout, child.stderr]) {
        if (!stream) continue;
        readline.createInterface({ input: stream }).on('line', (line) => log(`[rank ${rank}] ${line}`));
      }
      child.on('exit', (code, signal) => {
        w.done = true;
        remaining--;
        if ((code !== 0 || signal) && !stopping) {
          stopOthers(
            signal
              ? `worker rank ${rank} (pid ${child.pid}) was killed by ${signal}`
              : `worker rank ${rank} (pid ${child.pid}) exited with code ${code}`,
          );
        }
        if (remaining === 0) {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
          resolve({ exitCode: failure ? 1 : 0, ...(failure ? { failure } : {}) });
        }
      });
      child.on('error', (e) => {
        if (!w.done) {
          w.done = true;
          remaining--;
        }
        stopOthers(`worker rank ${rank} could not start: ${e.message}`);
        if (remaining === 0) resolve({ exitCode: 1, failure: failure! });
      });
    }
  });
}
