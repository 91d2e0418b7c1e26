// Command-line parts of data parallelism: the options of `repopt train` (and hyper-search), the
// `train --nproc N` shortcut, and `repopt launch` (several hosts, torchrun's variables).
import { type Command, InvalidArgumentError, Option } from 'commander';
import * as os from 'os';
import { integer } from './values';
import type { TrainConfig } from '../train/config';
import { freePort, launch } from '../distributed/launch';
import { DISTRIBUTED_DEFAULTS } from '../defaults';

function seconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a positive number of seconds');
  return n;
}

export interface DistributedFlags {
  nproc: number;
  masterPort?: number;
  batchNorm?: 'batch' | 'frozen' | 'sync';
  distBackend: 'gloo' | 'nccl';
  distTimeout?: number;
  distConnectTimeout?: number;
  bucketCapMb?: number;
  checkReplicas?: boolean;
}

export function addDistributedOptions(cmd: Command): Command {
  return cmd
    .option('--nproc <n>', 'data parallel: start n worker processes on this host (the batch size is the global batch)', integer(1), 1)
    .option('--master-port <port>', 'with --nproc: rendezvous port on 127.0.0.1 (default: a free port)', integer(1, 65535))
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
    .option('--dist-connect-timeout <s>', 'how long to try to reach the rendezvous store (default: --dist-timeout)', seconds)
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

/**
 * `train --nproc N` outside a launched worker: starts N workers on 127.0.0.1 running this same command
 * line and returns true once they are done (throws when one failed). Returns false in a worker, or for
 * --nproc 1, where the caller trains itself.
 */
export async function launchSelfIfAsked(f: DistributedFlags & { threads: number }, cmd: Command): Promise<boolean> {
  if (f.nproc <= 1 || process.env.WORLD_SIZE !== undefined) return false;
  const args = process.argv.slice(2);
  // Never more torch threads than cores: unless --threads was given, split the cores between workers.
  const threads = cmd.getOptionValueSource('threads') === 'default' ? Math.max(1, Math.floor(os.cpus().length / f.nproc)) : f.threads;
  const result = await launch({
    nproc: f.nproc,
    nnodes: 1,
    nodeRank: 0,
    masterAddr: '127.0.0.1',
    masterPort: f.masterPort ?? (await freePort()),
    script: process.argv[1],
    args: [...args, '--threads', String(threads)],
    env: { OMP_NUM_THREADS: String(threads) },
  });
  if (result.exitCode !== 0) throw new Error(result.failure ?? 'a worker failed');
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
    .option('--nproc <n>', 'workers on this host', integer(1), 1)
    .option('--nnodes <n>', 'hosts taking part (env NNODES)', integer(1), envInt('NNODES') ?? 1)
    .option('--node-rank <k>', "this host's index, 0..nnodes-1 (env NODE_RANK)", integer(0), envInt('NODE_RANK') ?? 0)
    .option(
      '--master-addr <addr>',
      'address of node 0, where rank 0 serves the rendezvous store (env MASTER_ADDR)',
      process.env.MASTER_ADDR || '127.0.0.1',
    )
    .option('--master-port <port>', 'its port (env MASTER_PORT)', integer(1, 65535), envInt('MASTER_PORT') ?? 29500)
    .argument(
      '<command...>',
      "the repopt command every worker runs, e.g. train --arch RepOpt-VGG-S ... (put it after the launcher's options)",
    )
    .allowUnknownOption()
    .passThroughOptions()
    .addHelpText(
      'after',
      '\nExample, two hosts with 2 workers each (run on each host, NODE_RANK 0 and 1):\n  repopt launch --nproc 2 ' +
        '--nnodes 2 --node-rank $NODE_RANK --master-addr 10.0.0.1 --master-port 29500 train --batch-size 256 --out run',
    )
    .action(async (command: string[], o: { nproc: number; nnodes: number; nodeRank: number; masterAddr: string; masterPort: number }) => {
      const threads = Math.max(1, Math.floor(os.cpus().length / o.nproc));
      const hasThreads = command.some((a) => a === '--threads' || a.startsWith('--threads='));
      const result = await launch({
        ...o,
        script,
        args: [...command, ...(hasThreads || !['train', 'hyper-search'].includes(command[0]) ? [] : ['--threads', String(threads)])],
        env: { OMP_NUM_THREADS: process.env.OMP_NUM_THREADS ?? String(threads) },
      });
      if (result.exitCode !== 0) throw new Error(result.failure ?? 'a worker failed');
    });
}
