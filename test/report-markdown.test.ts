import { formatPercent, markdownTable } from '../lib/report';

test('pads columns, right-aligns numeric columns, formats numbers to 4 significant digits', () => {
  const table = markdownTable(
    ['model', 'params', 'top-1', 'loss'],
    [
      ['RepOpt-VGG-B1', '51.84M', formatPercent(0.7812), 0.912345],
      ['VGG', '51.8M', formatPercent(0.7), 1.1],
    ],
  );
  expect(table).toBe(
    [
      '| model         | params | top-1 |   loss |',
      '| ------------- | ------ | ----- | -----: |',
      '| RepOpt-VGG-B1 | 51.84M | 78.1% | 0.9123 |',
      '| VGG           | 51.8M  | 70.0% |    1.1 |',
    ].join('\n'),
  );
});

test('explicit alignment, escaped pipes and newlines, short and long rows', () => {
  const table = markdownTable(['a', 'b'], [['x|y', 1, 'dropped'], ['two\nlines']], ['center', 'left']);
  expect(table).toBe(['|     a     | b   |', '| :-------: | --- |', '|   x\\|y    | 1   |', '| two lines |     |'].join('\n'));
});
