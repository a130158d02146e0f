// GGUF block layouts and their exact dequantization, shared by every backend (host and CUDA device code).
// Each quantized type stores rows as consecutive blocks of QK values; a row's length must be a multiple of QK.
// The arithmetic below is the one ggml uses (same operations in the same order) so results match bit for bit.
#pragma once
#include <cstddef>
#include <cstdint>

#include "fp16.h"

namespace tw {

constexpr int QK4_0 = 32;
constexpr int QK4_1 = 32;
constexpr int QK5_0 = 32;
constexpr int QK5_1 = 32;
constexpr int QK8_0 = 32;
constexpr int QK_K = 256;  // super-block of the K-quants
constexpr int K_SCALE_SIZE = 12;

// a*b + c rounded twice, as ggml's C code computes it on the host (no FMA contraction): nvcc would otherwise fuse
// the two operations on the device and change the last bit.
TW_HD float mul_add_exact(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(__fmul_rn(a, b), c);
#else
  return a * b + c;
#endif
}
TW_HD float mul_sub_exact(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(__fmul_rn(a, b), c);
#else
  return a * b - c;
#endif
}

#pragma pack(push, 1)
struct block_q4_0 {
  uint16_t d;              // fp16 scale
  uint8_t qs[QK4_0 / 2];   // low nibbles: values 0..15, high nibbles: values 16..31; value = (q - 8) * d
};
struct block_q4_1 {
  uint16_t d, m;           // fp16 scale and minimum
  uint8_t qs[QK4_1 / 2];   // nibbles as in q4_0; value = q * d + m
};
struct block_q5_0 {
  uint16_t d;              // fp16 scale
  uint8_t qh[4];           // bit j = fifth bit of value j
  uint8_t qs[QK5_0 / 2];   // low four bits as in q4_0; value = (q - 16) * d
};
struct block_q5_1 {
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[QK5_1 / 2];   // value = q * d + m
};
struct block_q8_0 {
  uint16_t d;              // fp16 scale
  int8_t qs[QK8_0];        // value = q * d
};
// K-quants: 256 values in 8 (q4_K, q5_K) or 16 (q6_K) sub-blocks, each with a 6/8-bit scale (and min).
struct block_q4_K {
  uint16_t d, dmin;               // super-block scale for the sub-block scales / mins
  uint8_t scales[K_SCALE_SIZE];   // 8 scales and 8 mins, 6 bits each (get_scale_min_k4)
  uint8_t qs[QK_K / 2];           // 4-bit values: 64-value chunks, low nibbles first then high nibbles
};
struct block_q5_K {
  uint16_t d, dmin;
  uint8_t scales[K_SCALE_SIZE];
  uint8_t qh[QK_K / 8];           // fifth bits: bit 2c (low) / 2c+1 (high) of qh[l] for chunk c
  uint8_t qs[QK_K / 2];
};
struct block_q6_K {
  uint8_t ql[QK_K / 2];           // low 4 bits
  uint8_t qh[QK_K / 4];           // high 2 bits
  int8_t scales[QK_K / 16];       // 16 8-bit scales
  uint16_t d;                     // fp16 super-block scale
};
#pragma pack(pop)
static_assert(sizeof(block_q4_0) == 18, "q4_0 block");
static_assert(sizeof(block_q4_1) == 20, "q4_1 block");
static_assert(sizeof(block_q5_0) == 22, "q5_0 block");
static_assert(sizeof(block_q5_1) == 24, "q5_1 block");
static_assert(sizeof(block_q8_0) == 34, "q8_0 block");
static_assert(sizeof(block_q4_K) == 144, "q4_K block");
static_assert(sizeof(block_q5_K) == 176, "q5_K block");
static_assert(sizeof(block_q6_K) == 210, "q6_K block");

struct TypeTraits {
  int32_t block_size;   // values per block
  int32_t block_bytes;  // bytes per block
  const char* name;
};

// Block geometry of every type we know. {0,0,...} for ids we do not support.
TW_HD TypeTraits type_traits(int32_t type) {
  switch (type) {
    case 0: return {1, 4, "F32"};
    case 1: return {1, 2, "F16"};
    case 30: return {1, 2, "BF16"};
    case 2: return {QK4_0, (int32_t)sizeof(block_q4_0), "Q4_0"};
    case 3: return {QK4_1, (int32_t)sizeof(block_q4_1), "Q4_1"};
    case 6: return {QK5_0, (int32_t)sizeof(block_q5_0), "Q5_0"};
    case 7: return {QK5_1, (int32_t)sizeof(block_q5_1), "Q5_1"};
    case 8: return {QK8_0, (int32_t)sizeof(block_q8_0), "Q8_0"};
    case 12: return {QK_K, (int32_t)sizeof(block_q4_K), "Q4_K"};
    case 13: return {QK_K, (int32_t)sizeof(block_q5_K), "Q5_K"};
    case 14: return {QK_K, (int32_t)sizeof(block_q6_K), "Q6_K"};
    default: return {0, 0, "unknown"};
  }
}

TW_HD size_t row_bytes(int32_t type, int64_t n) {
  const TypeTraits t = type_traits(type);
  if (t.block_size == 0 || n % t.block_size != 0) return 0;
  return (size_t)(n / t.block_size) * (size_t)t.block_bytes;
}

// ---- per-block dequantization (out receives block_size floats) ----
TW_HD void dequant_block_q4_0(const block_q4_0* b, float* out) {
  const float d = fp16_to_f32(b->d);
  for (int j = 0; j < QK4_0 / 2; ++j) {
    const int x0 = (b->qs[j] & 0x0F) - 8;
    const int x1 = (b->qs[j] >> 4) - 8;
    out[j] = x0 * d;
    out[j + QK4_0 / 2] = x1 * d;
  }
}
TW_HD void dequant_block_q8_0(const block_q8_0* b, float* out) {
  const float d = fp16_to_f32(b->d);
  for (int j = 0; j < QK8_0; ++j) out[j] = b->qs[j] * d;
}
TW_HD void dequant_block_q4_1(const block_q4_1* b, float* out) {
  const float d = fp16_to_f32(b->d), m = fp16_to_f32(b->m);
  for (int j = 0; j < QK4_1 / 2; ++j) {
    out[j] = mul_add_exact((float)(b->qs[j] & 0x0F), d, m);
    out[j + QK4_1 / 2] = mul_add_exact((float)(b->qs[j] >> 4), d, m);
  }
}
TW_HD uint32_t load_u32_le(const uint8_t* p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
TW_HD void dequant_block_q5_0(const block_q5_0* b, float* out) {
  const float d = fp16_to_f32(b->d);
  const uint32_t qh = load_u32_le(b->qh);
  for (int j = 0; j < QK5_0 / 2; ++j) {
    const int xh0 = ((qh >> j) << 4) & 0x10, xh1 = (qh >> (j + 12)) & 0x10;
    out[j] = (float)(((b->qs[j] & 0x0F) | xh0) - 16) * d;
    out[j + QK5_0 / 2] = (float)(((b->qs[j] >> 4) | xh1) - 16) * d;
  }
}
TW_HD void dequant_block_q5_1(const block_q5_1* b, float* out) {
  const float d = fp16_to_f32(b->d), m = fp16_to_f32(b->m);
  const uint32_t qh = load_u32_le(b->qh);
  for (int j = 0; j < QK5_1 / 2; ++j) {
    const int xh0 = ((qh >> j) << 4) & 0x10, xh1 = (qh >> (j + 12)) & 0x10;
    out[j] = mul_add_exact((float)((b->qs[j] & 0x0F) | xh0), d, m);
    out[j + QK5_1 / 2] = mul_add_exact((float)((b->qs[j] >> 4) | xh1), d, m);
  }
}

}  // namespace tw

#include "quants_k.h"

namespace tw {

// Dequantize n values (n a multiple of the type's block size) from src. Returns false for an unknown type.
inline bool dequantize_row(int32_t type, const void* src, float* dst, int64_t n) {
  switch (type) {
    case 0: {
      const float* s = (const float*)src;
      for (int64_t i = 0; i < n; ++i) dst[i] = s[i];
      return true;
    }
    case 1: {
      const uint16_t* s = (const uint16_t*)src;
      for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_f32(s[i]);
      return true;
    }
    case 30: {
      const uint16_t* s = (const uint16_t*)src;
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
      return true;
    }
    case 2: {
      const block_q4_0* b = (const block_q4_0*)src;
      for (int64_t i = 0; i < n / QK4_0; ++i) dequant_block_q4_0(b + i, dst + i * QK4_0);
      return true;
    }
    case 8: {
      const block_q8_0* b = (const block_q8_0*)src;
      for (int64_t i = 0; i < n / QK8_0; ++i) dequant_block_q8_0(b + i, dst + i * QK8_0);
      return true;
    }
#define TW_DEQ_CASE(id, T, fn, qk)                                   \
    case id: {                                                       \
      const T* b = (const T*)src;                                    \
      for (int64_t i = 0; i < n / (qk); ++i) fn(b + i, dst + i * (qk)); \
      return true;                                                   \
    }
    TW_DEQ_CASE(3, block_q4_1, dequant_block_q4_1, QK4_1)
    TW_DEQ_CASE(6, block_q5_0, dequant_block_q5_0, QK5_0)
    TW_DEQ_CASE(7, block_q5_1, dequant_block_q5_1, QK5_1)
    TW_DEQ_CASE(12, block_q4_K, dequant_block_q4_K, QK_K)
    TW_DEQ_CASE(13, block_q5_K, dequant_block_q5_K, QK_K)
    TW_DEQ_CASE(14, block_q6_K, dequant_block_q6_K, QK_K)
#undef TW_DEQ_CASE
    default:
      return false;
  }
}

}  // namespace tw
