// GGUF block layouts and their exact dequantization, shared by every backend (host and CUDA device code).
// Each quantized type stores rows as consecutive blocks of QK values; a row's length must be a multiple of QK.
// The arithmetic below is the one ggml uses (same operations in the same order) so results match bit for bit.
#pragma once
#include <cstddef>
#include <cstdint>

#include "fp16.h"

namespace tw {

constexpr int QK4_0 = 32;
constexpr int QK8_0 = 32;

#pragma pack(push, 1)
struct block_q4_0 {
  uint16_t d;              // fp16 scale
  uint8_t qs[QK4_0 / 2];   // low nibbles: values 0..15, high nibbles: values 16..31; value = (q - 8) * d
};
struct block_q8_0 {
  uint16_t d;              // fp16 scale
  int8_t qs[QK8_0];        // value = q * d
};
#pragma pack(pop)
static_assert(sizeof(block_q4_0) == 18, "q4_0 block");
static_assert(sizeof(block_q8_0) == 34, "q8_0 block");

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
    case 8: return {QK8_0, (int32_t)sizeof(block_q8_0), "Q8_0"};
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
    default:
      return false;
  }
}

}  // namespace tw
