/**
 * F32 -> F16 / BF16 / Q8_0 / Q4_0 conversion, bit-identical to ggml's reference code (ggml-impl.h
 * `ggml_compute_fp32_to_fp16` / `ggml_compute_fp32_to_bf16`, ggml-quants.c `quantize_row_q8_0_ref` /
 * `quantize_row_q4_0_ref`, which is what `llama-quantize` runs for these types without an importance matrix), and the
 * matching dequantizers. Used to write test models; the engine's own kernels live in C++.
 *
 * ggml computes in float32: every intermediate below goes through Math.fround where C would round to float. (Sums of
 * two float32 values computed in double and rounded once are exact float32 sums, so no double-rounding error.)
 */
import * as os from 'node:os';
import { TwinferError } from '../errors.js';
import { GGMLType } from './types.js';
import { typeInfo } from './type-info.js';

/** The tensor types this module converts to and from. */
export const QUANTIZABLE_TYPES = [GGMLType.F32, GGMLType.F16, GGMLType.BF16, GGMLType.Q8_0, GGMLType.Q4_0] as const;
export type QuantizableType = (typeof QUANTIZABLE_TYPES)[number];

export const QK8_0 = 32;
export const QK4_0 = 32;
const Q8_0_BYTES = 34;
const Q4_0_BYTES = 18;

const LITTLE_ENDIAN_HOST = os.endianness() === 'LE';

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

function floatBits(f: number): number {
  f32Scratch[0] = f;
  return u32Scratch[0];
}

/**
 * IEEE binary16 bits of a float32 given as its bits, rounding to nearest even; NaN becomes sign|0x7E00 as in ggml.
 * Integer-only (no float temporaries) so it is fast in bulk; equal to ggml's float trick for every input.
 */
export function f32BitsToF16Bits(w: number): number {
  const sign = (w >>> 16) & 0x8000;
  const a = w & 0x7fffffff;
  if (a > 0x7f800000) return sign | 0x7e00; // NaN
  if (a >= 0x477ff000) return sign | 0x7c00; // >= 65520 rounds to infinity (also inf itself)
  if (a >= 0x38800000) {
    // normal half: rebias exponent 127 -> 15, keep 10 mantissa bits, round on the 13 dropped ones
    let h = (((a >>> 23) - 112) << 10) | ((a >>> 13) & 0x3ff);
    const rem = a & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && (h & 1) !== 0)) h++; // a carry into the exponent is correct rounding
    return sign | h;
  }
  if (a <= 0x33000000) return sign; // <= 2^-25 rounds to (signed) zero
  // subnormal half: value / 2^-24 = mantissa >> (126 - exponent)
  const e = a >>> 23;
  const m = (a & 0x7fffff) | 0x800000;
  const shift = 126 - e;
  let h = m >>> shift;
  const rem = m & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rem > half || (rem === half && (h & 1) !== 0)) h++;
  return sign | h;
}

export function f32ToF16Bits(f: number): number {
  return f32BitsToF16Bits(floatBits(f));
}

let f16Table: Float32Array | undefined;
/** float32 value of every half, built on first use (256 KiB). */
function f16ToF32Table(): Float32Array {
  if (f16Table) return f16Table;
  const t = new Float32Array(65536);
  const bits = new Uint32Array(t.buffer);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >>> 10) & 0x1f;
    const man = h & 0x3ff;
    if (exp === 0x1f) bits[h] = sign | 0x7f800000 | (man << 13);
    else if (exp !== 0) bits[h] = sign | ((exp + 112) << 23) | (man << 13);
    else t[h] = (sign ? -1 : 1) * man * 2 ** -24; // zero and subnormals are exact in float32
  }
  f16Table = t;
  return t;
}

export function f16BitsToF32(h: number): number {
  return f16ToF32Table()[h & 0xffff];
}

/** bfloat16 bits of a float32 given as bits: round to nearest even, NaN forced quiet (ggml_compute_fp32_to_bf16). */
export function f32BitsToBf16Bits(w: number): number {
  if ((w & 0x7fffffff) > 0x7f800000) return ((w >>> 16) | 64) & 0xffff;
  return ((w + 0x7fff + ((w >>> 16) & 1)) >>> 16) & 0xffff;
}

export function f32ToBf16Bits(f: number): number {
  return f32BitsToBf16Bits(floatBits(f));
}

