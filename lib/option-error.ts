// A bad value of one option. The message starts with the API parameter's name (e.g. 'lr',
// 'data.trainSubset'); the CLI swaps that name for its flag (lib/commands/flags.ts), so API callers
// read the name they wrote and CLI users the flag they typed.

export class OptionError extends RangeError {
  /**
   * `option`: the API parameter path, e.g. 'lr', 'quant.calibBatches'; `message` starts with it.
   * `related`: parameter paths the message names further on (e.g. the one to change instead; the option
   * itself when it comes up again), swapped for their flags wherever they stand as whole words.
   */
  constructor(
    readonly option: string,
    message: string,
    readonly related: readonly string[] = [],
  ) {
    super(message);
    this.name = 'OptionError';
  }
}
