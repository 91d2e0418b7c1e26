// Learning-rate schedule of the official recipes: the base lr scaled linearly by batch / 256, linear
// warm-up, then cosine decay, evaluated per iteration.

export interface ScheduleSpec {
  /** lr for batch 256; scaled by batchSize / 256. */
  readonly baseLr: number;
  readonly batchSize: number;
  readonly totalSteps: number;
  readonly warmupSteps: number;
  readonly minLr?: number;
  /** lr at step 0 of the warm-up (official: warmup_lr). */
  readonly warmupInitLr?: number;
}

export function scaledLr(baseLr: number, batchSize: number): number {
  return (baseLr * batchSize) / 256;
}

/** lr of iteration `step` (0-based). */
export function lrAt(step: number, s: ScheduleSpec): number {
  const peak = scaledLr(s.baseLr, s.batchSize);
  const minLr = s.minLr ?? 0;
  if (step < s.warmupSteps) {
    const init = s.warmupInitLr ?? 0;
    return init + ((peak - init) * step) / s.warmupSteps;
  }
  const span = Math.max(1, s.totalSteps - s.warmupSteps);
  const t = Math.min(1, (step - s.warmupSteps) / span);
  return minLr + 0.5 * (peak - minLr) * (1 + Math.cos(Math.PI * t));
}
