// Prompt products on "row-pair panels": x4 weights (repack.h) widened once per task to int16, each row's values
// doubled, so that one pmaddwd yields four (row, token) sums and no partial sums need folding.
//
// Why: the x4 token tile (qdot_x4.h) multiplies pair vectors [row a x4, row b x4] by a 64-bit activation broadcast
// and so keeps two running sums per token (rows 0-1 and 2-3) that are folded per group; with 4 tokens that is 8 sums
// plus the unpacked weights, more than x86's 16 vector registers, and V8 spills (~4.7 instructions per pmaddwd, 24
// GMAC/s per thread). Here the weight vector of a k-pair is [ra k k', ra k k', rb k k', rb k k'] and the activation
// broadcast is [t0 k k', t1 k k'] (two tokens interleaved), so pmaddwd's four int32 lanes are (ra, t0), (ra, t1),
// (rb, t0), (rb, t1): 4 rows x 8 tokens are 8 running sums, 2 weight loads and 4 broadcasts per k-pair, nothing to
// fold, and the weights arrive as int16 already offset (q4_0's -8, q6_K's -32 applied): q4_0 30.7 vs 24.6 GMAC/s per
// thread in the same task loop (bench/NOTES.md, session 5). Widening is paid once per task: with 16 tokens the
// panels already win (27.4 vs 23.7 GMAC/s), with 8 they break even, so prompts of kPanelMinTokens or more take them.
//
// Layouts (int16 units):
//   panel, per quad and 32-value group (panel_group_i16): 16 k-pairs x {W01, W23} of 8 int16 (W01: rows 0 and 1),
//     then the group's row factors, each as two vectors [r0, r0, r1, r1], [r2, r2, r3, r3]:
//       q4_0 / q8_0: d (f32);  q4_K: 6-bit scale, then min (int32);  q6_K: sub-block A's scale, then B's (int32)
//     and for the K-quants, after every 8 groups (a super-block), kPanelSuper int16: q4_K d then dmin (f32 pairs of
//     vectors as above), q6_K d (f32)
//   q5_K (kept in GGUF blocks) is widened from its rows into the q4_K layout (panel_widen_q5k_rows)
//   activations, per tile of kPanelTilePairs token pairs and group (kPanelTileGroup): 16 k-pairs x the tile's pairs
//     x [t0 k, t0 k', t1 k, t1 k'] (a k-pair's broadcasts side by side, so the tile's loop walks one pointer: V8 then
//     computes no address per load — 36.6 -> 38.5 GMAC/s per thread, bench/NOTES.md session 7), then per pair the two
//     tokens' group sums as int32 [s_t0, s_t1, s_t0, s_t1] (q4_K's mins term), then per pair their scales as f32 likewise
// The integer sums equal qdot_x4's and the float products run in its order, so for the x4 types both paths give the
// same floats (q5_K's row kernels order their sums differently).
#pragma once
#include <cstdint>
#include <cstring>

#include "qdot.h"
#include "qdot_x4.h"
#include "repack.h"

namespace tw {

constexpr int kPanelMinTokens = 16;
constexpr int kPanelSuper = 32;
constexpr int kPanelTilePairs = 4;  // token pairs per tile: 8 running sums (16 vector registers on x86)
constexpr int kPanelKpStride = 4 * kPanelTilePairs;  // int16 between a tile's k-pairs
constexpr int kPanelSums = 16 * kPanelKpStride;       // a tile group's sums (8 int16 per pair), then its scales
constexpr int kPanelScales = kPanelSums + 8 * kPanelTilePairs;
constexpr int kPanelTileGroup = kPanelScales + 8 * kPanelTilePairs;

constexpr bool panel_type(int32_t type) {
  return type == TW_TYPE_Q4_0 || type == TW_TYPE_Q8_0 || type == TW_TYPE_Q4_K || type == TW_TYPE_Q6_K;
}
constexpr bool panel_kquant(int32_t type) { return type == TW_TYPE_Q4_K || type == TW_TYPE_Q6_K; }
// The panel layout a weight type widens into: q5_K (kept in GGUF blocks) takes q4_K's.
constexpr int32_t panel_layout(int32_t type) { return type == TW_TYPE_Q5_K ? TW_TYPE_Q4_K : type; }
// Whether a prompt's product with this weight runs on panels: x4-repacked types, or q5_K rows in whole quads.
inline bool panel_weight(int32_t type, int32_t layout, int64_t rows) {
  return layout == kLayoutX4 ? panel_type(type) : type == TW_TYPE_Q5_K && layout == kLayoutGGUF && rows % 4 == 0;
}
constexpr int panel_group_i16(int32_t type) { return 256 + (panel_kquant(type) ? 32 : 16); }
// A quad's panel, and the i16 between super-blocks (K-quants).
constexpr int panel_super_i16(int32_t type) { return 8 * panel_group_i16(type) + kPanelSuper; }
inline size_t panel_quad_i16(int32_t type, int64_t K) {
  return panel_kquant(type) ? (size_t)(K / 256) * panel_super_i16(type) : (size_t)(K / QA) * panel_group_i16(type);
}
// A tile's interleaved activations (kPanelTilePairs token pairs over K values).
inline size_t panel_tile_i16(int64_t K) { return (size_t)(K / QA) * kPanelTileGroup; }

}  // namespace tw

