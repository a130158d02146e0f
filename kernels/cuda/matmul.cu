// Weight x activation products, y[t][r] = sum_k W[r][k] x[t][k], with W in GGUF block layout.
//
// Two kernels:
//  * mm_tc: the fast path for F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and the K-quants Q4_K, Q5_K, Q6_K. A CTA of 4 warps owns 64 weight rows and streams their raw
//    blocks (never a dequantized copy) through shared memory with 16-byte cp.async loads, double-buffered. Each warp
//    dequantizes its 16 rows to FP16 fragments in registers and multiplies with mma.sync m16n8k16 (FP32 accumulate).
//    NT = 1 n-tile (n <= 8, decode): the activations are converted from F32 inside the CTA, so a decode matmul is one
//    launch that reads each weight byte once; rows are few for K/V, so K is split across CTAs until there are
//    enough to keep the memory system busy (partial sums, reduced in a fixed order by the tile's last CTA).
//    NT = 8 n-tiles (n > 8, prefill and batched decode): 64 tokens per CTA from an FP16 copy of x (converted once
//    per distinct input), both operands through cp.async.
//  * mm_simt / mm_simt_tiled: exact F32 arithmetic, used for F32 weights (small models where the tests compare text byte for byte)
//    and for shapes whose rows are not 16-byte aligned.
#include <algorithm>
#include <cstdlib>

#include "cuda_common.cuh"
#include "cuda_ops.h"

