// The worker side of data-parallel training: where this process stands (torchrun's environment
// variables), the process group, and the distributed sampler.
import { DISTRIBUTED_DEFAULTS } from '../defaults';
import { native, type NativeProcessGroup, type Tensor } from '../native';
import { OptionError } from '../option-error';

/** This process's place in a data-parallel run, as torchrun (and `repopt launch`) describe it. */
export interface Rendezvous {
  readonly rank: number;
  readonly worldSize: number;
  readonly localRank: number;
  readonly masterAddr: string;
  readonly masterPort: number;
  /** Workers on this host (LOCAL_WORLD_SIZE), when the launcher said: names the node of a missing rank. */
  readonly localWorldSize?: number;
  /** One host: the rendezvous store is this file (REPOPT_RENDEZVOUS_FILE, set by this package's
   * launcher) and nothing listens on the network for it. */
  readonly storeFile?: string;
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
  const localWorldSize = intFromEnv(env, 'LOCAL_WORLD_SIZE', 1);
  return {
    rank,
    worldSize,
    localRank: intFromEnv(env, 'LOCAL_RANK', 0) ?? rank,
    masterAddr,
    masterPort,
    ...(localWorldSize !== undefined ? { localWorldSize } : {}),
    ...(env.REPOPT_RENDEZVOUS_FILE ? { storeFile: env.REPOPT_RENDEZVOUS_FILE } : {}),
  };
}

/** How a rank reports the wait for the others to join. */
export interface JoinReporting {
  /** Rank 0 hears every `reportEveryMs` which ranks are missing (default: REPOPT_DIST_REPORT_SECONDS, else 10 s). */
  readonly onWaiting?: (message: string) => void;
  readonly reportEveryMs?: number;
  /** The name of the connect timeout in the caller's options, for the error when ranks are missing
   * (default 'connectTimeoutMs'); the error is then an OptionError of that option. */
  readonly timeoutOption?: string;
}

/** Where the ranks meet, as messages name it. */
export function rendezvousAddress(r: Rendezvous): string {
  return r.storeFile ? `store file ${r.storeFile} (this host)` : `${r.masterAddr}:${r.masterPort}`;
}

/** "rank 1", "ranks 1-3, 7", with the nodes of a multi-node run: "ranks 2-3 (node 1)"; "none". */
function describeRanks(ranks: readonly number[], r: Rendezvous): string {
  if (!ranks.length) return 'none';
  const runs: [number, number][] = [];
  for (const k of ranks) {
    const last = runs[runs.length - 1];
    if (last && last[1] === k - 1) last[1] = k;
    else runs.push([k, k]);
  }
  const text = `rank${ranks.length > 1 ? 's' : ''} ${runs.map(([a, b]) => (a === b ? `${a}` : `${a}-${b}`)).join(', ')}`;
  const perNode = r.localWorldSize;
  if (!perNode || perNode >= r.worldSize) return text;
  const nodes = [...new Set(ranks.map((k) => Math.floor(k / perNode)))];
  return `${text} (node${nodes.length > 1 ? 's' : ''} ${nodes.join(', ')})`;
}

function reportInterval(env: NodeJS.ProcessEnv): number | undefined {
  const raw = env.REPOPT_DIST_REPORT_SECONDS;
  if (raw === undefined || raw === '') return undefined;
  const s = Number(raw);
  if (!(Number.isFinite(s) && s > 0))
    throw new RangeError(`environment variable REPOPT_DIST_REPORT_SECONDS=${raw} must be a positive number`);
  return Math.round(s * 1000);
}

/**
 * Joins the group: rank 0 serves the TCPStore at MASTER_ADDR:MASTER_PORT and all connect to it (or,
 * on one host, all open the store file); every rank registers and waits until all have, at most
 * `connectTimeoutMs` (rank 0 reports the missing ranks meanwhile); then the Gloo or NCCL connections.
 */
export function createProcessGroup(
  r: Rendezvous,
  settings: GroupSettings = {},
  env: NodeJS.ProcessEnv = process.env,
  reporting: JoinReporting = {},
): NativeProcessGroup {
  const timeoutMs = settings.timeoutMs ?? DISTRIBUTED_DEFAULTS.timeoutMs;
  const connectTimeoutMs = settings.connectTimeoutMs ?? timeoutMs;
  const timeoutOption = reporting.timeoutOption ?? 'connectTimeoutMs';
  const address = rendezvousAddress(r);
  const all = Array.from({ length: r.worldSize }, (_, k) => k);
  const onWaiting = (s: { joined: number[]; waitedMs: number; timedOut: boolean }) => {
    const joinedSet = new Set(s.joined);
    const missing = all.filter((k) => !joinedSet.has(k));
    const joined = describeRanks(s.joined, r);
    if (s.timedOut) {
      throw new OptionError(
        timeoutOption,
        `rank ${r.rank} of ${r.worldSize}: ${describeRanks(missing, r)} did not join the rendezvous at ${address} within ` +
          `${connectTimeoutMs / 1000} s (${timeoutOption}); joined: ${joined}. Is every worker started, with this ` +
          `MASTER_ADDR/MASTER_PORT, and can it reach that address?`,
        [timeoutOption],
      );
    }
    if (r.rank === 0)
      reporting.onWaiting?.(
        `waiting for ${describeRanks(missing, r)} to join the rendezvous at ${address} (joined: ${joined}; ` +
          `${Math.round(s.waitedMs / 1000)} s of ${connectTimeoutMs / 1000} s)`,
      );
  };
  const reportEveryMs = reporting.reportEveryMs ?? reportInterval(env);
  return new (native().ProcessGroup)({
    rank: r.rank,
    worldSize: r.worldSize,
    masterAddr: r.masterAddr,
    masterPort: r.masterPort,
    backend: settings.backend ?? 'gloo',
    timeoutMs,
    connectTimeoutMs,
    ...(r.storeFile ? { storeFile: r.storeFile } : {}),
    ...(reportEveryMs ? { reportEveryMs } : {}),
    onWaiting,
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
  const advice = peer ? ' Restart the run resuming (resume: true; --resume on the command line) to continue from the last checkpoint.' : '';
  const text = `rank ${r.rank} of ${r.worldSize}: ${lost}${message.trim().replace(/\.?$/, '.')}${advice}`;
  // A bad option stays one, so that the command line still names its flag.
  return e instanceof OptionError ? new OptionError(e.option, text, e.related) : new Error(text);
}