export function bf16BitsToF32(h: number): number {
  u32Scratch[0] = (h & 0xffff) << 16;
  return f32Scratch[0];
}

/** Bytes that n elements of `type` take (n must be a multiple of its block size). */
export function quantizedSize(type: QuantizableType, n: number): number {
  const info = typeInfo(type)!;
  if (n % info.blockSize !== 0) {
    throw new TwinferError('E_BLOCK_SIZE', `${n} elements is not a multiple of the ${info.name} block size ${info.blockSize}`, { n, type: info.name });
  }
  return (n / info.blockSize) * info.typeSize;
}

function checkType(type: number): asserts type is QuantizableType {
  if (!(QUANTIZABLE_TYPES as readonly number[]).includes(type)) {
    throw new TwinferError('E_UNSUPPORTED_TYPE', `cannot convert to/from ggml type ${typeInfo(type)?.name ?? type}; supported: F32, F16, BF16, Q8_0, Q4_0`, { type });
  }
}

/** quantize_row_q8_0_ref: per block of 32, d = amax/127 (stored as f16), q = roundf(x/d). */
function quantizeQ8_0(x: Float32Array, dst: Uint8Array, o: number): void {
  const nb = x.length / QK8_0;
  for (let i = 0; i < nb; i++, o += Q8_0_BYTES) {
    const base = i * QK8_0;
    let amax = 0;
    for (let j = 0; j < QK8_0; j++) {
      const av = Math.abs(x[base + j]);
      amax = amax > av ? amax : av; // MAX(amax, fabsf(v)) with its NaN behaviour
    }
    const d = Math.fround(amax / 127);
    const id = d !== 0 ? Math.fround(1 / d) : 0; // C's `d ?` is true for NaN too
    const h = f32ToF16Bits(d);
    dst[o] = h & 0xff;
    dst[o + 1] = h >>> 8;
    for (let j = 0; j < QK8_0; j++) {
      const x0 = Math.fround(x[base + j] * id);
      // roundf (half away from zero) without a sign branch, which mispredicts half the time on real data:
      // |x0| <= 127 so y = x0 + 128.5 is positive and exact in double, and (y|0) - 128 rounds half up. Only an exact
      // negative tie (y integral) differs from roundf; a non-finite x0 (from a subnormal scale, 1/d = inf) stores 0
      // as x86's float->int conversion does in ggml. Both are rare, so that branch predicts well.
      const y = x0 + 128.5;
      const t = y | 0;
      let q = t - 128;
      const frac = y - t;
      if (!(frac > 0 && frac < 1)) q = frac === 0 ? (x0 < 0 ? q - 1 : q) : 0;
      dst[o + 2 + j] = q;
    }
  }
}

/** quantize_row_q4_0_ref: d = (signed value of largest magnitude) / -8, q = min(15, (int8)(x/d + 8.5)). */
function quantizeQ4_0(x: Float32Array, dst: Uint8Array, o: number): void {
  const nb = x.length / QK4_0;
  const half = QK4_0 / 2;
  for (let i = 0; i < nb; i++, o += Q4_0_BYTES) {
    const base = i * QK4_0;
    let amax = 0;
    let max = 0;
    for (let j = 0; j < QK4_0; j++) {
      const v = x[base + j];
      const av = Math.abs(v);
      if (amax < av) {
        amax = av;
        max = v;
      }
    }
    const d = Math.fround(max / -8);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    const h = f32ToF16Bits(d);
    dst[o] = h & 0xff;
    dst[o + 1] = h >>> 8;
    for (let j = 0; j < half; j++) {
      const x0 = Math.fround(x[base + j] * id);
      const x1 = Math.fround(x[base + half + j] * id);
      // (int8_t) truncation; the values are in [0, 16.5] so |0 truncates the same way (and stays an int32)
      let xi0 = Math.fround(x0 + 8.5) | 0;
      let xi1 = Math.fround(x1 + 8.5) | 0;
      if (xi0 > 15) xi0 = 15;
      if (xi1 > 15) xi1 = 15;
      dst[o + 2 + j] = xi0 | (xi1 << 4);
    }
  }
}

/**
 * Convert float32 values to `type`, writing into dst at dstOffset (dst must have room) and returning the bytes
 * written. src.length must be a multiple of the type's block size (blocks never straddle rows in ggml, so callers
 * pass whole rows).
 */
