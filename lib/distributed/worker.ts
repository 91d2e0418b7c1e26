// The worker side of data-parallel training: where this process stands (torchrun's environment
// variables), the process group, and the distributed sampler.
import { DISTRIBUTED_DEFAULTS } from '../defaults';
import { native, type NativeProcessGroup, type Tensor } from '../native';

/** This process's place in a data-parallel run, as torchrun (and `repopt launch`) describe it. */
export interface Rendezvous {
  readonly rank: number;
  readonly worldSize: number;
  readonly localRank: number;
  readonly masterAddr: string;
  readonly masterPort: number;
}

export interface GroupSettings {
  /** 'gloo' (CPU tensors) or 'nccl' (CUDA builds). */
  readonly backend?: 'gloo' | 'nccl';
  /** A collective that does not complete in this time fails (a hung or unreachable peer). */
  readonly timeoutMs?: number;
  /** How long to try to reach the store (rank 0: to wait for the others). */
  readonly connectTimeoutMs?: number;
}

function intFromEnv(env: NodeJS.ProcessEnv, name: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  const raw = env[name];
  if (raw === undefined || raw === '') return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max)
    throw new RangeError(`environment variable ${name}=${raw} must be an integer in [${min}, ${max}]`);
  return n;
}

/** The rendezvous from RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; undefined when
 * WORLD_SIZE is unset (a plain one-process run). */
export function rendezvousFromEnv(env: NodeJS.ProcessEnv = process.env): Rendezvous | undefined {
  const worldSize = intFromEnv(env, 'WORLD_SIZE', 1);
  if (worldSize === undefined) return undefined;
  const rank = intFromEnv(env, 'RANK', 0, worldSize - 1);
  if (rank === undefined) throw new Error('WORLD_SIZE is set but RANK is not (set both, as torchrun does, or neither)');
  const masterAddr = env.MASTER_ADDR || '127.0.0.1';
  const masterPort = intFromEnv(env, 'MASTER_PORT', 1, 65535) ?? 29500;
  return { rank, worldSize, localRank: intFromEnv(env, 'LOCAL_RANK', 0) ?? rank, masterAddr, masterPort };
}

/** Joins the group: rank 0 serves the TCPStore at MASTER_ADDR:MASTER_PORT, all connect to it. */
export function createProcessGroup(r: Rendezvous, settings: GroupSettings = {}, env: NodeJS.ProcessEnv = process.env): NativeProcessGroup {
  return new (native().ProcessGroup)({
    rank: r.rank,
    worldSize: r.worldSize,
    masterAddr: r.masterAddr,
    masterPort: r.masterPort,
    backend: settings.backend ?? 'gloo',
    timeoutMs: settings.timeoutMs ?? DISTRIBUTED_DEFAULTS.timeoutMs,
    ...(settings.connectTimeoutMs ? { connectTimeoutMs: settings.connectTimeoutMs } : {}),
    ...(env.GLOO_SOCKET_IFNAME ? { interface: env.GLOO_SOCKET_IFNAME } : {}),
  });
}

/**
 * The distributed sampler. All ranks compute the same epoch permutation (same seed); global batch k
 * is permutation[k*B, (k+1)*B) and rank r takes its contiguous part [k*B + r*b, k*B + (r+1)*b) with
 * b = B / worldSize, so the ranks' step-k batches together are exactly the one-process step-k batch.
 * Returns a permutation of the same length whose batch k (size b) is rank r's part; the samples left
 * over by the last incomplete global batch follow at the end (never used as a batch).
 */
export function shardPermutation(permutation: Tensor<'int64'>, rank: number, worldSize: number, globalBatch: number): Tensor<'int64'> {
  if (globalBatch % worldSize !== 0)
    throw new RangeError(`batch size ${globalBatch} is not divisible by the number of processes (${worldSize})`);
  const all = permutation.toArray();
  const local = globalBatch / worldSize;
  const batches = Math.floor(all.length / globalBatch);
  const out = new BigInt64Array(all.length);
  let n = 0;
  for (let k = 0; k < batches; k++)
    out.set(all.subarray(k * globalBatch + rank * local, k * globalBatch + (rank + 1) * local), n++ * local);
  const used = new Set<bigint>(out.subarray(0, n * local));
  let at = n * local;
  for (const v of all) if (!used.has(v)) out[at++] = v;
  return native().Tensor.fromArray(out, [all.length]);
}

/** A host array as a tensor on `device` ('cpu' for Gloo; the process's GPU for NCCL). */
function onDevice<A extends Float64Array | Uint8Array>(data: A, device: string): { tensor: Tensor; dispose(): void } {
  const host = native().Tensor.fromArray(data);
  if (device === 'cpu') return { tensor: host, dispose: () => host.dispose() };
  const moved = host.to(device);
  host.dispose();
  return { tensor: moved, dispose: () => moved.dispose() };
}

/** Sums numbers over all ranks (float64). `device`: where the group's collectives run. */
export function sumOverRanks(pg: NativeProcessGroup, device: string, values: readonly number[]): number[] {
  const t = onDevice(Float64Array.from(values), device);
  const r = pg.allreduce(t.tensor, 'sum');
  const out = Array.from(r.toArray() as Float64Array);
  t.dispose();
  r.dispose();
  return out;
}

/** The same value on every rank, or an error naming what differs. */
export function checkAgreed(pg: NativeProcessGroup, device: string, value: number, what: string): void {
  const t = onDevice(Float64Array.from([value]), device);
  const hi = pg.allreduce(t.tensor, 'max');
  const lo = pg.allreduce(t.tensor, 'min');
  const [max, min] = [(hi.toArray() as Float64Array)[0], (lo.toArray() as Float64Array)[0]];
  t.dispose();
  hi.dispose();
  lo.dispose();
  if (max !== min)
    throw new Error(`rank ${pg.rank}: the ranks disagree on ${what} (this rank: ${value}; range over ranks: ${min}..${max})`);
}

/** Every rank's bytes (same length on all ranks), in rank order. */
export function gatherBytes(pg: NativeProcessGroup, bytes: Uint8Array, device = 'cpu'): Uint8Array[] {
  const mine = onDevice(new Uint8Array(bytes), device);
  const out: Uint8Array[] = [];
  for (let r = 0; r < pg.worldSize; r++) {
    const t = pg.broadcast(mine.tensor, r);
    out.push(new Uint8Array(t.toArray() as Uint8Array));
    t.dispose();
  }
  mine.dispose();
  return out;
}

/** A collective failure as users should read it: which rank, and what probably happened. */
export function distributedError(e: unknown, r: Rendezvous): Error {
  const message = e instanceof Error ? e.message : String(e);
  if (message.startsWith(`rank ${r.rank}`)) return e instanceof Error ? e : new Error(message);
  const peer = /closed by peer|Connection reset|Broken pipe|Timed out|timed out|another worker exited|gloo/i.test(message);
  const lost = peer ? 'lost contact with the other workers (one exited or hung); stopping. ' : '';
  const advice = peer ? ' Restart the run with --resume to continue from the last checkpoint.' : '';
  return new Error(`rank ${r.rank} of ${r.worldSize}: ${lost}${message.trim().replace(/\.?$/, '.')}${advice}`);
}
