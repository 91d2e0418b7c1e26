// The launcher: starts this node's workers with the environment torchrun gives its workers, passes
// their output through (ranks other than 0 prefixed), and when one fails stops the others and says
// which one failed and how. Ctrl-C reaches the workers once, as Ctrl-C: they stop with a checkpoint.
import { type ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import * as readline from 'readline';
import { coreCount } from '../runtime';

export interface LaunchOptions {
  /** Workers on this node. */
  readonly nproc: number;
  readonly nnodes: number;
  readonly nodeRank: number;
  readonly masterAddr: string;
  readonly masterPort: number;
  /** Start more workers than this host has cores (each worker needs one; more only wait on each other). */
  readonly allowOversubscribe?: boolean;
  /** Worker command: node `script` `args` (by default this CLI). */
  readonly script: string;
  readonly args: readonly string[];
  /** Extra environment for every worker (e.g. OMP_NUM_THREADS). */
  readonly env?: NodeJS.ProcessEnv;
  /** Where the launcher's own messages and the prefixed worker output go. */
  readonly log?: (line: string) => void;
  /** Grace period between SIGTERM and SIGKILL when stopping workers. */
  readonly killAfterMs?: number;
  /** After Ctrl-C, how long the workers have to finish their step and write a checkpoint before they
   * are stopped (SIGTERM). */
  readonly interruptTimeoutMs?: number;
}

export interface LaunchResult {
  /** 0 when every worker succeeded; 130 when Ctrl-C stopped them (with a checkpoint, unless they had
   * to be stopped harder); 1 when one failed. */
  readonly exitCode: number;
  /** What failed first, or undefined. */
  readonly failure?: string;
}

/** The exit status of a worker stopped by Ctrl-C (128 + SIGINT), as `repopt train` exits then. */
export const INTERRUPTED_EXIT_CODE = 130;

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
  const cores = coreCount();
  if (o.nproc > cores && !o.allowOversubscribe)
    throw new RangeError(
      `--nproc ${o.nproc} is more than the ${cores} cores of this host: each worker needs a core of its own ` +
        `(use --nproc ${cores} or less, or --allow-oversubscribe to start them anyway)`,
    );
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
  const killAfterMs = o.killAfterMs ?? 5000;
  const workers: { rank: number; child: ChildProcess; done: boolean }[] = [];
  // One host: the rendezvous store is a file in a folder of this user's only (nothing listens on the
  // network for it).
  const storeDir = o.nnodes === 1 ? fs.mkdtempSync(path.join(os.tmpdir(), 'repopt-rendezvous-')) : undefined;
  let failure: string | undefined;
  let interrupted = false;
  let terminating = false;
  const timers: NodeJS.Timeout[] = [];
  const later = (ms: number, fn: () => void) => timers.push(setTimeout(fn, ms).unref());

  const signalAll = (signal: NodeJS.Signals) => {
    for (const w of workers) if (!w.done) w.child.kill(signal);
  };
  // SIGTERM now, SIGKILL to whoever is left after the grace period.
  const terminate = (why: string, whom = 'the workers') => {
    if (terminating) return;
    terminating = true;
    log(`repopt launch: ${why}; stopping ${whom}`);
    signalAll('SIGTERM');
    later(killAfterMs, () => signalAll('SIGKILL'));
  };
  const fail = (why: string) => {
    if (failure || terminating) return;
    failure = why;
    terminate(why, 'the other workers');
  };
  // The workers have their own sessions, so a terminal's Ctrl-C reaches only this process: it passes
  // it on once (a worker given SIGINT twice would die without its checkpoint).
  const onInterrupt = () => {
    if (terminating) return signalAll('SIGKILL');
    if (interrupted) return terminate('Ctrl-C again');
    interrupted = true;
    const timeoutMs = o.interruptTimeoutMs ?? 120_000;
    log(
      'repopt launch: Ctrl-C: the workers stop after the step in flight and write a checkpoint ' +
        `(Ctrl-C again to stop them at once; stopped anyway after ${timeoutMs / 1000} s)`,
    );
    signalAll('SIGINT');
    later(timeoutMs, () => terminate(`the workers did not stop within ${timeoutMs / 1000} s of Ctrl-C`));
  };
  const onTerminate = (signal: NodeJS.Signals) => {
    failure ??= `received ${signal}`;
    terminate(`received ${signal}`);
  };
  process.on('SIGINT', onInterrupt);
  process.on('SIGTERM', onTerminate);
  process.on('SIGHUP', onTerminate);

  return new Promise((resolve) => {
    let remaining = o.nproc;
    const finished = () => {
      if (--remaining > 0) return;
      process.off('SIGINT', onInterrupt);
      process.off('SIGTERM', onTerminate);
      process.off('SIGHUP', onTerminate);
      for (const t of timers) clearTimeout(t);
      if (storeDir) fs.rmSync(storeDir, { recursive: true, force: true });
      if (failure) resolve({ exitCode: 1, failure });
      else resolve({ exitCode: interrupted ? INTERRUPTED_EXIT_CODE : 0 });
    };
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
        ...(storeDir ? { REPOPT_RENDEZVOUS_FILE: path.join(storeDir, 'store') } : {}),
      };
      // Rank 0 keeps the terminal's output (progress); the others' lines are prefixed. The IPC channel
      // closes when this process dies however it dies: the workers then stop as on Ctrl-C.
      const child = spawn(process.execPath, [o.script, ...o.args], {
        env,
        detached: true,
        stdio: rank === 0 ? ['ignore', 'inherit', 'inherit', 'ipc'] : ['ignore', 'pipe', 'pipe', 'ipc'],
      });
      const w = { rank, child, done: false };
      workers.push(w);
      log(`repopt launch: rank ${rank} of ${worldSize} started (pid ${child.pid})`);
      for (const stream of [child.stdout, child.stderr]) {
        if (!stream) continue;
        readline.createInterface({ input: stream }).on('line', (line) => log(`[rank ${rank}] ${line}`));
      }
      child.on('exit', (code, signal) => {
        w.done = true;
        // After Ctrl-C a worker exits 130 (or dies of the SIGINT, before its handler is in place).
        const stopped = interrupted && (code === INTERRUPTED_EXIT_CODE || signal === 'SIGINT');
        const expected = code === 0 || stopped || (terminating && !failure);
        if (!expected)
          fail(
            signal
              ? `worker rank ${rank} (pid ${child.pid}) was killed by ${signal}`
              : `worker rank ${rank} (pid ${child.pid}) exited with code ${code}`,
          );
        finished();
      });
      child.on('error', (e) => {
        fail(`worker rank ${rank} could not start: ${e.message}`);
        if (!w.done) {
          w.done = true;
          finished();
        }
      });
    }
  });
}

/**
 * In a worker this launcher started: when the launcher is gone (killed, its terminal closed), stop as
 * on Ctrl-C, with a checkpoint, instead of training on unwatched. Does nothing in other processes.
 */
export function stopWhenLauncherExits(): void {
  if (!process.channel || process.env.WORLD_SIZE === undefined) return;
  process.channel.unref(); // the channel alone must not keep the worker alive
  process.once('disconnect', () => process.kill(process.pid, 'SIGINT'));
}
