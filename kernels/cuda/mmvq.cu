// Decode products (one or two tokens) of Q4_0, Q8_0 and Q4_K weights with integer dot products, as llama.cpp's mmvq does:
// the activations are quantized once per product to int8 blocks of 32 (scale d = max|x| / 127, and d * sum(q) for
// Q4_0's offset of 8), and each weight block meets them in __dp4a (four int8 products and a sum per instruction).
// The tensor-core decode kernel (matmul.cu) converts every weight to FP16 for an m16n8k16 tile that is 7/8 empty at
// n = 1; that conversion, not memory, bounded it (~1.4 TB/s per 8B layer on an H100, bench/NOTES.md run 8). Here a
// block costs 5 (Q4_0) or 9 (Q8_0) 4-byte loads and 8 dp4a per token.
//
// One warp per weight row: lanes take consecutive blocks (so a warp's loads cover one contiguous stretch of the row)
// and four blocks are loaded before any is used, so each lane has several loads in flight. Results are reduced
// across the warp; no split-K, no shared memory. Numerics: activations rounded to int8 per 32 values (relative error
// ~5e-3 of a product, as llama.cpp's decode path); TWINFER_CUDA_DP4A=0 keeps the FP16 tensor-core kernel instead.
#include <algorithm>
#include <cstdlib>

#include "cuda_common.cuh"
#include "cuda_ops.h"
#include "norm_fused.cuh"

namespace tw {
namespace cuda {

namespace {

constexpr int kWarps = 8;  // rows per CTA

// x (or silu(gate) * up) -> int8 q [n][K] and (d, d * sum q) per 32 values [n][K/32]. One warp per 32 values.
// For the down projection this stays a launch of its own: every CTA of the product quantizing silu(gate) * up into
// its shared memory instead (each reading all of gate and up from L2 before its first dot product) made one-token
// decode 6-8 % slower on an H100 (bench/NOTES.md run 20).
__global__ void __launch_bounds__(256) quantize_q8_kernel(const float* __restrict__ x, const float* __restrict__ up,
                                                          int64_t blocks, int8_t* __restrict__ q,
                                                          float2* __restrict__ ds) {
  pdl_trigger();  // lets the product that reads these activations start streaming its weights
  pdl_wait();     // launched with PDL by the decode products
  const int64_t b = (int64_t)blockIdx.x * 8 + (threadIdx.x >> 5);
  if (b >= blocks) return;
  const int lane = threadIdx.x & 31;
  const int64_t i = b * 32 + lane;
  float v = x[i];
  if (up) v = v / (1.0f + expf(-v)) * up[i];  // the SwiGLU of the down projection's input (swiglu_kernel's value)
  const float amax = warp_max(fabsf(v));
  const float d = amax / 127.0f;
  const int qi = amax == 0.0f ? 0 : __float2int_rn(v / d);
  q[i] = (int8_t)qi;
  const float s = warp_sum((float)qi);  // exact: |sum| <= 32 * 127
  if (lane == 0) ds[b] = make_float2(d, d * s);
}

struct VGroup {
  const uint8_t* W[3];
  float* y[3];
  int M[3];
  int row0[4];  // first global row of each weight
};

// The 4-byte words covering the block at p (2-byte aligned): w[0..NW-1] from p rounded down to 4 bytes; `sh` is the
// bit offset of p inside w[0] (0 or 16). Reads at most 2 bytes past the block (allocations are padded).
template <int NW>
__device__ __forceinline__ void load_words(const uint8_t* p, uint32_t* w, int& sh) {
  const uintptr_t a = (uintptr_t)p;
  const uint32_t* base = reinterpret_cast<const uint32_t*>(a & ~(uintptr_t)3);
  sh = (int)(a & 3) * 8;
#pragma unroll
  for (int j = 0; j < NW; ++j) w[j] = __ldg(base + j);
}

template <int TYPE> struct VQ;
template <> struct VQ<2> { static constexpr int BYTES = 18, NW = 5; };  // Q4_0: d, 16 bytes of nibbles
template <> struct VQ<8> { static constexpr int BYTES = 34, NW = 9; };  // Q8_0: d, 32 int8

// Dot of one weight block with one token's quantized block: x ints xi[0..7] (32 int8), xd = (d, d * sum q).
template <int TYPE>
__device__ __forceinline__ float block_dot(const uint32_t* w, int sh, const int* xi, float2 xd) {
  const float dw = __half2float(__ushort_as_half((uint16_t)(__funnelshift_r(w[0], w[1], sh) & 0xFFFFu)));
  int sumi = 0;
  if (TYPE == 2) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint32_t v = __funnelshift_rc(w[j], w[j + 1], sh + 16);  // bytes 4j..4j+3 of qs
      sumi = __dp4a((int)(v & 0x0F0F0F0Fu), xi[j], sumi);            // elements 4j..4j+3 (low nibbles)
      sumi = __dp4a((int)((v >> 4) & 0x0F0F0F0Fu), xi[4 + j], sumi); // elements 16+4j.. (high nibbles)
    }
    return dw * (xd.x * (float)sumi - 8.0f * xd.y);  // sum (q4 - 8) q8 d8 = d8 sum q4 q8 - 8 d8 sum q8
  } else {
#pragma unroll
    for (int j = 0; j < 8; ++j) sumi = __dp4a((int)__funnelshift_rc(w[j], w[j + 1], sh + 16), xi[j], sumi);
    return dw * xd.x * (float)sumi;
  }
}

// A warp's R rows x NC columns of partial sums -> output rows r.. of matrix i of the group (lane 0 writes).
template <int NC, int R>
__device__ __forceinline__ void store_rows(const VGroup& g, int i, int r, int lane, float (&acc)[R][NC]) {
  float* y = i == 2 ? g.y[2] : i == 1 ? g.y[1] : g.y[0];
  const int M = i == 2 ? g.M[2] : i == 1 ? g.M[1] : g.M[0];
#pragma unroll
  for (int rr = 0; rr < R; ++rr)
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      const float v = warp_sum(acc[rr][c]);
      if (lane == 0) y[(size_t)c * M + r + rr] = v;
    }
}

// The residual add and split norm after a one-token product (no.q set; mmvq(..., no)): the CTA's 32 rows are one
// 32-value block of y, so once they are all in shared memory one warp does norm_block's work on them (x += y, u = x w
// as int8 and F32, the block's sum of squares) — the norm_blocks launch that would follow saved. y is written too.
// H100, decode graph GPU time per step (bench/NOTES.md run 20): q4_0 2154 / 2194 -> 2132 / 2134 us, q8_0 3149 / 3131
// -> 2993 / 2993 us (TWINFER_CUDA_FUSE_NORM=0 / 1).
// xv / wv: this lane's x and w, loaded at the PDL wait (wait_prefetch).
template <int R>
__device__ __forceinline__ void norm_out_epilogue(const VGroup& g, int r, int lane, float (&acc)[R][1],
                                                  const NormOut& no, float xv, float wv) {
  __shared__ float ys[32];
  const int warp = threadIdx.x >> 5;
#pragma unroll
  for (int rr = 0; rr < R; ++rr) {
    const float v = warp_sum(acc[rr][0]);
    if (lane == 0) {
      g.y[0][r + rr] = v;
      ys[warp * R + rr] = v;
    }
  }
  __syncthreads();
  if (warp == 0) norm_block_out(no, blockIdx.x, (size_t)blockIdx.x * 32 + lane, lane, xv + ys[lane], wv, true);
}

// store_rows, or for a split norm's output (ni, norm_fused.cuh): rows scaled by its s, h written by every warp of the
// grid (also those without rows: active == false), or (no.q) the residual add and norm that follow (norm_out_epilogue).
// pre: what the lane loaded at its pdl_wait (norm_prefetch, or x and w for no).
template <int NC, int R>
__device__ __forceinline__ void epilogue(const VGroup& g, int i, int r, int lane, bool active, float (&acc)[R][NC],
                                         const NormIn& ni, const NormPre<NC>& pre, const NormOut& no = NormOut()) {
  if constexpr (NC == 1) {
    if (no.q) {
      norm_out_epilogue<R>(g, r, lane, acc, no, pre.hx, pre.hw);
      return;
    }
  }
  if (!ni.ssq) {
    if (active) store_rows<NC, R>(g, i, r, lane, acc);
    return;
  }
  float s[NC];
#pragma unroll
  for (int c = 0; c < NC; ++c) s[c] = norm_scale_of(ni, pre.sp[c]);
  if (active) {
#pragma unroll
    for (int rr = 0; rr < R; ++rr)
#pragma unroll
      for (int c = 0; c < NC; ++c) acc[rr][c] *= s[c];  // a lane's partial times s: the warp's sum is then s * sum
    store_rows<NC, R>(g, i, r, lane, acc);
  }
  norm_write_h<NC>(ni, pre, s, lane);
}