export function quantizeInto(type: number, src: Float32Array, dst: Uint8Array, dstOffset = 0): number {
  checkType(type);
  const size = quantizedSize(type, src.length);
  if (dstOffset + size > dst.length) {
    throw new TwinferError('E_INVALID_ARGUMENT', `destination too small: need ${size} bytes at offset ${dstOffset}, have ${dst.length}`);
  }
  switch (type) {
    case GGMLType.F32: {
      if (LITTLE_ENDIAN_HOST) {
        dst.set(new Uint8Array(src.buffer, src.byteOffset, size), dstOffset);
      } else {
        const dv = new DataView(dst.buffer, dst.byteOffset + dstOffset, size);
        for (let i = 0; i < src.length; i++) dv.setFloat32(i * 4, src[i], true);
      }
      break;
    }
    case GGMLType.F16:
    case GGMLType.BF16: {
      const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
      if (LITTLE_ENDIAN_HOST && (dst.byteOffset + dstOffset) % 2 === 0) {
        // aligned: store halves directly (two monomorphic loops so each conversion inlines)
        const h = new Uint16Array(dst.buffer, dst.byteOffset + dstOffset, src.length);
        if (type === GGMLType.F16) for (let i = 0; i < bits.length; i++) h[i] = f32BitsToF16Bits(bits[i]);
        else for (let i = 0; i < bits.length; i++) h[i] = f32BitsToBf16Bits(bits[i]);
        break;
      }
      const conv = type === GGMLType.F16 ? f32BitsToF16Bits : f32BitsToBf16Bits;
      for (let i = 0, o = dstOffset; i < bits.length; i++, o += 2) {
        const h = conv(bits[i]);
        dst[o] = h & 0xff;
        dst[o + 1] = h >>> 8;
      }
      break;
    }
    case GGMLType.Q8_0:
      quantizeQ8_0(src, dst, dstOffset);
      break;
    case GGMLType.Q4_0:
      quantizeQ4_0(src, dst, dstOffset);
      break;
  }
  return size;
}

/** Convert float32 values to a new buffer of `type`. */
export function quantize(type: number, src: Float32Array): Uint8Array {
  checkType(type);
  const out = new Uint8Array(quantizedSize(type, src.length));
  quantizeInto(type, src, out, 0);
  return out;
}

/** Decode n elements of `type` from raw bytes (as ggml's dequantize_row_* / to_float do). */
export function dequantize(type: number, data: Uint8Array, n: number): Float32Array {
  checkType(type);
  const size = quantizedSize(type, n);
  if (data.length < size) {
    throw new TwinferError('E_TRUNCATED', `${n} ${typeInfo(type)!.name} elements need ${size} bytes, got ${data.length}`);
  }
  const out = new Float32Array(n);
  const dv = new DataView(data.buffer, data.byteOffset, size);
  switch (type) {
    case GGMLType.F32:
      for (let i = 0; i < n; i++) out[i] = dv.getFloat32(i * 4, true);
      break;
    case GGMLType.F16: {
      const t = f16ToF32Table();
      for (let i = 0; i < n; i++) out[i] = t[dv.getUint16(i * 2, true)];
      break;
    }
    case GGMLType.BF16:
      for (let i = 0; i < n; i++) out[i] = bf16BitsToF32(dv.getUint16(i * 2, true));
      break;
    case GGMLType.Q8_0:
      for (let b = 0; b < n / QK8_0; b++) {
        const o = b * Q8_0_BYTES;
        const d = f16BitsToF32(dv.getUint16(o, true));
        for (let j = 0; j < QK8_0; j++) out[b * QK8_0 + j] = Math.fround(dv.getInt8(o + 2 + j) * d);
      }
      break;
    case GGMLType.Q4_0:
      for (let b = 0; b < n / QK4_0; b++) {
        const o = b * Q4_0_BYTES;
        const d = f16BitsToF32(dv.getUint16(o, true));
        for (let j = 0; j < QK4_0 / 2; j++) {
          const q = data[o + 2 + j];
          out[b * QK4_0 + j] = Math.fround(((q & 0x0f) - 8) * d);
          out[b * QK4_0 + j + QK4_0 / 2] = Math.fround(((q >>> 4) - 8) * d);
        }
      }
      break;
  }
  return out;
}
