// Dot products of one weight row (in its storage type, read block by block, never dequantized to memory) with an
// F32 activation vector. WASM SIMD128 when compiled with -msimd128, portable scalar code otherwise (the scalar
// versions are also the reference the SIMD ones are tested against).
#pragma once
#include <cstdint>

#include "../common/quants.h"

#if defined(__wasm_simd128__)
#include <wasm_simd128.h>
#endif

namespace tw {

// ---- scalar references ----
inline float dot_f32_scalar(const float* w, const float* x, int64_t n) {
  float s = 0;
  for (int64_t i = 0; i < n; ++i) s += w[i] * x[i];
  return s;
}
inline float dot_f16_scalar(const uint16_t* w, const float* x, int64_t n) {
  float s = 0;
  for (int64_t i = 0; i < n; ++i) s += fp16_to_f32(w[i]) * x[i];
  return s;
}
inline float dot_bf16_scalar(const uint16_t* w, const float* x, int64_t n) {
  float s = 0;
  for (int64_t i = 0; i < n; ++i) s += bf16_to_f32(w[i]) * x[i];
  return s;
}
inline float dot_q8_0_scalar(const block_q8_0* w, const float* x, int64_t n) {
  float s = 0;
  for (int64_t b = 0; b < n / QK8_0; ++b) {
    float bs = 0;
    for (int j = 0; j < QK8_0; ++j) bs += w[b].qs[j] * x[b * QK8_0 + j];
    s += bs * fp16_to_f32(w[b].d);
  }
  return s;
}
inline float dot_q4_0_scalar(const block_q4_0* w, const float* x, int64_t n) {
  float s = 0;
  for (int64_t b = 0; b < n / QK4_0; ++b) {
    float bs = 0;
    const float* xb = x + b * QK4_0;
    for (int j = 0; j < QK4_0 / 2; ++j) {
      bs += ((w[b].qs[j] & 0x0F) - 8) * xb[j];
      bs += ((w[b].qs[j] >> 4) - 8) * xb[j + QK4_0 / 2];
    }
    s += bs * fp16_to_f32(w[b].d);
  }
  return s;
}

#if defined(__wasm_simd128__)

inline float hsum(v128_t v) {
  return wasm_f32x4_extract_lane(v, 0) + wasm_f32x4_extract_lane(v, 1) + wasm_f32x4_extract_lane(v, 2) +
         wasm_f32x4_extract_lane(v, 3);
}

inline float dot_f32(const float* w, const float* x, int64_t n) {
  v128_t a0 = wasm_f32x4_splat(0), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(wasm_v128_load(w + i), wasm_v128_load(x + i)));
    a1 = wasm_f32x4_add(a1, wasm_f32x4_mul(wasm_v128_load(w + i + 4), wasm_v128_load(x + i + 4)));
    a2 = wasm_f32x4_add(a2, wasm_f32x4_mul(wasm_v128_load(w + i + 8), wasm_v128_load(x + i + 8)));
    a3 = wasm_f32x4_add(a3, wasm_f32x4_mul(wasm_v128_load(w + i + 12), wasm_v128_load(x + i + 12)));
  }
  float s = hsum(wasm_f32x4_add(wasm_f32x4_add(a0, a1), wasm_f32x4_add(a2, a3)));
  for (; i < n; ++i) s += w[i] * x[i];
  return s;
}

// 8 halves -> two f32x4. Exact for normal and subnormal halves; weights hold no inf/NaN. Each half goes to the top
// of its 32-bit lane (one unpack), an arithmetic shift by 3 puts exponent and mantissa in f32 position with the sign
// copied into bits 31..28, the mask keeps bit 31 alone of those, and a multiplication by 2^112 (exact in binary32,
// subnormal halves included) rebiases the exponent: 4 vector operations per 4 values where the widen / mask / shift /
// sign-or version took 7 (F16 decode is bound by these operations, not by memory).
inline void f16x8_to_f32(v128_t h, v128_t* lo, v128_t* hi) {
  const v128_t z = wasm_i32x4_splat(0);
  const v128_t l = wasm_i16x8_shuffle(z, h, 0, 8, 1, 9, 2, 10, 3, 11);
  const v128_t u = wasm_i16x8_shuffle(z, h, 4, 12, 5, 13, 6, 14, 7, 15);
  const v128_t keep = wasm_i32x4_splat((int32_t)0x8FFFFFFFu);
  const v128_t scale = wasm_f32x4_splat(0x1p112f);
  *lo = wasm_f32x4_mul(wasm_v128_and(wasm_i32x4_shr(l, 3), keep), scale);
  *hi = wasm_f32x4_mul(wasm_v128_and(wasm_i32x4_shr(u, 3), keep), scale);
}

