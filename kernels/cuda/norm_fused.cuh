// The RMSNorm between two decode products, folded into them (one or two tokens; bench/NOTES.md run 18).
//
// h = x * s * w with s = 1 / sqrt(mean(x^2) + eps) is only ever multiplied by the next weights, and W h = s W (x w):
// the scalar s can be applied to the product's result. So the product that writes the residual stream x (the
// attention output or FFN-down projection: x += W a) finishes the norm's work per 32-row block of x in its epilogue —
// the warp that completes a block (a counter per block, the threadfence-reduction pattern) forms u = x * w, its int8
// blocks for the integer-dot kernels (mmvq.cu), u itself in F32 for the F16 GEMV (gemv.cu) and the block's sum of
// squares — and the next products (Q/K/V, gate/up) read u, sum the 128 block sums for s and scale their rows by it.
// They also write h itself, so anything else that reads h afterwards sees the norm's output. The separate add +
// RMSNorm launch (one CTA on one SM while the rest of the GPU waits, twice per layer) disappears.
#pragma once
#include "cuda_common.cuh"
#include "cuda_ops.h"

namespace tw {
namespace cuda {

// Producer side: the warp that wrote rows r..r+R-1 of x (all tokens c < NC) counts them into their 32-row block; the
// warp that completes a block finalizes it. R <= 32 and r % R == 0, so a warp's rows lie in one block.
template <int NC, int R>
__device__ __forceinline__ void res_norm_rows(const ResNorm& rn, int r, int lane) {
  __threadfence();  // this warp's x rows are visible GPU-wide before the count says so
  unsigned t = 0;
  if (lane == 0) t = atomicAdd(rn.cnt + (r >> 5), (unsigned)R);
  t = __shfl_sync(0xffffffffu, t, 0);
  if (t + R != 32) return;
  __threadfence();  // the other warps' rows of this block, read below
  const int b = r >> 5, nblk = rn.dim >> 5;
  const int e = 32 * b + lane;
  const float wv = rn.w[e];
#pragma unroll
  for (int c = 0; c < NC; ++c) {
    const float xv = __ldcg(rn.x + (size_t)c * rn.dim + e);  // L2: written by other SMs in this kernel
    const float u = xv * wv;
    const float amax = warp_max(fabsf(u));
    const float d = amax / 127.0f;
    const int q = amax == 0.0f ? 0 : __float2int_rn(u / d);
    const float sq = warp_sum((float)q);
    const float ss = warp_sum(xv * xv);
    rn.q[(size_t)c * rn.dim + e] = (int8_t)q;
    rn.uf[(size_t)c * rn.dim + e] = u;
    if (lane == 0) {
      rn.ds[(size_t)c * nblk + b] = make_float2(d, d * sq);
      rn.ssq[(size_t)c * nblk + b] = ss;
    }
  }
  if (lane == 0) rn.cnt[b] = 0;  // ready for the next product (kernels of a stream do not overlap here)
}

// Consumer side: s of token c (every lane gets it). Lane l sums blocks l, l + 32, ... in order, then the warp: the
// same bits in every warp of every kernel that reads these sums.
__device__ __forceinline__ float norm_scale(const NormIn& ni, int c, int lane) {
  const int nblk = ni.dim >> 5;
  float t = 0.0f;
  for (int j = lane; j < nblk; j += 32) t += __ldcg(ni.ssq + (size_t)c * nblk + j);
  t = warp_sum(t);
  return 1.0f / sqrtf(t / ni.dim + ni.eps);  // rms_norm_v4_kernel's expression
}

// Consumer side, after its products: h = x * s * w (the norm's output, for any later reader), spread over all warps
// of the grid. Every warp calls it (after pdl_wait).
template <int NC>
__device__ __forceinline__ void norm_write_h(const NormIn& ni, const float (&s)[NC], int lane) {
  if (!ni.h) return;
  const int warps = gridDim.x * (blockDim.x >> 5);
  const int gw = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  for (int e = gw * 32 + lane; e < NC * ni.dim; e += warps * 32) {
    const int c = e >= ni.dim ? 1 : 0;  // NC <= 2
    const int k = e - c * ni.dim;
    ni.h[e] = __ldcg(ni.x + e) * (c ? s[NC - 1] : s[0]) * ni.w[k];
  }
}

}  // namespace cuda
}  // namespace tw
