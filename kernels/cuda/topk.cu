// Top-k of logit rows on the device: what greedy and top-k sampling need from a step, without copying n_vocab floats
// per sequence to the host (64 rows x 128256 logits = 33 MB per batched decode step, 6.2 ms of a 29 ms step on an
// H100, bench/NOTES.md run 8).
//
// Exact selection with a total order: larger value first, lower id first on ties, NaN as -Infinity (the order of
// the SDK's sampler, packages/sdk/src/sampling/select.ts). Rounds of segment reductions: a CTA takes a segment of
// up to SEG candidates of one row (registers, PER per thread) and extracts its k best by k block-wide argmax passes;
// the k bests of every segment are the next round's candidates, until one segment is left. For k <= 256 each round
// shrinks a row at least 16x (one or two rounds for a 128k vocabulary).
#include <cfloat>
#include <climits>

#include "cuda_common.cuh"
#include "cuda_ops.h"

namespace tw {
namespace cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kPer = 16;
constexpr int kSeg = kThreads * kPer;  // 4096 candidates per CTA

// (va, ia) ranks before (vb, ib)
__device__ __forceinline__ bool better(float va, int ia, float vb, int ib) {
  return va > vb || (va == vb && ia < ib);
}

// Round: in = rows x n_in candidates (ids == nullptr: the ids are the column indices, the values raw logits);
// out = rows x n_seg x k (id -1 marks "no candidate": a segment with fewer than k entries).
__global__ void __launch_bounds__(kThreads) topk_round(const float* __restrict__ in_v, const int32_t* __restrict__ in_i,
                                                       int n_in, int k, float* __restrict__ out_v,
                                                       int32_t* __restrict__ out_i) {
  const int row = blockIdx.y, seg = blockIdx.x, n_seg = gridDim.x;
  const float* rv = in_v + (size_t)row * n_in;
  const int32_t* ri = in_i ? in_i + (size_t)row * n_in : nullptr;
  const int base = seg * kSeg;
  float v[kPer];
  int id[kPer];
  uint32_t live = 0;  // bit j: v[j] / id[j] still a candidate
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    const int at = base + j * kThreads + threadIdx.x;  // coalesced
    v[j] = -INFINITY;
    id[j] = INT_MAX;
    if (at < n_in) {
      const int i = ri ? ri[at] : at;
      if (i >= 0) {
        const float x = rv[at];
        v[j] = x != x ? -INFINITY : x;
        id[j] = i;
        live |= 1u << j;
      }
    }
  }
  __shared__ float wv[kThreads / 32];
  __shared__ int wi[kThreads / 32];
  __shared__ int winner;
  float* ov = out_v + ((size_t)row * n_seg + seg) * k;
  int32_t* oi = out_i + ((size_t)row * n_seg + seg) * k;
  for (int r = 0; r < k; ++r) {
    // this thread's best live entry
    float bv = -INFINITY;
    int bi = INT_MAX;
#pragma unroll
    for (int j = 0; j < kPer; ++j)
      if (((live >> j) & 1) && better(v[j], id[j], bv, bi)) bv = v[j], bi = id[j];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ov2 = __shfl_xor_sync(0xffffffffu, bv, o);
      const int oi2 = __shfl_xor_sync(0xffffffffu, bi, o);
      if (better(ov2, oi2, bv, bi)) bv = ov2, bi = oi2;
    }
    if ((threadIdx.x & 31) == 0) wv[threadIdx.x >> 5] = bv, wi[threadIdx.x >> 5] = bi;
    __syncthreads();
    if (threadIdx.x < 32) {
      float cv = threadIdx.x < kThreads / 32 ? wv[threadIdx.x] : -INFINITY;
      int ci = threadIdx.x < kThreads / 32 ? wi[threadIdx.x] : INT_MAX;
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) {
        const float ov2 = __shfl_xor_sync(0xffffffffu, cv, o);
        const int oi2 = __shfl_xor_sync(0xffffffffu, ci, o);
        if (better(ov2, oi2, cv, ci)) cv = ov2, ci = oi2;
      }
      if (threadIdx.x == 0) {
        winner = ci;
        ov[r] = cv;
        oi[r] = ci == INT_MAX ? -1 : ci;  // INT_MAX: the segment ran out of candidates
      }
    }
    __syncthreads();
    const int w = winner;
    if (w == INT_MAX) {  // nothing left in this segment: the remaining slots say so
      for (int q = r + 1 + (int)threadIdx.x; q < k; q += kThreads) ov[q] = -INFINITY, oi[q] = -1;
      return;
    }
    // ids are distinct within a row, so exactly one thread holds the winner
#pragma unroll
    for (int j = 0; j < kPer; ++j)
      if (id[j] == w) live &= ~(1u << j);
    __syncthreads();  // `winner` is rewritten by the next pass
  }
}

}  // namespace

int topk_max_k() { return 256; }

size_t topk_scratch_bytes(int rows, int width, int k) {
  const size_t segs = (size_t)ceil_div(width, kSeg);
  return 2 * (size_t)rows * segs * k * (sizeof(float) + sizeof(int32_t));
}

void topk(cudaStream_t s, const float* x, int rows, int width, int k, void* scratch, float* out_v, int32_t* out_i) {
  if (rows <= 0) return;
  // ping-pong buffers for the intermediate rounds
  const size_t half = (size_t)rows * ceil_div(width, kSeg) * k;
  float* bv[2] = {(float*)scratch, (float*)scratch + half};
  int32_t* bi[2] = {(int32_t*)(bv[1] + half), (int32_t*)(bv[1] + half) + half};
  const float* in_v = x;
  const int32_t* in_i = nullptr;
  int n = width, p = 0;
  for (;;) {
    const int segs = ceil_div(n, kSeg);
    float* ov = segs == 1 ? out_v : bv[p];
    int32_t* oi = segs == 1 ? out_i : bi[p];
    topk_round<<<dim3(segs, rows), kThreads, 0, s>>>(in_v, in_i, n, k, ov, oi);
    TWC_LAUNCHED("topk_round");
    if (segs == 1) return;
    in_v = ov, in_i = oi, n = segs * k, p ^= 1;
  }
}

}  // namespace cuda
}  // namespace tw
