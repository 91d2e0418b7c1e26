// The frame around an optimizer's saved state. libtorch's archive reader trusts its input (a few
// flipped bits can crash the process), so the state travels in a frame whose digest is checked
// before the addon sees a byte:
//
//   offset  size  field
//        0     4  magic 'RPOS'
//        4     4  format version, uint32 little-endian (1)
//        8     8  payload length in bytes, uint64 little-endian
//       16    32  SHA-256 of the payload
//       48     n  payload: libtorch's archive of the optimizer state
import { createHash } from 'node:crypto';

const MAGIC = Buffer.from('RPOS', 'latin1');
const FRAME_VERSION = 1;
const DIGEST_BYTES = 32;
/** Bytes before the payload. */
export const OPTIMIZER_STATE_HEADER_BYTES = 16 + DIGEST_BYTES;

const sha256 = (bytes: Uint8Array): Buffer => createHash('sha256').update(bytes).digest();

/** The framed form of a libtorch optimizer archive. */
export function frameOptimizerState(payload: Uint8Array): Uint8Array {
  const framed = Buffer.alloc(OPTIMIZER_STATE_HEADER_BYTES + payload.length);
  MAGIC.copy(framed, 0);
  framed.writeUInt32LE(FRAME_VERSION, 4);
  framed.writeBigUInt64LE(BigInt(payload.length), 8);
  sha256(payload).copy(framed, 16);
  framed.set(payload, OPTIMIZER_STATE_HEADER_BYTES);
  return new Uint8Array(framed.buffer, framed.byteOffset, framed.length);
}

/** The payload of a framed optimizer state, after checking magic, version, length and digest;
 * throws `optimizer state: …` for anything else. */
export function unframeOptimizerState(bytes: Uint8Array): Uint8Array {
  const fail = (why: string): never => {
    throw new Error(`optimizer state: ${why}`);
  };
  // (not instanceof: typed arrays from the addon or another realm are fine)
  if (!ArrayBuffer.isView(bytes) || Object.prototype.toString.call(bytes) !== '[object Uint8Array]')
    fail(`expected a Uint8Array from stateBytes(), got ${bytes === null ? 'null' : typeof bytes}`);
  const view = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.length < OPTIMIZER_STATE_HEADER_BYTES)
    fail(`${view.length} bytes, shorter than the ${OPTIMIZER_STATE_HEADER_BYTES}-byte header (truncated, or not from stateBytes())`);
  if (!view.subarray(0, 4).equals(MAGIC)) fail("no 'RPOS' mark at the start (damaged, or not from stateBytes())");
  const version = view.readUInt32LE(4);
  if (version !== FRAME_VERSION) fail(`frame version ${version} is not ${FRAME_VERSION} (damaged, or written by another repopt version)`);
  const declared = view.readBigUInt64LE(8);
  const held = view.length - OPTIMIZER_STATE_HEADER_BYTES;
  if (declared !== BigInt(held)) fail(`the header announces ${declared} payload bytes, ${held} follow (truncated or damaged)`);
  const payload = view.subarray(OPTIMIZER_STATE_HEADER_BYTES);
  if (!sha256(payload).equals(view.subarray(16, OPTIMIZER_STATE_HEADER_BYTES))) fail('SHA-256 mismatch (damaged)');
  return new Uint8Array(payload.buffer, payload.byteOffset, payload.length);
}
