// Prompt products of F16 / BF16 weights on float panels: a task's rows converted to f32 once, four rows
// interleaved per position ([r0 k, r1 k, r2 k, r3 k]), times tiles of 6 tokens whose activations are interleaved per
// position too ([t0 k .. t5 k]). One f32x4 multiply and add then update one token's four rows, and a 4-row x 6-token
// tile keeps 6 running sums with one weight load and 6 broadcasts per position.
//
// Why: the row path (dot_f32 per row and token, the row converted once per 8 tokens) reduces each product
// horizontally and reloads the activations for every row: 10.1 GMAC/s per thread in the kernel harness (16 rows x
// 2048, 120 tokens), this loop 18.6. With 8 tokens per tile V8 hoists the 8 broadcasts, runs out of x86's 16 vector
// registers and keeps one running sum on the stack, whose store-to-load latency then paces the loop (9.7); 7 tokens
// measure as 6. The rounding is llama.cpp's contract for these types (activations rounded to F16 / BF16 first,
// products and sums in f32); the order of the sums differs from the row path's 4-way split, as it differs from
// llama.cpp's.
#pragma once
#include <cstdint>

#include "../common/fp16.h"
#include "../include/twinfer.h"

namespace tw {

constexpr int kFloatTileTokens = 6;

inline bool float_panel_type(int32_t type) { return type == TW_TYPE_F16 || type == TW_TYPE_BF16; }

}  // namespace tw

#if defined(__wasm_simd128__)
#include <wasm_simd128.h>

#include "dot.h"

namespace tw {

// Rows r..r+3 of an F16 / BF16 weight (rows rb bytes apart) -> K x [r0, r1, r2, r3] f32 at pan. tmp: 4 K floats.
inline void float_panel_quad(int32_t type, const char* rows, size_t rb, int64_t K, float* tmp, float* pan) {
  for (int r = 0; r < 4; ++r) half_row_to_f32(type, (const uint16_t*)(rows + rb * r), tmp + K * r, K);
  int64_t k = 0;
  for (; k + 4 <= K; k += 4) {  // 4 x 4 transpose
    const v128_t a = wasm_v128_load(tmp + k), b = wasm_v128_load(tmp + K + k), c = wasm_v128_load(tmp + 2 * K + k),
                 d = wasm_v128_load(tmp + 3 * K + k);
    const v128_t ab0 = wasm_i32x4_shuffle(a, b, 0, 4, 1, 5), ab1 = wasm_i32x4_shuffle(a, b, 2, 6, 3, 7);
    const v128_t cd0 = wasm_i32x4_shuffle(c, d, 0, 4, 1, 5), cd1 = wasm_i32x4_shuffle(c, d, 2, 6, 3, 7);
    wasm_v128_store(pan + 4 * k, wasm_i64x2_shuffle(ab0, cd0, 0, 2));
    wasm_v128_store(pan + 4 * k + 4, wasm_i64x2_shuffle(ab0, cd0, 1, 3));
    wasm_v128_store(pan + 4 * k + 8, wasm_i64x2_shuffle(ab1, cd1, 0, 2));
    wasm_v128_store(pan + 4 * k + 12, wasm_i64x2_shuffle(ab1, cd1, 1, 3));
  }
  for (; k < K; ++k)
    for (int r = 0; r < 4; ++r) pan[4 * k + r] = tmp[K * r + k];
}

// nt (<= kFloatTileTokens) activation rows of K (rows K apart) -> K x kFloatTileTokens floats (unused slots zero).
inline void float_panel_tokens(const float* x, int nt, int64_t K, float* out) {
  for (int64_t k = 0; k < K; ++k)
    for (int t = 0; t < kFloatTileTokens; ++t) out[kFloatTileTokens * k + t] = t < nt ? x[(size_t)t * K + k] : 0.0f;
}

// One quad's float panel times a tile's interleaved tokens -> out[4 t + r].
inline void float_panel_tile(const float* pan, const float* xt, int64_t K, float* out) {
  v128_t acc[kFloatTileTokens];
  for (int t = 0; t < kFloatTileTokens; ++t) acc[t] = wasm_f32x4_splat(0);
  for (int64_t k = 0; k < K; ++k, pan += 4, xt += kFloatTileTokens) {
    const v128_t w = wasm_v128_load(pan);
    for (int t = 0; t < kFloatTileTokens; ++t) acc[t] = wasm_f32x4_add(acc[t], wasm_f32x4_mul(w, wasm_v128_load32_splat(xt + t)));
  }
  for (int t = 0; t < kFloatTileTokens; ++t) wasm_v128_store(out + 4 * t, acc[t]);
}

}  // namespace tw
#endif  // __wasm_simd128__
