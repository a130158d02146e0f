// The RMSNorm before the decode products (one or two tokens), split so that no kernel reduces a whole row
// (bench/NOTES.md run 18).
//
// h = x * s * w with s = 1 / sqrt(mean(x^2) + eps) is only ever multiplied by the next weights, and W h = s W (x w):
// the scalar s can be applied to the product's result. So a kernel of one warp per 32-value block (norm_block: the
// residual add too) forms u = x * w, its int8 blocks for the integer-dot kernels (mmvq.cu), u in F32 for the F16
// GEMV (gemv.cu) and the block's sum of squares; the products (Q/K/V, gate/up) read u, sum the block sums for s and
// scale their rows by it, and write h itself, so anything else that reads h afterwards sees the norm's output.
#pragma once
#include "cuda_common.cuh"
#include "cuda_ops.h"

namespace tw {
namespace cuda {

// Block gb's value of this lane after the residual add (xv, written back when `add`), times w (wv): u's int8 block,
// its F32 values and the block's sum of squares.
__device__ __forceinline__ void norm_block_out(const NormOut& no, int gb, size_t e, int lane, float xv, float wv,
                                               bool add) {
  if (add) no.x[e] = xv;
  const float u = xv * wv;
  const float amax = warp_max(fabsf(u));
  const float d = amax / 127.0f;
  const int q = amax == 0.0f ? 0 : __float2int_rn(u / d);
  const float sq = warp_sum((float)q);
  const float ss = warp_sum(xv * xv);
  no.q[e] = (int8_t)q;
  no.uf[e] = u;
  if (lane == 0) {
    no.ds[gb] = make_float2(d, d * sq);
    no.ssq[gb] = ss;
  }
}
// One warp per 32-value block of x (all tokens): x += y (y may be null), u = x * w as int8 blocks and in F32, and
// the block's sum of squares. Launched where the add + RMSNorm kernel ran (one CTA for a whole row, ~4-6 us per
// decode norm on an H100); here every block is one L2 round trip in parallel and the row's sum is left to the
// products that read u.
__device__ __forceinline__ void norm_block(const NormOut& no, int gb, int lane) {
  const int nblk = no.dim >> 5;
  const int c = gb / nblk, b = gb - c * nblk;
  const size_t e = (size_t)c * no.dim + 32 * b + lane;
  float xv = no.x[e];
  const float wv = no.w[32 * b + lane];
  if (no.y) xv += no.y[e];  // add_kernel's x + y
  norm_block_out(no, gb, e, lane, xv, wv, no.y != nullptr);
}

// Consumer side: this lane's share of token c's block sums (blocks lane, lane + 32, ...), all loads in flight at once.
// Called right after pdl_wait, while the first weights are still on their way, so the L2 round trip costs nothing.
__device__ __forceinline__ float ssq_partial(const NormIn& ni, int c, int lane) {
  const int nblk = ni.dim >> 5;
  const float* p = ni.ssq + (size_t)c * nblk;
  float v[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) v[k] = lane + 32 * k < nblk ? __ldcg(p + lane + 32 * k) : 0.0f;
  float t = ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
  for (int j = lane + 256; j < nblk; j += 32) t += __ldcg(p + j);
  return t;
}
// s of the token from the lanes' partials: the same bits in every warp of every kernel that reads these sums.
__device__ __forceinline__ float norm_scale_of(const NormIn& ni, float partial) {
  return 1.0f / sqrtf(warp_sum(partial) / ni.dim + ni.eps);  // rms_norm_v4_kernel's expression
}

// s of token c in one call (kernels that have no earlier point to prefetch at).
__device__ __forceinline__ float norm_scale(const NormIn& ni, int c, int lane) {
  return norm_scale_of(ni, ssq_partial(ni, c, lane));
}

// What a consumer loads right after its pdl_wait: the lane's share of the block sums of each token and, for the warps
// that write h, this lane's first x and w values.
template <int NC>
struct NormPre {
  float sp[NC];
  float hx, hw;
};
template <int NC>
__device__ __forceinline__ void norm_prefetch(const NormIn& ni, int lane, NormPre<NC>& p) {
#pragma unroll
  for (int c = 0; c < NC; ++c) p.sp[c] = ssq_partial(ni, c, lane);
  const int e = (blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5)) * 32 + lane;
  p.hx = p.hw = 0.0f;
  if (ni.h && e < NC * ni.dim) {
    p.hx = __ldcg(ni.x + e);
    p.hw = ni.w[e >= ni.dim ? e - ni.dim : e];
  }
}
// After the products: h = x * s * w, spread over all warps of the grid (every warp calls it).
template <int NC>
__device__ __forceinline__ void norm_write_h(const NormIn& ni, const NormPre<NC>& p, const float (&s)[NC], int lane) {
  if (!ni.h) return;
  const int warps = gridDim.x * (blockDim.x >> 5);
  int e = (blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5)) * 32 + lane;
  if (e < NC * ni.dim) ni.h[e] = p.hx * (e >= ni.dim ? s[NC - 1] : s[0]) * p.hw;
  for (e += warps * 32; e < NC * ni.dim; e += warps * 32) {
    const int c = e >= ni.dim ? 1 : 0;  // NC <= 2
    ni.h[e] = __ldcg(ni.x + e) * (c ? s[NC - 1] : s[0]) * ni.w[e - c * ni.dim];
  }
}

}  // namespace cuda
}  // namespace tw