// pdl_wait, then (split norm) the loads of norm_prefetch, or (no.q, norm_out_epilogue) the block's x and w for warp
// 0, while this lane's first weights are on their way.
template <int NC>
__device__ __forceinline__ void wait_prefetch(const NormIn& ni, int lane, NormPre<NC>& pre,
                                              const NormOut& no = NormOut()) {
  pdl_wait();
  if (ni.ssq) norm_prefetch<NC>(ni, lane, pre);
  if (no.q && threadIdx.x < 32) {
    pre.hx = __ldcg(no.x + (size_t)blockIdx.x * 32 + lane);
    pre.hw = no.w[blockIdx.x * 32 + lane];
  }
}

// R rows per warp share each x load (the activations were half of the loads a block cost with one row per warp).
// CW warps per CTA: kWarps, or 32 / R with a NormOut (norm_out_epilogue: a CTA is one 32-row block of y).
template <int TYPE, int NC, int R, int CW = kWarps>
__global__ void __launch_bounds__(CW * 32) mmvq_kernel(VGroup g, size_t row_bytes, int K,
                                                       const int8_t* __restrict__ xq,
                                                       const float2* __restrict__ xds, NormIn ni, NormOut no) {
  pdl_trigger();
  const int row = (blockIdx.x * CW + (threadIdx.x >> 5)) * R;  // first of the warp's R rows (one weight)
  const int lane = threadIdx.x & 31;
  const bool active = row < g.row0[3];
  if (!active && !ni.ssq) return;
  NormPre<NC> pre;
  // which weight: selects, not an indexed load, so the parameter struct stays in constant memory
  const int i = row >= g.row0[2] ? 2 : row >= g.row0[1] ? 1 : 0;
  const int r = row - (i == 2 ? g.row0[2] : i == 1 ? g.row0[1] : 0);
  const uint8_t* wrow = (i == 2 ? g.W[2] : i == 1 ? g.W[1] : g.W[0]) + (size_t)r * row_bytes;
  const int nb = K / 32, nbl = active ? nb : 0;
  float acc[R][NC];
#pragma unroll
  for (int rr = 0; rr < R; ++rr)
#pragma unroll
    for (int c = 0; c < NC; ++c) acc[rr][c] = 0.0f;
  constexpr int U = 4;  // blocks per lane loaded before use
  constexpr int NW = VQ<TYPE>::NW;
  for (int b0 = lane; b0 < nbl; b0 += 32 * U) {
    uint32_t w[U][R][NW];
    int sh[U][R];
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int rr = 0; rr < R; ++rr)
        if (b0 + 32 * u < nb)
          load_words<NW>(wrow + rr * row_bytes + (size_t)(b0 + 32 * u) * VQ<TYPE>::BYTES, w[u][rr], sh[u][rr]);
    if (b0 == lane) wait_prefetch<NC>(ni, lane, pre, no);  // weights in flight; activations only once the previous kernel is done
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int b = b0 + 32 * u;
#pragma unroll
      for (int c = 0; c < NC; ++c) {
        if (b >= nb) continue;
        const int4* xp = reinterpret_cast<const int4*>(xq + (size_t)c * K + (size_t)b * 32);
        const int4 x0 = __ldg(xp), x1 = __ldg(xp + 1);
        const int xi[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
        const float2 xd = __ldg(xds + (size_t)c * nb + b);
#pragma unroll
        for (int rr = 0; rr < R; ++rr) acc[rr][c] += block_dot<TYPE>(w[u][rr], sh[u][rr], xi, xd);
      }
    }
  }
  if (nbl <= lane) wait_prefetch<NC>(ni, lane, pre, no);
  epilogue<NC, R>(g, i, r, lane, active, acc, ni, pre, no);
}

// Q4_0 rearranged into 256-value groups (repack.cu, kQ4_0T: 16 chunks of 8 nibble bytes, then 8 scales). A warp
// covers 1024 values of a row per tile (four groups): lane l takes values 16l..16l+15 (group l / 16 of the tile,
// chunk l % 16) and 512 + 16l.. (group 2 + l / 16), so per lane and tile two 8-byte weight loads, two 2-byte scale
// loads and two 16-byte activation loads; a warp's weight load covers 2 x 128 contiguous bytes and its activation
// load 512 (the GGUF-block kernel above: five 4-byte loads per block, lanes 18 bytes apart, and activation loads 32
// bytes apart). A chunk is half a 32-value block, so the block's offset term (8 d_w d_x sum q_x) is taken by the
// even lane of the pair. Bytes past K (K % 1024 != 0) are neither loaded nor counted.
__device__ __forceinline__ float q4t_chunk(uint2 q, uint32_t d, int4 x, float2 xs, float off) {
  int s = __dp4a((int)(q.x & 0x0F0F0F0Fu), x.x, 0);          // values 0..3 of the chunk
  s = __dp4a((int)(q.y & 0x0F0F0F0Fu), x.y, s);              // 4..7
  s = __dp4a((int)((q.x >> 4) & 0x0F0F0F0Fu), x.z, s);       // 8..11
  s = __dp4a((int)((q.y >> 4) & 0x0F0F0F0Fu), x.w, s);       // 12..15
  return __half2float(__ushort_as_half((uint16_t)d)) * (xs.x * (float)s - off * xs.y);
}

// Four CTAs (32 warps) per SM at one row and one token (68 registers unbounded: three).
template <int NC, int R, int U, int CW = kWarps>
__global__ void __launch_bounds__(CW * 32, NC == 1 && R == 1 && U <= 4 && CW == kWarps ? 4 : 0)
    mmvq_q4t_kernel(VGroup g, size_t row_bytes, int K, const int8_t* __restrict__ xq, const float2* __restrict__ xds,
                    NormIn ni, NormOut no) {
  pdl_trigger();
  const int row = (blockIdx.x * CW + (threadIdx.x >> 5)) * R;
  const int lane = threadIdx.x & 31;
  const bool active = row < g.row0[3];
  if (!active && !ni.ssq) return;
  NormPre<NC> pre;
  const int i = row >= g.row0[2] ? 2 : row >= g.row0[1] ? 1 : 0;
  const int r = row - (i == 2 ? g.row0[2] : i == 1 ? g.row0[1] : 0);
  const uint8_t* wrow = (i == 2 ? g.W[2] : i == 1 ? g.W[1] : g.W[0]) + (size_t)r * row_bytes;
  const int ng = K / 256, nb = K / 32;
  const int tiles = active ? (ng + 3) / 4 : 0;
  const int half = lane >> 4, p = lane & 15;
  const float off = (lane & 1) ? 0.0f : 8.0f;
  float acc[R][NC];
#pragma unroll
  for (int rr = 0; rr < R; ++rr)
#pragma unroll
    for (int c = 0; c < NC; ++c) acc[rr][c] = 0.0f;
  // U: tiles per lane loaded before use (4: a 4096-long row at once)
  for (int t0 = 0; t0 < tiles; t0 += U) {
    uint2 qa[U][R], qb[U][R];
    uint32_t da[U][R], db[U][R];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int ga = 4 * (t0 + u) + half, gb = ga + 2;
#pragma unroll
      for (int rr = 0; rr < R; ++rr) {
        const uint8_t* base = wrow + rr * row_bytes;
        qa[u][rr] = qb[u][rr] = make_uint2(0u, 0u);
        da[u][rr] = db[u][rr] = 0u;
        if (ga < ng) {
          qa[u][rr] = __ldg(reinterpret_cast<const uint2*>(base + (size_t)ga * 144 + 8 * p));
          da[u][rr] = __ldg(reinterpret_cast<const unsigned short*>(base + (size_t)ga * 144 + 128 + 2 * (p >> 1)));
        }
        if (gb < ng) {
          qb[u][rr] = __ldg(reinterpret_cast<const uint2*>(base + (size_t)gb * 144 + 8 * p));
          db[u][rr] = __ldg(reinterpret_cast<const unsigned short*>(base + (size_t)gb * 144 + 128 + 2 * (p >> 1)));
        }
      }
    }
    if (t0 == 0) wait_prefetch<NC>(ni, lane, pre, no);  // weights in flight; activations only once the previous kernel is done
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int t = t0 + u;
      const int ga = 4 * t + half, gb = ga + 2;
      const int ea = 1024 * t + 16 * lane;  // first value of chunk a; chunk b's is ea + 512
#pragma unroll
      for (int c = 0; c < NC; ++c) {
        const int8_t* xc = xq + (size_t)c * K;
        int4 xa = make_int4(0, 0, 0, 0), xb = make_int4(0, 0, 0, 0);
        float2 sa = make_float2(0.0f, 0.0f), sb = make_float2(0.0f, 0.0f);
        if (ga < ng) {
          xa = __ldg(reinterpret_cast<const int4*>(xc + ea));
          sa = __ldg(xds + (size_t)c * nb + (ea >> 5));
        }
        if (gb < ng) {
          xb = __ldg(reinterpret_cast<const int4*>(xc + ea + 512));
          sb = __ldg(xds + (size_t)c * nb + ((ea + 512) >> 5));
        }
#pragma unroll
        for (int rr = 0; rr < R; ++rr)
          acc[rr][c] += q4t_chunk(qa[u][rr], da[u][rr], xa, sa, off) + q4t_chunk(qb[u][rr], db[u][rr], xb, sb, off);
      }
    }
  }
  if (tiles == 0) wait_prefetch<NC>(ni, lane, pre, no);
  epilogue<NC, R>(g, i, r, lane, active, acc, ni, pre, no);
}

