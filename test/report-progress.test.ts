import { Writable } from 'node:stream';
import { createProgress, formatMetrics, formatRate, type ProgressStream } from '../lib/report';

/** A stream that records what is written; `isTTY` picks the bar or the plain lines. */
function captureStream(isTTY: boolean): { stream: ProgressStream; text: () => string } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer | string, _encoding, done) {
      chunks.push(chunk.toString());
      done();
    },
  });
  return { stream: Object.assign(stream, { isTTY, columns: 200 }), text: () => chunks.join('') };
}

describe('plain lines (not a TTY)', () => {
  beforeEach(() => jest.useFakeTimers({ now: 0 }));
  afterEach(() => jest.useRealTimers());

  test('one line per 10% with count, rate, ETA and metrics; a final line with the total time', () => {
    const { stream, text } = captureStream(false);
    const progress = createProgress({ total: 100, label: 'train', stream });
    for (let done = 1; done <= 100; done++) {
      jest.advanceTimersByTime(200); // 5 items/s
      progress.update(done, { loss: 1 / done, acc: done / 100 });
    }
    progress.finish({ acc: 0.9123 });
    const lines = text().trimEnd().split('\n');
    expect(lines).toHaveLength(11);
    expect(lines[0]).toBe('train  10/100 (10.0%)  5.00 it/s  ETA 18s  loss=0.1 acc=0.1');
    expect(lines[4]).toBe('train  50/100 (50.0%)  5.00 it/s  ETA 10s  loss=0.02 acc=0.5');
    expect(lines[9]).toBe('train  100/100 (100.0%)  5.00 it/s  ETA 0s  loss=0.01 acc=1');
    expect(lines[10]).toBe('train  100/100 (100.0%)  5.00 it/s  done in 20s  acc=0.9123');
  });

  test('a slow loop also prints every `every` seconds, and no more often', () => {
    const { stream, text } = captureStream(false);
    const progress = createProgress({ total: 1000, label: 'epoch 1', stream, every: 30 });
    for (let done = 1; done <= 20; done++) {
      jest.advanceTimersByTime(10_000); // 0.1 items/s: 2% in 200 s
      progress.update(done, { loss: 0.5 });
    }
    const lines = text().trimEnd().split('\n');
    expect(lines).toHaveLength(6); // at 30, 60, ..., 180 s
    expect(lines[0]).toBe('epoch 1  3/1000 (0.3%)  10.0 s/it  ETA 2h 46m 10s  loss=0.5');
  });

  test('odd input never throws: total 0, NaN, negative and past-the-end counts, missing metrics', () => {
    const { stream, text } = captureStream(false);
    const unknownTotal = createProgress({ total: 0, label: 'eval', stream, every: 1 });
    jest.advanceTimersByTime(2000);
    unknownTotal.update(NaN, { loss: NaN, acc: Infinity });
    jest.advanceTimersByTime(2000);
    unknownTotal.update(50);
    unknownTotal.finish();
    unknownTotal.finish();
    unknownTotal.update(60);
    expect(text()).toBe(
      ['eval  0  ? it/s  ETA ?  loss=nan acc=inf', 'eval  50  12.5 it/s  ETA ?', 'eval  50  12.5 it/s  done in 4s', ''].join('\n'),
    );

    const clamped = captureStream(false);
    const progress = createProgress({ total: NaN, label: 'x', stream: clamped.stream });
    progress.update(-5, undefined);
    const overfull = createProgress({ total: 10, label: 'y', stream: clamped.stream });
    jest.advanceTimersByTime(1000);
    overfull.update(25, {});
    expect(clamped.text()).toBe('y  10/10 (100.0%)  10.0 it/s  ETA 0s\n');
  });
});

test('on a TTY: a live bar with rate, ETA and metrics, stopped by finish()', async () => {
  const { stream, text } = captureStream(true);
  const progress = createProgress({ total: 50, label: 'train', stream });
  await new Promise((resolve) => setTimeout(resolve, 50));
  progress.update(25, { loss: 0.25 });
  progress.finish({ loss: 0.125, acc: 0.5 });
  const output = text();
  expect(output).toContain('train ');
  expect(output).toMatch(/\d+(\.\d+)? it\/s/);
  expect(output).toContain('ETA ');
  expect(output).toContain('loss=0.125 acc=0.5');
  expect(output).toMatch(/done in \d/);
});

test('formatRate and formatMetrics', () => {
  expect(formatRate(153.26)).toBe('153 it/s');
  expect(formatRate(12.34)).toBe('12.3 it/s');
  expect(formatRate(0.5)).toBe('2.0 s/it');
  expect(formatRate(NaN)).toBe('? it/s');
  expect(formatMetrics({ loss: 0.43125, acc: 0.875, lr: 1e-7 })).toBe('loss=0.4313 acc=0.875 lr=1e-7');
});