// Four accumulators: two would make the f32 add latency (3 cycles) the limit.
inline float dot_f16(const uint16_t* w, const float* x, int64_t n) {
  v128_t a0 = wasm_f32x4_splat(0), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    v128_t l0, h0, l1, h1;
    f16x8_to_f32(wasm_v128_load(w + i), &l0, &h0);
    f16x8_to_f32(wasm_v128_load(w + i + 8), &l1, &h1);
    a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(l0, wasm_v128_load(x + i)));
    a1 = wasm_f32x4_add(a1, wasm_f32x4_mul(h0, wasm_v128_load(x + i + 4)));
    a2 = wasm_f32x4_add(a2, wasm_f32x4_mul(l1, wasm_v128_load(x + i + 8)));
    a3 = wasm_f32x4_add(a3, wasm_f32x4_mul(h1, wasm_v128_load(x + i + 12)));
  }
  for (; i + 8 <= n; i += 8) {
    v128_t lo, hi;
    f16x8_to_f32(wasm_v128_load(w + i), &lo, &hi);
    a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(lo, wasm_v128_load(x + i)));
    a1 = wasm_f32x4_add(a1, wasm_f32x4_mul(hi, wasm_v128_load(x + i + 4)));
  }
  float s = hsum(wasm_f32x4_add(wasm_f32x4_add(a0, a1), wasm_f32x4_add(a2, a3)));
  for (; i < n; ++i) s += fp16_to_f32(w[i]) * x[i];
  return s;
}

inline float dot_bf16(const uint16_t* w, const float* x, int64_t n) {
  v128_t a0 = wasm_f32x4_splat(0), a1 = a0;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const v128_t h = wasm_v128_load(w + i);
    const v128_t lo = wasm_i32x4_shl(wasm_u32x4_extend_low_u16x8(h), 16);
    const v128_t hi = wasm_i32x4_shl(wasm_u32x4_extend_high_u16x8(h), 16);
    a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(lo, wasm_v128_load(x + i)));
    a1 = wasm_f32x4_add(a1, wasm_f32x4_mul(hi, wasm_v128_load(x + i + 4)));
  }
  float s = hsum(wasm_f32x4_add(a0, a1));
  for (; i < n; ++i) s += bf16_to_f32(w[i]) * x[i];
  return s;
}

// 16 int8 weights times 16 floats, accumulated into acc (4 lanes).
inline v128_t madd_i8x16(v128_t q, const float* x, v128_t acc) {
  const v128_t q16l = wasm_i16x8_extend_low_i8x16(q);
  const v128_t q16h = wasm_i16x8_extend_high_i8x16(q);
  const v128_t f0 = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_low_i16x8(q16l));
  const v128_t f1 = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_high_i16x8(q16l));
  const v128_t f2 = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_low_i16x8(q16h));
  const v128_t f3 = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_high_i16x8(q16h));
  acc = wasm_f32x4_add(acc, wasm_f32x4_mul(f0, wasm_v128_load(x)));
  acc = wasm_f32x4_add(acc, wasm_f32x4_mul(f1, wasm_v128_load(x + 4)));
  acc = wasm_f32x4_add(acc, wasm_f32x4_mul(f2, wasm_v128_load(x + 8)));
  acc = wasm_f32x4_add(acc, wasm_f32x4_mul(f3, wasm_v128_load(x + 12)));
  return acc;
}

inline float dot_q8_0(const block_q8_0* w, const float* x, int64_t n) {
  v128_t acc = wasm_f32x4_splat(0);
  for (int64_t b = 0; b < n / QK8_0; ++b) {
    const float* xb = x + b * QK8_0;
    v128_t bs = wasm_f32x4_splat(0);
    bs = madd_i8x16(wasm_v128_load(w[b].qs), xb, bs);
    bs = madd_i8x16(wasm_v128_load(w[b].qs + 16), xb + 16, bs);
    acc = wasm_f32x4_add(acc, wasm_f32x4_mul(bs, wasm_f32x4_splat(fp16_to_f32(w[b].d))));
  }
  return hsum(acc);
}

