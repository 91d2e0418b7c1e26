// Number formatting for reports and progress lines. Hand-written: the well-known packages for this
// (pretty-bytes, pretty-ms) are ESM-only now and this project compiles to CommonJS for Node 20.

/** Drops trailing zeros after a decimal point: "12.50" -> "12.5", "3.00" -> "3". */
function trimZeros(fixed: string): string {
  return fixed.includes('.') ? fixed.replace(/\.?0+$/, '') : fixed;
}

/** A fraction as a percentage: formatPercent(0.7654) -> "76.5%". Non-finite input -> "-". */
export function formatPercent(fraction: number, digits = 1): string {
  if (!Number.isFinite(fraction)) return '-';
  return `${(fraction * 100).toFixed(digits)}%`;
}

/**
 * Seconds as a human duration: 4.2 -> "4.2s", 83 -> "1m 23s", 3725 -> "1h 2m 5s", 90061 -> "1d 1h 1m 1s".
 * Unknown durations (NaN, infinite, negative) -> "?", which is what an ETA shows before it has a rate.
 */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  if (seconds < 10) return `${trimZeros(seconds.toFixed(1))}s`;
  let rest = Math.round(seconds);
  if (rest < 60) return `${rest}s`;
  const parts: string[] = [];
  for (const [unit, size] of [
    ['d', 86400],
    ['h', 3600],
    ['m', 60],
  ] as const) {
    const count = Math.floor(rest / size);
    rest -= count * size;
    if (count > 0 || parts.length > 0) parts.push(`${count}${unit}`);
  }
  parts.push(`${rest}s`);
  return parts.join(' ');
}

const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** Bytes in binary units: 512 -> "512 B", 1536 -> "1.5 KiB", 102_500_000 -> "97.8 MiB". */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes)) return '-';
  const sign = bytes < 0 ? '-' : '';
  let value = Math.abs(bytes);
  let unit = 0;
  while (value >= 1024 && unit < BYTE_UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${sign}${Math.round(value)} B` : `${sign}${value.toFixed(1)} ${BYTE_UNITS[unit]}`;
}

const COUNT_UNITS = ['', 'K', 'M', 'B', 'T'];

/** Large counts with a suffix, as parameter counts are quoted: 51_840_000 -> "51.84M", 1200 -> "1.2K", 999 -> "999". */
export function formatCount(count: number): string {
  if (!Number.isFinite(count)) return '-';
  const sign = count < 0 ? '-' : '';
  let value = Math.abs(count);
  let unit = 0;
  // Rounding first keeps 999_999 from printing as "1000K".
  while (unit < COUNT_UNITS.length - 1 && Number(value.toFixed(2)) >= 1000) {
    value /= 1000;
    unit++;
  }
  return `${sign}${trimZeros(value.toFixed(2))}${COUNT_UNITS[unit]}`;
}

/** A metric value at a glance: 4 significant digits, integers as they are, "nan"/"inf" spelled out. */
export function formatMetric(value: number): string {
  if (Number.isNaN(value)) return 'nan';
  if (!Number.isFinite(value)) return value > 0 ? 'inf' : '-inf';
  if (Number.isInteger(value) && Math.abs(value) < 1e15) return String(value);
  return String(Number(value.toPrecision(4)));
}
