// A progress bar on stderr fed by a training run's events (rank 0 only): what the CLI and the demo show.
import { createProgress } from '../report';
import type { TrainingRun } from './run';

export function showProgress<R>(run: TrainingRun<R>, label: string): void {
  let progress: ReturnType<typeof createProgress> | undefined;
  run.on('start', (e) => {
    if (e.rank === 0)
      progress = createProgress({ total: e.stopAt, label: `${label}${e.worldSize > 1 ? ` x${e.worldSize} processes` : ''}` });
  });
  run.on('step', (e) => progress?.update(e.step, { loss: e.loss, acc: e.accuracy, lr: e.lr }));
  run.on('warning', (e) => process.stderr.write(`\nwarning: ${e.message}\n`));
  const finish = () => progress?.finish();
  run.result.then(finish, finish);
}
