// Integer matrix products on x4-repacked weights (repack.h) with 8-bit activations (qdot.h's ActRow): one quad
// (4 rows) times NT activation rows at once.
//
// Per 32-value group and quad: 16 pair vectors P_{4c+i} (repack.h: two rows' runs of 4 positions each), multiplied
// (dot_i16x8 = pmaddwd) with a 64-bit broadcast of the activation row's 4 values at 8c + 4 (i >> 1): lanes
// [row a, row a, row b, row b] of rows 0-1 (i even) or 2-3 (i odd), summed in two accumulators per activation row
// and folded to the 4 rows once per group (fold_rows). Then, per activation row,
//   y[4 rows] += d_w[4 rows] * d_a * (isum - offset * sum(q))        (offset: 8 for q4_0, 0 for q8_0)
// which is llama.cpp's q4_0 x q8_0 / q8_0 x q8_0 arithmetic (integer sums, then one scale product).
// The unpacked weights are shared by the NT activation rows (the backend uses NT = 1 for decode, tiles of 4 tokens
// for prompts; more spill past x86's 16 vector registers). Two quads per call sharing the activation broadcasts
// measured slower: V8 hoists every load of a block to its top and then spills them. q4_K and q6_K have their own
// kernels below (super-block scales); qdot_x4_tile picks the kernel.
#pragma once
#include "qdot.h"
#include "repack.h"

namespace tw {

// Scalar reference of qdot_x4 for one quad and one activation row (same integer sums, same scale products).
// ngroups counts 32-value groups (8 per q4_K super-block).
inline void qdot_x4_scalar(int32_t type, const uint8_t* quad, size_t stride, const ActRow& a, int64_t ngroups, float out[4]) {
  for (int r = 0; r < 4; ++r) out[r] = 0;
  if (type == TW_TYPE_Q4_K) {
    for (int64_t sb = 0; sb < ngroups / 8; ++sb) {
      const uint8_t* rec = quad + sb * stride;
      const float* d = (const float*)(rec + kQ4KD);
      const float* dmin = (const float*)(rec + kQ4KDmin);
      for (int r = 0; r < 4; ++r) {
        int32_t S = 0, M = 0;
        for (int j = 0; j < 8; ++j) {
          const int64_t g = sb * 8 + j;
          int32_t isum = 0;
          for (int k = 0; k < QA; ++k) isum += x4_value(type, rec, r, 32 * j + k) * a.q[g * QA + k];
          S += x4_q4k_scale(rec, r, j, 0) * isum;
          M += x4_q4k_scale(rec, r, j, 1) * a.sq[g];
        }
        out[r] += a.d[sb * 8] * (d[r] * (float)S - dmin[r] * (float)M);
      }
    }
    return;
  }
  if (type == TW_TYPE_Q6_K) {
    for (int64_t sb = 0; sb < ngroups / 8; ++sb) {
      const uint8_t* rec = quad + sb * stride;
      const float* d = (const float*)(rec + kQ6KD);
      for (int r = 0; r < 4; ++r) {
        int32_t S = 0;
        for (int sub = 0; sub < 16; ++sub) {
          int32_t isum = 0;
          for (int k = 16 * sub; k < 16 * sub + 16; ++k) isum += x4_value(type, rec, r, k) * a.q[sb * 256 + k];
          isum -= 32 * a.sq16[sb * 16 + sub];
          S += x4_q6k_scale(rec, r, sub) * isum;
        }
        out[r] += a.d[sb * 8] * (d[r] * (float)S);
      }
    }
    return;
  }
  const int offset = type == TW_TYPE_Q4_0 ? 8 : 0;
  for (int64_t g = 0; g < ngroups; ++g) {
    const uint8_t* rec = quad + g * stride;
    for (int r = 0; r < 4; ++r) {
      int32_t isum = 0;
      for (int k = 0; k < QA; ++k) isum += x4_value(type, rec, r, k) * a.q[g * QA + k];
      isum -= offset * a.sq[g];
      float d;
      std::memcpy(&d, rec + x4_scales_offset(type) + 4 * r, 4);
      out[r] += (float)isum * a.d[g] * d;
    }
  }
}

}  // namespace tw

#if defined(__wasm_simd128__)
#include <wasm_simd128.h>