// Q4_0 / Q8_0 with 16-byte loads. Eight blocks (144 / 272 bytes) are a whole number of 16-byte chunks, and rows
// of K % 256 == 0 start on 16-byte boundaries, so a work item is one such group: 9 (Q4_0) or 17 (Q8_0) aligned
// 16-byte loads instead of 5 or 9 two-byte-aligned 4-byte loads per block. The block fields sit at offsets known at
// compile time inside the group's words (block j at byte 18j / 34j: even j starts on a word, odd j two bytes into
// one). A warp owns R rows and spreads their R * K/256 items over its lanes (R = 2 for K = 4096: one item per lane;
// R = 4 for K = 14336: 7 per lane), U items per lane loaded before any is used.
template <int TYPE> struct GQ;
template <> struct GQ<2> { static constexpr int BB = 18, NV = 9, QW = 4; };   // 144 bytes per group
template <> struct GQ<8> { static constexpr int BB = 34, NV = 17, QW = 8; };  // 272 bytes per group

__device__ __forceinline__ uint32_t word_of(const uint4* v, int i) {  // i compile-time after unrolling
  const uint4 q = v[i >> 2];
  return (i & 3) == 0 ? q.x : (i & 3) == 1 ? q.y : (i & 3) == 2 ? q.z : q.w;
}

template <int TYPE, int NC, int R, int U>
__global__ void __launch_bounds__(kWarps * 32) mmvq_g_kernel(VGroup g, size_t row_bytes, int K,
                                                             const int8_t* __restrict__ xq,
                                                             const float2* __restrict__ xds) {
  using Q = GQ<TYPE>;
  pdl_wait();
  const int row = (blockIdx.x * kWarps + (threadIdx.x >> 5)) * R;
  const int lane = threadIdx.x & 31;
  if (row >= g.row0[3]) return;
  const int i = row >= g.row0[2] ? 2 : row >= g.row0[1] ? 1 : 0;
  const int r = row - (i == 2 ? g.row0[2] : i == 1 ? g.row0[1] : 0);
  const uint8_t* wrow = (i == 2 ? g.W[2] : i == 1 ? g.W[1] : g.W[0]) + (size_t)r * row_bytes;
  const int ng = K / 256, items = R * ng, nb = K / 32;
  float acc[R][NC];
#pragma unroll
  for (int rr = 0; rr < R; ++rr)
#pragma unroll
    for (int c = 0; c < NC; ++c) acc[rr][c] = 0.0f;
  for (int it0 = lane; it0 < items; it0 += 32 * U) {
    uint4 w[U][Q::NV];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int it = it0 + 32 * u;
      if (it < items) {
        const int rr = it / ng, gi = it - rr * ng;
        const uint4* p = reinterpret_cast<const uint4*>(wrow + rr * row_bytes + (size_t)gi * (8 * Q::BB));
#pragma unroll
        for (int v = 0; v < Q::NV; ++v) w[u][v] = __ldg(p + v);
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int it = it0 + 32 * u;
      if (it >= items) break;
      const int rr = it / ng, gi = it - rr * ng;
#pragma unroll
      for (int c = 0; c < NC; ++c) {
        float sum = 0.0f;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const int b = gi * 8 + j;
          const int4* xp = reinterpret_cast<const int4*>(xq + (size_t)c * K + (size_t)b * 32);
          const int4 x0 = __ldg(xp), x1 = __ldg(xp + 1);
          const int xi[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
          const float2 xd = __ldg(xds + (size_t)c * nb + b);
          const int o = Q::BB * j;  // byte offset of block j in the group
          const int a = o >> 2;     // its first word
          const bool odd = (o & 3) != 0;
          const uint32_t w0 = word_of(w[u], a);
          const float dw = __half2float(__ushort_as_half((uint16_t)(odd ? w0 >> 16 : w0 & 0xFFFFu)));
          int sumi = 0;
#pragma unroll
          for (int q = 0; q < Q::QW; ++q) {
            const uint32_t v = odd ? word_of(w[u], a + 1 + q) : __funnelshift_r(word_of(w[u], a + q), word_of(w[u], a + q + 1), 16);
            if (TYPE == 2) {
              sumi = __dp4a((int)(v & 0x0F0F0F0Fu), xi[q], sumi);
              sumi = __dp4a((int)((v >> 4) & 0x0F0F0F0Fu), xi[4 + q], sumi);
            } else {
              sumi = __dp4a((int)v, xi[q], sumi);
            }
          }
          if (TYPE == 2) sum += dw * (xd.x * (float)sumi - 8.0f * xd.y);
          else sum += dw * xd.x * (float)sumi;
        }
#pragma unroll
        for (int q = 0; q < R; ++q) acc[q][c] += q == rr ? sum : 0.0f;
      }
    }
  }
  store_rows<NC, R>(g, i, r, lane, acc);
}

__device__ __forceinline__ int byte_of(uint32_t w, int i) { return (int)((w >> (8 * i)) & 0xFFu); }

// get_scale_min_k4 for sub-blocks 2j and 2j + 1 of a q4_K super-block whose first 16 bytes are hd (x: d, dmin;
// y, z, w: the 12 scale bytes).
__device__ __forceinline__ void q4k_scale_min_pair(const uint4 hd, int j, int sc[2], int mn[2]) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int sb = 2 * j + h;
    if (sb < 4) {
      sc[h] = byte_of(hd.y, sb) & 63;
      mn[h] = byte_of(hd.z, sb) & 63;
    } else {
      sc[h] = (byte_of(hd.w, sb - 4) & 0xF) | ((byte_of(hd.y, sb - 4) >> 6) << 4);
      mn[h] = (byte_of(hd.w, sb - 4) >> 4) | ((byte_of(hd.z, sb - 4) >> 6) << 4);
    }
  }
}

