// cli-progress: the widely used terminal progress bar (redraw throttling, cursor handling, width fitting).
import { SingleBar } from 'cli-progress';
import { formatDuration, formatMetric } from './format';

/** Where progress goes: process.stderr by default, any writable with `isTTY` for tests or files. */
export type ProgressStream = NodeJS.WritableStream & { isTTY?: boolean; columns?: number };

export interface ProgressOptions {
  /** Items expected (steps, batches, images); 0 or unknown: no percentage and no ETA. */
  total: number;
  /** Printed at the start of each line, e.g. "epoch 3/120". */
  label: string;
  stream?: ProgressStream;
  /** Not a TTY: a line at least this often, in seconds, however slow the progress (default 60). */
  every?: number;
  /** Not a TTY: a line each time this many more percent are done (default 10). */
  percentStep?: number;
}

export interface Progress {
  /** `done` items so far (not an increment) and the latest metrics, e.g. { loss, acc }. */
  update(done: number, metrics?: Record<string, number>): void;
  /** Ends the bar with a final line; `summary` replaces the last metrics there. Call it on error paths
   * too (e.g. in `finally`): on a TTY the bar redraws on a timer that keeps the process alive. */
  finish(summary?: Record<string, number>): void;
}

interface Snapshot {
  done: number;
  total: number;
  elapsedSeconds: number;
  /** Items per second; NaN until time has passed. */
  rate: number;
  /** Seconds left; NaN while unknown. */
  etaSeconds: number;
}

function finiteOr(value: number, fallback: number): number {
  return typeof value === 'number' && Number.isFinite(value) ? value : fallback;
}

function snapshot(done: number, total: number, startedAt: number): Snapshot {
  const elapsedSeconds = Math.max(0, (Date.now() - startedAt) / 1000);
  const rate = elapsedSeconds > 0 ? done / elapsedSeconds : NaN;
  const etaSeconds = total > 0 && rate > 0 ? (total - done) / rate : NaN;
  return { done, total, elapsedSeconds, rate, etaSeconds };
}

/** "153 it/s", "2.50 it/s"; slow loops read better per item: "12.0 s/it". */
export function formatRate(itemsPerSecond: number): string {
  if (!Number.isFinite(itemsPerSecond) || itemsPerSecond <= 0) return '? it/s';
  if (itemsPerSecond < 1) return `${(1 / itemsPerSecond).toFixed(1)} s/it`;
  return `${itemsPerSecond.toFixed(itemsPerSecond >= 100 ? 0 : itemsPerSecond >= 10 ? 1 : 2)} it/s`;
}

/** "loss=0.4312 acc=0.875"; tolerates anything a JavaScript caller might pass. */
export function formatMetrics(metrics: Record<string, number> | undefined): string {
  if (metrics === null || typeof metrics !== 'object') return '';
  return Object.entries(metrics)
    .map(([name, value]) => `${name}=${typeof value === 'number' ? formatMetric(value) : String(value)}`)
    .join(' ');
}

function countText(s: Snapshot): string {
  return s.total > 0 ? `${s.done}/${s.total} (${((100 * s.done) / s.total).toFixed(1)}%)` : `${s.done}`;
}

function timingText(s: Snapshot, finished: boolean): string {
  return finished ? `done in ${formatDuration(s.elapsedSeconds)}` : `ETA ${formatDuration(s.etaSeconds)}`;
}

/** The plain line used where the output is not a terminal (CI logs, pipes, files). */
function plainLine(label: string, s: Snapshot, metrics: string, finished: boolean): string {
  return [label, countText(s), formatRate(s.rate), timingText(s, finished), metrics].filter((part) => part !== '').join('  ') + '\n';
}

/**
 * Progress for a training loop. On a TTY: a live cli-progress bar with rate, ETA and metrics.
 * Otherwise plain lines, one when another `percentStep`% is done or `every` seconds have passed,
 * whichever comes first, and a final line from finish(). Never throws on odd numbers (NaN, total 0,
 * done beyond total): they are clamped or shown as unknown.
 */
export function createProgress(options: ProgressOptions): Progress {
  const stream: ProgressStream = options.stream ?? process.stderr;
  const label = String(options.label ?? '');
  const total = Math.max(0, Math.floor(finiteOr(options.total, 0)));
  const everySeconds = Math.max(0, finiteOr(options.every ?? 60, 60));
  const percentStep = Math.max(0, finiteOr(options.percentStep ?? 10, 10));
  const startedAt = Date.now();
  let lastMetrics: Record<string, number> | undefined;
  let finished = false;

  const clampDone = (done: number): number => {
    const value = Math.max(0, finiteOr(done, 0));
    return total > 0 ? Math.min(total, value) : value;
  };

  if (stream.isTTY === true) {
    const bar = new SingleBar({
      stream,
      format: '{label} {bar} {percentage}% | {value}/{total} | {rate} | {timing} | {metrics}',
      hideCursor: true,
      // The bar can only show a width for a known total; unknown totals show an empty bar, not a full one.
      emptyOnZero: true,
    });
    const payload = (s: Snapshot, metrics: string, done: boolean) => ({
      label,
      rate: formatRate(s.rate),
      timing: timingText(s, done),
      metrics,
    });
    bar.start(total, 0, payload(snapshot(0, total, startedAt), '', false));
    let lastDone = 0;
    return {
      update(done, metrics) {
        if (finished) return;
        lastDone = clampDone(done);
        lastMetrics = metrics;
        bar.update(lastDone, payload(snapshot(lastDone, total, startedAt), formatMetrics(metrics), false));
      },
      finish(summary) {
        if (finished) return;
        finished = true;
        bar.update(lastDone, payload(snapshot(lastDone, total, startedAt), formatMetrics(summary ?? lastMetrics), true));
        bar.stop();
      },
    };
  }

  let lastDone = 0;
  let lastLineAt = startedAt;
  let lastLinePercent = 0;
  const write = (line: string): void => {
    stream.write(line);
    lastLineAt = Date.now();
  };
  return {
    update(done, metrics) {
      if (finished) return;
      lastDone = clampDone(done);
      lastMetrics = metrics;
      const percent = total > 0 ? (100 * lastDone) / total : 0;
      const percentDue = total > 0 && percentStep > 0 && percent - lastLinePercent >= percentStep;
      const timeDue = everySeconds > 0 && Date.now() - lastLineAt >= everySeconds * 1000;
      if (!percentDue && !timeDue) return;
      // Step to the last whole multiple passed, so lines land near 10%, 20%, ... however updates fall.
      if (percentDue) lastLinePercent = Math.floor(percent / percentStep) * percentStep;
      write(plainLine(label, snapshot(lastDone, total, startedAt), formatMetrics(metrics), false));
    },
    finish(summary) {
      if (finished) return;
      finished = true;
      write(plainLine(label, snapshot(lastDone, total, startedAt), formatMetrics(summary ?? lastMetrics), true));
    },
  };
}