namespace tw {

// Issue-order fence for the token tiles (NT > 1): an empty asm with a memory clobber, placed after each activation
// row's dot products. Without it LLVM hoists all 4 x NT activation broadcasts of a pair-vector step to its top, V8
// keeps that order, and with 16 x86 vector registers it spills half of them and the running sums (store, reload:
// ~5 cycles of store forwarding on each accumulator's add chain). With it, each row's 4 broadcasts are loaded right
// before their 4 multiply-adds: Q4_0 tile 20.6 -> 23.8 GMAC/s per thread (bench/NOTES.md). It emits no instruction;
// values held in locals (the activation pointers below) are not reloaded, only memory reads stay on their side.
inline void issue_order_fence() { __asm__ volatile("" ::: "memory"); }

// [r0, r0, r1, r1] and [r2, r2, r3, r3] partial sums -> [r0, r1, r2, r3]
inline v128_t fold_rows(v128_t a01, v128_t a23) {
  return wasm_i32x4_add(wasm_i32x4_shuffle(a01, a23, 0, 2, 4, 6), wasm_i32x4_shuffle(a01, a23, 1, 3, 5, 7));
}

// out[4 t + r] = row r of the quad . act[t]
//
// Per group the integer sum starts at q4_0's offset correction (-8 * sum(q), precomputed with the activations) and
// is scaled with the record's f32 scales: the per-group work outside the 16 dot products is 6 vector operations.
// Decode (NT = 1) unpacks q4_0 with masks where a shift would also be needed: pair vectors 1 and 2 are taken as
// (W & 0x00F0) = 16 n and (W & 0x0F00) = 256 n into accumulators of their own, divided back exactly at the end of
// the group (their sums are multiples of 16 and 256): 4 instead of 6 operations per 4 pair vectors, +9 % measured.
// With several activation rows the two extra accumulators per row cost more in register spills than they save.
template <int TYPE, int NT>
inline void qdot_x4(const uint8_t* quad, size_t kRec, const ActRow* act, int64_t ngroups, float* out) {
  constexpr bool kQ4 = TYPE == TW_TYPE_Q4_0;
  constexpr bool kMask = kQ4 && NT == 1;
  const size_t kWBytes = x4_scales_offset(TYPE);  // repack.h's layout; kRec: the quad's record stride
  const int16_t* aq[NT];  // the activation rows' fields in locals: the fence below does not make them reload
  const int32_t* aneg8sq[NT];
  const float* ad[NT];
  for (int t = 0; t < NT; ++t) aq[t] = act[t].q, aneg8sq[t] = act[t].neg8sq, ad[t] = act[t].d;
  v128_t accf[NT];
  for (int t = 0; t < NT; ++t) accf[t] = wasm_f32x4_splat(0);
  const v128_t m0 = wasm_i16x8_splat(0x000F), m1 = wasm_i16x8_splat(kMask ? 0x00F0 : 0x000F),
               m2 = wasm_i16x8_splat(kMask ? 0x0F00 : 0x000F);
  for (int64_t g = 0; g < ngroups; ++g) {
    // rows 0-1 and rows 2-3; kMask: pair vector 1 (rows 2-3) summed x16 in b23, pair vector 2 (rows 0-1) x256 in b01
    v128_t a01[NT], a23[NT], b01[NT], b23[NT];
    for (int t = 0; t < NT; ++t) a01[t] = a23[t] = b01[t] = b23[t] = wasm_i32x4_splat(0);
    for (int c = 0; c < 4; ++c) {  // pair vectors 4c .. 4c+3: positions 8c .. 8c+7
      const uint8_t* rec = quad + g * kRec;
      v128_t p[4];
      if constexpr (kQ4) {
        const v128_t w = wasm_v128_load(rec + 16 * c);
        p[0] = wasm_v128_and(w, m0);
        p[1] = kMask ? wasm_v128_and(w, m1) : wasm_v128_and(wasm_u16x8_shr(w, 4), m1);
        p[2] = kMask ? wasm_v128_and(w, m2) : wasm_v128_and(wasm_u16x8_shr(w, 8), m2);
        p[3] = wasm_u16x8_shr(w, 12);
      } else {
        if constexpr (NT == 1) {
          // sign-extending loads (one pmovsxbw from memory each): no vector ALU work for the unpack (decode kernel
          // 10.7 -> 18.4 GMAC/s); in the token tiles the four extra loads cost more (prompts -7 % end to end)
          for (int i = 0; i < 4; ++i) p[i] = wasm_i16x8_load8x8(rec + 32 * c + 8 * i);
        } else {
          const v128_t w0 = wasm_v128_load(rec + 32 * c), w1 = wasm_v128_load(rec + 32 * c + 16);
          p[0] = wasm_i16x8_extend_low_i8x16(w0);
          p[1] = wasm_i16x8_extend_high_i8x16(w0);
          p[2] = wasm_i16x8_extend_low_i8x16(w1);
          p[3] = wasm_i16x8_extend_high_i8x16(w1);
        }
      }
      for (int t = 0; t < NT; ++t) {
        const int16_t* q = aq[t] + g * QA + 8 * c;
        const v128_t x0 = wasm_v128_load64_splat(q), x1 = wasm_v128_load64_splat(q + 4);
        a01[t] = wasm_i32x4_add(a01[t], wasm_i32x4_dot_i16x8(p[0], x0));
        if constexpr (kMask) b23[t] = wasm_i32x4_add(b23[t], wasm_i32x4_dot_i16x8(p[1], x0));
        else a23[t] = wasm_i32x4_add(a23[t], wasm_i32x4_dot_i16x8(p[1], x0));
        if constexpr (kMask) b01[t] = wasm_i32x4_add(b01[t], wasm_i32x4_dot_i16x8(p[2], x1));
        else a01[t] = wasm_i32x4_add(a01[t], wasm_i32x4_dot_i16x8(p[2], x1));
        a23[t] = wasm_i32x4_add(a23[t], wasm_i32x4_dot_i16x8(p[3], x1));
        if constexpr (NT > 1) issue_order_fence();
      }
    }
    const v128_t d = wasm_v128_load(quad + g * kRec + kWBytes);
    for (int t = 0; t < NT; ++t) {
      if constexpr (kMask) {
        a01[t] = wasm_i32x4_add(a01[t], wasm_i32x4_shr(b01[t], 8));
        a23[t] = wasm_i32x4_add(a23[t], wasm_i32x4_shr(b23[t], 4));
      }
      v128_t isum = fold_rows(a01[t], a23[t]);
      if constexpr (kQ4) isum = wasm_i32x4_add(isum, wasm_v128_load32_splat(aneg8sq[t] + g));
      const v128_t da = wasm_v128_load32_splat(ad[t] + g);
      accf[t] = wasm_f32x4_add(accf[t], wasm_f32x4_mul(wasm_f32x4_mul(wasm_f32x4_convert_i32x4(isum), da), d));
    }
  }
  for (int t = 0; t < NT; ++t) wasm_v128_store(out + 4 * t, accf[t]);
}

// q4_K x4: per super-block and activation row, S = sum_j sc_j * isum_j and M = sum_j m_j * sum(q_j) in int32
// lanes (4 rows), then y += d_a * (d * S - dmin * M) — llama.cpp's q4_K x q8_K arithmetic. A group pair's scales
// and mins are one v128.load8x8_u each ([pair][row][2], repack.h): the group's 4 scales are its low or high int16
// halves, and M is 4 pmaddwd per super-block against pairs of group sums. Bounds: sc <= 63,
// |isum| <= 32 * 15 * 127, 8 groups: |S| < 2^25.
template <int NT>
inline void qdot_q4k_x4(const uint8_t* quad, size_t rec_bytes, const ActRow* act, int64_t ngroups, float* out) {
  constexpr bool kMask = NT == 1;
  const int16_t* aq[NT];
  for (int t = 0; t < NT; ++t) aq[t] = act[t].q;
  v128_t accf[NT];
  for (int t = 0; t < NT; ++t) accf[t] = wasm_f32x4_splat(0);
  const v128_t m0 = wasm_i16x8_splat(0x000F), m1 = wasm_i16x8_splat(kMask ? 0x00F0 : 0x000F),
               m2 = wasm_i16x8_splat(kMask ? 0x0F00 : 0x000F);
  for (int64_t sb = 0; sb < ngroups / 8; ++sb) {
    const uint8_t* rec = quad + sb * rec_bytes;
    v128_t S[NT], M[NT];
    for (int t = 0; t < NT; ++t) {
      S[t] = wasm_i32x4_splat(0);
      M[t] = wasm_i32x4_dot_i16x8(wasm_u16x8_load8x8(rec + kQ4KMins), wasm_v128_load32_splat(act[t].sqh + sb * 8));
      for (int jp = 1; jp < 4; ++jp)
        M[t] = wasm_i32x4_add(M[t], wasm_i32x4_dot_i16x8(wasm_u16x8_load8x8(rec + kQ4KMins + 8 * jp),
                                                         wasm_v128_load32_splat(act[t].sqh + sb * 8 + 2 * jp)));
    }
    for (int j = 0; j < 8; ++j) {
      const int64_t g = sb * 8 + j;
      v128_t a01[NT], a23[NT], b01[NT], b23[NT];  // as in qdot_x4
      for (int t = 0; t < NT; ++t) a01[t] = a23[t] = b01[t] = b23[t] = wasm_i32x4_splat(0);
      for (int c = 0; c < 4; ++c) {
        const v128_t w = wasm_v128_load(rec + 64 * j + 16 * c);
        const v128_t p[4] = {wasm_v128_and(w, m0),
                             kMask ? wasm_v128_and(w, m1) : wasm_v128_and(wasm_u16x8_shr(w, 4), m1),
                             kMask ? wasm_v128_and(w, m2) : wasm_v128_and(wasm_u16x8_shr(w, 8), m2),
                             wasm_u16x8_shr(w, 12)};
        for (int t = 0; t < NT; ++t) {
          const int16_t* q = aq[t] + g * QA + 8 * c;
          const v128_t x0 = wasm_v128_load64_splat(q), x1 = wasm_v128_load64_splat(q + 4);
          a01[t] = wasm_i32x4_add(a01[t], wasm_i32x4_dot_i16x8(p[0], x0));
          if constexpr (kMask) b23[t] = wasm_i32x4_add(b23[t], wasm_i32x4_dot_i16x8(p[1], x0));
          else a23[t] = wasm_i32x4_add(a23[t], wasm_i32x4_dot_i16x8(p[1], x0));
          if constexpr (kMask) b01[t] = wasm_i32x4_add(b01[t], wasm_i32x4_dot_i16x8(p[2], x1));
          else a01[t] = wasm_i32x4_add(a01[t], wasm_i32x4_dot_i16x8(p[2], x1));
          a23[t] = wasm_i32x4_add(a23[t], wasm_i32x4_dot_i16x8(p[3], x1));
          if constexpr (NT > 1) issue_order_fence();
        }
      }
      const v128_t scp = wasm_u16x8_load8x8(rec + kQ4KScales + 8 * (j / 2));
      const v128_t sc = (j & 1) ? wasm_u32x4_shr(scp, 16) : wasm_v128_and(scp, wasm_i32x4_splat(0xFFFF));
      for (int t = 0; t < NT; ++t) {
        if constexpr (kMask) {
          a01[t] = wasm_i32x4_add(a01[t], wasm_i32x4_shr(b01[t], 8));
          a23[t] = wasm_i32x4_add(a23[t], wasm_i32x4_shr(b23[t], 4));
        }
        S[t] = wasm_i32x4_add(S[t], wasm_i32x4_mul(sc, fold_rows(a01[t], a23[t])));
      }
    }
    const v128_t d = wasm_v128_load(rec + kQ4KD), dmin = wasm_v128_load(rec + kQ4KDmin);
    for (int t = 0; t < NT; ++t) {
      const v128_t f = wasm_f32x4_sub(wasm_f32x4_mul(d, wasm_f32x4_convert_i32x4(S[t])),
                                      wasm_f32x4_mul(dmin, wasm_f32x4_convert_i32x4(M[t])));
      accf[t] = wasm_f32x4_add(accf[t], wasm_f32x4_mul(f, wasm_v128_load32_splat(act[t].d + sb * 8)));
    }
  }
  for (int t = 0; t < NT; ++t) wasm_v128_store(out + 4 * t, accf[t]);
}

// q6_K x4: the 6-bit values (0..63) stored one per byte, so each pair vector is one v128.load8x8_u; integer sums
// per 16-value sub-block times the sub-block's int8 scales, minus 32 * sum_sub sc * sum(q) (8 pmaddwd per
// super-block against pairs of the activations' 16-value sums), summed over the super-block in int32 (|S| < 2^29),
// then y += d_a * d * S — llama.cpp's q6_K x q8_K arithmetic. A group's two sub-blocks' scales are one
// v128.load8x8_s ([pair][row][2]).
template <int NT>
inline void qdot_q6k_x4(const uint8_t* quad, size_t rec_bytes, const ActRow* act, int64_t ngroups, float* out) {
  const int16_t* aq[NT];
  for (int t = 0; t < NT; ++t) aq[t] = act[t].q;
  v128_t accf[NT];
  for (int t = 0; t < NT; ++t) accf[t] = wasm_f32x4_splat(0);
  for (int64_t sb = 0; sb < ngroups / 8; ++sb) {
    const uint8_t* rec = quad + sb * rec_bytes;
    v128_t S[NT];
    for (int t = 0; t < NT; ++t) {  // S starts at -32 * sum_sub sc_sub * sum(q of sub)
      v128_t o = wasm_i32x4_dot_i16x8(wasm_i16x8_load8x8(rec + kQ6KScales), wasm_v128_load32_splat(act[t].sq16h + sb * 16));
      for (int sp = 1; sp < 8; ++sp)
        o = wasm_i32x4_add(o, wasm_i32x4_dot_i16x8(wasm_i16x8_load8x8(rec + kQ6KScales + 8 * sp),
                                                   wasm_v128_load32_splat(act[t].sq16h + sb * 16 + 2 * sp)));
      S[t] = wasm_i32x4_sub(wasm_i32x4_splat(0), wasm_i32x4_shl(o, 5));
    }
    for (int j = 0; j < 8; ++j) {
      const int64_t g = sb * 8 + j;
      v128_t s[2][NT];  // per sub-block: A = pair vectors 0-7, B = 8-15
      for (int h = 0; h < 2; ++h)
        for (int t = 0; t < NT; ++t) s[h][t] = wasm_i32x4_splat(0);
      for (int c = 0; c < 4; ++c) {
        v128_t p[4];
        for (int i = 0; i < 4; ++i) p[i] = wasm_u16x8_load8x8(rec + kQ6KGroupStride * j + 32 * c + 8 * i);
        const int sub = c / 2;
        for (int t = 0; t < NT; ++t) {
          const int16_t* q = aq[t] + g * QA + 8 * c;
          for (int i = 0; i < 4; ++i)
            s[sub][t] = wasm_i32x4_add(s[sub][t], wasm_i32x4_dot_i16x8(p[i], wasm_v128_load32_splat(q + 2 * i)));
          if constexpr (NT > 1) issue_order_fence();
        }
      }
      const v128_t scp = wasm_i16x8_load8x8(rec + kQ6KScales + 8 * j);  // int32 lanes: scale A | scale B << 16
      const v128_t scA = wasm_i32x4_shr(wasm_i32x4_shl(scp, 16), 16), scB = wasm_i32x4_shr(scp, 16);
      for (int t = 0; t < NT; ++t)
        S[t] = wasm_i32x4_add(S[t], wasm_i32x4_add(wasm_i32x4_mul(scA, s[0][t]), wasm_i32x4_mul(scB, s[1][t])));
    }
    const v128_t d = wasm_v128_load(rec + kQ6KD);
    for (int t = 0; t < NT; ++t)
      accf[t] = wasm_f32x4_add(accf[t], wasm_f32x4_mul(wasm_f32x4_mul(d, wasm_f32x4_convert_i32x4(S[t])),
                                                       wasm_v128_load32_splat(act[t].d + sb * 8)));
  }
  for (int t = 0; t < NT; ++t) wasm_v128_store(out + 4 * t, accf[t]);
}

// One quad (records `stride` bytes apart, repack.h) times NT activation rows, whatever the x4 type: out[4 t + r].
template <int TYPE, int NT>
inline void qdot_x4_tile(const uint8_t* quad, size_t stride, const ActRow* act, int64_t ngroups, float* out) {
  if constexpr (TYPE == TW_TYPE_Q4_K) qdot_q4k_x4<NT>(quad, stride, act, ngroups, out);
  else if constexpr (TYPE == TW_TYPE_Q6_K) qdot_q6k_x4<NT>(quad, stride, act, ngroups, out);
  else qdot_x4<TYPE, NT>(quad, stride, act, ngroups, out);
}

// Decode (one activation row) of a stored quad pair (repack.h: the two quads' records alternate), q4_0 / q8_0:
// out[0..3] = quad 2p's rows, out[4..7] = quad 2p+1's. The pair shares the activation broadcasts and reads memory as
// one stream: 16.5 -> 22 GMAC/s per thread in cache and 16 -> 22 from DRAM, against two qdot_x4 calls. The loop
// over c stays rolled and each quad's multiply-adds end in a fence (issue_order_fence), or V8 spills.
template <int TYPE>
inline void qdot_x4_pair(const uint8_t* pair, const ActRow& act, int64_t ngroups, float* out) {
  constexpr bool kQ4 = TYPE == TW_TYPE_Q4_0;
  const size_t kRec = x4_record_bytes(TYPE), kWBytes = x4_scales_offset(TYPE);
  const int16_t* aq = act.q;
  const int32_t* aneg8sq = act.neg8sq;
  const float* ad = act.d;
  const v128_t m0 = wasm_i16x8_splat(0x000F), m1 = wasm_i16x8_splat(0x00F0), m2 = wasm_i16x8_splat(0x0F00);
  v128_t accf[2] = {wasm_f32x4_splat(0), wasm_f32x4_splat(0)};
  for (int64_t g = 0; g < ngroups; ++g) {
    const uint8_t* rec[2] = {pair + 2 * g * kRec, pair + (2 * g + 1) * kRec};
    // per quad: rows 0-1 / 2-3; q4_0: all of rows 0-1 x256, all of rows 2-3 x16 (pair vectors 1 and 2 come out of
    // their masks as 16 n and 256 n, pair vectors 0 and 3 meet activations shifted to match: |256 x| <= 32512)
    v128_t a01[2], a23[2];
    for (int h = 0; h < 2; ++h) a01[h] = a23[h] = wasm_i32x4_splat(0);
    // walking pointers (q, r): V8 computes no address per load (it did from c: 5 instructions per step)
    const int16_t* q = aq + g * QA;
    const uint8_t* r = rec[0];
#pragma clang loop unroll(disable)
    for (int c = 0; c < 4; ++c, q += 8, r += kQ4 ? 16 : 32) {
      const v128_t x0 = wasm_v128_load64_splat(q), x1 = wasm_v128_load64_splat(q + 4);
      const v128_t x0s = kQ4 ? wasm_i16x8_shl(x0, 8) : x0, x1s = kQ4 ? wasm_i16x8_shl(x1, 4) : x1;
      for (int h = 0; h < 2; ++h) {
        if constexpr (kQ4) {
          const v128_t w = wasm_v128_load(r + h * kRec);
          a01[h] = wasm_i32x4_add(a01[h], wasm_i32x4_dot_i16x8(wasm_v128_and(w, m0), x0s));
          a23[h] = wasm_i32x4_add(a23[h], wasm_i32x4_dot_i16x8(wasm_v128_and(w, m1), x0));
          a01[h] = wasm_i32x4_add(a01[h], wasm_i32x4_dot_i16x8(wasm_v128_and(w, m2), x1));
          a23[h] = wasm_i32x4_add(a23[h], wasm_i32x4_dot_i16x8(wasm_u16x8_shr(w, 12), x1s));
        } else {
          const uint8_t* rh = r + h * kRec;
          a01[h] = wasm_i32x4_add(a01[h], wasm_i32x4_dot_i16x8(wasm_i16x8_load8x8(rh), x0));
          a23[h] = wasm_i32x4_add(a23[h], wasm_i32x4_dot_i16x8(wasm_i16x8_load8x8(rh + 8), x0));
          a01[h] = wasm_i32x4_add(a01[h], wasm_i32x4_dot_i16x8(wasm_i16x8_load8x8(rh + 16), x1));
          a23[h] = wasm_i32x4_add(a23[h], wasm_i32x4_dot_i16x8(wasm_i16x8_load8x8(rh + 24), x1));
        }
        issue_order_fence();
      }
    }
    const v128_t da = wasm_v128_load32_splat(ad + g);
    for (int h = 0; h < 2; ++h) {
      if constexpr (kQ4) a01[h] = wasm_i32x4_shr(a01[h], 8), a23[h] = wasm_i32x4_shr(a23[h], 4);  // exact
      v128_t isum = fold_rows(a01[h], a23[h]);
      if constexpr (kQ4) isum = wasm_i32x4_add(isum, wasm_v128_load32_splat(aneg8sq + g));
      accf[h] = wasm_f32x4_add(accf[h], wasm_f32x4_mul(wasm_f32x4_mul(wasm_f32x4_convert_i32x4(isum), da),
                                                       wasm_v128_load(rec[h] + kWBytes)));
    }
  }
  wasm_v128_store(out, accf[0]);
  wasm_v128_store(out + 4, accf[1]);
}

// Decode of a stored q4_K quad pair (records alternate, repack.h), as qdot_q4k_x4<1> for two quads sharing the
// activation broadcasts and one memory stream: out[0..3] = quad 2p's rows, out[4..7] = quad 2p+1's.
inline void qdot_q4k_x4_pair(const uint8_t* pair, const ActRow& act, int64_t ngroups, float* out) {
  const size_t kRec = x4_record_bytes(TW_TYPE_Q4_K);
  const int16_t* aq = act.q;
  const v128_t m0 = wasm_i16x8_splat(0x000F), m1 = wasm_i16x8_splat(0x00F0), m2 = wasm_i16x8_splat(0x0F00);
  v128_t accf[2] = {wasm_f32x4_splat(0), wasm_f32x4_splat(0)};
  for (int64_t sb = 0; sb < ngroups / 8; ++sb) {
    const uint8_t* rec[2] = {pair + 2 * sb * kRec, pair + (2 * sb + 1) * kRec};
    v128_t S[2] = {wasm_i32x4_splat(0), wasm_i32x4_splat(0)};
    for (int j = 0; j < 8; ++j) {
      const int64_t g = sb * 8 + j;
      v128_t a01[2], a23[2];  // x256 and x16, as in qdot_x4_pair
      for (int h = 0; h < 2; ++h) a01[h] = a23[h] = wasm_i32x4_splat(0);
      const int16_t* q = aq + g * QA;  // walking pointers, as in qdot_x4_pair
      const uint8_t* r = rec[0] + 64 * j;
#pragma clang loop unroll(disable)
      for (int c = 0; c < 4; ++c, q += 8, r += 16) {
        const v128_t x0 = wasm_v128_load64_splat(q), x1 = wasm_v128_load64_splat(q + 4);
        const v128_t x0s = wasm_i16x8_shl(x0, 8), x1s = wasm_i16x8_shl(x1, 4);
        for (int h = 0; h < 2; ++h) {
          const v128_t w = wasm_v128_load(r + h * kRec);
          a01[h] = wasm_i32x4_add(a01[h], wasm_i32x4_dot_i16x8(wasm_v128_and(w, m0), x0s));
          a23[h] = wasm_i32x4_add(a23[h], wasm_i32x4_dot_i16x8(wasm_v128_and(w, m1), x0));
          a01[h] = wasm_i32x4_add(a01[h], wasm_i32x4_dot_i16x8(wasm_v128_and(w, m2), x1));
          a23[h] = wasm_i32x4_add(a23[h], wasm_i32x4_dot_i16x8(wasm_u16x8_shr(w, 12), x1s));
          issue_order_fence();
        }
      }
      for (int h = 0; h < 2; ++h) {
        const v128_t scp = wasm_u16x8_load8x8(rec[h] + kQ4KScales + 8 * (j / 2));
        const v128_t sc = (j & 1) ? wasm_u32x4_shr(scp, 16) : wasm_v128_and(scp, wasm_i32x4_splat(0xFFFF));
        const v128_t isum = fold_rows(wasm_i32x4_shr(a01[h], 8), wasm_i32x4_shr(a23[h], 4));
        S[h] = wasm_i32x4_add(S[h], wasm_i32x4_mul(sc, isum));
      }
    }
    const v128_t da = wasm_v128_load32_splat(act.d + sb * 8);
    for (int h = 0; h < 2; ++h) {
      v128_t M = wasm_i32x4_dot_i16x8(wasm_u16x8_load8x8(rec[h] + kQ4KMins), wasm_v128_load32_splat(act.sqh + sb * 8));
      for (int jp = 1; jp < 4; ++jp)
        M = wasm_i32x4_add(M, wasm_i32x4_dot_i16x8(wasm_u16x8_load8x8(rec[h] + kQ4KMins + 8 * jp),
                                                   wasm_v128_load32_splat(act.sqh + sb * 8 + 2 * jp)));
      const v128_t f = wasm_f32x4_sub(wasm_f32x4_mul(wasm_v128_load(rec[h] + kQ4KD), wasm_f32x4_convert_i32x4(S[h])),
                                      wasm_f32x4_mul(wasm_v128_load(rec[h] + kQ4KDmin), wasm_f32x4_convert_i32x4(M)));
      accf[h] = wasm_f32x4_add(accf[h], wasm_f32x4_mul(f, da));
    }
  }
  wasm_v128_store(out, accf[0]);
  wasm_v128_store(out + 4, accf[1]);
}

// Decode of a stored q6_K quad pair (records interleaved per group, repack.h), as qdot_q6k_x4<1> for two quads
// sharing the activation broadcasts and one memory stream: out[0..3] = quad 2p's rows, out[4..7] = quad 2p+1's.
// Backend decode products from DRAM, one thread, against the one-quad kernel on contiguous records: 12.3 -> 13.2
// GMAC/s (2048 x 32000), 9.5 -> 10.6 (5632 x 2048) (bench/NOTES.md, session 6).
inline void qdot_q6k_x4_pair(const uint8_t* pair, const ActRow& act, int64_t ngroups, float* out) {
  const size_t kRec = x4_record_bytes(TW_TYPE_Q6_K);
  const int16_t* aq = act.q;
  v128_t accf[2] = {wasm_f32x4_splat(0), wasm_f32x4_splat(0)};
  for (int64_t sb = 0; sb < ngroups / 8; ++sb) {
    const uint8_t* rec[2] = {pair + 2 * sb * kRec, pair + 2 * sb * kRec + 128};  // the partner quad: +128 (repack.h)
    v128_t S[2];
    for (int h = 0; h < 2; ++h) {  // S starts at -32 * sum_sub sc_sub * sum(q of sub)
      v128_t o = wasm_i32x4_dot_i16x8(wasm_i16x8_load8x8(rec[h] + kQ6KScales), wasm_v128_load32_splat(act.sq16h + sb * 16));
      for (int sp = 1; sp < 8; ++sp)
        o = wasm_i32x4_add(o, wasm_i32x4_dot_i16x8(wasm_i16x8_load8x8(rec[h] + kQ6KScales + 8 * sp),
                                                   wasm_v128_load32_splat(act.sq16h + sb * 16 + 2 * sp)));
      S[h] = wasm_i32x4_sub(wasm_i32x4_splat(0), wasm_i32x4_shl(o, 5));
    }
    for (int j = 0; j < 8; ++j) {
      const int64_t g = sb * 8 + j;
      v128_t s[2][2];  // [quad][sub-block]
      v128_t t[2] = {wasm_i32x4_splat(0), wasm_i32x4_splat(0)};  // the current sub-block's sums
      const int16_t* q = aq + g * QA;  // walking pointers, as in qdot_x4_pair
      const uint8_t* r = rec[0] + kQ6KGroupStride * j;
      // Sub-block A's sums move out at c = 2: indexed by c / 2 instead, LLVM kept them in memory (a load and a
      // store per step on each chain), and with the sub-block loop unrolled V8 hoisted and spilled the loads.
#pragma clang loop unroll(disable)
      for (int c = 0; c < 4; ++c, q += 8, r += 32) {
        if (c == 2) s[0][0] = t[0], s[1][0] = t[1], t[0] = t[1] = wasm_i32x4_splat(0);
        for (int i = 0; i < 4; ++i) {
          const v128_t x = wasm_v128_load32_splat(q + 2 * i);
          for (int h = 0; h < 2; ++h)
            t[h] = wasm_i32x4_add(t[h], wasm_i32x4_dot_i16x8(wasm_u16x8_load8x8(r + 128 * h + 8 * i), x));
        }
        issue_order_fence();
      }
      s[0][1] = t[0], s[1][1] = t[1];
      for (int h = 0; h < 2; ++h) {
        const v128_t scp = wasm_i16x8_load8x8(rec[h] + kQ6KScales + 8 * j);  // int32 lanes: scale A | scale B << 16
        const v128_t scA = wasm_i32x4_shr(wasm_i32x4_shl(scp, 16), 16), scB = wasm_i32x4_shr(scp, 16);
        S[h] = wasm_i32x4_add(S[h], wasm_i32x4_add(wasm_i32x4_mul(scA, s[h][0]), wasm_i32x4_mul(scB, s[h][1])));
      }
    }
    const v128_t da = wasm_v128_load32_splat(act.d + sb * 8);
    for (int h = 0; h < 2; ++h)
      accf[h] = wasm_f32x4_add(accf[h], wasm_f32x4_mul(wasm_f32x4_mul(wasm_v128_load(rec[h] + kQ6KD), wasm_f32x4_convert_i32x4(S[h])), da));
  }
  wasm_v128_store(out, accf[0]);
  wasm_v128_store(out + 4, accf[1]);
}

}  // namespace tw
#endif  // __wasm_simd128__
