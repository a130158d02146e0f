// Prompt products on "row-pair panels": q4_0 / q8_0 weights widened once per task to int16, each row's values
// doubled, so that one pmaddwd yields four (row, token) sums and no partial sums need folding.
//
// Why: the x4 token tile (qdot_x4.h) multiplies pair vectors [row a x4, row b x4] by a 64-bit activation broadcast
// and so keeps two running sums per token (rows 0-1 and 2-3) that are folded per group; with 4 tokens that is 8 sums
// plus the unpacked weights, more than x86's 16 vector registers, and V8 spills (~4.7 instructions per pmaddwd, 24
// GMAC/s per thread). Here the weight vector of a k-pair is [ra k k', ra k k', rb k k', rb k k'] and the activation
// broadcast is [t0 k k', t1 k k'] (two tokens interleaved), so pmaddwd's four int32 lanes are (ra, t0), (ra, t1),
// (rb, t0), (rb, t1): 4 rows x 8 tokens are 8 running sums, 2 weight loads and 4 broadcasts per k-pair, nothing to
// fold, and the weights arrive as int16 already offset (q4_0's -8 applied): 30.7 vs 24.6 GMAC/s per thread in the
// same task loop (bench/NOTES.md, session 5). Widening costs about as much as 7 tokens' products, so prompts of
// kPanelMinTokens or more take this path.
//
// Layouts (int16 units):
//   panel, per quad and 32-value group (kPanelGroup = 272): 16 k-pairs x {W01, W23} of 8 int16 (W01: rows 0 and 1),
//     then the group's scales as f32 [d0, d0, d1, d1] and [d2, d2, d3, d3] (the lanes' rows)
//   activations, per token pair and group (kPanelActGroup = 72): 16 k-pairs x [t0 k, t0 k', t1 k, t1 k'], then the
//     two tokens' scales as f32 [d_t0, d_t1, d_t0, d_t1]
// Per group and lane the sum is scaled as (f32(isum) * d_token) * d_row, the order of qdot_x4's scale products, so
// both paths give the same floats.
#pragma once
#include <cstdint>
#include <cstring>

#include "qdot.h"
#include "repack.h"

namespace tw {

constexpr int kPanelMinTokens = 32;
constexpr int kPanelGroup = 16 * 2 * 8 + 16;
constexpr int kPanelActGroup = 16 * 4 + 8;
constexpr int kPanelTilePairs = 4;  // token pairs per tile: 8 running sums (16 vector registers on x86)

constexpr bool panel_type(int32_t type) { return type == TW_TYPE_Q4_0 || type == TW_TYPE_Q8_0; }
inline size_t panel_quad_i16(int64_t K) { return (size_t)(K / QA) * kPanelGroup; }
inline size_t panel_pair_i16(int64_t K) { return (size_t)(K / QA) * kPanelActGroup; }

}  // namespace tw

#if defined(__wasm_simd128__)
#include <wasm_simd128.h>

