// A training run as a Node EventEmitter: typed events while it runs, `result` when it is done. The
// work starts on the next turn of the event loop, so listeners attached right after the call see
// every event.
import { EventEmitter } from 'events';

/** Sent once the data is loaded and the network is built, before the first step. */
export interface StartEvent {
  /** The step the run starts from (> 0 when resumed). */
  readonly step: number;
  /** The step it will stop at (the last step, or stopAfterSteps). */
  readonly stopAt: number;
  readonly stepsPerEpoch: number;
  readonly rank: number;
  readonly worldSize: number;
}

/** Every `logEvery` steps, at epoch ends and when stopped: means over the steps since the last one. */
export interface StepEvent {
  /** Steps done (1-based: the first step is step 1). */
  readonly step: number;
  /** The epoch this step belongs to, 0-based (EpochEvent.epoch counts epochs done: 1 after the first). */
  readonly epoch: number;
  readonly lr: number;
  readonly loss: number;
  readonly accuracy: number;
  /** Steps skipped for non-finite values in this interval (skipNonFinite). */
  readonly skipped: number;
  readonly imagesPerSecond: number;
}

/** At the end of each epoch, with the test-set evaluation. */
export interface EpochEvent {
  /** Epochs done: 1 after the first. */
  readonly epoch: number;
  readonly step: number;
  readonly lr: number;
  readonly trainLoss: number;
  readonly trainAccuracy: number;
  readonly testLoss: number;
  readonly testAccuracy: number;
  /** With ema: the EMA network's test loss and accuracy. */
  readonly testLossEma?: number;
  readonly testAccuracyEma?: number;
  readonly seconds: number;
  /** Streamed image folders: images left out of the epoch (training and evaluation) because they could not
   * be read; each is named once in a 'warning' event. */
  readonly skippedImages?: number;
}

export interface CheckpointEvent {
  readonly step: number;
  readonly epoch: number;
  /** The checkpoint folder (resume from its run folder, or load it with evaluate / convert). */
  readonly dir: string;
}

/** Something the run recovered from or worked around, that the user should know of (a damaged
 * checkpoint passed over, a setting capped, stale temporary folders removed). */
export interface WarningEvent {
  readonly message: string;
}

/** What the training loop reports. */
export interface LoopEvents {
  start: [StartEvent];
  warning: [WarningEvent];
  step: [StepEvent];
  epoch: [EpochEvent];
  checkpoint: [CheckpointEvent];
}

/** A run's events: the loop's, then `finished` with the run's result. */
export interface TrainEvents<R> extends LoopEvents {
  finished: [R];
}

export type Emit = <K extends keyof LoopEvents>(event: K, ...args: LoopEvents[K]) => void;

export class TrainingRun<R> extends EventEmitter<TrainEvents<R>> {
  /** Resolves when the run has finished (completed, stopped or aborted: see the result's `status`);
   * rejects with the error that ended it. */
  readonly result: Promise<R>;

  constructor(work: (emit: Emit) => Promise<R>) {
    super();
    const emit: Emit = (event, ...args) => {
      (this as EventEmitter).emit(event, ...args);
    };
    this.result = new Promise<void>((resolve) => setImmediate(resolve))
      .then(() => work(emit))
      .then((r) => {
        (this as EventEmitter).emit('finished', r);
        return r;
      });
  }
}
