import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { writeJsonl } from '../lib/report';

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'repopt-jsonl-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const readLines = (file: string): unknown[] =>
  fs
    .readFileSync(file, 'utf8')
    .trimEnd()
    .split('\n')
    .map((line) => JSON.parse(line) as unknown);

test('each append is one line, on disk before the next call; reopening appends', () => {
  const file = path.join(dir, 'run', 'metrics.jsonl');
  const log = writeJsonl<{ step: number; loss: number; note?: string }>(file);
  log.append({ step: 1, loss: 0.5 });
  // Read back while still open: nothing waits in a buffer.
  expect(readLines(file)).toEqual([{ step: 1, loss: 0.5 }]);
  log.append({ step: 2, loss: NaN, note: 'two\nlines' });
  log.close();
  log.close();
  expect(() => log.append({ step: 3, loss: 0 })).toThrow(/closed/);

  const again = writeJsonl(file);
  again.append({ step: 3 });
  again.close();
  expect(readLines(file)).toEqual([{ step: 1, loss: 0.5 }, { step: 2, loss: null, note: 'two\nlines' }, { step: 3 }]);
});