namespace tw {
namespace cuda {

namespace {

// CTAs per SM the split-K heuristic aims for (set_matmul_split_target; op_test sweeps it).
// 2: the op_test sweep on an H100 (run 7, n=1, one 8B layer): 1 / 2 / 4 / 8 / 16 CTAs per SM gave Q4_0 89.5 / 82.0 /
// 95.6 / 80.5 / 82.4 us, Q8_0 117.9 / 111.6 / 118.6 / 127.1 / 121.4, F16 175.3 / 170.8 / 175.7 / 181.0 / 176.6.
int g_split_ctas_per_sm = 2;

// Weight rows and threads per CTA: WARPS x 16 rows. Decode (n <= 8): 8 warps for Q4_0, Q4_K and Q6_K, 4 for the
// others — H100, bench/NOTES.md run 9, µs per 8B layer at n=1 (4 / 8 warps): Q4_0 84.4 / 78.4, Q4_K 104.6 / 99.3,
// Q6_K 125.6 / 122.4, but Q8_0 111.2 / 116.0 and F16 170.5 / 183.0. TWINFER_CUDA_DECODE_WARPS=4|8 forces one for every
// type. The many-token kernel uses 8, whose activation tile is then shared by twice the warps.
template <int NT, int WARPS> struct Tile {
  static constexpr int BM = WARPS * 16;
  static constexpr int THREADS = WARPS * 32;
};
int g_decode_warps = [] {  // 0: per type
  const char* v = std::getenv("TWINFER_CUDA_DECODE_WARPS");
  return v && v[0] == '8' ? 8 : v && v[0] == '4' ? 4 : 0;
}();

// Per-type geometry. A "unit" is 32 elements (one quant block of the 32-value types; for F16/BF16, 32 plain values;
// for the K-quants, one eighth of a 256-value super-block). UB: bytes of one unit (32-value types); KU: units per
// stage; SBB: bytes of one super-block (K-quants, whose stage is exactly one super-block).
template <int TYPE> struct TC;
template <> struct TC<2> { static constexpr int UB = 18, KU = 8, SBB = 0; };   // Q4_0
template <> struct TC<kQ4_0T> { static constexpr int UB = 18, KU = 8, SBB = 0; };  // Q4_0 in groups (repack.cu)
template <> struct TC<3> { static constexpr int UB = 20, KU = 8, SBB = 0; };   // Q4_1
template <> struct TC<6> { static constexpr int UB = 22, KU = 8, SBB = 0; };   // Q5_0
template <> struct TC<7> { static constexpr int UB = 24, KU = 8, SBB = 0; };   // Q5_1
template <> struct TC<8> { static constexpr int UB = 34, KU = 8, SBB = 0; };   // Q8_0
template <> struct TC<1> { static constexpr int UB = 64, KU = 4, SBB = 0; };   // F16
template <> struct TC<30> { static constexpr int UB = 64, KU = 4, SBB = 0; };  // BF16
template <> struct TC<12> { static constexpr int UB = 0, KU = 8, SBB = 144; }; // Q4_K
template <> struct TC<13> { static constexpr int UB = 0, KU = 8, SBB = 176; }; // Q5_K
template <> struct TC<14> { static constexpr int UB = 0, KU = 8, SBB = 210; }; // Q6_K

// Stage geometry. For F16/BF16 the many-token kernel (NT = 8) takes half the K per stage (its activation tile is 8x
// larger; smaller stages let more CTAs share an SM). Quantized rows keep 8 units: 8 blocks are the smallest run of
// 18- or 34-byte blocks that is a whole number of 16-byte copies, and one super-block is a K-quant's smallest unit.
// A stage of Q6_K (210 bytes) does not start on a 16-byte boundary: the loader copies the 16-byte chunks that cover
// it (LB bytes, at most 14 bytes of the neighbours on either side) and the stage starts `shift` bytes into them.
template <int TYPE, int NT> struct Geo {
  static constexpr bool KQ = TC<TYPE>::SBB != 0;
  static constexpr int KU = (NT == 1 || KQ || TC<TYPE>::UB % 16 != 0) ? TC<TYPE>::KU : TC<TYPE>::KU / 2;  // units/stage
  static constexpr int CB = KQ ? TC<TYPE>::SBB : TC<TYPE>::UB * KU;     // bytes of one row in one stage
  static constexpr bool SHIFTED = CB % 16 != 0;
  static constexpr int LB = SHIFTED ? (CB + 14 + 15) / 16 * 16 : CB;   // bytes copied per row per stage
  static constexpr int WP = ((LB / 16) % 2 == 0) ? LB + 16 : LB;        // padded pitch: odd multiple of 16 bytes
  static constexpr int KE = 32 * KU;                                    // elements of K per stage
  static constexpr int XP = KE + 8;                                     // x tile pitch in halves (odd x 16 bytes)
  // Weight stages in shared memory (NS-1 in flight while one is computed). Measured on an H200 (bench/NOTES.md run
  // 5): 4 stages for Q4_0 / 3 for Q8_0 and F16 made decode slower (1547 -> 1389, 2479 -> 1982 GB/s per layer) — the
  // decode grids are ~4 CTAs per SM of 3-8 stages each, so residency, not depth, is what they lack. Kept at 2.
  static constexpr int NS = 2;
  static constexpr int NX = NT == 1 ? 2 : NS;                           // x tile buffers
  static_assert(SHIFTED || CB % 16 == 0, "a stage row must be whole 16-byte cp.async chunks");
};

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return (uint32_t)__cvta_generic_to_shared(p);
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  const int n = valid ? 16 : 0;  // src-size 0 zero-fills the destination
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void mma16816(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t* r, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t* r, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_addr(p)));
}

__device__ __forceinline__ uint32_t h2_bits(__half2 h) { return *reinterpret_cast<uint32_t*>(&h); }

// FP16 A fragments of one 32-element unit for this thread: f0 covers elements 0..15 (first k16 step), f1 elements
// 16..31. Register order is mma's: [0] row g, k 2t..2t+1; [1] row g+8, same k; [2] row g, k 2t+8..2t+9; [3] row g+8.
// r0 / r1 point at the unit's bytes of rows g and g+8 in shared memory.
__device__ __forceinline__ __half2 h2(uint32_t bits) { return *reinterpret_cast<__half2*>(&bits); }

// r0 / r1: the stage's bytes of rows g and g+8 in shared memory; u: the unit (compile-time after unrolling).
template <int TYPE> __device__ __forceinline__ void unit_frags(const uint8_t* r0, const uint8_t* r1, int u, int t,
                                                               uint32_t* f0, uint32_t* f1);

__device__ __forceinline__ uint16_t ld16(const uint8_t* p) { return *reinterpret_cast<const uint16_t*>(p); }
__device__ __forceinline__ __half2 dup_half(uint16_t bits) { return __half2half2(__ushort_as_half(bits)); }
__device__ __forceinline__ __half2 dup_f(float v) { return __float2half2_rn(v); }
// fp16 bits -> float with the hardware conversion (exact, like fp16_to_f32, but one instruction instead of a
// branchy bit manipulation: the K-quant fragment builders convert d and dmin for every sub-block of every row).
__device__ __forceinline__ float hf(uint16_t bits) { return __half2float(__ushort_as_half(bits)); }
// Two bytes of w as the integer halves 1024 + b (low and high 16-bit lanes): [b0, 0, b1, 0] | 0x6400.
__device__ __forceinline__ uint32_t spread2(uint32_t w) { return __byte_perm(w, 0, 0x4140); }

// Q4_0: element i < 16 is the low nibble of qs[i], element 16 + i its high nibble, so one 16-bit load of
// qs[2t..2t+1] feeds both k16 steps. 0x6400 | q is the half 1024 + q exactly; minus 1032 gives q - 8 exactly;
// one rounding in the multiply by d.
__device__ __forceinline__ void q4_pair(uint32_t w, __half2 d, uint32_t& lo, uint32_t& hi) {
  const uint32_t v = spread2(w);
  const __half2 k1032 = h2(0x64086408u);
  lo = h2_bits(__hmul2(__hsub2(h2((v & 0x000F000Fu) | 0x64006400u), k1032), d));
  hi = h2_bits(__hmul2(__hsub2(h2(((v >> 4) & 0x000F000Fu) | 0x64006400u), k1032), d));
}
template <> __device__ __forceinline__ void unit_frags<2>(const uint8_t* s0, const uint8_t* s1, int u, int t,
                                                          uint32_t* f0, uint32_t* f1) {
  const uint8_t* r0 = s0 + u * 18;
  const uint8_t* r1 = s1 + u * 18;
  const __half2 d0 = dup_half(ld16(r0)), d1 = dup_half(ld16(r1));
  q4_pair(ld16(r0 + 2 + 2 * t), d0, f0[0], f1[0]);
  q4_pair(ld16(r1 + 2 + 2 * t), d1, f0[1], f1[1]);
  q4_pair(ld16(r0 + 10 + 2 * t), d0, f0[2], f1[2]);
  q4_pair(ld16(r1 + 10 + 2 * t), d1, f0[3], f1[3]);
}
// Q4_0 rearranged (repack.cu): a stage is one 144-byte group; unit u's values 0..15 are chunk 2u (byte i: value i
// low, value i + 8 high nibble), values 16..31 chunk 2u + 1, its scale at byte 128 + 2u. Same loads as GGUF's.
template <> __device__ __forceinline__ void unit_frags<kQ4_0T>(const uint8_t* s0, const uint8_t* s1, int u, int t,
                                                               uint32_t* f0, uint32_t* f1) {
  const __half2 d0 = dup_half(ld16(s0 + 128 + 2 * u)), d1 = dup_half(ld16(s1 + 128 + 2 * u));
  const uint8_t* c0 = s0 + 16 * u + 2 * t;
  const uint8_t* c1 = s1 + 16 * u + 2 * t;
  q4_pair(ld16(c0), d0, f0[0], f0[2]);
  q4_pair(ld16(c1), d1, f0[1], f0[3]);
  q4_pair(ld16(c0 + 8), d0, f1[0], f1[2]);
  q4_pair(ld16(c1 + 8), d1, f1[1], f1[3]);
}
// Q4_1: the nibble layout of Q4_0, value = q * d + m (one rounding in the fused multiply-add).
__device__ __forceinline__ void q4m_pair(uint32_t w, __half2 d, __half2 m, uint32_t& lo, uint32_t& hi) {
  const uint32_t v = spread2(w);
  const __half2 k1024 = h2(0x64006400u);
  lo = h2_bits(__hfma2(__hsub2(h2((v & 0x000F000Fu) | 0x64006400u), k1024), d, m));
  hi = h2_bits(__hfma2(__hsub2(h2(((v >> 4) & 0x000F000Fu) | 0x64006400u), k1024), d, m));
}
template <> __device__ __forceinline__ void unit_frags<3>(const uint8_t* s0, const uint8_t* s1, int u, int t,
                                                          uint32_t* f0, uint32_t* f1) {
  const uint8_t* r0 = s0 + u * 20;
  const uint8_t* r1 = s1 + u * 20;
  const __half2 d0 = dup_half(ld16(r0)), d1 = dup_half(ld16(r1));
  const __half2 m0 = dup_half(ld16(r0 + 2)), m1 = dup_half(ld16(r1 + 2));
  q4m_pair(ld16(r0 + 4 + 2 * t), d0, m0, f0[0], f1[0]);
  q4m_pair(ld16(r1 + 4 + 2 * t), d1, m1, f0[1], f1[1]);
  q4m_pair(ld16(r0 + 12 + 2 * t), d0, m0, f0[2], f1[2]);
  q4m_pair(ld16(r1 + 12 + 2 * t), d1, m1, f0[3], f1[3]);
}
// Q5_0 / Q5_1: bit j of qh is the fifth bit of element j (j < 16 low nibbles, j >= 16 high nibbles of qs[j - 16]).
// Elements j, j+1 of the pair take bits j, j+1 (low) and j+16, j+17 (high), placed at bit 4 of each 16-bit lane.
__device__ __forceinline__ void q5_bits(uint32_t qh, int j, uint32_t& lo, uint32_t& hi) {
  const uint32_t a = qh >> j, b = qh >> (j + 16);
  lo = ((a & 1u) << 4) | ((a & 2u) << 19);
  hi = ((b & 1u) << 4) | ((b & 2u) << 19);
}
template <bool MIN>
__device__ __forceinline__ void q5_row(const uint8_t* r, int t, uint32_t* f0, uint32_t* f1, int i) {
  // Q5_0: d, qh[4], qs[16]; Q5_1: d, m, qh[4], qs[16]. Rows start on 2-byte boundaries (22- / 24-byte blocks).
  constexpr int QH = MIN ? 4 : 2, QS = QH + 4;
  const __half2 d = dup_half(ld16(r));
  const uint32_t qh = (uint32_t)ld16(r + QH) | ((uint32_t)ld16(r + QH + 2) << 16);
#pragma unroll
  for (int k = 0; k < 2; ++k) {  // k = 0: elements 2t, 2t+1 (and +16); k = 1: 2t+8, 2t+9 (and +16)
    const int j = 2 * t + 8 * k;
    const uint32_t v = spread2(ld16(r + QS + j));
    uint32_t hl, hh;
    q5_bits(qh, j, hl, hh);
    const __half2 lo = h2((v & 0x000F000Fu) | hl | 0x64006400u), hi = h2(((v >> 4) & 0x000F000Fu) | hh | 0x64006400u);
    if constexpr (MIN) {
      const __half2 m = dup_half(ld16(r + 2)), k1024 = h2(0x64006400u);
      f0[i + 2 * k] = h2_bits(__hfma2(__hsub2(lo, k1024), d, m));
      f1[i + 2 * k] = h2_bits(__hfma2(__hsub2(hi, k1024), d, m));
    } else {
      const __half2 k1040 = h2(0x64106410u);
      f0[i + 2 * k] = h2_bits(__hmul2(__hsub2(lo, k1040), d));
      f1[i + 2 * k] = h2_bits(__hmul2(__hsub2(hi, k1040), d));
    }
  }
}
template <> __device__ __forceinline__ void unit_frags<6>(const uint8_t* s0, const uint8_t* s1, int u, int t,
                                                          uint32_t* f0, uint32_t* f1) {
  q5_row<false>(s0 + u * 22, t, f0, f1, 0);
  q5_row<false>(s1 + u * 22, t, f0, f1, 1);
}
template <> __device__ __forceinline__ void unit_frags<7>(const uint8_t* s0, const uint8_t* s1, int u, int t,
                                                          uint32_t* f0, uint32_t* f1) {
  q5_row<true>(s0 + u * 24, t, f0, f1, 0);
  q5_row<true>(s1 + u * 24, t, f0, f1, 1);
}
// Q8_0: two int8 become halves 1024 + (q + 128) by byte placement and a sign-bit flip; minus 1152 gives q exactly.
__device__ __forceinline__ uint32_t q8_pair(uint32_t w, __half2 d) {
  const uint32_t v = __byte_perm(w, 0x64646464u, 0x5140) ^ 0x00800080u;  // [b0^0x80, 0x64, b1^0x80, 0x64]
  return h2_bits(__hmul2(__hsub2(h2(v), h2(0x64806480u)), d));
}
template <> __device__ __forceinline__ void unit_frags<8>(const uint8_t* s0, const uint8_t* s1, int u, int t,
                                                          uint32_t* f0, uint32_t* f1) {
  const uint8_t* r0 = s0 + u * 34;
  const uint8_t* r1 = s1 + u * 34;
  const __half2 d0 = dup_half(ld16(r0)), d1 = dup_half(ld16(r1));
  const uint8_t* q0 = r0 + 2 + 2 * t;
  const uint8_t* q1 = r1 + 2 + 2 * t;
  f0[0] = q8_pair(ld16(q0), d0);
  f0[1] = q8_pair(ld16(q1), d1);
  f0[2] = q8_pair(ld16(q0 + 8), d0);
  f0[3] = q8_pair(ld16(q1 + 8), d1);
  f1[0] = q8_pair(ld16(q0 + 16), d0);
  f1[1] = q8_pair(ld16(q1 + 16), d1);
  f1[2] = q8_pair(ld16(q0 + 24), d0);
  f1[3] = q8_pair(ld16(q1 + 24), d1);
}
template <> __device__ __forceinline__ void unit_frags<1>(const uint8_t* s0, const uint8_t* s1, int u, int t,
                                                          uint32_t* f0, uint32_t* f1) {
  const uint32_t* a = reinterpret_cast<const uint32_t*>(s0 + u * 64) + t;
  const uint32_t* b = reinterpret_cast<const uint32_t*>(s1 + u * 64) + t;
  f0[0] = a[0], f0[1] = b[0], f0[2] = a[4], f0[3] = b[4];
  f1[0] = a[8], f1[1] = b[8], f1[2] = a[12], f1[3] = b[12];
}
__device__ __forceinline__ uint32_t bf16_pair(uint32_t w) {
  return h2_bits(__floats2half2_rn(__uint_as_float(w << 16), __uint_as_float(w & 0xFFFF0000u)));
}
template <> __device__ __forceinline__ void unit_frags<30>(const uint8_t* s0, const uint8_t* s1, int u, int t,
                                                           uint32_t* f0, uint32_t* f1) {
  const uint32_t* a = reinterpret_cast<const uint32_t*>(s0 + u * 64) + t;
  const uint32_t* b = reinterpret_cast<const uint32_t*>(s1 + u * 64) + t;
  f0[0] = bf16_pair(a[0]), f0[1] = bf16_pair(b[0]), f0[2] = bf16_pair(a[4]), f0[3] = bf16_pair(b[4]);
  f1[0] = bf16_pair(a[8]), f1[1] = bf16_pair(b[8]), f1[2] = bf16_pair(a[12]), f1[3] = bf16_pair(b[12]);
}

// ---- K-quants: the stage is one super-block; unit u is its sub-block u (32 values) ----
// Q4_K / Q5_K: scale and min of sub-block u (6 bits each, get_scale_min_k4) as halves d*sc and dmin*m; value =
// q * (d*sc) - dmin*m (one rounding of each product to half, one in the fused multiply-add).
__device__ __forceinline__ void k4_scales(const uint8_t* b, int u, __half2& ds, __half2& dm) {
  const uint8_t* q = b + 4;
  uint8_t sc, m;
  get_scale_min_k4(u, q, &sc, &m);
  ds = dup_f(hf(ld16(b)) * (float)sc);
  dm = dup_f(-(hf(ld16(b + 2)) * (float)m));
}
// Sub-block u's 32 values are nibble (u & 1) of qs[32 * (u / 2) + l], l < 32; the thread's elements are l = 2t, 2t+1
// (f0 lanes 0, 1), 2t+8, 2t+9 (f0[2]), 2t+16.. (f1[0]) and 2t+24.. (f1[2]) — four 16-bit loads per row.
template <bool Q5>
__device__ __forceinline__ void k45_row(const uint8_t* b, int u, int t, uint32_t* f0, uint32_t* f1, int i) {
  __half2 ds, dm;
  k4_scales(b, u, ds, dm);
  constexpr int QS = Q5 ? 48 : 16;
  const uint8_t* qs = b + QS + 32 * (u >> 1) + 2 * t;
  const int sh = 4 * (u & 1);
  const __half2 k1024 = h2(0x64006400u);
  uint32_t out[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    uint32_t v = (spread2(ld16(qs + 8 * k)) >> sh) & 0x000F000Fu;
    if constexpr (Q5) v |= ((spread2(ld16(b + 16 + 2 * t + 8 * k)) >> u) & 0x00010001u) << 4;  // qh[l] bit u
    out[k] = h2_bits(__hfma2(__hsub2(h2(v | 0x64006400u), k1024), ds, dm));
  }
  f0[i] = out[0], f0[i + 2] = out[1], f1[i] = out[2], f1[i + 2] = out[3];
}
template <> __device__ __forceinline__ void unit_frags<12>(const uint8_t* s0, const uint8_t* s1, int u, int t,
                                                           uint32_t* f0, uint32_t* f1) {
  k45_row<false>(s0, u, t, f0, f1, 0);
  k45_row<false>(s1, u, t, f0, f1, 1);
}
template <> __device__ __forceinline__ void unit_frags<13>(const uint8_t* s0, const uint8_t* s1, int u, int t,
                                                           uint32_t* f0, uint32_t* f1) {
  k45_row<true>(s0, u, t, f0, f1, 0);
  k45_row<true>(s1, u, t, f0, f1, 1);
}
// Q6_K: ql[128], qh[64], scales[16] (int8), d. Sub-block u: half hh = u / 4 (128 values), part p = u % 4; value l
// (< 32) has low bits = nibble (p >> 1) of ql[64 hh + 32 (p & 1) + l], high bits = (qh[32 hh + l] >> 2p) & 3, and
// scale sc[8 hh + 2p + l / 16]: the first 16 values (f0) and the last 16 (f1) have their own scale. value =
// (q - 32) * (d*sc): exact integer halves, d*sc rounded to half, one rounding in the multiply.
__device__ __forceinline__ void k6_row(const uint8_t* b, int u, int t, uint32_t* f0, uint32_t* f1, int i) {
  const int hh = u >> 2, p = u & 3;
  const float d = hf(ld16(b + 208));
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192) + 8 * hh + 2 * p;
  const __half2 ds0 = dup_f(d * (float)sc[0]), ds1 = dup_f(d * (float)sc[1]);
  const uint8_t* ql = b + 64 * hh + 32 * (p & 1) + 2 * t;
  const uint8_t* qh = b + 128 + 32 * hh + 2 * t;
  const int lsh = 4 * (p >> 1), hsh = 2 * p;
  const __half2 k1056 = h2(0x64206420u);
  uint32_t out[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const uint32_t v = ((spread2(ld16(ql + 8 * k)) >> lsh) & 0x000F000Fu) |
                       (((spread2(ld16(qh + 8 * k)) >> hsh) & 0x00030003u) << 4);
    out[k] = h2_bits(__hmul2(__hsub2(h2(v | 0x64006400u), k1056), k < 2 ? ds0 : ds1));
  }
  f0[i] = out[0], f0[i + 2] = out[1], f1[i] = out[2], f1[i + 2] = out[3];
}
template <> __device__ __forceinline__ void unit_frags<14>(const uint8_t* s0, const uint8_t* s1, int u, int t,
                                                           uint32_t* f0, uint32_t* f1) {
  k6_row(s0, u, t, f0, f1, 0);
  k6_row(s1, u, t, f0, f1, 1);
}