inline float dot_q4_0(const block_q4_0* w, const float* x, int64_t n) {
  v128_t acc = wasm_f32x4_splat(0);
  const v128_t low = wasm_i8x16_splat(0x0F);
  const v128_t eight = wasm_i8x16_splat(8);
  for (int64_t b = 0; b < n / QK4_0; ++b) {
    const float* xb = x + b * QK4_0;
    const v128_t packed = wasm_v128_load(w[b].qs);
    const v128_t q_lo = wasm_i8x16_sub(wasm_v128_and(packed, low), eight);
    const v128_t q_hi = wasm_i8x16_sub(wasm_u8x16_shr(packed, 4), eight);
    v128_t bs = wasm_f32x4_splat(0);
    bs = madd_i8x16(q_lo, xb, bs);
    bs = madd_i8x16(q_hi, xb + 16, bs);
    acc = wasm_f32x4_add(acc, wasm_f32x4_mul(bs, wasm_f32x4_splat(fp16_to_f32(w[b].d))));
  }
  return hsum(acc);
}

inline void f16_row_to_f32(const uint16_t* h, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    v128_t lo, hi;
    f16x8_to_f32(wasm_v128_load(h + i), &lo, &hi);
    wasm_v128_store(out + i, lo);
    wasm_v128_store(out + i + 4, hi);
  }
  for (; i < n; ++i) out[i] = fp16_to_f32(h[i]);
}

// o += w * v (elementwise; same operations as the scalar loop)
inline void axpy_f32(float* o, float w, const float* v, int64_t n) {
  const v128_t ww = wasm_f32x4_splat(w);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    wasm_v128_store(o + i, wasm_f32x4_add(wasm_v128_load(o + i), wasm_f32x4_mul(ww, wasm_v128_load(v + i))));
  for (; i < n; ++i) o[i] += w * v[i];
}

#else  // portable build (native tests)

inline void f16_row_to_f32(const uint16_t* h, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = fp16_to_f32(h[i]);
}
inline void axpy_f32(float* o, float w, const float* v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) o[i] += w * v[i];
}

inline float dot_f32(const float* w, const float* x, int64_t n) { return dot_f32_scalar(w, x, n); }
inline float dot_f16(const uint16_t* w, const float* x, int64_t n) { return dot_f16_scalar(w, x, n); }
inline float dot_bf16(const uint16_t* w, const float* x, int64_t n) { return dot_bf16_scalar(w, x, n); }
inline float dot_q8_0(const block_q8_0* w, const float* x, int64_t n) { return dot_q8_0_scalar(w, x, n); }
inline float dot_q4_0(const block_q4_0* w, const float* x, int64_t n) { return dot_q4_0_scalar(w, x, n); }

#endif

// An F16 or BF16 row of n values -> f32 (exact): the prompt paths convert each weight row once.
inline void half_row_to_f32(int32_t type, const uint16_t* h, float* out, int64_t n) {
  if (type == TW_TYPE_F16) f16_row_to_f32(h, out, n);
  else for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(h[i]);
}

// Any block type against float activations: dequantize one block (exactly, quants.h) into a small buffer and dot it.
// The path for quantized weights when activation quantization is switched off.
inline float dot_blocks_f32(int32_t type, const void* row, const float* x, int64_t n) {
  const TypeTraits tt = type_traits(type);
  float buf[256];
  float s = 0;
  const char* p = (const char*)row;
  for (int64_t i = 0; i < n; i += tt.block_size, p += tt.block_bytes) {
    dequantize_row(type, p, buf, tt.block_size);
    s += dot_f32(buf, x + i, tt.block_size);
  }
  return s;
}

// Dot product of row r of weight W (type, row length n) with x.
inline float dot_row(int32_t type, const void* row, const float* x, int64_t n) {
  switch (type) {
    case 0: return dot_f32((const float*)row, x, n);
    case 1: return dot_f16((const uint16_t*)row, x, n);
    case 30: return dot_bf16((const uint16_t*)row, x, n);
    case 8: return dot_q8_0((const block_q8_0*)row, x, n);
    case 2: return dot_q4_0((const block_q4_0*)row, x, n);
    default: return type_traits(type).block_size > 1 ? dot_blocks_f32(type, row, x, n) : 0.0f;
  }
}

}  // namespace tw
