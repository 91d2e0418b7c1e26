// Command-line parts of data parallelism: the options of `repopt train` (and hyper-search), the
// `train --nproc N` shortcut, and `repopt launch` (several hosts, torchrun's variables).
import { type Command, InvalidArgumentError, Option } from 'commander';
import { integer } from './values';
import type { TrainConfig } from '../train/config';
import { freePort, INTERRUPTED_EXIT_CODE, launch, type LaunchResult } from '../distributed/launch';
import { DISTRIBUTED_DEFAULTS } from '../defaults';
import { coreCount } from '../runtime';

function seconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a positive number of seconds');
  return n;
}

export interface DistributedFlags {
  nproc: number;
  allowOversubscribe?: boolean;
  batchNorm?: 'batch' | 'frozen' | 'sync';
  distBackend: 'gloo' | 'nccl';
  distTimeout?: number;
  distConnectTimeout?: number;
  bucketCapMb?: number;
  checkReplicas?: boolean;
}

export function addDistributedOptions(cmd: Command): Command {
  return cmd
    .option(
      '--nproc <n>',
      'data parallel: start n worker processes on this host, at most one per core (the batch size is the global batch); ' +
        'they meet through a file in a private temporary folder and connect over 127.0.0.1 only',
      integer(1),
      1,
    )
    .option('--allow-oversubscribe', 'allow --nproc above the number of cores')
    .addOption(
      new Option(
        '--batch-norm <mode>',
        'BN in training: batch (per-process statistics), frozen (running statistics), sync (SyncBatchNorm over all processes)',
      ).choices(['batch', 'frozen', 'sync']),
    )
    .addOption(
      new Option('--dist-backend <name>', 'process group backend: gloo (CPU) or nccl (CUDA builds)')
        .choices(['gloo', 'nccl'])
        .default('gloo'),
    )
    .option(
      '--dist-timeout <s>',
      'a collective that does not finish in this time fails (hung or lost worker)',
      seconds,
      DISTRIBUTED_DEFAULTS.timeoutMs / 1000,
    )
    .option(
      '--dist-connect-timeout <s>',
      'how long the workers wait for each other to join (default: --dist-timeout); meanwhile rank 0 reports the missing ranks every 10 s',
      seconds,
    )
    .option('--bucket-cap-mb <x>', 'gradient bucket size of the all-reduces (MB)', Number)
    .option('--check-replicas', 'check after every step that all ranks hold identical parameters (slow; for tests)');
}

/** The TrainConfig fields the distributed flags set. */
export function distributedConfig(f: Partial<DistributedFlags>): Pick<TrainConfig, 'batchNorm' | 'distributed'> {
  return {
    ...(f.batchNorm ? { batchNorm: f.batchNorm } : {}),
    distributed: {
      ...(f.distBackend ? { backend: f.distBackend } : {}),
      ...(f.distTimeout ? { timeoutMs: Math.round(f.distTimeout * 1000) } : {}),
      ...(f.distConnectTimeout ? { connectTimeoutMs: Math.round(f.distConnectTimeout * 1000) } : {}),
      ...(f.bucketCapMb ? { bucketCapMb: f.bucketCapMb } : {}),
      ...(f.checkReplicas ? { checkReplicas: true } : {}),
    },
  };
}

/** The command line without `flag` and its value (`--flag v` or `--flag=v`). */
function withoutFlag(args: readonly string[], flag: string): string[] {
  return args.filter((a, i) => a !== flag && !a.startsWith(`${flag}=`) && args[i - 1] !== flag);
}

/** The launcher's outcome as this process's: Ctrl-C exits 130 (the workers kept a checkpoint), a failure throws. */
function exitLike(result: LaunchResult): void {
  if (result.exitCode === INTERRUPTED_EXIT_CODE) process.exitCode = INTERRUPTED_EXIT_CODE;
  else if (result.exitCode !== 0) throw new Error(result.failure ?? 'a worker failed');
}

/**
 * `train --nproc N` outside a launched worker: starts N workers on this host running this same command
 * line and returns true once they are done (throws when one failed). Returns false in a worker, or for
 * --nproc 1, where the caller trains itself.
 */