// W: M rows of row_bytes; x: F32 [n][K] (NT == 1) or F16 [n][K] (NT == 8). Stages [st0, st1) of this split.
// Up to three weights that share x (Q/K/V, gate/up) in one launch: blockIdx.y runs over their row tiles in turn.
struct MMGroup {
  const uint8_t* W[3];
  float* y[3];
  int M[3];
  int tile0[4];      // first row tile of each weight; tile0[count] = all tiles
  size_t poff[3];    // offset of each weight's split-K partials (floats)
};

template <int TYPE, int NT, int WARPS>
__global__ void __launch_bounds__(Tile<NT, WARPS>::THREADS) mm_tc(MMGroup grp, size_t row_bytes, int K, const void* __restrict__ xin,
                                                 const float* __restrict__ xup, int n, int stages_per_split,
                                                 float* __restrict__ partial_base, unsigned int* __restrict__ counters) {
  pdl_trigger();
  const int gi = (blockIdx.y >= (unsigned)grp.tile0[1]) + (blockIdx.y >= (unsigned)grp.tile0[2]);
  // Selected with constant indices: a run-time index into the parameter struct would copy it to local memory.
  const uint8_t* __restrict__ W = gi == 0 ? grp.W[0] : gi == 1 ? grp.W[1] : grp.W[2];
  float* __restrict__ y = gi == 0 ? grp.y[0] : gi == 1 ? grp.y[1] : grp.y[2];
  const int M = gi == 0 ? grp.M[0] : gi == 1 ? grp.M[1] : grp.M[2];
  const int tile0 = gi == 0 ? 0 : gi == 1 ? grp.tile0[1] : grp.tile0[2];
  const size_t poff = gi == 0 ? grp.poff[0] : gi == 1 ? grp.poff[1] : grp.poff[2];
  float* __restrict__ partial = partial_base ? partial_base + poff : nullptr;
  using G = Geo<TYPE, NT>;
  constexpr int BM = Tile<NT, WARPS>::BM, THREADS = Tile<NT, WARPS>::THREADS;
  constexpr int KU = G::KU;
  constexpr int C16 = G::LB / 16;
  constexpr int BN = NT * 8;
  extern __shared__ __align__(16) uint8_t smem[];
  uint8_t* ws = smem;                                                      // [2][BM][WP]
  __half* xs = reinterpret_cast<__half*>(smem + G::NS * BM * G::WP);      // [NX][BN][XP]

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, t = lane & 3;
  const int m0 = (blockIdx.y - tile0) * BM;
  const int n0 = blockIdx.x * BN;
  const int nunits = K / 32;
  const int S = (nunits + KU - 1) / KU;
  const int st0 = blockIdx.z * stages_per_split;
  const int st1 = min(S, st0 + stages_per_split);

  auto load_w = [&](int st, int buf) {
    uint8_t* dst = ws + buf * BM * G::WP;
    // Rows start on 16-byte boundaries (tc_eligible); a shifted stage starts inside its first chunk.
    const size_t off = G::SHIFTED ? ((size_t)st * G::CB) & ~(size_t)15 : (size_t)st * G::CB;
    for (int i = tid; i < BM * C16; i += THREADS) {
      const int r = i / C16, c = i - r * C16;
      const int rr = min(m0 + r, M - 1);
      cp_async16(dst + r * G::WP + c * 16, W + (size_t)rr * row_bytes + off + c * 16, true);
    }
  };
  // NT == 8: FP16 activations through cp.async (zero-filled past n and past K).
  auto load_x16 = [&](int st, int buf) {
    __half* dst = xs + buf * BN * G::XP;
    const __half* x = reinterpret_cast<const __half*>(xin);
    constexpr int CX = G::KE / 8;  // 16-byte chunks per token row
    for (int i = tid; i < BN * CX; i += THREADS) {
      const int r = i / CX, c = i - r * CX;
      const int k = st * G::KE + c * 8;
      const bool ok = (n0 + r < n) && (k < K);
      const __half* src = ok ? x + (size_t)(n0 + r) * K + k : x;
      cp_async16(dst + r * G::XP + c * 8, src, ok);
    }
  };
  // NT == 1: F32 activations through registers (prefetched one stage ahead), converted when stored. With xup, the
  // activations are SwiGLU's: x = silu(gate) * up computed here (gate = xin), as swiglu_kernel does it.
  constexpr int XF4 = (NT == 1) ? (8 * G::KE / 4) / THREADS : 1;  // float4 per thread per stage
  float4 xr[XF4];
  auto fetch_x32 = [&](int st) {
    const float* x = reinterpret_cast<const float*>(xin);
#pragma unroll
    for (int i = 0; i < XF4; ++i) {
      const int idx = tid + i * THREADS;
      const int r = idx / (G::KE / 4), c = idx - r * (G::KE / 4);
      const int k = st * G::KE + c * 4;
      xr[i] = (r < n && k < K) ? *reinterpret_cast<const float4*>(x + (size_t)r * K + k) : make_float4(0, 0, 0, 0);
      if (xup && r < n && k < K) {
        const float4 u = *reinterpret_cast<const float4*>(xup + (size_t)r * K + k);
        xr[i].x = xr[i].x / (1.0f + expf(-xr[i].x)) * u.x;
        xr[i].y = xr[i].y / (1.0f + expf(-xr[i].y)) * u.y;
        xr[i].z = xr[i].z / (1.0f + expf(-xr[i].z)) * u.z;
        xr[i].w = xr[i].w / (1.0f + expf(-xr[i].w)) * u.w;
      }
    }
  };
  auto store_x32 = [&](int buf) {
    __half* dst = xs + buf * BN * G::XP;
#pragma unroll
    for (int i = 0; i < XF4; ++i) {
      const int idx = tid + i * THREADS;
      const int r = idx / (G::KE / 4), c = idx - r * (G::KE / 4);
      __half2* d2 = reinterpret_cast<__half2*>(dst + r * G::XP + c * 4);
      d2[0] = __floats2half2_rn(xr[i].x, xr[i].y);
      d2[1] = __floats2half2_rn(xr[i].z, xr[i].w);
    }
  };

  float acc[NT][4];
#pragma unroll
  for (int j = 0; j < NT; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;

  // Prologue: stages st0 .. st0+NS-2 in flight, one cp.async group each (empty groups past st1 keep the count).
  // The weights are issued before pdl_wait (they may stream while the previous kernel finishes); the activations,
  // the previous kernel's output, after it.
#pragma unroll
  for (int i = 0; i < G::NS - 1; ++i)
    if (st0 + i < st1) load_w(st0 + i, i);
  pdl_wait();
#pragma unroll
  for (int i = 0; i < G::NS - 1; ++i) {
    if constexpr (NT == 8) {
      if (st0 + i < st1) load_x16(st0 + i, i);
    }
    cp_async_commit();
  }
  if constexpr (NT == 1) {
    if (st0 < st1) {
      fetch_x32(st0);
      store_x32(0);
    }
  }
  for (int st = st0; st < st1; ++st) {
    const int it = st - st0;
    const int buf = it % G::NS;                        // weight (and NT == 8: x) buffer of this stage
    const int xbuf = NT == 1 ? (it & 1) : buf;
    const bool more = st + 1 < st1;
    // Stage st+NS-1 goes into the buffer the previous iteration computed on (released by its trailing barrier).
    if (st + G::NS - 1 < st1) {
      load_w(st + G::NS - 1, (it + G::NS - 1) % G::NS);
      if constexpr (NT == 8) load_x16(st + G::NS - 1, (it + G::NS - 1) % G::NS);
    }
    cp_async_commit();
    if constexpr (NT == 1) {
      if (more) fetch_x32(st + 1);
    }
    cp_async_wait<G::NS - 1>();  // this stage's group has landed
    __syncthreads();

    const int shift = G::SHIFTED ? (int)(((size_t)st * G::CB) & 15) : 0;
    const uint8_t* wrow0 = ws + buf * BM * G::WP + (warp * 16 + g) * G::WP + shift;
    const uint8_t* wrow1 = wrow0 + 8 * G::WP;
    const __half* xb = xs + xbuf * BN * G::XP;
    const int uvalid = min(KU, nunits - st * KU);
#pragma unroll
    for (int u = 0; u < KU; ++u) {
      if (u < uvalid) {
        uint32_t fa[2][4];
        unit_frags<TYPE>(wrow0, wrow1, u, t, fa[0], fa[1]);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int kb = u * 32 + h * 16;
          if constexpr (NT == 1) {
            uint32_t b[2];
            ldmatrix_x2(b, xb + (lane & 7) * G::XP + kb + ((lane >> 3) & 1) * 8);
            mma16816(acc[0], fa[h], b[0], b[1]);
          } else {
#pragma unroll
            for (int j = 0; j < NT; j += 2) {
              uint32_t b[4];
              const int which = lane >> 3;
              ldmatrix_x4(b, xb + ((j + (which >> 1)) * 8 + (lane & 7)) * G::XP + kb + (which & 1) * 8);
              mma16816(acc[j], fa[h], b[0], b[1]);
              mma16816(acc[j + 1], fa[h], b[2], b[3]);
            }
          }
        }
      }
    }
    __syncthreads();
    if constexpr (NT == 1) {
      if (more) store_x32(xbuf ^ 1);
    }
  }

  // Epilogue: c0,c1 -> row g, tokens 2t, 2t+1; c2,c3 -> row g+8.
  float* out = partial ? partial + (size_t)blockIdx.z * n * M : y;
  const int r0 = m0 + warp * 16 + g;
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    const int tk = n0 + j * 8 + 2 * t;
    if (tk < n) {
      if (r0 < M) out[(size_t)tk * M + r0] = acc[j][0];
      if (r0 + 8 < M) out[(size_t)tk * M + r0 + 8] = acc[j][2];
    }
    if (tk + 1 < n) {
      if (r0 < M) out[(size_t)(tk + 1) * M + r0] = acc[j][1];
      if (r0 + 8 < M) out[(size_t)(tk + 1) * M + r0 + 8] = acc[j][3];
    }
  }
  if (!partial) return;
  // Split K: the last CTA of this tile to finish sums the splits' partials in split order (deterministic) and
  // writes y, so a split matmul is still one launch. The counter is reset for the next launch.
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  unsigned int* cnt = counters + blockIdx.y * gridDim.x + blockIdx.x;
  if (tid == 0) last = atomicAdd(cnt, 1u) == gridDim.z - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  const int rows = min(BM, M - m0), toks = min(BN, n - n0);
  for (int i = tid; i < rows * toks; i += THREADS) {
    const int tk = n0 + i / rows, r = m0 + i % rows;
    float sum = 0.0f;
    for (int z = 0; z < (int)gridDim.z; ++z) sum += __ldcg(partial + ((size_t)z * n + tk) * M + r);
    y[(size_t)tk * M + r] = sum;
  }
  if (tid == 0) *cnt = 0;
}


