// Integer dot products of quantized weight rows with 8-bit-quantized activations — what fast CPU engines
// (llama.cpp) do for quantized weights: the activation row is quantized once per matmul, then every weight group of
// 32 values contributes   scale * d_x * sum_i(w_i * q_i)  +  bias * d_x * sum_i(q_i)   with the inner sum in
// integers (WASM i32x4.dot_i16x8_s = x86 pmaddwd).
//
// Activation format (ActRow): per 32 values one scale d (amax/127, q = round(x/d)) and sd = d * sum(q), the values
// themselves pre-widened to int16 so the inner loop feeds them straight into dot_i16x8 with no unpacking.
//
// Weight groups: every supported type is seen as a sequence of 32-value groups, each giving 32 small integers w
// (int16), a float `scale` and a float `bias` such that the dequantized value is scale * w + bias (exactly as ggml
// dequantizes, up to float rounding). E.g. q4_0: w = nibble, scale = d, bias = -8 d; q4_K: w = nibble,
// scale = d * sc_j, bias = -dmin * m_j; q6_K folds its per-16 scales into w (w = sc * (q - 32), |w| <= 4096).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "../common/quants.h"
#include "../include/twinfer.h"

#if defined(__wasm_simd128__)
#include <wasm_simd128.h>
#endif