// Q4_K: super-blocks of 256 values (144 bytes, 16-byte aligned in rows of whole super-blocks): d, dmin (halves),
// 12 bytes of 6-bit scales and mins of the eight 32-value sub-blocks, 128 bytes of nibbles. A work item is one pair
// of sub-blocks (2j, 2j+1: the low and high nibbles of qs[32j..32j+31]), so a 4096-long row gives 64 items: a lane
// loads the block's 16-byte head and its 32 bytes of nibbles with three 16-byte loads. Per sub-block s:
//   sum_i (d sc_s q_i - dmin m_s) x_i  with x_i = dx_s qx_i  =  d sc_s dx_s sum(q qx) - dmin m_s (dx_s sum qx).
template <int NC, int R, int CW = kWarps>
__global__ void __launch_bounds__(CW * 32) mmvq_q4k_kernel(VGroup g, size_t row_bytes, int K,
                                                           const int8_t* __restrict__ xq,
                                                           const float2* __restrict__ xds, NormIn ni, NormOut no) {
  pdl_trigger();
  const int row = (blockIdx.x * CW + (threadIdx.x >> 5)) * R;
  const int lane = threadIdx.x & 31;
  const bool active = row < g.row0[3];
  if (!active && !ni.ssq) return;
  NormPre<NC> pre;
  const int i = row >= g.row0[2] ? 2 : row >= g.row0[1] ? 1 : 0;
  const int r = row - (i == 2 ? g.row0[2] : i == 1 ? g.row0[1] : 0);
  const uint8_t* wrow = (i == 2 ? g.W[2] : i == 1 ? g.W[1] : g.W[0]) + (size_t)r * row_bytes;
  const int items = active ? K / 64 : 0, nb = K / 32;
  float acc[R][NC];
#pragma unroll
  for (int rr = 0; rr < R; ++rr)
#pragma unroll
    for (int c = 0; c < NC; ++c) acc[rr][c] = 0.0f;
  constexpr int U = 2;
  for (int it0 = lane; it0 < items; it0 += 32 * U) {
    uint4 head[U][R], q0[U][R], q1[U][R];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int it = it0 + 32 * u;
      if (it < items) {
        const int j = it & 3;
#pragma unroll
        for (int rr = 0; rr < R; ++rr) {
          const uint4* blk = reinterpret_cast<const uint4*>(wrow + rr * row_bytes + (size_t)(it >> 2) * 144);
          head[u][rr] = __ldg(blk);
          q0[u][rr] = __ldg(blk + 1 + 2 * j);
          q1[u][rr] = __ldg(blk + 2 + 2 * j);
        }
      }
    }
    if (it0 == lane) wait_prefetch<NC>(ni, lane, pre, no);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int it = it0 + 32 * u;
      if (it >= items) continue;
      const int j = it & 3;
      const int xb = (it >> 2) * 8 + 2 * j;  // 32-value block of x of sub-block 2j
#pragma unroll
      for (int c = 0; c < NC; ++c) {
        const int4* xp = reinterpret_cast<const int4*>(xq + (size_t)c * K + (size_t)xb * 32);
        const int4 a0 = __ldg(xp), a1 = __ldg(xp + 1), b0 = __ldg(xp + 2), b1 = __ldg(xp + 3);
        const int xa[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
        const int xb8[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
        const float2 da = __ldg(xds + (size_t)c * nb + xb), db = __ldg(xds + (size_t)c * nb + xb + 1);
#pragma unroll
        for (int rr = 0; rr < R; ++rr) {
          const uint4 hd = head[u][rr];
          const float d = __half2float(__ushort_as_half((uint16_t)(hd.x & 0xFFFFu)));
          const float dmin = __half2float(__ushort_as_half((uint16_t)(hd.x >> 16)));
          int sc[2], mn[2];
          q4k_scale_min_pair(hd, j, sc, mn);
          const uint32_t qw[8] = {q0[u][rr].x, q0[u][rr].y, q0[u][rr].z, q0[u][rr].w,
                                  q1[u][rr].x, q1[u][rr].y, q1[u][rr].z, q1[u][rr].w};
          int s0 = 0, s1 = 0;
#pragma unroll
          for (int w = 0; w < 8; ++w) {
            s0 = __dp4a((int)(qw[w] & 0x0F0F0F0Fu), xa[w], s0);
            s1 = __dp4a((int)((qw[w] >> 4) & 0x0F0F0F0Fu), xb8[w], s1);
          }
          acc[rr][c] += d * ((float)sc[0] * da.x * (float)s0 + (float)sc[1] * db.x * (float)s1) -
                        dmin * ((float)mn[0] * da.y + (float)mn[1] * db.y);
        }
      }
    }
  }
  if (items <= lane) wait_prefetch<NC>(ni, lane, pre, no);
  epilogue<NC, R>(g, i, r, lane, active, acc, ni, pre, no);
}

// Q6_K: super-blocks of 256 values (210 bytes: ql[128] low nibbles, qh[64] high 2-bit pairs, 16 int8 scales of 16
// values, d). Value i of half hh (i = 128 hh + 32 p + l): q = (ql[64 hh + 32 (p & 1) + l] nibble p >> 1) |
// ((qh[32 hh + l] >> 2p) & 3) << 4, minus 32, times d * scales[8 hh + 2p + l / 16]. A work item is a quarter of a
// super-block (hh, p in {pa, pa + 2}): 32 bytes of ql (both nibbles) and 32 of qh give 64 values, i.e. two 32-value
// activation blocks; the bytes sit 2 bytes off word boundaries for odd super-blocks, so they are loaded as 9
// aligned words each and funnel-shifted (as load_words). Per block: d dx (sc0 sum_{l<16} (q-32) qx + sc1 sum_{l>=16}).
// The FP16 tensor-core kernel ran Q6_K rows at 1.45 TB/s (bench/NOTES.md run 16), the slowest decode product.
template <int NC, int R>
__global__ void __launch_bounds__(kWarps * 32) mmvq_q6k_kernel(VGroup g, size_t row_bytes, int K,
                                                               const int8_t* __restrict__ xq,
                                                               const float2* __restrict__ xds, NormIn ni) {
  pdl_trigger();
  const int row = (blockIdx.x * kWarps + (threadIdx.x >> 5)) * R;
  const int lane = threadIdx.x & 31;
  const bool active = row < g.row0[3];
  if (!active && !ni.ssq) return;
  NormPre<NC> pre;
  const int i = row >= g.row0[2] ? 2 : row >= g.row0[1] ? 1 : 0;
  const int r = row - (i == 2 ? g.row0[2] : i == 1 ? g.row0[1] : 0);
  const uint8_t* wrow = (i == 2 ? g.W[2] : i == 1 ? g.W[1] : g.W[0]) + (size_t)r * row_bytes;
  const int items = active ? K / 64 : 0, nb = K / 32;
  float acc[R][NC];
#pragma unroll
  for (int rr = 0; rr < R; ++rr)
#pragma unroll
    for (int c = 0; c < NC; ++c) acc[rr][c] = 0.0f;
  constexpr int U = 2;
  for (int it0 = lane; it0 < items; it0 += 32 * U) {
    uint32_t ql[U][R][9], qh[U][R][9];
    int shl[U][R], shh[U][R];
    uint32_t sc[U][R];  // the item's four scale bytes: [p=pa, l<16], [pa, l>=16], [pa+2, l<16], [pa+2, l>=16]
    uint16_t dd[U][R];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int it = it0 + 32 * u;
      if (it < items) {
        const int t = it & 3, hh = t >> 1, pa = t & 1;
#pragma unroll
        for (int rr = 0; rr < R; ++rr) {
          const uint8_t* b = wrow + rr * row_bytes + (size_t)(it >> 2) * 210;
          load_words<9>(b + 64 * hh + 32 * pa, ql[u][rr], shl[u][rr]);
          load_words<9>(b + 128 + 32 * hh, qh[u][rr], shh[u][rr]);
          const uint16_t* s16 = reinterpret_cast<const uint16_t*>(b + 192 + 8 * hh + 2 * pa);
          sc[u][rr] = (uint32_t)__ldg(s16) | ((uint32_t)__ldg(s16 + 2) << 16);
          dd[u][rr] = __ldg(reinterpret_cast<const uint16_t*>(b + 208));
        }
      }
    }
    if (it0 == lane) wait_prefetch<NC>(ni, lane, pre);  // weights in flight; activations only once the previous kernel is done
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int it = it0 + 32 * u;
      if (it >= items) continue;
      const int t = it & 3, hh = t >> 1, pa = t & 1;
      const int xa = (it >> 2) * 8 + 4 * hh + pa;  // 32-value activation block of p = pa; p = pa + 2 is xa + 2
#pragma unroll
      for (int c = 0; c < NC; ++c) {
        const int4* pa4 = reinterpret_cast<const int4*>(xq + (size_t)c * K + (size_t)xa * 32);
        const int4 a0 = __ldg(pa4), a1 = __ldg(pa4 + 1), b0 = __ldg(pa4 + 4), b1 = __ldg(pa4 + 5);
        const int xa8[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
        const int xb8[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
        const float da = __ldg(xds + (size_t)c * nb + xa).x, db = __ldg(xds + (size_t)c * nb + xa + 2).x;
#pragma unroll
        for (int rr = 0; rr < R; ++rr) {
          int sa0 = 0, sa1 = 0, sb0 = 0, sb1 = 0;
#pragma unroll
          for (int w = 0; w < 8; ++w) {
            const uint32_t l = __funnelshift_r(ql[u][rr][w], ql[u][rr][w + 1], shl[u][rr]);
            const uint32_t h = __funnelshift_r(qh[u][rr][w], qh[u][rr][w + 1], shh[u][rr]) >> (2 * pa);
            const int qlo = (int)__vsubss4((l & 0x0F0F0F0Fu) | ((h & 0x03030303u) << 4), 0x20202020u);
            const int qhi = (int)__vsubss4(((l >> 4) & 0x0F0F0F0Fu) | (((h >> 4) & 0x03030303u) << 4), 0x20202020u);
            if (w < 4) {
              sa0 = __dp4a(qlo, xa8[w], sa0);
              sb0 = __dp4a(qhi, xb8[w], sb0);
            } else {
              sa1 = __dp4a(qlo, xa8[w], sa1);
              sb1 = __dp4a(qhi, xb8[w], sb1);
            }
          }
          const uint32_t s4 = sc[u][rr];
          const float sca0 = (float)(int8_t)(s4 & 0xFF), sca1 = (float)(int8_t)((s4 >> 8) & 0xFF);
          const float scb0 = (float)(int8_t)((s4 >> 16) & 0xFF), scb1 = (float)(int8_t)(s4 >> 24);
          const float d = __half2float(__ushort_as_half(dd[u][rr]));
          acc[rr][c] += d * (da * (sca0 * (float)sa0 + sca1 * (float)sa1) + db * (scb0 * (float)sb0 + scb1 * (float)sb1));
        }
      }
    }
  }
  if (items <= lane) wait_prefetch<NC>(ni, lane, pre);
  epilogue<NC, R>(g, i, r, lane, active, acc, ni, pre);
}