// Exact F32 product for n <= 8, one warp per weight row, the tokens' sums held in registers.
__global__ void mm_simt(int32_t type, const uint8_t* __restrict__ W, size_t row_bytes, int M, int K,
                        const float* __restrict__ x, int n, float* __restrict__ y) {
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= M) return;
  const uint8_t* wr = W + (size_t)row * row_bytes;
  const bool vec = type == 0 && (K % 4) == 0;
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  if (vec) {
    const float4* w4 = reinterpret_cast<const float4*>(wr);
    for (int k4 = lane; k4 < K / 4; k4 += 32) {
      const float4 w = w4[k4];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        if (j < n) {
          const float4 xv = reinterpret_cast<const float4*>(x + (size_t)j * K)[k4];
          acc[j] += w.x * xv.x + w.y * xv.y + w.z * xv.z + w.w * xv.w;
        }
      }
    }
  } else {
    for (int k = lane; k < K; k += 32) {
      const float w = load_elem(type, wr, k);
#pragma unroll
      for (int j = 0; j < 8; ++j)
        if (j < n) acc[j] += w * x[(size_t)j * K + k];
    }
  }
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const float s = warp_sum(acc[j]);
    if (lane == 0 && j < n) y[(size_t)j * M + row] = s;
  }
}

// Exact F32 product for n > 8: a classic shared-memory tiled SGEMM (64 rows x 64 tokens per CTA, 4x4 outputs per
// thread), the weight tile dequantized to F32 as it is staged. Also the independent reference the GPU tests compare
// the tensor-core kernels against (TWINFER_CUDA_SIMT=1).
constexpr int SB = 64, SK = 32;
__global__ void __launch_bounds__(256) mm_simt_tiled(int32_t type, const uint8_t* __restrict__ W, size_t row_bytes,
                                                     int M, int K, const float* __restrict__ x, int n,
                                                     float* __restrict__ y) {
  __shared__ float ws[SK][SB + 4];
  __shared__ float xs[SK][SB + 4];
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int n0 = blockIdx.x * SB, m0 = blockIdx.y * SB;
  float acc[4][4] = {};
  for (int k0 = 0; k0 < K; k0 += SK) {
    for (int i = tid; i < SB * SK; i += 256) {
      const int r = i / SK, k = i - r * SK;
      const int gk = k0 + k;
      ws[k][r] = (m0 + r < M && gk < K) ? load_elem(type, W + (size_t)(m0 + r) * row_bytes, gk) : 0.0f;
      xs[k][r] = (n0 + r < n && gk < K) ? x[(size_t)(n0 + r) * K + gk] : 0.0f;
    }
    __syncthreads();
#pragma unroll 8
    for (int k = 0; k < SK; ++k) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = ws[k][ty + 16 * i], b[i] = xs[k][tx + 16 * i];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int r = m0 + ty + 16 * i, t = n0 + tx + 16 * j;
      if (r < M && t < n) y[(size_t)t * M + r] = acc[i][j];
    }
}