namespace tw {

// Quad (records kRec bytes apart, repack.h) -> its panel (K/32 groups).
template <int TYPE>
inline void panel_widen_quad(const uint8_t* quad, size_t kRec, int64_t ngroups, int16_t* pan) {
  static_assert(panel_type(TYPE), "q4_0 / q8_0 only");
  const v128_t m = wasm_i16x8_splat(15), eight = wasm_i16x8_splat(8);
  for (int64_t g = 0; g < ngroups; ++g, pan += kPanelGroup) {
    const uint8_t* rec = quad + g * kRec;
    for (int c = 0; c < 4; ++c) {
      v128_t P[4];  // pair vector 4c + i: rows 2 (i & 1) + {0, 1}, positions 8c + 4 (i >> 1) + 0..3 (repack.h)
      if constexpr (TYPE == TW_TYPE_Q4_0) {
        const v128_t w = wasm_v128_load(rec + 16 * c);
        P[0] = wasm_i16x8_sub(wasm_v128_and(w, m), eight);
        P[1] = wasm_i16x8_sub(wasm_v128_and(wasm_u16x8_shr(w, 4), m), eight);
        P[2] = wasm_i16x8_sub(wasm_v128_and(wasm_u16x8_shr(w, 8), m), eight);
        P[3] = wasm_i16x8_sub(wasm_u16x8_shr(w, 12), eight);
      } else {
        for (int i = 0; i < 4; ++i) P[i] = wasm_i16x8_load8x8(rec + 32 * c + 8 * i);
      }
      // as int32 lanes P = [ra kp, ra kp+1, rb kp, rb kp+1] (kp = 4c + 2 (i >> 1)): duplicate each row's pair
      for (int i = 0; i < 4; ++i) {
        int16_t* dst = pan + (4 * c + 2 * (i >> 1)) * 16 + (i & 1) * 8;
        wasm_v128_store(dst, wasm_i32x4_shuffle(P[i], P[i], 0, 0, 2, 2));
        wasm_v128_store(dst + 16, wasm_i32x4_shuffle(P[i], P[i], 1, 1, 3, 3));
      }
    }
    const v128_t d = wasm_v128_load(rec + x4_scales_offset(TYPE));
    wasm_v128_store(pan + 256, wasm_i32x4_shuffle(d, d, 0, 0, 1, 1));
    wasm_v128_store(pan + 264, wasm_i32x4_shuffle(d, d, 2, 2, 3, 3));
  }
}

// Two tokens' 8-bit activations (qdot.h, 32-value groups) -> their interleaved panel rows. a0 and a1 may be the same
// row (an odd token count's last pair).
inline void panel_interleave_pair(const ActRow& a0, const ActRow& a1, int64_t ngroups, int16_t* out) {
  for (int64_t g = 0; g < ngroups; ++g, out += kPanelActGroup) {
    for (int h = 0; h < 4; ++h) {
      const v128_t A = wasm_v128_load(a0.q + g * QA + 8 * h), B = wasm_v128_load(a1.q + g * QA + 8 * h);
      wasm_v128_store(out + 16 * h, wasm_i32x4_shuffle(A, B, 0, 4, 1, 5));
      wasm_v128_store(out + 16 * h + 8, wasm_i32x4_shuffle(A, B, 2, 6, 3, 7));
    }
    const float d[4] = {a0.d[g], a1.d[g], a0.d[g], a1.d[g]};
    std::memcpy(out + 64, d, sizeof d);
  }
}

// One quad's panel times TP token pairs (xa[p]: pair p's interleaved activations) -> out[4 (rp * TP + p) + lane]:
// rp = row pair (quad rows 2 rp, 2 rp + 1), lanes (ra, t0), (ra, t1), (rb, t0), (rb, t1).
template <int TP>
inline void panel_tile(const int16_t* pan, const int16_t* const* xa, int64_t ngroups, float* out) {
  v128_t accf[2][TP];
  for (int p = 0; p < TP; ++p) accf[0][p] = accf[1][p] = wasm_f32x4_splat(0);
  for (int64_t g = 0; g < ngroups; ++g, pan += kPanelGroup) {
    v128_t acc[2][TP];
    for (int p = 0; p < TP; ++p) acc[0][p] = acc[1][p] = wasm_i32x4_splat(0);
    const int64_t xo = g * kPanelActGroup;
#pragma clang loop unroll(disable)
    for (int kp = 0; kp < 16; ++kp) {
      const v128_t w01 = wasm_v128_load(pan + 16 * kp), w23 = wasm_v128_load(pan + 16 * kp + 8);
      for (int p = 0; p < TP; ++p) {
        const v128_t x = wasm_v128_load64_splat(xa[p] + xo + 4 * kp);
        acc[0][p] = wasm_i32x4_add(acc[0][p], wasm_i32x4_dot_i16x8(w01, x));
        acc[1][p] = wasm_i32x4_add(acc[1][p], wasm_i32x4_dot_i16x8(w23, x));
      }
    }
    const v128_t d01 = wasm_v128_load(pan + 256), d23 = wasm_v128_load(pan + 264);
    for (int p = 0; p < TP; ++p) {
      const v128_t da = wasm_v128_load(xa[p] + xo + 64);
      accf[0][p] = wasm_f32x4_add(accf[0][p], wasm_f32x4_mul(wasm_f32x4_mul(wasm_f32x4_convert_i32x4(acc[0][p]), da), d01));
      accf[1][p] = wasm_f32x4_add(accf[1][p], wasm_f32x4_mul(wasm_f32x4_mul(wasm_f32x4_convert_i32x4(acc[1][p]), da), d23));
    }
  }
  for (int rp = 0; rp < 2; ++rp)
    for (int p = 0; p < TP; ++p) wasm_v128_store(out + 4 * (rp * TP + p), accf[rp][p]);
}

}  // namespace tw
#endif  // __wasm_simd128__