namespace tw {

constexpr int QA = 32;  // activation group

// One quantized activation row of n values (n a multiple of 32): q[n] int16, and per group of 32 the scale d,
// sd = d * sum(q) (float bias terms) and sq = sum(q) (integer offsets, e.g. q4_0's -8 in the x4 kernels); sq16 =
// sum(q) per 16 values (q6_K's -32 under its per-16 scales).
struct ActRow {
  int16_t* q;
  float* d;
  float* sd;
  int32_t* sq;
  int32_t* sq16;
  int32_t* neg8sq;  // -8 * sq: q4_0's offset correction, the initial value of a group's integer sum (qdot_x4.h)
  int16_t* sqh;     // sq as int16 (|sum of 32 int8| <= 4064): pmaddwd operand of the q4_K mins term
  int16_t* sq16h;   // sq16 as int16: pmaddwd operand of the q6_K -32 * sum(q) term
};

// Bytes of scratch for one activation row of n values (q, d, sd, sq, sq16, neg8sq, sqh, sq16h; q 16-byte aligned at
// the base).
inline size_t act_row_bytes(int64_t n) { return (size_t)n * 2 + (size_t)(n / QA) * 30 + 32; }

inline ActRow act_row_at(void* base, int64_t n) {
  char* p = (char*)base;
  ActRow a;
  a.q = (int16_t*)p;
  a.d = (float*)(p + n * 2);
  a.sd = a.d + n / QA;
  a.sq = (int32_t*)(a.sd + n / QA);
  a.sq16 = a.sq + n / QA;
  a.neg8sq = a.sq16 + 2 * (n / QA);
  a.sqh = (int16_t*)(a.neg8sq + n / QA);
  a.sq16h = a.sqh + n / QA;
  return a;
}

// The same row from group g0 on (a column chunk of it).
inline ActRow act_row_from(const ActRow& a, int64_t g0) {
  return {a.q + g0 * QA, a.d + g0, a.sd + g0, a.sq + g0, a.sq16 + 2 * g0, a.neg8sq + g0, a.sqh + g0, a.sq16h + 2 * g0};
}

// Activation quantization follows what llama.cpp does for the same weight type, so that our rounding tracks its
// rounding (the reference comparisons then measure kernel differences, not two independent quantization noises):
//  - 32-value weight blocks (q4_0 ... q8_0, llama.cpp's q8_0/q8_1 activations): one scale per 32 values,
//    d = amax/127, q = round(x*127/amax), and the scale used in the product is d rounded to fp16 (the block stores fp16).
//  - K-quants (llama.cpp's q8_K activations): one float scale per 256 values, d = amax/127 (no fp16 rounding);
//    it is stored in each of the 8 group entries so the product loop is the same.
struct ActSpec {
  int span;          // values sharing one scale: 32 or 256
  bool fp16_scale;   // round the scale to fp16
};
inline ActSpec act_spec(int32_t weight_type) {
  const bool k = weight_type == TW_TYPE_Q4_K || weight_type == TW_TYPE_Q5_K || weight_type == TW_TYPE_Q6_K;
  return k ? ActSpec{256, false} : ActSpec{32, true};
}

// Group b's scale and the sums the kernels fold in (lo: sum of its first 16 values), in every form they read.
inline void store_group(const ActRow& a, int64_t b, float db, int sum, int lo) {
  a.d[b] = db;
  a.sd[b] = db * (float)sum;
  a.sq[b] = sum;
  a.neg8sq[b] = -8 * sum;
  a.sq16[2 * b] = lo;
  a.sq16[2 * b + 1] = sum - lo;
  a.sqh[b] = (int16_t)sum;
  a.sq16h[2 * b] = (int16_t)lo;
  a.sq16h[2 * b + 1] = (int16_t)(sum - lo);
}

inline void quantize_act_row_scalar(const float* x, int64_t n, const ActRow& a, ActSpec spec = {32, true}) {
  int16_t* q = a.q;
  const int span = n % spec.span == 0 ? spec.span : QA;
  for (int64_t s0 = 0; s0 < n; s0 += span) {
    float amax = 0;
    for (int j = 0; j < span; ++j) amax = std::fmax(amax, std::fabs(x[s0 + j]));
    const float d0 = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;  // as ggml's AVX quantizer
    const float db = spec.fp16_scale ? fp16_to_f32(f32_to_fp16(d0)) : (id != 0.0f ? 1.0f / id : 0.0f);
    for (int64_t b = s0 / QA; b < (s0 + span) / QA; ++b) {
      int sum = 0, lo = 0;
      for (int j = 0; j < QA; ++j) {
        const int v = (int)std::nearbyint(x[b * QA + j] * id);
        q[b * QA + j] = (int16_t)v;
        sum += v;
        if (j == 15) lo = sum;
      }
      store_group(a, b, db, sum, lo);
    }
  }
}

#if defined(__wasm_simd128__)
inline void quantize_act_row(const float* x, int64_t n, const ActRow& a, ActSpec spec = {32, true}) {
  int16_t* q = a.q;
  const int span = n % spec.span == 0 ? spec.span : QA;
  const v128_t absmask = wasm_i32x4_splat(0x7fffffff);
  for (int64_t s0 = 0; s0 < n; s0 += span) {
    v128_t m = wasm_i32x4_splat(0);
    for (int j = 0; j < span; j += 4) m = wasm_f32x4_max(m, wasm_v128_and(wasm_v128_load(x + s0 + j), absmask));
    m = wasm_f32x4_max(m, wasm_i32x4_shuffle(m, m, 2, 3, 0, 1));
    m = wasm_f32x4_max(m, wasm_i32x4_shuffle(m, m, 1, 0, 3, 2));
    const float amax = wasm_f32x4_extract_lane(m, 0);
    const float d0 = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;  // as ggml's AVX quantizer
    const float db = spec.fp16_scale ? fp16_to_f32(f32_to_fp16(d0)) : (id != 0.0f ? 1.0f / id : 0.0f);
    const v128_t vid = wasm_f32x4_splat(id);
    for (int64_t b = s0 / QA; b < (s0 + span) / QA; ++b) {
      const float* xb = x + b * QA;
      v128_t s = wasm_i32x4_splat(0), half = s;
      for (int i = 0; i < 4; ++i) {
        if (i == 2) half = s;
        const v128_t a = wasm_i32x4_trunc_sat_f32x4(wasm_f32x4_nearest(wasm_f32x4_mul(wasm_v128_load(xb + 8 * i), vid)));
        const v128_t c = wasm_i32x4_trunc_sat_f32x4(wasm_f32x4_nearest(wasm_f32x4_mul(wasm_v128_load(xb + 8 * i + 4), vid)));
        s = wasm_i32x4_add(s, wasm_i32x4_add(a, c));
        wasm_v128_store(q + b * QA + 8 * i, wasm_i16x8_narrow_i32x4(a, c));
      }
      const int sum = wasm_i32x4_extract_lane(s, 0) + wasm_i32x4_extract_lane(s, 1) + wasm_i32x4_extract_lane(s, 2) +
                      wasm_i32x4_extract_lane(s, 3);
      const int lo = wasm_i32x4_extract_lane(half, 0) + wasm_i32x4_extract_lane(half, 1) +
                     wasm_i32x4_extract_lane(half, 2) + wasm_i32x4_extract_lane(half, 3);
      store_group(a, b, db, sum, lo);
    }
  }
}
#else
inline void quantize_act_row(const float* x, int64_t n, const ActRow& a, ActSpec spec = {32, true}) {
  quantize_act_row_scalar(x, n, a, spec);
}
#endif

// fp16 -> f32 through a 64 Ki-entry table (ggml does the same): one load instead of ~10 integer operations per
// block scale in the innermost loop.
struct Fp16Table {
  float v[65536];
  Fp16Table() {
    for (uint32_t i = 0; i < 65536; ++i) v[i] = fp16_to_f32((uint16_t)i);
  }
};
inline const float* fp16_table() {
  static const Fp16Table* t = new Fp16Table();
  return t->v;
}

// ---------------------------------------------------------------------------------------------------------------
// Scalar view of the weight groups (the reference the SIMD loaders are tested against).
// group(row, g, w, &scale, &bias): the g-th group of 32 values of a row.
// ---------------------------------------------------------------------------------------------------------------
inline int groups_per_block(int32_t type) { return type_traits(type).block_size / QA; }

inline void weight_group_scalar(int32_t type, const void* row, int64_t g, int16_t* w, float* scale, float* bias) {
  const int gpb = groups_per_block(type);
  const char* blk = (const char*)row + (g / gpb) * type_traits(type).block_bytes;
  const int j = (int)(g % gpb);
  switch (type) {
    case TW_TYPE_Q8_0: {
      const block_q8_0* b = (const block_q8_0*)blk;
      for (int i = 0; i < 32; ++i) w[i] = b->qs[i];
      *scale = fp16_to_f32(b->d);
      *bias = 0;
      return;
    }
    case TW_TYPE_Q4_0: case TW_TYPE_Q4_1: {
      const uint8_t* qs = type == TW_TYPE_Q4_0 ? ((const block_q4_0*)blk)->qs : ((const block_q4_1*)blk)->qs;
      for (int i = 0; i < 16; ++i) {
        w[i] = qs[i] & 0x0F;
        w[i + 16] = qs[i] >> 4;
      }
      if (type == TW_TYPE_Q4_0) {
        *scale = fp16_to_f32(((const block_q4_0*)blk)->d);
        *bias = -8.0f * *scale;
      } else {
        *scale = fp16_to_f32(((const block_q4_1*)blk)->d);
        *bias = fp16_to_f32(((const block_q4_1*)blk)->m);
      }
      return;
    }
    case TW_TYPE_Q5_0: case TW_TYPE_Q5_1: {
      const uint8_t* qs = type == TW_TYPE_Q5_0 ? ((const block_q5_0*)blk)->qs : ((const block_q5_1*)blk)->qs;
      const uint32_t qh = load_u32_le(type == TW_TYPE_Q5_0 ? ((const block_q5_0*)blk)->qh : ((const block_q5_1*)blk)->qh);
      for (int i = 0; i < 16; ++i) {
        w[i] = (int16_t)((qs[i] & 0x0F) | (((qh >> i) & 1) << 4));
        w[i + 16] = (int16_t)((qs[i] >> 4) | (((qh >> (i + 16)) & 1) << 4));
      }
      if (type == TW_TYPE_Q5_0) {
        *scale = fp16_to_f32(((const block_q5_0*)blk)->d);
        *bias = -16.0f * *scale;
      } else {
        *scale = fp16_to_f32(((const block_q5_1*)blk)->d);
        *bias = fp16_to_f32(((const block_q5_1*)blk)->m);
      }
      return;
    }
    case TW_TYPE_Q4_K: case TW_TYPE_Q5_K: {
      const bool five = type == TW_TYPE_Q5_K;
      const uint8_t* scales = five ? ((const block_q5_K*)blk)->scales : ((const block_q4_K*)blk)->scales;
      const uint8_t* qs = (five ? ((const block_q5_K*)blk)->qs : ((const block_q4_K*)blk)->qs) + 32 * (j / 2);
      const uint16_t dh = five ? ((const block_q5_K*)blk)->d : ((const block_q4_K*)blk)->d;
      const uint16_t mh = five ? ((const block_q5_K*)blk)->dmin : ((const block_q4_K*)blk)->dmin;
      for (int i = 0; i < 32; ++i) {
        int v = (j & 1) ? qs[i] >> 4 : qs[i] & 0x0F;
        if (five && (((const block_q5_K*)blk)->qh[i] >> j) & 1) v += 16;
        w[i] = (int16_t)v;
      }
      uint8_t sc, m;
      get_scale_min_k4(j, scales, &sc, &m);
      *scale = fp16_to_f32(dh) * sc;
      *bias = -(fp16_to_f32(mh) * m);
      return;
    }
    case TW_TYPE_Q6_K: {
      const block_q6_K* b = (const block_q6_K*)blk;
      const int half = j / 4, k = j % 4;  // 128-value half, quarter within it
      const uint8_t* ql = b->ql + 64 * half + 32 * (k & 1);
      const uint8_t* qh = b->qh + 32 * half;
      const int8_t* sc = b->scales + 8 * half + 2 * k;
      for (int i = 0; i < 32; ++i) {
        const int lo = (k >> 1) ? ql[i] >> 4 : ql[i] & 0xF;
        const int q = (lo | (((qh[i] >> (2 * k)) & 3) << 4)) - 32;
        w[i] = (int16_t)(q * sc[i / 16]);
      }
      *scale = fp16_to_f32(b->d);
      *bias = 0;
      return;
    }
    default:
      for (int i = 0; i < 32; ++i) w[i] = 0;
      *scale = *bias = 0;
  }
}

// Reference: the integer-activation dot product of a row of n values, group by group, in scalar code.
inline float qdot_row_scalar(int32_t type, const void* row, const ActRow& a, int64_t n) {
  float s = 0;
  int16_t w[32];
  for (int64_t g = 0; g < n / QA; ++g) {
    float scale, bias;
    weight_group_scalar(type, row, g, w, &scale, &bias);
    int32_t isum = 0;
    for (int i = 0; i < 32; ++i) isum += (int32_t)w[i] * a.q[g * QA + i];
    s += scale * a.d[g] * (float)isum + bias * a.sd[g];
  }
  return s;
}

#if defined(__wasm_simd128__)

// ---------------------------------------------------------------------------------------------------------------
// SIMD loaders: a 32-value group as four int16x8 vectors plus scale and bias.
// ---------------------------------------------------------------------------------------------------------------
struct Group {
  v128_t w[4];
  float scale, bias;
};

// 16 packed bytes -> low nibbles (values 0..15) and high nibbles (16..31) as four u16x8 vectors.
inline void unpack_nibbles(v128_t p, v128_t* w) {
  const v128_t lo = wasm_u16x8_extend_low_u8x16(p), hi = wasm_u16x8_extend_high_u8x16(p);
  const v128_t m = wasm_i16x8_splat(0x0F);
  w[0] = wasm_v128_and(lo, m);
  w[1] = wasm_v128_and(hi, m);
  w[2] = wasm_u16x8_shr(lo, 4);
  w[3] = wasm_u16x8_shr(hi, 4);
}

// 8 bits -> 8 int16 lanes of 0 or 16 (the fifth bit of q5 values), by table.
struct Bit16Table {
  v128_t v[256];
  Bit16Table() {
    for (int b = 0; b < 256; ++b) {
      int16_t l[8];
      for (int i = 0; i < 8; ++i) l[i] = ((b >> i) & 1) ? 16 : 0;
      std::memcpy(&v[b], l, 16);
    }
  }
};
inline const v128_t* bit16_table() {
  static const Bit16Table* t = new Bit16Table();
  return t->v;
}

template <int TYPE>
struct Loader;

template <>
struct Loader<TW_TYPE_Q8_0> {
  static constexpr int kGroupsPerBlock = 1;
  static constexpr int kBlockBytes = sizeof(block_q8_0);
  static inline void load(const char* blk, int, const float* f16, Group& g) {
    const block_q8_0* b = (const block_q8_0*)blk;
    const v128_t a = wasm_v128_load(b->qs), c = wasm_v128_load(b->qs + 16);
    g.w[0] = wasm_i16x8_extend_low_i8x16(a);
    g.w[1] = wasm_i16x8_extend_high_i8x16(a);
    g.w[2] = wasm_i16x8_extend_low_i8x16(c);
    g.w[3] = wasm_i16x8_extend_high_i8x16(c);
    g.scale = f16[b->d];
    g.bias = 0;
  }
};
template <>
struct Loader<TW_TYPE_Q4_0> {
  static constexpr int kGroupsPerBlock = 1;
  static constexpr int kBlockBytes = sizeof(block_q4_0);
  static inline void load(const char* blk, int, const float* f16, Group& g) {
    const block_q4_0* b = (const block_q4_0*)blk;
    unpack_nibbles(wasm_v128_load(b->qs), g.w);
    g.scale = f16[b->d];
    g.bias = -8.0f * g.scale;
  }
};
template <>
struct Loader<TW_TYPE_Q4_1> {
  static constexpr int kGroupsPerBlock = 1;
  static constexpr int kBlockBytes = sizeof(block_q4_1);
  static inline void load(const char* blk, int, const float* f16, Group& g) {
    const block_q4_1* b = (const block_q4_1*)blk;
    unpack_nibbles(wasm_v128_load(b->qs), g.w);
    g.scale = f16[b->d];
    g.bias = f16[b->m];
  }
};
template <int TYPE, class B>
inline void load_q5(const B* b, const float* f16, Group& g) {
  unpack_nibbles(wasm_v128_load(b->qs), g.w);
  const v128_t* t = bit16_table();
  const uint32_t qh = load_u32_le(b->qh);
  // w[0]: values 0..7 (bits 0..7), w[1]: 8..15, w[2]: 16..23, w[3]: 24..31
  g.w[0] = wasm_v128_or(g.w[0], t[qh & 0xFF]);
  g.w[1] = wasm_v128_or(g.w[1], t[(qh >> 8) & 0xFF]);
  g.w[2] = wasm_v128_or(g.w[2], t[(qh >> 16) & 0xFF]);
  g.w[3] = wasm_v128_or(g.w[3], t[qh >> 24]);
}
template <>
struct Loader<TW_TYPE_Q5_0> {
  static constexpr int kGroupsPerBlock = 1;
  static constexpr int kBlockBytes = sizeof(block_q5_0);
  static inline void load(const char* blk, int, const float* f16, Group& g) {
    const block_q5_0* b = (const block_q5_0*)blk;
    load_q5<TW_TYPE_Q5_0>(b, f16, g);
    g.scale = f16[b->d];
    g.bias = -16.0f * g.scale;
  }
};
template <>
struct Loader<TW_TYPE_Q5_1> {
  static constexpr int kGroupsPerBlock = 1;
  static constexpr int kBlockBytes = sizeof(block_q5_1);
  static inline void load(const char* blk, int, const float* f16, Group& g) {
    const block_q5_1* b = (const block_q5_1*)blk;
    load_q5<TW_TYPE_Q5_1>(b, f16, g);
    g.scale = f16[b->d];
    g.bias = f16[b->m];
  }
};
// q4_K / q5_K: group j uses bytes qs[32*(j/2) ..+32], low nibbles for even j, high for odd j.
template <bool FIVE, class B>
inline void load_k45(const B* b, int j, const float* f16, Group& g) {
  const uint8_t* qs = b->qs + 32 * (j >> 1);
  const v128_t p0 = wasm_v128_load(qs), p1 = wasm_v128_load(qs + 16);
  v128_t w0 = wasm_u16x8_extend_low_u8x16(p0), w1 = wasm_u16x8_extend_high_u8x16(p0);
  v128_t w2 = wasm_u16x8_extend_low_u8x16(p1), w3 = wasm_u16x8_extend_high_u8x16(p1);
  if (j & 1) {
    w0 = wasm_u16x8_shr(w0, 4); w1 = wasm_u16x8_shr(w1, 4); w2 = wasm_u16x8_shr(w2, 4); w3 = wasm_u16x8_shr(w3, 4);
  } else {
    const v128_t m = wasm_i16x8_splat(0x0F);
    w0 = wasm_v128_and(w0, m); w1 = wasm_v128_and(w1, m); w2 = wasm_v128_and(w2, m); w3 = wasm_v128_and(w3, m);
  }
  if constexpr (FIVE) {
    const uint8_t* qh = ((const block_q5_K*)b)->qh;
    const v128_t h0 = wasm_v128_load(qh), h1 = wasm_v128_load(qh + 16);
    const v128_t one = wasm_i16x8_splat(1);
    auto bit = [&](v128_t h) { return wasm_i16x8_shl(wasm_v128_and(wasm_u16x8_shr(h, j), one), 4); };
    w0 = wasm_v128_or(w0, bit(wasm_u16x8_extend_low_u8x16(h0)));
    w1 = wasm_v128_or(w1, bit(wasm_u16x8_extend_high_u8x16(h0)));
    w2 = wasm_v128_or(w2, bit(wasm_u16x8_extend_low_u8x16(h1)));
    w3 = wasm_v128_or(w3, bit(wasm_u16x8_extend_high_u8x16(h1)));
  }
  g.w[0] = w0; g.w[1] = w1; g.w[2] = w2; g.w[3] = w3;
  uint8_t sc, m;
  get_scale_min_k4(j, b->scales, &sc, &m);
  g.scale = f16[b->d] * sc;
  g.bias = -(f16[b->dmin] * m);
}
template <>
struct Loader<TW_TYPE_Q4_K> {
  static constexpr int kGroupsPerBlock = 8;
  static constexpr int kBlockBytes = sizeof(block_q4_K);
  static inline void load(const char* blk, int j, const float* f16, Group& g) {
    load_k45<false>((const block_q4_K*)blk, j, f16, g);
  }
};
template <>
struct Loader<TW_TYPE_Q5_K> {
  static constexpr int kGroupsPerBlock = 8;
  static constexpr int kBlockBytes = sizeof(block_q5_K);
  static inline void load(const char* blk, int j, const float* f16, Group& g) {
    load_k45<true>((const block_q5_K*)blk, j, f16, g);
  }
};
template <>
struct Loader<TW_TYPE_Q6_K> {
  static constexpr int kGroupsPerBlock = 8;
  static constexpr int kBlockBytes = sizeof(block_q6_K);
  static inline void load(const char* blk, int j, const float* f16, Group& g) {
    const block_q6_K* b = (const block_q6_K*)blk;
    const int half = j >> 2, k = j & 3;
    const uint8_t* ql = b->ql + 64 * half + 32 * (k & 1);
    const uint8_t* qh = b->qh + 32 * half;
    const int8_t* sc = b->scales + 8 * half + 2 * k;
    const v128_t p0 = wasm_v128_load(ql), p1 = wasm_v128_load(ql + 16);
    const v128_t h0 = wasm_v128_load(qh), h1 = wasm_v128_load(qh + 16);
    v128_t l[4] = {wasm_u16x8_extend_low_u8x16(p0), wasm_u16x8_extend_high_u8x16(p0),
                   wasm_u16x8_extend_low_u8x16(p1), wasm_u16x8_extend_high_u8x16(p1)};
    const v128_t h[4] = {wasm_u16x8_extend_low_u8x16(h0), wasm_u16x8_extend_high_u8x16(h0),
                         wasm_u16x8_extend_low_u8x16(h1), wasm_u16x8_extend_high_u8x16(h1)};
    const v128_t m15 = wasm_i16x8_splat(0x0F), m3 = wasm_i16x8_splat(3), k32 = wasm_i16x8_splat(32);
    const v128_t s0 = wasm_i16x8_splat(sc[0]), s1 = wasm_i16x8_splat(sc[1]);
    for (int i = 0; i < 4; ++i) {
      const v128_t lo = (k >> 1) ? wasm_u16x8_shr(l[i], 4) : wasm_v128_and(l[i], m15);
      const v128_t hi = wasm_i16x8_shl(wasm_v128_and(wasm_u16x8_shr(h[i], 2 * k), m3), 4);
      const v128_t q = wasm_i16x8_sub(wasm_v128_or(lo, hi), k32);
      g.w[i] = wasm_i16x8_mul(q, i < 2 ? s0 : s1);
    }
    g.scale = f16[b->d];
    g.bias = 0;
  }
};

inline float hsum_f32(v128_t v) {
  return wasm_f32x4_extract_lane(v, 0) + wasm_f32x4_extract_lane(v, 1) + wasm_f32x4_extract_lane(v, 2) +
         wasm_f32x4_extract_lane(v, 3);
}

// Four consecutive groups g..g+3 (g a multiple of 4). q6_K's four groups of a 128-value half share their 64+32
// bytes, so it unpacks them together (measured: 4x faster than group by group). For q4_K/q5_K unpacking their two
// groups per 32 bytes together measured slower (register spills), so they keep the group-by-group loader.
template <int TYPE>
inline void load4(const char* row, int64_t g, const float* f16, Group* w) {
  using L = Loader<TYPE>;
  for (int k = 0; k < 4; ++k)
    L::load(row + ((g + k) / L::kGroupsPerBlock) * L::kBlockBytes, (int)((g + k) % L::kGroupsPerBlock), f16, w[k]);
}
template <>
inline void load4<TW_TYPE_Q6_K>(const char* row, int64_t g, const float* f16, Group* w) {
  const block_q6_K* b = (const block_q6_K*)(row + (g / 8) * sizeof(block_q6_K));
  const int half = (int)(g % 8) / 4;
  const uint8_t* ql = b->ql + 64 * half;
  const uint8_t* qh = b->qh + 32 * half;
  const int8_t* sc = b->scales + 8 * half;
  const v128_t m15 = wasm_i16x8_splat(0x0F), m3 = wasm_i16x8_splat(3), k32 = wasm_i16x8_splat(32);
  const v128_t h0 = wasm_v128_load(qh), h1 = wasm_v128_load(qh + 16);
  const v128_t h[4] = {wasm_u16x8_extend_low_u8x16(h0), wasm_u16x8_extend_high_u8x16(h0),
                       wasm_u16x8_extend_low_u8x16(h1), wasm_u16x8_extend_high_u8x16(h1)};
  for (int part = 0; part < 2; ++part) {  // ql[0..31] -> groups 0 (low nibbles), 2 (high); ql[32..63] -> 1, 3
    const v128_t p0 = wasm_v128_load(ql + 32 * part), p1 = wasm_v128_load(ql + 32 * part + 16);
    const v128_t u[4] = {wasm_u16x8_extend_low_u8x16(p0), wasm_u16x8_extend_high_u8x16(p0),
                         wasm_u16x8_extend_low_u8x16(p1), wasm_u16x8_extend_high_u8x16(p1)};
    const int klo = part, khi = part + 2;
    const v128_t slo0 = wasm_i16x8_splat(sc[2 * klo]), slo1 = wasm_i16x8_splat(sc[2 * klo + 1]);
    const v128_t shi0 = wasm_i16x8_splat(sc[2 * khi]), shi1 = wasm_i16x8_splat(sc[2 * khi + 1]);
    for (int i = 0; i < 4; ++i) {
      const v128_t qlo = wasm_v128_or(wasm_v128_and(u[i], m15),
                                      wasm_i16x8_shl(wasm_v128_and(wasm_u16x8_shr(h[i], 2 * klo), m3), 4));
      const v128_t qhi = wasm_v128_or(wasm_u16x8_shr(u[i], 4),
                                      wasm_i16x8_shl(wasm_v128_and(wasm_u16x8_shr(h[i], 2 * khi), m3), 4));
      w[klo].w[i] = wasm_i16x8_mul(wasm_i16x8_sub(qlo, k32), i < 2 ? slo0 : slo1);
      w[khi].w[i] = wasm_i16x8_mul(wasm_i16x8_sub(qhi, k32), i < 2 ? shi0 : shi1);
    }
  }
  const float d = f16[b->d];
  for (int k = 0; k < 4; ++k) {
    w[k].scale = d;
    w[k].bias = 0;
  }
}

// y[t] = row . act[t] for NT activation rows: each weight group is unpacked once and used NT times (prefill).
// Groups are unpacked four at a time (load4) where the row allows it.
template <int TYPE, int NT>
inline void qdot_rows(const void* row, const ActRow* act, int64_t n, float* out) {
  using L = Loader<TYPE>;
  const float* f16 = fp16_table();
  v128_t acc[NT];
  float corr[NT];
  for (int t = 0; t < NT; ++t) {
    acc[t] = wasm_f32x4_splat(0);
    corr[t] = 0;
  }
  auto use = [&](const Group& w, int64_t g) {
    for (int t = 0; t < NT; ++t) {
      const int16_t* q = act[t].q + g * QA;
      v128_t s = wasm_i32x4_dot_i16x8(w.w[0], wasm_v128_load(q));
      s = wasm_i32x4_add(s, wasm_i32x4_dot_i16x8(w.w[1], wasm_v128_load(q + 8)));
      s = wasm_i32x4_add(s, wasm_i32x4_dot_i16x8(w.w[2], wasm_v128_load(q + 16)));
      s = wasm_i32x4_add(s, wasm_i32x4_dot_i16x8(w.w[3], wasm_v128_load(q + 24)));
      acc[t] = wasm_f32x4_add(acc[t], wasm_f32x4_mul(wasm_f32x4_convert_i32x4(s),
                                                     wasm_f32x4_splat(w.scale * act[t].d[g])));
      corr[t] += w.bias * act[t].sd[g];
    }
  };
  const int64_t ngroups = n / QA;
  if (TYPE == TW_TYPE_Q6_K && ngroups % 4 == 0) {
    for (int64_t g = 0; g < ngroups; g += 4) {
      Group w4[4];
      load4<TYPE>((const char*)row, g, f16, w4);
      for (int k = 0; k < 4; ++k) use(w4[k], g + k);
    }
  } else {
    const char* blk = (const char*)row;
    int64_t g = 0;
    for (int64_t b = 0; b < ngroups / L::kGroupsPerBlock; ++b, blk += L::kBlockBytes) {
      for (int j = 0; j < L::kGroupsPerBlock; ++j, ++g) {
        Group w;
        L::load(blk, j, f16, w);
        use(w, g);
      }
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum_f32(acc[t]) + corr[t];
}

#endif  // __wasm_simd128__

}  // namespace tw