// ---- The bulk-copy pipeline (sm_90): one token, Q4_0 / Q8_0 / Q4_K / Q6_K ----
// The kernels above keep at most one row's blocks (4 or 2 per lane) in flight per warp and leave when the row is
// done: on an H100 they stream 2.1-2.3 TB/s of the card's 3.0 (latency-bound at 25-50 % occupancy, bench/NOTES.md
// run 18). Here a persistent grid (one CTA per SM) gives each CTA a contiguous range of rows; 8 consumer warps take
// one row each of a group of 8, and a producer warp copies the group's rows, a chunk of each (~2-3 KB, whole blocks)
// per stage, into a ring of S shared-memory stages with cp.async.bulk (the copy engine: no registers hold weights
// in flight). A stage completes on its `full` mbarrier; each consumer warp releases it on `empty` when it has read
// its row's chunk, and the producer refills it: S - 1 stages stay in flight while the warps compute, with no
// CTA-wide barrier. The first S stages are requested before the PDL wait (weights are never written by a step).
// Measured SLOWER than the warp-per-row kernels in every shape tried (H100, µs per 8B layer at n=1, bench/NOTES.md
// run 19: Q4_0 67-87 vs 54.5, Q4_K 66-69 vs 57.5, Q6_K 102-126 vs 99, Q8_0 78-112 vs 86; 1-3 CTAs per SM, 48-200 KiB
// of stages): opt-in only (TWINFER_CUDA_MMVQ_TMA=1), kept for further work on the consumer side.
constexpr int kTmaMaxStages = 8;

__device__ __forceinline__ uint32_t smem_addr(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void mbar_init(uint64_t* bar, int count) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count) : "memory");
#endif
}
__device__ __forceinline__ void mbar_init_fence() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
#endif
}
__device__ __forceinline__ void mbar_expect(uint64_t* bar, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
#endif
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(bar)) : "memory");
#endif
}
// Copy `bytes` from global src to shared dst (16-byte aligned, multiple of 16), completing on bar.
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(smem_addr(dst)),
      "l"(src), "r"(bytes), "r"(smem_addr(bar))
      : "memory");
#endif
}
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "{\n .reg .pred p;\n WAIT_%=:\n mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n @!p bra WAIT_%=;\n}" ::"r"(
          smem_addr(bar)),
      "r"(parity)
      : "memory");
#endif
}

template <int NW>
__device__ __forceinline__ void load_words_s(const uint8_t* p, uint32_t* w, int& sh) {  // load_words from shared
  const int mis = (int)((uintptr_t)p & 3);
  const uint32_t* base = reinterpret_cast<const uint32_t*>(p - mis);  // pointer arithmetic: stays a shared address
  sh = mis * 8;
#pragma unroll
  for (int j = 0; j < NW; ++j) w[j] = base[j];
}

// Chunks of a row are whole units of BLK bytes holding IPB work items each.
template <int TYPE> struct TmaT { static constexpr int BLK = VQ<TYPE>::BYTES, IPB = 1; };
template <> struct TmaT<12> { static constexpr int BLK = 144, IPB = 4; };
template <> struct TmaT<14> { static constexpr int BLK = 210, IPB = 4; };