#if defined(__wasm_simd128__)
#include <wasm_simd128.h>

namespace tw {

// [v0, v1, v2, v3] (rows) -> [v0, v0, v1, v1] at dst, [v2, v2, v3, v3] at dst + 8
inline void panel_store_rows(int16_t* dst, v128_t v) {
  wasm_v128_store(dst, wasm_i32x4_shuffle(v, v, 0, 0, 1, 1));
  wasm_v128_store(dst + 8, wasm_i32x4_shuffle(v, v, 2, 2, 3, 3));
}

// Pair vector 4c + i of a 16-bit-lane group (rows 2 (i & 1) + {0, 1}, positions 8c + 4 (i >> 1) + 0..3, as int32
// lanes [ra kp, ra kp+1, rb kp, rb kp+1] with kp = 4c + 2 (i >> 1)) -> its two k-pairs' doubled-row vectors.
inline void panel_store_pair_vector(int16_t* group, int c, int i, v128_t P) {
  int16_t* dst = group + (4 * c + 2 * (i >> 1)) * 16 + (i & 1) * 8;
  wasm_v128_store(dst, wasm_i32x4_shuffle(P, P, 0, 0, 2, 2));
  wasm_v128_store(dst + 16, wasm_i32x4_shuffle(P, P, 1, 1, 3, 3));
}

// 64 bytes of x4 nibbles (q4_0 group, q4_K group) -> the group's 256 weight int16, minus `offset`.
inline void panel_widen_nibbles(const uint8_t* nib, int16_t offset, int16_t* group) {
  const v128_t m = wasm_i16x8_splat(15), o = wasm_i16x8_splat(offset);
  for (int c = 0; c < 4; ++c) {
    const v128_t w = wasm_v128_load(nib + 16 * c);
    panel_store_pair_vector(group, c, 0, wasm_i16x8_sub(wasm_v128_and(w, m), o));
    panel_store_pair_vector(group, c, 1, wasm_i16x8_sub(wasm_v128_and(wasm_u16x8_shr(w, 4), m), o));
    panel_store_pair_vector(group, c, 2, wasm_i16x8_sub(wasm_v128_and(wasm_u16x8_shr(w, 8), m), o));
    panel_store_pair_vector(group, c, 3, wasm_i16x8_sub(wasm_u16x8_shr(w, 12), o));
  }
}

// Quad (records kRec bytes apart, repack.h) -> its panel.
template <int TYPE>
inline void panel_widen_quad(const uint8_t* quad, size_t kRec, int64_t ngroups, int16_t* pan) {
  static_assert(panel_type(TYPE), "x4 types only");
  constexpr int G = panel_group_i16(TYPE);
  if constexpr (TYPE == TW_TYPE_Q4_0 || TYPE == TW_TYPE_Q8_0) {
    for (int64_t g = 0; g < ngroups; ++g, pan += G) {
      const uint8_t* rec = quad + g * kRec;
      if constexpr (TYPE == TW_TYPE_Q4_0) {
        panel_widen_nibbles(rec, 8, pan);
      } else {
        for (int c = 0; c < 4; ++c)
          for (int i = 0; i < 4; ++i) panel_store_pair_vector(pan, c, i, wasm_i16x8_load8x8(rec + 32 * c + 8 * i));
      }
      panel_store_rows(pan + 256, wasm_v128_load(rec + x4_scales_offset(TYPE)));
    }
  } else {
    for (int64_t sb = 0; sb < ngroups / 8; ++sb, pan += panel_super_i16(TYPE)) {
      const uint8_t* rec = quad + sb * kRec;
      for (int j = 0; j < 8; ++j) {
        int16_t* pg = pan + j * G;
        int32_t f[2][4];  // per row: q4_K scale and min of group j; q6_K scales of sub-blocks 2j and 2j + 1
        if constexpr (TYPE == TW_TYPE_Q4_K) {
          panel_widen_nibbles(rec + 64 * j, 0, pg);
          for (int r = 0; r < 4; ++r) f[0][r] = x4_q4k_scale(rec, r, j, 0), f[1][r] = x4_q4k_scale(rec, r, j, 1);
        } else {
          // q6_Kx4 group j: 8 bytes per k-pair kp = [r0 k k', r1 k k', r2 k k', r3 k k'] (x4_q6_offset)
          const v128_t m32 = wasm_i16x8_splat(32);
          for (int kp = 0; kp < 16; ++kp) {
            const v128_t v = wasm_i16x8_sub(wasm_u16x8_load8x8(rec + kQ6KGroupStride * j + 8 * kp), m32);
            wasm_v128_store(pg + 16 * kp, wasm_i32x4_shuffle(v, v, 0, 0, 1, 1));
            wasm_v128_store(pg + 16 * kp + 8, wasm_i32x4_shuffle(v, v, 2, 2, 3, 3));
          }
          for (int r = 0; r < 4; ++r) f[0][r] = x4_q6k_scale(rec, r, 2 * j), f[1][r] = x4_q6k_scale(rec, r, 2 * j + 1);
        }
        panel_store_rows(pg + 256, wasm_v128_load(f[0]));
        panel_store_rows(pg + 272, wasm_v128_load(f[1]));
      }
      int16_t* ps = pan + 8 * G;
      if constexpr (TYPE == TW_TYPE_Q4_K) {
        panel_store_rows(ps, wasm_v128_load(rec + kQ4KD));
        panel_store_rows(ps + 16, wasm_v128_load(rec + kQ4KDmin));
      } else {
        panel_store_rows(ps, wasm_v128_load(rec + kQ6KD));
      }
    }
  }
}

// Four q5_K rows in GGUF blocks (row0, rows rb bytes apart; q5_K is not repacked, decode keeps its row kernels) ->
// the q4_K panel layout: the 5-bit values (0..31, low nibble | fifth bit << 4) as the weights, scales and mins per
// group, d and dmin per super-block; the products are then q4_K's (d S - dmin M) d_a.
inline void panel_widen_q5k_rows(const uint8_t* row0, size_t rb, int64_t K, int16_t* pan) {
  constexpr int G = panel_group_i16(TW_TYPE_Q4_K);
  const v128_t m4 = wasm_i8x16_splat(15), one = wasm_i8x16_splat(1);
  for (int64_t sb = 0; sb < K / 256; ++sb, pan += panel_super_i16(TW_TYPE_Q4_K)) {
    const block_q5_K* b[4];
    for (int r = 0; r < 4; ++r) b[r] = (const block_q5_K*)(row0 + rb * r) + sb;
    for (int j = 0; j < 8; ++j) {
      int16_t* pg = pan + j * G;
      v128_t v[4][4];  // row r, positions 8i .. 8i + 7 of group j as int16
      for (int r = 0; r < 4; ++r)
        for (int h = 0; h < 2; ++h) {  // positions 16h .. 16h + 15
          const v128_t ql = wasm_v128_load(b[r]->qs + 32 * (j / 2) + 16 * h), qh = wasm_v128_load(b[r]->qh + 16 * h);
          const v128_t lo = (j & 1) ? wasm_u8x16_shr(ql, 4) : wasm_v128_and(ql, m4);
          const v128_t q = wasm_v128_or(lo, wasm_i8x16_shl(wasm_v128_and(wasm_u8x16_shr(qh, j), one), 4));
          v[r][2 * h] = wasm_u16x8_extend_low_u8x16(q);
          v[r][2 * h + 1] = wasm_u16x8_extend_high_u8x16(q);
        }
      // k-pair kp = 4i + kk is int32 lane kk of v[r][i]: W_rp = [ra kp, ra kp, rb kp, rb kp]
      for (int rp = 0; rp < 2; ++rp)
        for (int i = 0; i < 4; ++i) {
          const v128_t a = v[2 * rp][i], c = v[2 * rp + 1][i];
          wasm_v128_store(pg + 16 * (4 * i + 0) + 8 * rp, wasm_i32x4_shuffle(a, c, 0, 0, 4, 4));
          wasm_v128_store(pg + 16 * (4 * i + 1) + 8 * rp, wasm_i32x4_shuffle(a, c, 1, 1, 5, 5));
          wasm_v128_store(pg + 16 * (4 * i + 2) + 8 * rp, wasm_i32x4_shuffle(a, c, 2, 2, 6, 6));
          wasm_v128_store(pg + 16 * (4 * i + 3) + 8 * rp, wasm_i32x4_shuffle(a, c, 3, 3, 7, 7));
        }
      int32_t f[2][4];
      for (int r = 0; r < 4; ++r) {
        uint8_t sc, m;
        get_scale_min_k4(j, b[r]->scales, &sc, &m);
        f[0][r] = sc, f[1][r] = m;
      }
      panel_store_rows(pg + 256, wasm_v128_load(f[0]));
      panel_store_rows(pg + 272, wasm_v128_load(f[1]));
    }
    float d[4], dmin[4];
    for (int r = 0; r < 4; ++r) d[r] = fp16_to_f32(b[r]->d), dmin[r] = fp16_to_f32(b[r]->dmin);
    panel_store_rows(pan + 8 * G, wasm_v128_load(d));
    panel_store_rows(pan + 8 * G + 16, wasm_v128_load(dmin));
  }
}

// Two tokens' 8-bit activations (qdot.h) -> their slot of a tile's interleaved activations (tile: the tile's first
// group). a0 and a1 may be the same row (an odd token count's last pair).
inline void panel_interleave_pair(const ActRow& a0, const ActRow& a1, int64_t ngroups, int slot, int16_t* tile) {
  for (int64_t g = 0; g < ngroups; ++g, tile += kPanelTileGroup) {
    int16_t* x = tile + 4 * slot;
    for (int h = 0; h < 4; ++h) {  // k-pairs 4h .. 4h + 3
      const v128_t A = wasm_v128_load(a0.q + g * QA + 8 * h), B = wasm_v128_load(a1.q + g * QA + 8 * h);
      const v128_t lo = wasm_i32x4_shuffle(A, B, 0, 4, 1, 5), hi = wasm_i32x4_shuffle(A, B, 2, 6, 3, 7);
      wasm_v128_store64_lane(x + (4 * h + 0) * kPanelKpStride, lo, 0);
      wasm_v128_store64_lane(x + (4 * h + 1) * kPanelKpStride, lo, 1);
      wasm_v128_store64_lane(x + (4 * h + 2) * kPanelKpStride, hi, 0);
      wasm_v128_store64_lane(x + (4 * h + 3) * kPanelKpStride, hi, 1);
    }
    const int32_t s[4] = {a0.sq[g], a1.sq[g], a0.sq[g], a1.sq[g]};
    const float d[4] = {a0.d[g], a1.d[g], a0.d[g], a1.d[g]};
    std::memcpy(tile + kPanelSums + 8 * slot, s, sizeof s);
    std::memcpy(tile + kPanelScales + 8 * slot, d, sizeof d);
  }
}

// Integer sums of k-pairs [kp0, kp1) of one group (pg: the quad's group, xg: the tile's): acc[rp][p] += W_rp . x_p
template <int TP>
inline void panel_dots(const int16_t* pg, const int16_t* xg, int kp0, int kp1, v128_t (&acc)[2][TP]) {
  const int16_t* w = pg + 16 * kp0;
  const int16_t* x = xg + kPanelKpStride * kp0;
#pragma clang loop unroll(disable)
  for (int kp = kp0; kp < kp1; ++kp, w += 16, x += kPanelKpStride) {
    const v128_t w01 = wasm_v128_load(w), w23 = wasm_v128_load(w + 8);
    for (int p = 0; p < TP; ++p) {
      const v128_t xv = wasm_v128_load64_splat(x + 4 * p);
      acc[0][p] = wasm_i32x4_add(acc[0][p], wasm_i32x4_dot_i16x8(w01, xv));
      acc[1][p] = wasm_i32x4_add(acc[1][p], wasm_i32x4_dot_i16x8(w23, xv));
    }
  }
}

// One quad's panel times the first TP token pairs of a tile (xt: its interleaved activations) -> out[4 (rp * TP + p) + lane]:
// rp = row pair (quad rows 2 rp, 2 rp + 1), lanes (ra, t0), (ra, t1), (rb, t0), (rb, t1).
template <int TYPE, int TP>
inline void panel_tile(const int16_t* pan, const int16_t* xt, int64_t ngroups, float* out) {
  constexpr int G = panel_group_i16(TYPE);
  v128_t accf[2][TP];
  for (int p = 0; p < TP; ++p) accf[0][p] = accf[1][p] = wasm_f32x4_splat(0);
  if constexpr (!panel_kquant(TYPE)) {
    for (int64_t g = 0; g < ngroups; ++g, pan += G) {
      v128_t acc[2][TP];
      for (int p = 0; p < TP; ++p) acc[0][p] = acc[1][p] = wasm_i32x4_splat(0);
      const int16_t* xg = xt + g * kPanelTileGroup;
      panel_dots<TP>(pan, xg, 0, 16, acc);
      const v128_t d[2] = {wasm_v128_load(pan + 256), wasm_v128_load(pan + 264)};
      for (int p = 0; p < TP; ++p) {
        const v128_t da = wasm_v128_load(xg + kPanelScales + 8 * p);
        for (int rp = 0; rp < 2; ++rp)
          accf[rp][p] = wasm_f32x4_add(accf[rp][p], wasm_f32x4_mul(wasm_f32x4_mul(wasm_f32x4_convert_i32x4(acc[rp][p]), da), d[rp]));
      }
    }
  } else {
    for (int64_t sb = 0; sb < ngroups / 8; ++sb, pan += panel_super_i16(TYPE)) {
      v128_t S[2][TP], M[2][TP];  // q4_K: sum_j sc_j isum_j, sum_j m_j sum_j(a); q6_K: sum_sub sc_sub isum_sub
      for (int p = 0; p < TP; ++p) S[0][p] = S[1][p] = M[0][p] = M[1][p] = wasm_i32x4_splat(0);
      for (int j = 0; j < 8; ++j) {
        const int16_t* pg = pan + j * G;
        const int16_t* xg = xt + (sb * 8 + j) * kPanelTileGroup;
        v128_t acc[2][TP];
        for (int h = 0; h < (TYPE == TW_TYPE_Q6_K ? 2 : 1); ++h) {  // q6_K: sub-blocks of 8 k-pairs
          for (int p = 0; p < TP; ++p) acc[0][p] = acc[1][p] = wasm_i32x4_splat(0);
          if constexpr (TYPE == TW_TYPE_Q6_K) panel_dots<TP>(pg, xg, 8 * h, 8 * h + 8, acc);
          else panel_dots<TP>(pg, xg, 0, 16, acc);
          const v128_t sc[2] = {wasm_v128_load(pg + 256 + 16 * h), wasm_v128_load(pg + 264 + 16 * h)};
          for (int p = 0; p < TP; ++p)
            for (int rp = 0; rp < 2; ++rp) S[rp][p] = wasm_i32x4_add(S[rp][p], wasm_i32x4_mul(sc[rp], acc[rp][p]));
        }
        if constexpr (TYPE == TW_TYPE_Q4_K) {
          const v128_t m[2] = {wasm_v128_load(pg + 272), wasm_v128_load(pg + 280)};
          for (int p = 0; p < TP; ++p) {
            const v128_t s = wasm_v128_load(xg + kPanelSums + 8 * p);
            for (int rp = 0; rp < 2; ++rp) M[rp][p] = wasm_i32x4_add(M[rp][p], wasm_i32x4_mul(m[rp], s));
          }
        }
      }
      const int16_t* ps = pan + 8 * G;
      const int16_t* xs = xt + sb * 8 * kPanelTileGroup;
      for (int p = 0; p < TP; ++p) {
        const v128_t da = wasm_v128_load(xs + kPanelScales + 8 * p);
        for (int rp = 0; rp < 2; ++rp) {
          const v128_t d = wasm_v128_load(ps + 8 * rp);
          if constexpr (TYPE == TW_TYPE_Q4_K) {  // qdot_q4k_x4's order: (d S - dmin M) d_a
            const v128_t f = wasm_f32x4_sub(wasm_f32x4_mul(d, wasm_f32x4_convert_i32x4(S[rp][p])),
                                            wasm_f32x4_mul(wasm_v128_load(ps + 16 + 8 * rp), wasm_f32x4_convert_i32x4(M[rp][p])));
            accf[rp][p] = wasm_f32x4_add(accf[rp][p], wasm_f32x4_mul(f, da));
          } else {  // qdot_q6k_x4's order: (d S) d_a
            accf[rp][p] = wasm_f32x4_add(accf[rp][p], wasm_f32x4_mul(wasm_f32x4_mul(d, wasm_f32x4_convert_i32x4(S[rp][p])), da));
          }
        }
      }
    }
  }
  for (int rp = 0; rp < 2; ++rp)
    for (int p = 0; p < TP; ++p) wasm_v128_store(out + 4 * (rp * TP + p), accf[rp][p]);
}

}  // namespace tw
#endif  // __wasm_simd128__