template <int TYPE, int NT, int WARPS> size_t tc_smem() {
  using G = Geo<TYPE, NT>;
  return G::NS * Tile<NT, WARPS>::BM * G::WP + G::NX * (NT * 8) * G::XP * sizeof(__half);
}

template <int TYPE, int NT, int WARPS>
void launch_tc(cudaStream_t s, const DeviceInfo& dev, MatmulScratch& scratch, const Tensor* const* W,
               float* const* y, int count, const void* x, const float* xup, int n) {
  using G = Geo<TYPE, NT>;
  const int K = (int)W[0]->ne0;
  const size_t smem = tc_smem<TYPE, NT, WARPS>();
  static bool configured = false;  // per template instance; one device per process in practice
  if (!configured) {
    TWC_CHECK(cudaFuncSetAttribute(mm_tc<TYPE, NT, WARPS>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    configured = true;
  }
  MMGroup grp{};
  size_t rows_total = 0;
  grp.tile0[0] = 0;
  for (int i = 0; i < 3; ++i) {
    const int j = i < count ? i : count - 1;  // unused slots repeat the last weight (never selected)
    grp.W[i] = (const uint8_t*)W[j]->data;
    grp.y[i] = y[j];
    grp.M[i] = (int)W[j]->ne1;
    grp.tile0[i + 1] = grp.tile0[i] + (i < count ? ceil_div(W[i]->ne1, Tile<NT, WARPS>::BM) : 0);
  }
  for (int i = count; i < 3; ++i) grp.tile0[i + 1] = grp.tile0[count];
  const int row_tiles = grp.tile0[count];
  const int n_tiles = ceil_div(n, NT * 8);
  const int S = ceil_div(K / 32, G::KU);
  // Enough CTAs to keep every SM streaming: split K when rows x token tiles are too few.
  const int target = g_split_ctas_per_sm * std::max(dev.sm_count, 1);
  int splits = 1;
  if (row_tiles * n_tiles < target) splits = std::min(S, ceil_div(target, row_tiles * n_tiles));
  const int sps = ceil_div(S, splits);
  splits = ceil_div(S, sps);
  float* partial = nullptr;
  unsigned int* counters = nullptr;
  if (splits > 1) {
    for (int i = 0; i < count; ++i) {
      grp.poff[i] = (size_t)splits * n * rows_total;
      rows_total += (size_t)W[i]->ne1;
    }
    partial = (float*)scratch.partial.get((size_t)splits * n * rows_total * sizeof(float));
    counters = (unsigned int*)scratch.counters.get_zeroed((size_t)row_tiles * n_tiles * sizeof(unsigned int));
    if (!partial || !counters) splits = 1, partial = nullptr;
  }
  dim3 grid(n_tiles, row_tiles, splits);
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(Tile<NT, WARPS>::THREADS);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = dev.pdl ? 1 : 0;
  TWC_CHECK(cudaLaunchKernelEx(&cfg, mm_tc<TYPE, NT, WARPS>, grp, row_bytes(W[0]->type, K), K, x, xup, n,
                               splits > 1 ? sps : S, partial, counters));
  TWC_LAUNCHED("mm_tc");
}

template <int TYPE>
void dispatch_tc(cudaStream_t s, const DeviceInfo& dev, MatmulScratch& scratch, const Tensor* const* W,
                 float* const* y, int count, const float* x, const float* xup, int n) {
  if (n <= 8) {
    // F16 at one or two tokens: the plain GEMV (gemv.cu); a SwiGLU input is formed once into scratch first.
    bool gemv = TYPE == 1;
    // x a split norm's output (norm_fused.cuh): the GEMV reads its F32 u and scales by s.
    const bool split = !xup && scratch.pre_norm.ssq && scratch.pre_x == x && scratch.pre_n == n &&
                       scratch.pre_k == W[0]->ne0 && scratch.pre_uf;
    for (int i = 0; i < count && gemv; ++i) gemv = gemv_f16_supported(*W[i], split ? scratch.pre_uf : x, n);
    if (gemv && split) {
      gemv_f16(s, dev.pdl_gemv, dev.gemv_cfg, W, y, count, scratch.pre_uf, n, &scratch.pre_norm);
      return;
    }
    if (gemv) {
      const float* xg = x;
      if (xup) {
        float* t = (float*)scratch.xf.get((size_t)n * W[0]->ne0 * sizeof(float));
        if (t) swiglu(s, x, xup, t, (size_t)n * W[0]->ne0);
        xg = t;
      }
      if (xg) {
        gemv_f16(s, dev.pdl_gemv, dev.gemv_cfg, W, y, count, xg, n);
        return;
      }
    }
    // Q4_0 / Q8_0 / Q4_K: integer dot products on int8 activations (mmvq.cu), unless turned off or out of scratch.
    if ((TYPE == 2 || TYPE == kQ4_0T || TYPE == 8 || TYPE == 12 || TYPE == 14) && mmvq_supported(*W[0], n) &&
        mmvq(s, dev, scratch, W, y, count, x, xup, n))
      return;
    const int warps =
        g_decode_warps ? g_decode_warps : (TYPE == 2 || TYPE == kQ4_0T || TYPE == 12 || TYPE == 14) ? 8 : 4;
    if (warps == 8) launch_tc<TYPE, 1, 8>(s, dev, scratch, W, y, count, x, xup, n);
    else launch_tc<TYPE, 1, 4>(s, dev, scratch, W, y, count, x, xup, n);
    return;
  }
  const int64_t K = W[0]->ne0;
  __half* x16 = (__half*)scratch.xh.get((size_t)n * K * sizeof(__half));
  if (!x16) {  // no room for the FP16 copy: 8-token slices
    for (int t0 = 0; t0 < n; t0 += 8) {
      float* ys[3];
      for (int i = 0; i < count; ++i) ys[i] = y[i] + (size_t)t0 * W[i]->ne1;
      launch_tc<TYPE, 1, 4>(s, dev, scratch, W, ys, count, x + (size_t)t0 * K, xup ? xup + (size_t)t0 * K : nullptr,
                         std::min(8, n - t0));
    }
    return;
  }
  if (xup) swiglu_f16(s, x, xup, x16, (size_t)n * K);
  else f32_to_f16(s, x, x16, (size_t)n * K);
  // cuBLAS where it measured faster (H100, bench/NOTES.md run 7): F16 weights from 16 tokens (n=512: 561 vs 183
  // TFLOP/s); Q8_0 and Q6_K, dequantized to an F16 copy per call, for prompt-sized batches (n=512: 1.22 vs 1.43 ms,
  // 1.57 vs 1.72 ms per layer). Q4_0 and Q4_K lost (1.19 vs 1.08 ms, 2.30 vs 1.22 ms): the copy costs more there.
  const int min_n = TYPE == 1 ? 16 : (TYPE == 8 || TYPE == 14) ? 128 : (1 << 30);
  if (n >= min_n) {
    bool ok = true;
    for (int i = 0; i < count && ok; ++i) ok = cublas_matmul(s, scratch, *W[i], x16, n, y[i]);
    if (ok) return;
  }
  launch_tc<TYPE, 8, 8>(s, dev, scratch, W, y, count, x16, nullptr, n);
}

// TWINFER_CUDA_SIMT=1 forces the exact F32 kernel for every type (a debugging and testing switch).
bool getenv_simt() {
  static const bool v = std::getenv("TWINFER_CUDA_SIMT") != nullptr;
  return v;
}

}  // namespace

void set_matmul_decode_warps(int warps) { g_decode_warps = warps == 8 || warps == 4 ? warps : 0; }

void set_matmul_split_target(int ctas_per_sm) { g_split_ctas_per_sm = ctas_per_sm > 0 ? ctas_per_sm : 2; }

bool tc_eligible(const Tensor& W) {
  const size_t rb = row_bytes(W.type, W.ne0);
  const bool type_ok = W.type == 1 || W.type == 30 || W.type == 2 || W.type == 3 || W.type == 6 || W.type == 7 ||
                       W.type == 8 || W.type == 12 || W.type == 13 || W.type == 14;
  return type_ok && W.ne0 % 32 == 0 && rb % 16 == 0 && W.ne1 < (1ll << 31) && W.ne0 < (1ll << 31) && !getenv_simt();
}

bool matmul_groupable(const Tensor& a, const Tensor& b) {
  return tc_eligible(a) && tc_eligible(b) && a.type == b.type && a.layout == b.layout && a.ne0 == b.ne0;
}

// The tensor-core kernels for one type; false if the type has none.
bool dispatch_any(cudaStream_t s, const DeviceInfo& dev, MatmulScratch& scratch, const Tensor* const* W,
                  float* const* y, int count, const float* x, const float* xup, int n) {
  switch (kernel_type(*W[0])) {
    case 2: dispatch_tc<2>(s, dev, scratch, W, y, count, x, xup, n); return true;
    case kQ4_0T: dispatch_tc<kQ4_0T>(s, dev, scratch, W, y, count, x, xup, n); return true;
    case 8: dispatch_tc<8>(s, dev, scratch, W, y, count, x, xup, n); return true;
    case 1: dispatch_tc<1>(s, dev, scratch, W, y, count, x, xup, n); return true;
    case 30: dispatch_tc<30>(s, dev, scratch, W, y, count, x, xup, n); return true;
    case 3: dispatch_tc<3>(s, dev, scratch, W, y, count, x, xup, n); return true;
    case 6: dispatch_tc<6>(s, dev, scratch, W, y, count, x, xup, n); return true;
    case 7: dispatch_tc<7>(s, dev, scratch, W, y, count, x, xup, n); return true;
    case 12: dispatch_tc<12>(s, dev, scratch, W, y, count, x, xup, n); return true;
    case 13: dispatch_tc<13>(s, dev, scratch, W, y, count, x, xup, n); return true;
    case 14: dispatch_tc<14>(s, dev, scratch, W, y, count, x, xup, n); return true;
    default: return false;
  }
}

void matmul_swiglu(cudaStream_t s, const DeviceInfo& dev, MatmulScratch& scratch, const Tensor& W, const float* gate,
                   const float* up, int n, float* y) {
  const Tensor* w = &W;
  if (n > 0 && !dispatch_any(s, dev, scratch, &w, &y, 1, gate, up, n)) note_error(cudaErrorInvalidValue, "matmul_swiglu type");
}

void matmul_group(cudaStream_t s, const DeviceInfo& dev, MatmulScratch& scratch, const Tensor* const* W,
                  float* const* y, int count, const float* x, int n) {
  if (n <= 0 || count <= 0) return;
  if ((count > 1 || tc_eligible(*W[0])) && dispatch_any(s, dev, scratch, W, y, count, x, nullptr, n)) return;
  for (int i = 0; i < count; ++i) {
    const Tensor& w = *W[i];
    if (w.ne1 <= 0) continue;
    const size_t rb = row_bytes(w.type, w.ne0);
    if (n <= 8) {
      const int rows_per_block = 8;
      mm_simt<<<ceil_div(w.ne1, rows_per_block), rows_per_block * 32, 0, s>>>(kernel_type(w), (const uint8_t*)w.data, rb,
                                                                              (int)w.ne1, (int)w.ne0, x, n, y[i]);
      TWC_LAUNCHED("mm_simt");
    } else {
      dim3 grid(ceil_div(n, SB), ceil_div(w.ne1, SB));
      mm_simt_tiled<<<grid, 256, 0, s>>>(kernel_type(w), (const uint8_t*)w.data, rb, (int)w.ne1, (int)w.ne0, x, n, y[i]);
      TWC_LAUNCHED("mm_simt_tiled");
    }
  }
}

bool matmul_norm(cudaStream_t s, const DeviceInfo& dev, MatmulScratch& scratch, const Tensor& W, const float* x,
                 const float* up, float* y, const NormOut& no) {
  const int32_t t = kernel_type(W);
  if (getenv_simt() || !tc_eligible(W) || !(t == 2 || t == kQ4_0T || t == 8 || t == 12) || !mmvq_supported(W, 1))
    return false;
  const Tensor* w = &W;
  return mmvq(s, dev, scratch, &w, &y, 1, x, up, 1, &no);
}

bool norm_in_supported(const Tensor& W, const float* uf, int n) {
  if (n < 1 || n > 2 || getenv_simt() || !tc_eligible(W)) return false;
  if (W.type == 1) return gemv_f16_supported(W, uf, n);
  return (W.type == 2 || W.type == 8 || W.type == 12 || W.type == 14) && mmvq_supported(W, n);
}

void matmul(cudaStream_t s, const DeviceInfo& dev, MatmulScratch& scratch, const Tensor& W, const float* x, int n,
            float* y) {
  const Tensor* w = &W;
  matmul_group(s, dev, scratch, &w, &y, 1, x, n);
}

}  // namespace cuda
}  // namespace tw
