// Learning-rate schedule of the official recipes: the base lr scaled linearly by batch / 256, then timm's
// CosineLRScheduler as the official build_scheduler configures it (per iteration: t_initial = all steps,
// warmup_t = warm-up steps, cycle_limit 1, warmup_prefix False, so the cosine runs over the raw step and the
// warm-up only replaces its first steps).

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

/** timm's CosineLRScheduler._get_lr(t) for the official settings. */
function timmCosine(t: number, s: ScheduleSpec): number {
  const peak = scaledLr(s.baseLr, s.batchSize);
  const minLr = s.minLr ?? 0;
  if (t < s.warmupSteps) {
    const init = s.warmupInitLr ?? 0;
    return init + (t * (peak - init)) / s.warmupSteps;
  }
  if (t >= s.totalSteps) return minLr;
  return minLr + 0.5 * (peak - minLr) * (1 + Math.cos((Math.PI * t) / s.totalSteps));
}

/** lr of iteration `step` (0-based). The official loop calls step_update(i) after iteration i's optimizer
 * step, so iteration i runs with the value for i - 1 (iteration 0 with the value set at construction, which
 * is the value for 0). */
export function lrAt(step: number, s: ScheduleSpec): number {
  return timmCosine(Math.max(0, step - 1), s);
}
