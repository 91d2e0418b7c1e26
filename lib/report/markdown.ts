// GitHub-flavoured markdown tables. Hand-written rather than `markdown-table`: that package is
// ESM-only since v3 and cannot be required from this CommonJS build on Node 20.
import { formatMetric } from './format';

export type ColumnAlign = 'left' | 'right' | 'center';
export type TableCell = string | number;

function cellText(cell: TableCell): string {
  const text = typeof cell === 'number' ? formatMetric(cell) : cell;
  // A pipe would end the cell and a newline the row.
  return text.replace(/\|/g, '\\|').replace(/\r?\n/g, ' ');
}

function pad(text: string, width: number, align: ColumnAlign): string {
  const space = width - text.length;
  if (align === 'right') return ' '.repeat(space) + text;
  if (align === 'center') {
    const left = Math.floor(space / 2);
    return ' '.repeat(left) + text + ' '.repeat(space - left);
  }
  return text + ' '.repeat(space);
}

function delimiter(width: number, align: ColumnAlign): string {
  if (align === 'right') return '-'.repeat(width - 1) + ':';
  if (align === 'center') return ':' + '-'.repeat(width - 2) + ':';
  return '-'.repeat(width);
}

/**
 * A markdown table with padded columns, readable as plain text too. Numbers are printed with 4
 * significant digits (format them beforehand, e.g. with formatPercent, to control that). Columns
 * align right when every cell in them is a number and left otherwise, unless `align` says.
 * Short rows are padded with empty cells; extra cells beyond the headers are dropped.
 */
export function markdownTable(headers: string[], rows: TableCell[][], align?: ColumnAlign[]): string {
  const columns = headers.length;
  const body = rows.map((row) => Array.from({ length: columns }, (_, c) => (c < row.length ? cellText(row[c]) : '')));
  const head = headers.map(cellText);
  const aligns = headers.map((_, c): ColumnAlign => {
    if (align?.[c]) return align[c];
    const numeric = rows.length > 0 && rows.every((row) => typeof row[c] === 'number');
    return numeric ? 'right' : 'left';
  });
  // Three dashes is the shortest delimiter every renderer accepts.
  const widths = head.map((h, c) => Math.max(3, h.length, ...body.map((row) => row[c].length)));
  const line = (cells: string[]): string => `| ${cells.join(' | ')} |`;
  return [
    line(head.map((h, c) => pad(h, widths[c], aligns[c]))),
    line(widths.map((w, c) => delimiter(w, aligns[c]))),
    ...body.map((row) => line(row.map((text, c) => pad(text, widths[c], aligns[c])))),
  ].join('\n');
}
