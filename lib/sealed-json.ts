// JSON files that vouch for themselves (checkpoint meta.json, model.int8.json): the last key,
// `checksum`, is the SHA-256 (hex) of JSON.stringify of the other keys in their written order, and the
// file must read byte for byte as JSON.stringify(value, null, indent) plus a newline. An edited value
// breaks the checksum; any other edit breaks the text.
import { createHash } from 'node:crypto';

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

/** The exact text written for `value`. */
export function jsonText(value: object, indent: number): string {
  return JSON.stringify(value, null, indent) + '\n';
}

/** The text of `value` with its checksum added as the last key. */
export function sealedJsonText(value: object, indent: number): string {
  return jsonText({ ...value, checksum: sha256(JSON.stringify(value)) }, indent);
}

/** Why `parsed` (JSON.parse of `text`) is not as sealedJsonText wrote it; undefined when it is. */
export function sealProblem(parsed: Record<string, unknown>, text: string, indent: number): string | undefined {
  const { checksum, ...rest } = parsed;
  if (typeof checksum !== 'string' || !/^[0-9a-f]{64}$/.test(checksum)) return "no 'checksum' of 64 hex digits (damaged or edited)";
  if (sha256(JSON.stringify(rest)) !== checksum) return 'checksum mismatch: its content was edited or damaged';
  if (text !== jsonText(parsed, indent)) return 'not byte for byte as written (edited or damaged)';
  return undefined;
}