// Work item `it` of a chunk in shared memory (`ig`: the item's index in the whole row, for the activations) against
// the token's int8 blocks: Q4_0 / Q8_0 one 32-value block, Q4_K one pair of sub-blocks (as mmvq_q4k_kernel), Q6_K a
// quarter super-block (as mmvq_q6k_kernel).
template <int TYPE>
__device__ __forceinline__ float tma_item(const uint8_t* row, int it, int ig, const int8_t* __restrict__ xq,
                                          const float2* __restrict__ xds) {
  if constexpr (TYPE == 2 || TYPE == 8) {
    uint32_t w[VQ<TYPE>::NW];
    int sh;
    load_words_s<VQ<TYPE>::NW>(row + it * VQ<TYPE>::BYTES, w, sh);
    const int4* xp = reinterpret_cast<const int4*>(xq + (size_t)ig * 32);
    const int4 x0 = __ldg(xp), x1 = __ldg(xp + 1);
    const int xi[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
    return block_dot<TYPE>(w, sh, xi, __ldg(xds + ig));
  } else if constexpr (TYPE == 12) {
    const int j = it & 3;
    const uint4* blk = reinterpret_cast<const uint4*>(row + (it >> 2) * 144);
    const uint4 hd = blk[0], q0 = blk[1 + 2 * j], q1 = blk[2 + 2 * j];
    const int xb = (ig >> 2) * 8 + 2 * j;
    const int4* xp = reinterpret_cast<const int4*>(xq + (size_t)xb * 32);
    const int4 a0 = __ldg(xp), a1 = __ldg(xp + 1), b0 = __ldg(xp + 2), b1 = __ldg(xp + 3);
    const int xa[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
    const int xb8[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
    const float2 da = __ldg(xds + xb), db = __ldg(xds + xb + 1);
    const float d = __half2float(__ushort_as_half((uint16_t)(hd.x & 0xFFFFu)));
    const float dmin = __half2float(__ushort_as_half((uint16_t)(hd.x >> 16)));
    int sc[2], mn[2];
    q4k_scale_min_pair(hd, j, sc, mn);
    const uint32_t qw[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
    int s0 = 0, s1 = 0;
#pragma unroll
    for (int w = 0; w < 8; ++w) {
      s0 = __dp4a((int)(qw[w] & 0x0F0F0F0Fu), xa[w], s0);
      s1 = __dp4a((int)((qw[w] >> 4) & 0x0F0F0F0Fu), xb8[w], s1);
    }
    return d * ((float)sc[0] * da.x * (float)s0 + (float)sc[1] * db.x * (float)s1) -
           dmin * ((float)mn[0] * da.y + (float)mn[1] * db.y);
  } else {  // Q6_K
    const int t = it & 3, hh = t >> 1, pa = t & 1;
    const uint8_t* b = row + (it >> 2) * 210;
    uint32_t ql[9], qh[9];
    int shl, shh;
    load_words_s<9>(b + 64 * hh + 32 * pa, ql, shl);
    load_words_s<9>(b + 128 + 32 * hh, qh, shh);
    const uint16_t* s16 = reinterpret_cast<const uint16_t*>(b + 192 + 8 * hh + 2 * pa);
    const uint32_t s4 = (uint32_t)s16[0] | ((uint32_t)s16[2] << 16);
    const uint16_t dd = *reinterpret_cast<const uint16_t*>(b + 208);
    const int xa = (ig >> 2) * 8 + 4 * hh + pa;
    const int4* pa4 = reinterpret_cast<const int4*>(xq + (size_t)xa * 32);
    const int4 a0 = __ldg(pa4), a1 = __ldg(pa4 + 1), b0 = __ldg(pa4 + 4), b1 = __ldg(pa4 + 5);
    const int xa8[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
    const int xb8[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
    const float da = __ldg(xds + xa).x, db = __ldg(xds + xa + 2).x;
    int sa0 = 0, sa1 = 0, sb0 = 0, sb1 = 0;
#pragma unroll
    for (int w = 0; w < 8; ++w) {
      const uint32_t l = __funnelshift_r(ql[w], ql[w + 1], shl);
      const uint32_t h = __funnelshift_r(qh[w], qh[w + 1], shh) >> (2 * pa);
      const int qlo = (int)__vsubss4((l & 0x0F0F0F0Fu) | ((h & 0x03030303u) << 4), 0x20202020u);
      const int qhi = (int)__vsubss4(((l >> 4) & 0x0F0F0F0Fu) | (((h >> 4) & 0x03030303u) << 4), 0x20202020u);
      if (w < 4) {
        sa0 = __dp4a(qlo, xa8[w], sa0);
        sb0 = __dp4a(qhi, xb8[w], sb0);
      } else {
        sa1 = __dp4a(qlo, xa8[w], sa1);
        sb1 = __dp4a(qhi, xb8[w], sb1);
      }
    }
    const float sca0 = (float)(int8_t)(s4 & 0xFF), sca1 = (float)(int8_t)((s4 >> 8) & 0xFF);
    const float scb0 = (float)(int8_t)((s4 >> 16) & 0xFF), scb1 = (float)(int8_t)(s4 >> 24);
    const float d = __half2float(__ushort_as_half(dd));
    return d * (da * (sca0 * (float)sa0 + sca1 * (float)sa1) + db * (scb0 * (float)sb0 + scb1 * (float)sb1));
  }
}

__device__ __forceinline__ const uint8_t* group_row(const VGroup& g, int row, size_t rb, float** y) {
  const int i = row >= g.row0[2] ? 2 : row >= g.row0[1] ? 1 : 0;
  const int r = row - (i == 2 ? g.row0[2] : i == 1 ? g.row0[1] : 0);
  if (y) *y = (i == 2 ? g.y[2] : i == 1 ? g.y[1] : g.y[0]) + r;
  return (i == 2 ? g.W[2] : i == 1 ? g.W[1] : g.W[0]) + (size_t)r * rb;
}

// CW consumer warps (rows per group). Stage layout: CW rows x chunk_bytes (a row's chunk c: bytes
// [c * chunk_bytes, min(rb, (c + 1) * chunk_bytes))).
// Dynamic shared memory S * 8 * chunk_bytes + 16 (load_words_s reads up to 2 bytes past a chunk).
template <int TYPE, int CW>
__global__ void __launch_bounds__((CW + 1) * 32) mmvq_tma_kernel(VGroup g, uint32_t rb, int K,
                                                                     const int8_t* __restrict__ xq,
                                                                     const float2* __restrict__ xds, NormIn ni,
                                                                     uint32_t chunk_bytes, int chunks, int S) {
  using Q = TmaT<TYPE>;
  extern __shared__ __align__(128) uint8_t tma_smem[];
  __shared__ uint64_t full[kTmaMaxStages], empty[kTmaMaxStages];
  pdl_trigger();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int rows = g.row0[3];
  const int r0 = (int)((int64_t)blockIdx.x * rows / gridDim.x);
  const int r1 = (int)((int64_t)(blockIdx.x + 1) * rows / gridDim.x);
  const int units = (r1 - r0 + CW - 1) / CW * chunks;
  const uint32_t stage_bytes = CW * chunk_bytes;
  if (threadIdx.x == 0) {
    for (int k = 0; k < S; ++k) {
      mbar_init(&full[k], 1);
      mbar_init(&empty[k], CW);
    }
    mbar_init_fence();
  }
  __syncthreads();
  NormPre<1> pre;
  float s = 1.0f;
  if (warp == CW) {  // producer (lane 0), then its share of h like every warp
    if (lane == 0) {
      for (int j = 0; j < units; ++j) {
        const int st = j % S;
        if (j >= S) mbar_wait(&empty[st], (uint32_t)(j / S - 1) & 1u);
        const int grp = j / chunks, c = j - grp * chunks;
        const uint32_t off = (uint32_t)c * chunk_bytes;
        const uint32_t nb = min(chunk_bytes, rb - off);
        const int row = r0 + grp * CW, nr = min(CW, r1 - row);
        mbar_expect(&full[st], (uint32_t)nr * nb);
        uint8_t* dst = tma_smem + (size_t)st * stage_bytes;
        for (int rr = 0; rr < nr; ++rr)
          bulk_copy(dst + (size_t)rr * chunk_bytes, group_row(g, row + rr, rb, nullptr) + off, nb, &full[st]);
      }
    }
    __syncwarp();
    pdl_wait();
    if (ni.ssq) {
      norm_prefetch<1>(ni, lane, pre);
      s = norm_scale_of(ni, pre.sp[0]);
      const float sv[1] = {s};
      norm_write_h<1>(ni, pre, sv, lane);
    }
    return;
  }
  pdl_wait();
  if (ni.ssq) {
    norm_prefetch<1>(ni, lane, pre);
    s = norm_scale_of(ni, pre.sp[0]);
  }
  float acc = 0.0f;
  for (int j = 0; j < units; ++j) {
    const int st = j % S;
    const int grp = j / chunks, c = j - grp * chunks;
    const int row = r0 + grp * CW + warp;
    mbar_wait(&full[st], (uint32_t)(j / S) & 1u);
    if (row < r1) {
      const uint32_t off = (uint32_t)c * chunk_bytes;
      const int nit = (int)(min(chunk_bytes, rb - off) / Q::BLK) * Q::IPB;
      const int it0 = (int)(off / Q::BLK) * Q::IPB;
      const uint8_t* base = tma_smem + (size_t)st * stage_bytes + (size_t)warp * chunk_bytes;
#pragma unroll 4
      for (int it = lane; it < nit; it += 32) acc += tma_item<TYPE>(base, it, it0 + it, xq, xds);
    }
    __syncwarp();
    if (lane == 0) mbar_arrive(&empty[st]);
    if (c == chunks - 1) {
      if (row < r1) {
        const float v = warp_sum(acc);
        float* y;
        group_row(g, row, rb, &y);
        if (lane == 0) *y = v * s;
      }
      acc = 0.0f;
    }
  }
  if (ni.ssq) {
    const float sv[1] = {s};
    norm_write_h<1>(ni, pre, sv, lane);
  }
}

// set_mmvq_tma (op_test's A/B sweeps): mode -1 the device's choice, else on / off with these sizes.
// Tiles per lane in flight for rearranged Q4_0 rows longer than 4096 (set_mmvq_q4t_unroll; 4, 7 or 14).
int g_q4t_long_u = [] {
  const char* v = std::getenv("TWINFER_CUDA_Q4T_U");
  return v ? std::atoi(v) : 4;
}();
int g_rows = -1;  // set_mmvq_rows: rows per warp of the warp-per-row kernels (0 per type, -1 the environment's)

struct TmaOverride {
  int mode = -1, smem_kb = 0, tile = 0, ctas = 0;
};
TmaOverride g_tma;

constexpr int lcm16(int b) { return b % 16 == 0 ? b : b % 8 == 0 ? 2 * b : b % 4 == 0 ? 4 * b : b % 2 == 0 ? 8 * b : 16 * b; }

// The pipeline where it applies (sm_90, one token, rows 16-byte aligned); false: the caller takes the kernels above.
template <int TYPE, int CW>
bool launch_tma_w(cudaStream_t s, const DeviceInfo& dev, const VGroup& g, size_t rb, int K, const int8_t* xq,
                const float2* xds, const NormIn& ni) {
  const bool on = (g_tma.mode >= 0 ? g_tma.mode : dev.mmvq_tma) == 1;
  if (!on || dev.sm_count <= 0 || rb % 16 != 0 || K % (TYPE == 12 || TYPE == 14 ? 256 : 32) != 0) return false;
  for (int i = 0; i < 3; ++i)
    if (((uintptr_t)g.W[i] & 15) != 0) return false;
  const int smem_kb = g_tma.mode >= 0 && g_tma.smem_kb ? g_tma.smem_kb : dev.tma_smem_kb;
  const int tile = g_tma.mode >= 0 && g_tma.tile ? g_tma.tile : dev.tma_tile;
  const int ctas = g_tma.mode >= 0 && g_tma.ctas ? g_tma.ctas : dev.tma_ctas;
  constexpr int unit = lcm16(TmaT<TYPE>::BLK);  // chunk boundaries: whole blocks, 16-byte aligned
  size_t chunk = std::max<size_t>(unit, (size_t)tile / CW / unit * unit);
  if (chunk >= rb) chunk = rb;
  const int chunks = (int)((rb + chunk - 1) / chunk);
  const size_t stage = (size_t)CW * chunk;
  const size_t budget = std::min((size_t)smem_kb * 1024, dev.max_smem_optin - 1024);
  const int S = (int)std::min<size_t>(kTmaMaxStages, budget / stage);
  if (S < 2) return false;
  const int rows = g.row0[3];
  const int grid = std::max(1, std::min(rows, dev.sm_count * std::max(1, ctas)));
  const size_t smem = (size_t)S * stage + 16;
  static size_t opted = 48 * 1024;  // per instantiation: the largest dynamic size allowed so far
  if (smem > opted) {
    if (cudaFuncSetAttribute(mmvq_tma_kernel<TYPE, CW>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) !=
        cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    opted = smem;
  }
  launch_kernel_smem(dev.pdl_gemv, mmvq_tma_kernel<TYPE, CW>, dim3(grid), dim3((CW + 1) * 32), smem, s, "mmvq_tma launch", g,
                     (uint32_t)rb, K, xq, xds, ni, (uint32_t)chunk, chunks, S);
  return true;
}


template <int TYPE>
bool launch_tma(cudaStream_t s, const DeviceInfo& dev, const VGroup& g, size_t rb, int K, const int8_t* xq,
                const float2* xds, const NormIn& ni) {
  return dev.tma_warps == 16 ? launch_tma_w<TYPE, 16>(s, dev, g, rb, K, xq, xds, ni)
                             : launch_tma_w<TYPE, 8>(s, dev, g, rb, K, xq, xds, ni);
}

// ---- Staged loads: one token, Q4_0 / Q4_K / Q6_K ----
// One row per warp as mmvq_kernel, but the row arrives in chunks (whole blocks, <= kStChunk bytes) through 16-byte
// loads that are coalesced across the warp (lane l takes bytes 16 (l + 32 v)), stored into the warp's slice of
// shared memory and read from there by tma_item; chunk c + 1 is loaded into registers before chunk c is computed.
// The warp-per-row kernels load 4-byte words of 2-byte-aligned blocks, lanes 18 / 210 bytes apart: a Q6_K item
// touched ~14 lines per load instruction (the slowest decode product, 1.8 TB/s on an H100).
template <int TYPE> struct StT { static constexpr int CHUNK = 2304; };  // Q4_0 / Q4_K: a 4096-long row
template <> struct StT<14> { static constexpr int CHUNK = 3360; };      // Q6_K: 16 super-blocks, a 4096-long row
template <int TYPE> __host__ __device__ constexpr int st_vec() { return (StT<TYPE>::CHUNK / 16 + 31) / 32; }  // 16-byte loads per lane

template <int TYPE>
__global__ void __launch_bounds__(kWarps * 32, TYPE == 2 ? 4 : 3) mmvq_st_kernel(VGroup g, uint32_t rb, int K,
                                                              const int8_t* __restrict__ xq,
                                                              const float2* __restrict__ xds, NormIn ni,
                                                              uint32_t chunk_bytes, int chunks) {
  using Q = TmaT<TYPE>;
  extern __shared__ __align__(128) uint8_t tma_smem[];
  pdl_trigger();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row = blockIdx.x * kWarps + warp;
  const bool active = row < g.row0[3];
  if (!active && !ni.ssq) return;
  NormPre<1> pre;
  const int rr = active ? row : 0;
  const int i = rr >= g.row0[2] ? 2 : rr >= g.row0[1] ? 1 : 0;
  const int r = rr - (i == 2 ? g.row0[2] : i == 1 ? g.row0[1] : 0);
  const uint4* wrow = reinterpret_cast<const uint4*>((i == 2 ? g.W[2] : i == 1 ? g.W[1] : g.W[0]) + (size_t)r * rb);
  uint8_t* sm = tma_smem + (size_t)warp * (chunk_bytes + 16);
  const int nch = active ? chunks : 0;
  constexpr int kStVec = st_vec<TYPE>();
  uint4 v[kStVec];
  auto load = [&](int c) {
    const uint32_t off = (uint32_t)c * chunk_bytes;
    const int nv = (int)(min(chunk_bytes, rb - off) / 16);
    const uint4* src = wrow + off / 16;
#pragma unroll
    for (int k = 0; k < kStVec; ++k)
      if (lane + 32 * k < nv) v[k] = __ldg(src + lane + 32 * k);
  };
  if (nch > 0) load(0);
  wait_prefetch<1>(ni, lane, pre);
  float acc = 0.0f;
  for (int c = 0; c < nch; ++c) {
    const uint32_t off = (uint32_t)c * chunk_bytes;
    const uint32_t nbytes = min(chunk_bytes, rb - off);
    const int nv = (int)(nbytes / 16);
    __syncwarp();  // the previous chunk's reads are done
#pragma unroll
    for (int k = 0; k < kStVec; ++k)
      if (lane + 32 * k < nv) reinterpret_cast<uint4*>(sm)[lane + 32 * k] = v[k];
    __syncwarp();
    if (c + 1 < nch) load(c + 1);  // in flight while this chunk is computed
    const int nit = (int)(nbytes / Q::BLK) * Q::IPB;
    const int it0 = (int)(off / Q::BLK) * Q::IPB;
#pragma unroll 1
    for (int it = lane; it < nit; it += 32) acc += tma_item<TYPE>(sm, it, it0 + it, xq, xds);
  }
  float a1[1][1] = {{acc}};
  epilogue<1, 1>(g, i, r, lane, active, a1, ni, pre);
}

template <int TYPE>
bool launch_st(cudaStream_t s, const DeviceInfo& dev, const VGroup& g, size_t rb, int K, const int8_t* xq,
               const float2* xds, const NormIn& ni) {
  if constexpr (TYPE != 2 && TYPE != 12 && TYPE != 14) {
    return false;
  } else {
    const int mode = g_tma.mode >= 0 ? g_tma.mode : dev.mmvq_tma;
    const bool want = mode == 2 || ((mode == 3 || mode == 4) && TYPE == 14) || (mode == 4 && K > 4096);
    if (!want || rb % 16 != 0 || K % (TYPE == 12 || TYPE == 14 ? 256 : 32) != 0) return false;
    for (int i = 0; i < 3; ++i)
      if (((uintptr_t)g.W[i] & 15) != 0) return false;
    constexpr int unit = lcm16(TmaT<TYPE>::BLK);
    size_t chunk = (size_t)StT<TYPE>::CHUNK / unit * unit;
    if (chunk >= rb) chunk = rb;
    const int chunks = (int)((rb + chunk - 1) / chunk);
    const size_t smem = (size_t)kWarps * (chunk + 16);
    const dim3 grid(ceil_div(g.row0[3], kWarps)), block(kWarps * 32);
    launch_kernel_smem(dev.pdl_gemv, mmvq_st_kernel<TYPE>, grid, block, smem, s, "mmvq_st launch", g, (uint32_t)rb, K,
                       xq, xds, ni, (uint32_t)chunk, chunks);
    return true;
  }
}

// CW warps per CTA (kWarps, or 32 / R for norm_out_epilogue: then every CTA is one 32-row block).
template <int TYPE, int NC, int R, int CW = kWarps>
void launch_r(cudaStream_t s, bool pdl, const VGroup& g, size_t rb, int K, const int8_t* xq, const float2* xds,
              const NormIn& ni, const NormOut& no = NormOut()) {
  const dim3 grid(ceil_div(g.row0[3], CW * R)), block(CW * 32);
  if constexpr (TYPE == 12) launch_kernel(pdl, mmvq_q4k_kernel<NC, R, CW>, grid, block, s, g, rb, K, xq, xds, ni, no);
  else if constexpr (TYPE == kQ4_0T) {
    const int u = K > 4096 && CW == kWarps ? g_q4t_long_u : 4;  // 7 / 14 need more than the 64 registers of CW = 32
    if constexpr (CW == kWarps) {
      if (u == 14) launch_kernel(pdl, mmvq_q4t_kernel<NC, R, 14>, grid, block, s, g, rb, K, xq, xds, ni, no);
      else if (u == 7) launch_kernel(pdl, mmvq_q4t_kernel<NC, R, 7>, grid, block, s, g, rb, K, xq, xds, ni, no);
      else launch_kernel(pdl, mmvq_q4t_kernel<NC, R, 4>, grid, block, s, g, rb, K, xq, xds, ni, no);
    } else {
      launch_kernel(pdl, mmvq_q4t_kernel<NC, R, 4, CW>, grid, block, s, g, rb, K, xq, xds, ni, no);
    }
  }
  else if constexpr (TYPE == 14) launch_kernel(pdl, mmvq_q6k_kernel<NC, R>, grid, block, s, g, rb, K, xq, xds, ni);
  else launch_kernel(pdl, mmvq_kernel<TYPE, NC, R, CW>, grid, block, s, g, rb, K, xq, xds, ni, no);
  TWC_LAUNCHED("mmvq");
}

// Two rows per warp for Q8_0 and Q4_K where every weight's row count is even (a warp's rows must belong to one
// weight), else one. H100, µs per 8B layer at n=1, two rows / one (bench/NOTES.md run 14): Q4_K 69.5 / 76.7,
// Q8_0 98.8 / 100.5, Q4_0 65.6 / 64.1 (so one there). TWINFER_CUDA_MMVQ_ROWS=1|2 forces one choice (A/B).
// Opt-in (TWINFER_CUDA_MMVQ_GROUPS=1): on an H100 it made Q4_0 decode slower (tg128 224 vs 328 tok/s, bench/NOTES.md
// run 17): a warp's loads then touch 32 different lines per instruction (lanes 144 / 272 bytes apart) where the
// 4-byte kernel's touch 5, and the activations likewise.
bool mmvq_groups_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("TWINFER_CUDA_MMVQ_GROUPS");
    return v && v[0] == '1';
  }();
  return on;
}

// The 16-byte group kernel where rows are whole groups, 16-byte aligned, and every weight's rows split into the
// warps' R-row sets; false: the caller takes the 4-byte-load kernel.
template <int TYPE, int NC>
bool launch_groups(cudaStream_t s, const VGroup& g, size_t rb, int K, const int8_t* xq, const float2* xds) {
  if (!mmvq_groups_enabled() || K % 256 != 0 || rb % 16 != 0) return false;
  for (int i = 0; i < 3; ++i)
    if (((uintptr_t)g.W[i] & 15) != 0) return false;
  const int ng = K / 256;
  const int R = ng % 16 == 0 ? 2 : 4;  // 32 items per warp for K = 4096, 224 (7 per lane) for K = 14336
  for (int i = 0; i < 3; ++i)
    if (g.M[i] % R != 0) return false;
  const int grid = ceil_div(g.row0[3], kWarps * R);
  // U: a second item in flight where a lane has several (R = 4) and the registers allow it (Q4_0, one token).
  if (R == 2) mmvq_g_kernel<TYPE, NC, 2, 1><<<grid, kWarps * 32, 0, s>>>(g, rb, K, xq, xds);
  else mmvq_g_kernel<TYPE, NC, 4, (TYPE == 2 && NC == 1 ? 2 : 1)><<<grid, kWarps * 32, 0, s>>>(g, rb, K, xq, xds);
  TWC_LAUNCHED("mmvq (16-byte groups)");
  return true;
}

template <int TYPE>
bool two_rows(const VGroup& g) {
  static const int env_rows = [] {
    const char* v = std::getenv("TWINFER_CUDA_MMVQ_ROWS");
    return v && (v[0] == '1' || v[0] == '2') ? v[0] - '0' : 0;
  }();
  const int forced = g_rows >= 0 ? g_rows : env_rows;
  const bool two = forced ? forced == 2 : TYPE != 2 && TYPE != 14 && TYPE != kQ4_0T;
  return two && g.M[0] % 2 == 0 && g.M[1] % 2 == 0 && g.M[2] % 2 == 0;
}

// no: the warp-per-row kernel with norm_out_epilogue (mmvq checked that it applies: one token, Q4_0 / Q8_0 / Q4_K).
template <int TYPE, int NC>
void launch(cudaStream_t s, const DeviceInfo& dev, const VGroup& g, size_t rb, int K, const int8_t* xq,
            const float2* xds, const NormIn& ni, const NormOut* no) {
  const bool pdl = dev.pdl_gemv;
  if constexpr (NC == 1 && TYPE != 14) {
    if (no) {
      if (two_rows<TYPE>(g)) launch_r<TYPE, 1, 2, 16>(s, pdl, g, rb, K, xq, xds, ni, *no);
      else launch_r<TYPE, 1, 1, 32>(s, pdl, g, rb, K, xq, xds, ni, *no);
      return;
    }
  }
  if constexpr (NC == 1 && TYPE != kQ4_0T) {
    if (launch_tma<TYPE>(s, dev, g, rb, K, xq, xds, ni)) return;
    if (launch_st<TYPE>(s, dev, g, rb, K, xq, xds, ni)) return;
  }
  if constexpr (TYPE == 2 || TYPE == 8) {
    if (!ni.ssq && launch_groups<TYPE, NC>(s, g, rb, K, xq, xds)) return;
  }
  if (two_rows<TYPE>(g)) launch_r<TYPE, NC, 2>(s, pdl, g, rb, K, xq, xds, ni);
  else launch_r<TYPE, NC, 1>(s, pdl, g, rb, K, xq, xds, ni);
}

template <int TYPE>
void launch_nc(cudaStream_t s, const DeviceInfo& dev, const VGroup& g, size_t rb, int K, const int8_t* xq,
               const float2* xds, int n, const NormIn& ni, const NormOut* no) {
  switch (n) {
    case 1: launch<TYPE, 1>(s, dev, g, rb, K, xq, xds, ni, no); break;
    default: launch<TYPE, 2>(s, dev, g, rb, K, xq, xds, ni, nullptr); break;
  }
}

}  // namespace

void set_mmvq_tma(int mode, int smem_kb, int tile, int ctas) { g_tma = TmaOverride{mode, smem_kb, tile, ctas}; }
void set_mmvq_rows(int rows) { g_rows = rows; }
void set_mmvq_q4t_unroll(int u) { g_q4t_long_u = u; }

bool mmvq_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("TWINFER_CUDA_DP4A");
    return !(v && v[0] == '0');
  }();
  return on;
}

// Where it measured faster than the tensor-core decode kernel (H100, op_test, µs per 8B layer, this / FP16 mma):
// Q4_0 n=1 65.2 / 80.4, n=2 75.1 / 81.3, n=8 190 / 89; Q8_0 n=1 102.2 / 112.6, n=2 119.4 / 111.6 (bench/NOTES.md
// run 11). With more tokens each lane's int8 products of every token outgrow the FP16 tile's fixed cost.
// Q4_K: n=1 75.6 / 100.3, n=2 114.0 / 100.6 (run 12b).
// Q6_K: the integer-dot kernel at n = 1 (its rows need only 2-byte alignment; TWINFER_CUDA_Q6K_DP4A=0: the FP16 one).
bool mmvq_supported(const Tensor& W, int n) {
  static const bool q6k = [] {
    const char* v = std::getenv("TWINFER_CUDA_Q6K_DP4A");
    return !(v && v[0] == '0');
  }();
  const int max_n = W.type == 2 ? 2 : W.type == 8 || W.type == 12 || (W.type == 14 && q6k) ? 1 : 0;
  const bool kq = W.type == 12 || W.type == 14;
  const size_t rb = row_bytes(W.type, W.ne0);
  return mmvq_enabled() && n >= 1 && n <= max_n && W.ne0 % (kq ? 256 : 32) == 0 &&
         (W.type == 14 || rb % 16 == 0) && W.ne1 < (1 << 28) && W.ne0 < (1 << 28);
}

bool mmvq(cudaStream_t s, const DeviceInfo& dev, MatmulScratch& scratch, const Tensor* const* W, float* const* y, int count,
          const float* x, const float* up, int n, const NormOut* no) {
  const int K = (int)W[0]->ne0;
  if (no) {  // norm_out_epilogue: one weight whose rows are the norm's whole row, 32-row CTAs, no split norm as input
    const bool pre_norm = !up && scratch.pre_x == x && scratch.pre_norm.ssq;
    if (count != 1 || n != 1 || W[0]->type == 14 || W[0]->ne1 % 32 != 0 || W[0]->ne1 != no->dim || pre_norm)
      return false;
  }
  const int64_t blocks = (int64_t)n * (K / 32);
  const size_t qbytes = ((size_t)n * K + 15) / 16 * 16;
  const int8_t* xq;
  const float2* xds;
  NormIn ni;
  if (!up && scratch.pre_x == x && scratch.pre_n == n && scratch.pre_k == K && (scratch.nq.ptr || scratch.pre_q)) {
    // the norm that wrote x quantized it too (elementwise.cu), or a split norm's u (norm_fused.cuh): scaled by s
    xq = scratch.pre_q ? scratch.pre_q : (const int8_t*)scratch.nq.ptr;
    xds = (const float2*)((const char*)xq + qbytes);
    ni = scratch.pre_norm;
  } else {
    char* buf = (char*)scratch.xq.get(qbytes + (size_t)blocks * sizeof(float2));
    if (!buf) return false;
    xq = (const int8_t*)buf;
    xds = (const float2*)(buf + qbytes);
    launch_kernel(dev.pdl_gemv, quantize_q8_kernel, dim3((unsigned)((blocks + 7) / 8)), dim3(256), s, x, up, blocks,
                  (int8_t*)buf, (float2*)(buf + qbytes));
    TWC_LAUNCHED("quantize_q8");
  }
  VGroup g{};
  g.row0[0] = 0;
  for (int i = 0; i < 3; ++i) {
    const int j = i < count ? i : count - 1;
    g.W[i] = (const uint8_t*)W[j]->data;
    g.y[i] = y[j];
    g.M[i] = (int)W[j]->ne1;
    g.row0[i + 1] = g.row0[i] + (i < count ? (int)W[i]->ne1 : 0);
  }
  const size_t rb = row_bytes(W[0]->type, K);
  if (kernel_type(*W[0]) == kQ4_0T) launch_nc<kQ4_0T>(s, dev, g, rb, K, xq, xds, n, ni, no);
  else if (W[0]->type == 2) launch_nc<2>(s, dev, g, rb, K, xq, xds, n, ni, no);
  else if (W[0]->type == 12) launch_nc<12>(s, dev, g, rb, K, xq, xds, n, ni, no);
  else if (W[0]->type == 14) launch_nc<14>(s, dev, g, rb, K, xq, xds, n, ni, nullptr);
  else launch_nc<8>(s, dev, g, rb, K, xq, xds, n, ni, no);
  return true;
}

}  // namespace cuda
}  // namespace tw
