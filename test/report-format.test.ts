import { formatBytes, formatCount, formatDuration, formatMetric, formatPercent } from '../lib/report';

test('formatPercent', () => {
  expect(formatPercent(0.7654)).toBe('76.5%');
  expect(formatPercent(1, 0)).toBe('100%');
  expect(formatPercent(0.12345, 2)).toBe('12.35%');
  expect(formatPercent(NaN)).toBe('-');
});

test('formatDuration', () => {
  expect(formatDuration(0)).toBe('0s');
  expect(formatDuration(4.25)).toBe('4.3s');
  expect(formatDuration(42.4)).toBe('42s');
  expect(formatDuration(83)).toBe('1m 23s');
  expect(formatDuration(3600)).toBe('1h 0m 0s');
  expect(formatDuration(3725)).toBe('1h 2m 5s');
  expect(formatDuration(90061)).toBe('1d 1h 1m 1s');
  expect(formatDuration(59.7)).toBe('1m 0s');
  for (const unknown of [NaN, Infinity, -1]) expect(formatDuration(unknown)).toBe('?');
});

test('formatBytes', () => {
  expect(formatBytes(0)).toBe('0 B');
  expect(formatBytes(512)).toBe('512 B');
  expect(formatBytes(1536)).toBe('1.5 KiB');
  expect(formatBytes(102_500_000)).toBe('97.8 MiB');
  expect(formatBytes(3 * 1024 ** 3)).toBe('3.0 GiB');
  expect(formatBytes(-2048)).toBe('-2.0 KiB');
  expect(formatBytes(NaN)).toBe('-');
});

test('formatCount', () => {
  expect(formatCount(999)).toBe('999');
  expect(formatCount(1200)).toBe('1.2K');
  expect(formatCount(51_840_000)).toBe('51.84M');
  expect(formatCount(999_999)).toBe('1M');
  expect(formatCount(7_000_000_000)).toBe('7B');
  expect(formatCount(-1500)).toBe('-1.5K');
  expect(formatCount(Infinity)).toBe('-');
});

test('formatMetric', () => {
  expect(formatMetric(0.43123456)).toBe('0.4312');
  expect(formatMetric(120)).toBe('120');
  expect(formatMetric(1234.5678)).toBe('1235');
  expect(formatMetric(NaN)).toBe('nan');
  expect(formatMetric(-Infinity)).toBe('-inf');
});