export async function launchSelfIfAsked(f: DistributedFlags & { threads: number }, cmd: Command): Promise<boolean> {
  if (f.nproc <= 1 || process.env.WORLD_SIZE !== undefined) return false;
  // Never more torch threads than cores: unless --threads was given, split the cores between workers.
  // (A --threads given was capped to the cores when parsed; the workers get the capped count.)
  const threads = cmd.getOptionValueSource('threads') === 'default' ? Math.max(1, Math.floor(coreCount() / f.nproc)) : f.threads;
  exitLike(
    await launch({
      nproc: f.nproc,
      nnodes: 1,
      nodeRank: 0,
      masterAddr: '127.0.0.1',
      masterPort: await freePort(),
      allowOversubscribe: f.allowOversubscribe,
      script: process.argv[1],
      args: [...withoutFlag(process.argv.slice(2), '--threads'), '--threads', String(threads)],
      env: { OMP_NUM_THREADS: String(threads) },
    }),
  );
  return true;
}

function envInt(name: string): number | undefined {
  const v = process.env[name];
  return v === undefined || v === '' ? undefined : Number(v);
}

/** `repopt launch [--nproc N] [--nnodes M --node-rank K --master-addr A --master-port P] <command...>` */
export function addLaunchCommand(program: Command, script: string): void {
  program.enablePositionalOptions();
  program
    .command('launch')
    .description(
      "start this host's data-parallel workers of a repopt command (like torchrun): RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT",
    )
    .option('--nproc <n>', 'workers on this host, at most one per core', integer(1), 1)
    .option('--allow-oversubscribe', 'allow --nproc above the number of cores')
    .option('--nnodes <n>', 'hosts taking part (env NNODES)', integer(1), envInt('NNODES') ?? 1)
    .option('--node-rank <k>', "this host's index, 0..nnodes-1 (env NODE_RANK)", integer(0), envInt('NODE_RANK') ?? 0)
    .option(
      '--master-addr <addr>',
      'address of node 0, where rank 0 serves the rendezvous store (env MASTER_ADDR); unused with --nnodes 1',
      process.env.MASTER_ADDR || '127.0.0.1',
    )
    .option('--master-port <port>', 'its port (env MASTER_PORT); unused with --nnodes 1', integer(1, 65535), envInt('MASTER_PORT') ?? 29500)
    .argument(
      '<command...>',
      "the repopt command every worker runs, e.g. train --arch RepOpt-VGG-S ... (put it after the launcher's options)",
    )
    .allowUnknownOption()
    .passThroughOptions()
    .addHelpText(
      'after',
      '\nExample, two hosts with 2 workers each (run on each host, NODE_RANK 0 and 1):\n  repopt launch --nproc 2 ' +
        '--nnodes 2 --node-rank $NODE_RANK --master-addr 10.0.0.1 --master-port 29500 train --batch-size 256 --out run\n\n' +
        'What listens: with --nnodes 1, nothing for the rendezvous (the workers meet through a file in a private\n' +
        'temporary folder) and Gloo on 127.0.0.1 only. With more nodes, rank 0 serves the store on\n' +
        '--master-addr:--master-port: bound to that address alone with libtorch 2.x, on every interface of node 0\n' +
        "with libtorch 1.x (`repopt info` shows the version; firewall the port there); Gloo binds this host's\n" +
        'name (GLOO_SOCKET_IFNAME picks an interface).\n\n' +
        'Ctrl-C: the workers stop after the step in flight and write a checkpoint, then the launcher exits 130\n' +
        '(a second Ctrl-C, or 120 s without them stopping: SIGTERM, then SIGKILL after 5 s).',
    )
    .action(
      async (
        command: string[],
        o: { nproc: number; nnodes: number; nodeRank: number; masterAddr: string; masterPort: number; allowOversubscribe?: boolean },
      ) => {
        const threads = Math.max(1, Math.floor(coreCount() / o.nproc));
        const hasThreads = command.some((a) => a === '--threads' || a.startsWith('--threads='));
        exitLike(
          await launch({
            ...o,
            script,
            args: [...command, ...(hasThreads || !['train', 'hyper-search'].includes(command[0]) ? [] : ['--threads', String(threads)])],
            env: { OMP_NUM_THREADS: process.env.OMP_NUM_THREADS ?? String(threads) },
          }),
        );
      },
    );
}
