/**
 * On-load quantization: an F32/F16/BF16 model is converted to Q8_0 or Q4_0 one chunk of rows at a time while it
 * streams from the file, straight into the backend's memory, so memory peaks near the quantized size rather than
 * the float size. The block arithmetic is ggml's reference quantizers (gguf/quantize.ts).
 */
import { TwinferError } from '../errors.js';
import { dequantize, quantizeInto, quantizedSize } from '../gguf/quantize.js';
import { GGMLType } from '../gguf/types.js';
import { readInto } from '../gguf/reader.js';
import type { GGUFTensorInfo } from '../gguf/types.js';
import { ROLE } from './architecture.js';

export type OnLoadQuantization = 'q8_0' | 'q4_0';

const FLOAT_TYPES = new Set<number>([GGMLType.F32, GGMLType.F16, GGMLType.BF16]);
const SOURCE_BYTES_PER_CHUNK = 16 << 20;

export function parseQuantization(q: unknown): OnLoadQuantization | undefined {
  if (q === undefined) return undefined;
  if (q === 'q8_0' || q === 'q4_0') return q;
  throw new TwinferError('E_INVALID_ARGUMENT', `quantize must be 'q8_0' or 'q4_0', got ${JSON.stringify(q)}`);
}

/**
 * The type a tensor is stored in after on-load quantization. Matrices with a block-aligned row length are
 * quantized (rows that 32-value blocks cannot tile become F16); norms and biases stay F32. With q4_0 the output projection is kept at Q8_0 — it is the most
 * quantization-sensitive matrix (llama.cpp's Q4_0 files do the same for small-vocabulary models).
 */
export function targetType(tensor: GGUFTensorInfo, role: number, q: OnLoadQuantization | undefined): number {
  if (!q || !FLOAT_TYPES.has(tensor.type) || tensor.dims.length < 2) return tensor.type;
  // A row length the 32-value blocks cannot tile falls back to F16, as llama-quantize does.
  if (tensor.dims[0] % 32 !== 0) return tensor.type === GGMLType.F32 ? GGMLType.F16 : tensor.type;
  if (q === 'q8_0') return GGMLType.Q8_0;
  return role === ROLE.OUTPUT ? GGMLType.Q8_0 : GGMLType.Q4_0;
}

/** Reads a float tensor from the file in chunks of rows and writes it, quantized to `dstType`, into `dst`. */
export function quantizeTensorFromFile(fd: number, tensor: GGUFTensorInfo, dstType: number, dst: Uint8Array | ((offset: number, bytes: Uint8Array) => void)): void {
  const rowLen = tensor.dims[0];
  const rows = tensor.nElements / rowLen;
  const srcRowBytes = tensor.size / rows;
  const dstRowBytes = quantizedSize(dstType as GGMLType.Q8_0, rowLen);
  const rowsPerChunk = Math.max(1, Math.floor(SOURCE_BYTES_PER_CHUNK / srcRowBytes));
  const src = new Uint8Array(Math.min(rows, rowsPerChunk) * srcRowBytes);
  const out = typeof dst === 'function' ? new Uint8Array(Math.min(rows, rowsPerChunk) * dstRowBytes) : undefined;
  for (let r = 0; r < rows; r += rowsPerChunk) {
    const n = Math.min(rowsPerChunk, rows - r);
    const chunk = src.subarray(0, n * srcRowBytes);
    readInto(fd, tensor.offset + r * srcRowBytes, chunk);
    const floats = tensor.type === GGMLType.F32 ? new Float32Array(chunk.buffer, chunk.byteOffset, n * rowLen) : dequantize(tensor.type, chunk, n * rowLen);
    if (typeof dst === 'function') {
      quantizeInto(dstType, floats, out!, 0);
      dst(r * dstRowBytes, out!.subarray(0, n * dstRowBytes));
    } else {
      quantizeInto(dstType, floats, dst, r * dstRowBytes);
    }
  }
}
