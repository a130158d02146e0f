// RoPE fused with the KV-cache write, and attention over the paged KV cache.
//
// Attention is one kernel for decode and prefill: a CTA owns (query tokens, KV head, split of the context) and all
// the query heads that share that KV head (grouped-query attention reads each K/V row once per group); for prompt
// chunks it takes 4 consecutive tokens of the sequence so each staged K/V tile serves 4 queries. Long contexts
// are split across CTAs (flash-decoding): each split keeps a running max / sum / weighted V (online softmax) over
// tiles of positions and a small combine kernel merges the splits. K/V rows are gathered through the block table.
#include <algorithm>
#include <vector>
#include <cmath>
#include <cstdlib>

#include "cuda_common.cuh"
#include "cuda_ops.h"

namespace tw {
namespace cuda {

namespace {

template <typename T> __device__ __forceinline__ float to_f(T v);
template <> __device__ __forceinline__ float to_f<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_f<__half>(__half v) { return __half2float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }

// One CTA per (token, head): blockIdx.y < n_head rotates a query head, the next n_head_kv rotate a key head and
// write it to the cache, the last copies the token's V row to the cache. (One CTA per token left a decode step with
// a single CTA doing 40 heads' sincos serially.) NORMAL rotates (x[2i], x[2i+1]); NEOX rotates (x[i], x[i + d/2]).
// theta_i = pos * freq_scale * base^(-2i/d), as ggml's rope (ext_factor 0, attn_factor 1).
template <typename KV>
__global__ void rope_store_kernel(float* q, float* k, const float* v, const int32_t* pos, const int32_t* slot,
                                  KV* kc, KV* vc, int n_head, int n_head_kv, int hd, int neox, float theta_scale,
                                  float freq_scale) {
  pdl_trigger();  // lets a following matmul start streaming its weights
  const int t = blockIdx.x, hh = blockIdx.y;
  const int half = hd / 2;
  const int kv_dim = n_head_kv * hd;
  const size_t sl = (size_t)slot[t] * kv_dim;
  if (hh == n_head + n_head_kv) {
    for (int j = threadIdx.x; j < kv_dim; j += blockDim.x) vc[sl + j] = from_f<KV>(v[(size_t)t * kv_dim + j]);
    return;
  }
  const float p = (float)pos[t];
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const float theta = p * powf(theta_scale, (float)i) * freq_scale;
    float sn, cs;
    sincosf(theta, &sn, &cs);
    const int i0 = neox ? i : 2 * i;
    const int i1 = neox ? i + half : 2 * i + 1;
    if (hh < n_head) {
      float* x = q + ((size_t)t * n_head + hh) * hd;
      const float a = x[i0], b = x[i1];
      x[i0] = a * cs - b * sn;
      x[i1] = a * sn + b * cs;
    } else {
      const int kh = hh - n_head;
      float* x = k + ((size_t)t * n_head_kv + kh) * hd;
      const float a = x[i0], b = x[i1];
      const float r0 = a * cs - b * sn, r1 = a * sn + b * cs;
      x[i0] = r0;
      x[i1] = r1;
      kc[sl + kh * hd + i0] = from_f<KV>(r0);
      kc[sl + kh * hd + i1] = from_f<KV>(r1);
    }
  }
}

// A 16-byte chunk of cache elements as floats in shared memory.
template <typename KV> struct KVec;
template <> struct KVec<float> {
  static constexpr int N = 4;
  static __device__ __forceinline__ void store(float* d, uint4 v) {
    d[0] = __uint_as_float(v.x), d[1] = __uint_as_float(v.y), d[2] = __uint_as_float(v.z), d[3] = __uint_as_float(v.w);
  }
};
template <> struct KVec<__half> {
  static constexpr int N = 8;
  static __device__ __forceinline__ void store(float* d, uint4 v) {
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&w[i]));
      d[2 * i] = f.x, d[2 * i + 1] = f.y;
    }
  }
};

constexpr int ATHREADS = 128;
constexpr int TILE = 32;
constexpr int MAXACC = 16;  // (heads per KV head) * head_dim / ATHREADS accumulators per thread

struct AttnArgs {
  int n_tokens;
  const float* q;
  const int32_t* pos;
  const int32_t* seq_idx;
  const int32_t* block_tables;
  int blocks_per_seq;
  int block_size;
  int n_head, n_head_kv, hd;
  float scale;
  int chunk;   // positions per split
  int splits;
  float* out;  // [T][n_head*hd] when splits == 1
  float* pm;   // [splits][T][n_head] running max
  float* pl;   // [splits][T][n_head] running sum
  float* pacc; // [splits][T][n_head][hd] unnormalized output
  // Decode kernel with RoPE and the cache write fused (attention_rope): q and k unrotated, slot per token.
  const float* k;
  const float* v;
  const int32_t* slot;
  float theta_scale, freq_scale;
  int neox;
  // Decode kernel: also write out as int8 blocks of 32 with (d, d * sum q) — the activations of the integer-dot
  // output projection (mmvq.cu), computed as its quantization kernel would (nullptr: not wanted).
  int8_t* oq;
  float2* ods;
  // Decode kernel with RoPE fused: request the first chunk's K/V rows below pos before waiting for the previous
  // kernel (TWINFER_CUDA_ATTN_PREFETCH=0: after).
  int prefetch;
  int self_kv;  // decode kernel with RoPE: the token's own K / V row from shared memory (DeviceInfo::attn_self_kv)
};

// A CTA owns QG consecutive query tokens of one sequence (QG = 1 for decode batches, 4 for prompt chunks, so each
// K/V tile staged in shared memory serves 4 tokens) and the G query heads of one KV head: R = QG * G query rows,
// each with its own causal limit.
template <typename KV, int QG>
__global__ void __launch_bounds__(ATHREADS) attn_kernel(AttnArgs a, const KV* __restrict__ kc,
                                                        const KV* __restrict__ vc) {
  pdl_trigger();  // lets a following matmul start streaming its weights
  extern __shared__ float sm[];
  const int G = a.n_head / a.n_head_kv;
  const int R = QG * G;
  const int hd = a.hd;
  const int T = a.n_tokens;
  const int t0 = blockIdx.x * QG, kvh = blockIdx.y, split = blockIdx.z;
  const int nq = min(QG, T - t0);
  float* qs = sm;                      // [R][hd]
  float* ks = qs + R * hd;             // [TILE][hd+1]
  float* vs = ks + TILE * (hd + 1);    // [TILE][hd]
  float* ps = vs + TILE * hd;          // [R][TILE]
  float* mrow = ps + R * TILE;         // [R]
  float* lrow = mrow + R;              // [R]
  float* corr = lrow + R;              // [R]
  __shared__ int qpos[QG];

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int kv_dim = a.n_head_kv * hd;
  int p_end = 0;
  for (int qi = 0; qi < nq; ++qi) p_end = max(p_end, a.pos[t0 + qi] + 1);
  const int begin = split * a.chunk;
  const int end = min(p_end, begin + a.chunk);
  const int32_t* table = a.block_tables + (size_t)a.seq_idx[t0] * a.blocks_per_seq;

  if (tid < QG) qpos[tid] = tid < nq ? a.pos[t0 + tid] : -1;
  for (int i = tid; i < R * hd; i += ATHREADS) {
    const int r = i / hd, d = i - r * hd, qi = r / G, hh = r - qi * G;
    qs[i] = qi < nq ? a.q[((size_t)(t0 + qi) * a.n_head + kvh * G + hh) * hd + d] * a.scale : 0.0f;
  }
  if (tid < R) {
    mrow[tid] = -INFINITY;
    lrow[tid] = 0.0f;
  }
  float acc[MAXACC];
#pragma unroll
  for (int i = 0; i < MAXACC; ++i) acc[i] = 0.0f;
  const int npairs = R * hd;
  __syncthreads();

  for (int p0 = begin; p0 < end; p0 += TILE) {
    const int tl = min(TILE, end - p0);
    if (hd % KVec<KV>::N == 0) {
      // 16-byte loads, up to 4 K and 4 V chunks per thread issued before any is used: the tile costs about one
      // memory round trip (element-wise loads by row cost one per 32 values: 24 us per decode layer, run 4).
      constexpr int VEC = KVec<KV>::N;
      const int cpr = hd / VEC, nch = tl * cpr;
      for (int c0 = 0; c0 < nch; c0 += 4 * ATHREADS) {
        uint4 kr[4], vr[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int c = c0 + tid + i * ATHREADS;
          if (c < nch) {
            const int r = c / cpr, ch = c - r * cpr, p = p0 + r;
            const size_t base =
                ((size_t)table[p / a.block_size] * a.block_size + p % a.block_size) * kv_dim + kvh * hd + ch * VEC;
            kr[i] = __ldg(reinterpret_cast<const uint4*>(kc + base));
            vr[i] = __ldg(reinterpret_cast<const uint4*>(vc + base));
          }
        }
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int c = c0 + tid + i * ATHREADS;
          if (c < nch) {
            const int r = c / cpr, ch = c - r * cpr;
            KVec<KV>::store(ks + r * (hd + 1) + ch * VEC, kr[i]);
            KVec<KV>::store(vs + r * hd + ch * VEC, vr[i]);
          }
        }
      }
    } else {
      for (int r = warp; r < tl; r += ATHREADS / 32) {
        const int p = p0 + r;
        const size_t base = ((size_t)table[p / a.block_size] * a.block_size + p % a.block_size) * kv_dim + kvh * hd;
        for (int d = lane; d < hd; d += 32) {
          ks[r * (hd + 1) + d] = to_f(kc[base + d]);
          vs[r * hd + d] = to_f(vc[base + d]);
        }
      }
    }
    __syncthreads();
    for (int idx = tid; idx < R * tl; idx += ATHREADS) {
      const int r = idx / tl, pi = idx - r * tl;
      float s = -INFINITY;
      if (p0 + pi <= qpos[r / G]) {
        const float* qv = qs + r * hd;
        const float* kv = ks + pi * (hd + 1);
        s = 0.0f;
        for (int d = 0; d < hd; ++d) s += qv[d] * kv[d];
      }
      ps[r * TILE + pi] = s;
    }
    __syncthreads();
    for (int r = warp; r < R; r += ATHREADS / 32) {
      float mx = -INFINITY;
      for (int pi = lane; pi < tl; pi += 32) mx = fmaxf(mx, ps[r * TILE + pi]);
      mx = warp_max(mx);
      const float m_old = mrow[r];
      const float m_new = fmaxf(m_old, mx);
      float sum = 0.0f;
      for (int pi = lane; pi < tl; pi += 32) {
        const float e = m_new == -INFINITY ? 0.0f : expf(ps[r * TILE + pi] - m_new);  // masked: exp(-inf) = 0
        ps[r * TILE + pi] = e;
        sum += e;
      }
      sum = warp_sum(sum);
      if (lane == 0) {
        const float c = m_new == -INFINITY ? 1.0f : expf(m_old - m_new);  // 0 on a row's first live tile
        corr[r] = c;
        lrow[r] = lrow[r] * c + sum;
        mrow[r] = m_new;
      }
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < MAXACC; ++i) {
      const int pidx = tid + i * ATHREADS;
      if (pidx < npairs) {
        const int r = pidx / hd, d = pidx - r * hd;
        float s = acc[i] * corr[r];
        const float* pr = ps + r * TILE;
        for (int pi = 0; pi < tl; ++pi) s += pr[pi] * vs[pi * hd + d];
        acc[i] = s;
      }
    }
    __syncthreads();
  }

  const int h0 = kvh * G;
#pragma unroll
  for (int i = 0; i < MAXACC; ++i) {
    const int pidx = tid + i * ATHREADS;
    if (pidx < npairs) {
      const int r = pidx / hd, d = pidx - r * hd, qi = r / G, hh = r - qi * G;
      if (qi < nq) {
        const size_t o = ((size_t)(t0 + qi) * a.n_head + h0 + hh) * hd + d;
        if (a.splits == 1) a.out[o] = acc[i] / lrow[r];
        else a.pacc[(size_t)split * T * a.n_head * hd + o] = acc[i];
      }
    }
  }
  if (a.splits > 1 && tid < R) {
    const int qi = tid / G, hh = tid - qi * G;
    if (qi < nq) {
      a.pm[((size_t)split * T + t0 + qi) * a.n_head + h0 + hh] = mrow[tid];
      a.pl[((size_t)split * T + t0 + qi) * a.n_head + h0 + hh] = lrow[tid];
    }
  }
}

__global__ void attn_combine(const float* __restrict__ pm, const float* __restrict__ pl,
                             const float* __restrict__ pacc, int splits, int T, int n_head, int hd,
                             float* __restrict__ out) {
  pdl_trigger();  // lets a following matmul start streaming its weights
  const int t = blockIdx.x, h = blockIdx.y;
  float M = -INFINITY;
  for (int s = 0; s < splits; ++s) M = fmaxf(M, pm[((size_t)s * T + t) * n_head + h]);
  float L = 0.0f;
  for (int s = 0; s < splits; ++s) {
    const float m = pm[((size_t)s * T + t) * n_head + h];
    if (m != -INFINITY) L += pl[((size_t)s * T + t) * n_head + h] * expf(m - M);
  }
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float o = 0.0f;
    for (int s = 0; s < splits; ++s) {
      const float m = pm[((size_t)s * T + t) * n_head + h];
      if (m != -INFINITY) o += pacc[(((size_t)s * T + t) * n_head + h) * hd + d] * expf(m - M);
    }
    out[((size_t)t * n_head + h) * hd + d] = o / L;
  }
}

// Decode attention without splits or a combine pass (F16 cache, head_dim 128): one CTA per (token, KV head) with
// the G query heads of that KV head; its 4 warps take interleaved chunks of 32 positions, one position per lane:
// the lane loads its K row with 16 independent 16-byte loads and scores it against the G query rows (shared memory,
// broadcast); online softmax per warp; for V, lane owns 4 of the 128 dimensions and the warp walks the chunk's 32
// rows (each row read once, 256 coalesced bytes); the 4 warps' partial results merge in shared memory. The split
// kernel took 16 us for a 128-token context on an H100 (a chain of dependent round trips and a second launch);
// this one needs about three round trips.
//
// ROPE: the step's rope_store_kv fused in (one launch less per layer, ~8 us at decode): the CTA rotates its G query
// heads and its KV head of token t (rope_store_kernel's arithmetic, so the values are the same), writes K and V to
// the token's cache slot, and only then reads the cache. Valid when no other token of the step reads this token's
// K/V, i.e. every sequence has one token in the step (the host checks). The cache is then written and read in one
// kernel, so its loads are coherent ones (ld.global.cg after __syncthreads), not the read-only path.
template <bool ROPE>
__device__ __forceinline__ uint4 ld_kv16(const uint4* p) {
  if constexpr (ROPE) return __ldcg(p);
  else return __ldg(p);
}
template <bool ROPE>
__device__ __forceinline__ uint2 ld_kv8(const uint2* p) {
  if constexpr (ROPE) return __ldcg(p);
  else return __ldg(p);
}

// PRE (ROPE only; one query head per CTA, where the grid is smaller than the GPU): the prefetch below. Its 48 extra
// live registers would halve the occupancy of the many-CTA batched case, so that one is a separate instantiation.
template <int G, bool ROPE, bool PRE = false>
__global__ void __launch_bounds__(128) attn_decode_kernel(AttnArgs a, const __half* kc, const __half* vc) {
  pdl_trigger();
  constexpr int HD = 128;
  const int t = blockIdx.x, kvh = blockIdx.y;
  // G query heads of this CTA: heads qh0 .. qh0 + G - 1 (blockIdx.z > 0: the KV head's heads split over CTAs)
  const int qh0 = kvh * (a.n_head / a.n_head_kv) + blockIdx.z * G;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  __shared__ float qs[G][HD];
  __shared__ float cm[4][G], cl[4][G];
  __shared__ float cacc[4][G][HD];
  // ROPE: the token's own K and V rows as written to the cache (halves), so the scores and the V sum take them from
  // here rather than a round trip to the cache row this kernel just wrote (with the prefetch, the only loads left
  // after the rotation at contexts of up to 128 positions).
  __shared__ __align__(16) __half kself[ROPE ? HD : 8], vself[ROPE ? HD : 8];
  const bool self_kv = ROPE && a.self_kv;
  // Positions, slots and block tables are copied in before the step's first kernel, never written by one.
  const int pos = a.pos[t];
  const int32_t* table = a.block_tables + (size_t)a.seq_idx[t] * a.blocks_per_seq;
  const int kv_dim = a.n_head_kv * HD;
  // With RoPE fused every sequence has one token here, so the cache rows below pos were written by earlier steps
  // (this kernel writes row pos): the warp's first chunk of K and V rows is requested before the wait, so the two
  // dependent round trips to memory after the rotation (K for the scores, then V) overlap the previous kernel's tail.
  constexpr bool pre = ROPE && PRE;
  const int pp = warp * 32 + lane;
  const int pslot = pre && pp < pos ? table[pp / a.block_size] * a.block_size + pp % a.block_size : 0;
  uint4 kpre[pre ? 16 : 1];
  uint2 vpre[pre ? 32 : 1];
  if constexpr (pre) {
    const uint4* kr = reinterpret_cast<const uint4*>(kc + (size_t)pslot * kv_dim + kvh * HD);
#pragma unroll
    for (int c = 0; c < 16; ++c) kpre[c] = pp < pos ? __ldcg(kr + c) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int j = 0; j < 32; ++j) {
      const int sj = __shfl_sync(0xffffffffu, pslot, j);
      vpre[j] = warp * 32 + j < pos ? __ldcg(reinterpret_cast<const uint2*>(vc + (size_t)sj * kv_dim + kvh * HD) + lane)
                                    : make_uint2(0, 0);
    }
  }
  pdl_wait();  // launched with PDL (DeviceInfo::pdl_gemv): nothing the previous kernel writes is read before this
  if constexpr (ROPE) {
    constexpr int HALF = HD / 2;
    const float p = (float)pos;
    const size_t sl = (size_t)a.slot[t] * kv_dim + kvh * HD;
    // G query heads and the KV head: (G + 1) x 64 rotation pairs, then V
    for (int i = threadIdx.x; i < (G + 1) * HALF; i += 128) {
      const int h = i / HALF, ii = i % HALF;
      const float theta = p * powf(a.theta_scale, (float)ii) * a.freq_scale;
      float sn, cs;
      sincosf(theta, &sn, &cs);
      const int i0 = a.neox ? ii : 2 * ii, i1 = a.neox ? ii + HALF : 2 * ii + 1;
      if (h < G) {
        const float* x = a.q + ((size_t)t * a.n_head + qh0 + h) * HD;
        const float x0 = x[i0], x1 = x[i1];
        qs[h][i0] = (x0 * cs - x1 * sn) * a.scale;
        qs[h][i1] = (x0 * sn + x1 * cs) * a.scale;
      } else {
        const float* x = a.k + ((size_t)t * a.n_head_kv + kvh) * HD;
        const float x0 = x[i0], x1 = x[i1];
        __half* kw = const_cast<__half*>(kc) + sl;
        const __half k0 = __float2half_rn(x0 * cs - x1 * sn), k1 = __float2half_rn(x0 * sn + x1 * cs);
        kw[i0] = k0;
        kw[i1] = k1;
        if constexpr (ROPE) kself[i0] = k0, kself[i1] = k1;
      }
    }
    for (int d = threadIdx.x; d < HD; d += 128) {
      const __half vh = __float2half_rn(a.v[((size_t)t * a.n_head_kv + kvh) * HD + d]);
      const_cast<__half*>(vc)[sl + d] = vh;
      if constexpr (ROPE) vself[d] = vh;
    }
  } else {
    for (int i = threadIdx.x; i < G * HD; i += 128)
      qs[i / HD][i % HD] = a.q[((size_t)t * a.n_head + qh0) * HD + i] * a.scale;
  }
  __syncthreads();
  float m[G], l[G], acc[G][4];
#pragma unroll
  for (int h = 0; h < G; ++h) {
    m[h] = -INFINITY, l[h] = 0.0f;
    acc[h][0] = acc[h][1] = acc[h][2] = acc[h][3] = 0.0f;
  }
  for (int p0 = warp * 32; p0 <= pos; p0 += 128) {
    const int p = p0 + lane;
    const bool live = p <= pos;  // lane 0 always is: p0 <= pos
    const int slot = live ? table[p / a.block_size] * a.block_size + p % a.block_size : 0;
    const bool first = pre && p0 == warp * 32;  // kpre / vpre hold this chunk's rows below pos
    float sc[G];
#pragma unroll
    for (int h = 0; h < G; ++h) sc[h] = 0.0f;
    {
      const uint4* kr = reinterpret_cast<const uint4*>(kc + (size_t)slot * kv_dim + kvh * HD);
      uint4 kv[16];
#pragma unroll
      for (int c = 0; c < 16; ++c)
        kv[c] = !live                  ? make_uint4(0, 0, 0, 0)
                : self_kv && p == pos  ? reinterpret_cast<const uint4*>(kself)[c]
                : first && p < pos     ? kpre[pre ? c : 0]
                                       : ld_kv16<ROPE>(kr + c);
#pragma unroll
      for (int c = 0; c < 16; ++c) {
        const uint32_t w[4] = {kv[c].x, kv[c].y, kv[c].z, kv[c].w};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&w[e]));
          const int d = c * 8 + e * 2;
#pragma unroll
          for (int h = 0; h < G; ++h) sc[h] += f.x * qs[h][d] + f.y * qs[h][d + 1];
        }
      }
    }
    float pr[G];
#pragma unroll
    for (int h = 0; h < G; ++h) {
      const float sh = live ? sc[h] : -INFINITY;
      const float mn = fmaxf(m[h], warp_max(sh));  // finite: lane 0 is live
      const float c = expf(m[h] - mn);               // 0 on the first chunk (m = -inf)
      pr[h] = live ? expf(sh - mn) : 0.0f;
      l[h] = l[h] * c + warp_sum(pr[h]);
      m[h] = mn;
      acc[h][0] *= c, acc[h][1] *= c, acc[h][2] *= c, acc[h][3] *= c;
    }
    const int nlive = min(32, pos - p0 + 1);  // the same in every lane
    // All of the chunk's V rows are requested before any is used (one round trip, not one per 4 rows: the V walk
    // was the longest dependent chain of the kernel at short contexts).
    uint2 vr[32];
#pragma unroll
    for (int j = 0; j < 32; ++j) {
      const int sj = __shfl_sync(0xffffffffu, slot, j);
      vr[j] = j >= nlive                ? make_uint2(0, 0)
              : self_kv && p0 + j == pos ? reinterpret_cast<const uint2*>(vself)[lane]
              : first && p0 + j < pos    ? vpre[pre ? j : 0]
                                         : ld_kv8<ROPE>(reinterpret_cast<const uint2*>(vc + (size_t)sj * kv_dim + kvh * HD) + lane);
    }
#pragma unroll
    for (int j = 0; j < 32; ++j) {
      if (j >= nlive) break;
      const float2 v01 = __half22float2(*reinterpret_cast<const __half2*>(&vr[j].x));
      const float2 v23 = __half22float2(*reinterpret_cast<const __half2*>(&vr[j].y));
#pragma unroll
      for (int h = 0; h < G; ++h) {
        const float ph = __shfl_sync(0xffffffffu, pr[h], j);
        acc[h][0] += ph * v01.x, acc[h][1] += ph * v01.y, acc[h][2] += ph * v23.x, acc[h][3] += ph * v23.y;
      }
    }
  }
  if (lane == 0) {
#pragma unroll
    for (int h = 0; h < G; ++h) cm[warp][h] = m[h], cl[warp][h] = l[h];
  }
#pragma unroll
  for (int h = 0; h < G; ++h)
#pragma unroll
    for (int i = 0; i < 4; ++i) cacc[warp][h][4 * lane + i] = acc[h][i];
  __syncthreads();
  for (int i = threadIdx.x; i < G * HD; i += 128) {
    const int h = i / HD, d = i % HD;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < 4; ++w) M = fmaxf(M, cm[w][h]);
    float L = 0.0f, o = 0.0f;
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      if (cm[w][h] != -INFINITY) {  // a warp that had no positions
        const float e = expf(cm[w][h] - M);
        L += cl[w][h] * e;
        o += cacc[w][h][d] * e;
      }
    }
    const float v = o / L;
    const size_t e = ((size_t)t * a.n_head + qh0) * HD + i;
    a.out[e] = v;
    if (a.oq) {  // uniform; each warp's 32 consecutive i are one whole block (G * HD is a multiple of 128)
      const float amax = warp_max(fabsf(v));
      const float dq = amax / 127.0f;
      const int qi = amax == 0.0f ? 0 : __float2int_rn(v / dq);
      a.oq[e] = (int8_t)qi;
      const float sq = warp_sum((float)qi);
      if (lane == 0) a.ods[e / 32] = make_float2(dq, dq * sq);
    }
  }
}

// ---- Prompt attention on tensor cores (FlashAttention-2 style), F16 cache, head_dim 128 ----
// A CTA owns 16 consecutive query tokens of one sequence and one KV head; warp w computes query head kvh*G + w for
// those 16 tokens (one m16 tile). K/V tiles of 64 positions go through shared memory (cp.async, double-buffered,
// gathered through the block table). S = Q K^T and O += P V are mma.sync m16n8k16 (FP16 operands, FP32
// accumulators); the online softmax runs on the accumulator fragments, and P is reused from them as the A operand.
// The SIMT kernel above spent 533 us per 8B layer on a 512-token prompt (H100, bench/NOTES.md run 6).
constexpr int FA_TQ = 16, FA_TK = 64, FA_HD = 128, FA_P = FA_HD + 8;  // pitch in halves: rows 272 bytes apart

__device__ __forceinline__ uint32_t fa_smem(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void fa_cp16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(fa_smem(dst)), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void fa_mma(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t fa_h2(float a, float b) {
  __half2 h = __floats2half2_rn(a, b);
  return *reinterpret_cast<uint32_t*>(&h);
}

template <int G>
__global__ void __launch_bounds__(G * 32) attn_prefill_fa(AttnArgs a, const __half* __restrict__ kc,
                                                          const __half* __restrict__ vc) {
  pdl_trigger();
  extern __shared__ __align__(16) __half fsm[];  // [2][K, V][FA_TK][FA_P]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int t0 = blockIdx.x * FA_TQ, kvh = blockIdx.y, h = kvh * G + warp;
  const int T = a.n_tokens;
  const int kv_dim = a.n_head_kv * FA_HD;
  const int32_t* table = a.block_tables + (size_t)a.seq_idx[t0] * a.blocks_per_seq;
  // Causal limits of this thread's two rows (tokens g and g+8), and the CTA's context end.
  const int r0 = t0 + g, r1 = t0 + g + 8;
  const int lim0 = r0 < T ? a.pos[r0] : -1, lim1 = r1 < T ? a.pos[r1] : -1;
  int ctx = 0;
  for (int i = 0; i < FA_TQ && t0 + i < T; ++i) ctx = max(ctx, a.pos[t0 + i] + 1);

  // Q fragments (A operand, 8 k-steps of 16 dims), scaled and rounded to half.
  uint32_t qf[8][4];
  {
    const float* q0 = a.q + ((size_t)min(r0, T - 1) * a.n_head + h) * FA_HD;
    const float* q1 = a.q + ((size_t)min(r1, T - 1) * a.n_head + h) * FA_HD;
    const float sc = a.scale;
#pragma unroll
    for (int kk = 0; kk < 8; ++kk) {
      const int d = kk * 16 + 2 * t;
      const float2 x00 = *reinterpret_cast<const float2*>(q0 + d), x10 = *reinterpret_cast<const float2*>(q1 + d);
      const float2 x01 = *reinterpret_cast<const float2*>(q0 + d + 8), x11 = *reinterpret_cast<const float2*>(q1 + d + 8);
      qf[kk][0] = fa_h2(x00.x * sc, x00.y * sc);
      qf[kk][1] = fa_h2(x10.x * sc, x10.y * sc);
      qf[kk][2] = fa_h2(x01.x * sc, x01.y * sc);
      qf[kk][3] = fa_h2(x11.x * sc, x11.y * sc);
    }
  }
  float o[16][4];
#pragma unroll
  for (int j = 0; j < 16; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;

  auto load_tile = [&](int p0, int buf) {
    __half* ks = fsm + (size_t)buf * 2 * FA_TK * FA_P;
    __half* vs = ks + FA_TK * FA_P;
    for (int i = threadIdx.x; i < FA_TK * (FA_HD / 8); i += G * 32) {
      const int r = i / (FA_HD / 8), c = i % (FA_HD / 8), p = p0 + r;
      const bool ok = p < ctx;
      const size_t off = ok ? ((size_t)table[p / a.block_size] * a.block_size + p % a.block_size) * kv_dim +
                                  kvh * FA_HD + c * 8
                            : 0;
      fa_cp16(ks + r * FA_P + c * 8, kc + off, ok);
      fa_cp16(vs + r * FA_P + c * 8, vc + off, ok);
    }
    asm volatile("cp.async.commit_group;\n" ::);
  };

  const int ntiles = (ctx + FA_TK - 1) / FA_TK;
  if (ntiles > 0) load_tile(0, 0);
  for (int it = 0; it < ntiles; ++it) {
    const int buf = it & 1, p0 = it * FA_TK;
    if (it + 1 < ntiles) {
      load_tile(p0 + FA_TK, buf ^ 1);
      asm volatile("cp.async.wait_group 1;\n" ::);
    } else {
      asm volatile("cp.async.wait_group 0;\n" ::);
    }
    __syncthreads();
    const __half* ks = fsm + (size_t)buf * 2 * FA_TK * FA_P;
    const __half* vs = ks + FA_TK * FA_P;
    // S = Q K^T: 8 n-tiles of 8 positions.
    float sc[8][4];
#pragma unroll
    for (int j = 0; j < 8; ++j) sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < 8; ++kk) {
#pragma unroll
      for (int j = 0; j < 8; j += 2) {
        uint32_t b[4];
        const int which = lane >> 3;
        const __half* addr = ks + ((j + (which >> 1)) * 8 + (lane & 7)) * FA_P + kk * 16 + (which & 1) * 8;
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(b[0]), "=r"(b[1]), "=r"(b[2]), "=r"(b[3]) : "r"(fa_smem(addr)));
        fa_mma(sc[j], qf[kk], b[0], b[1]);
        fa_mma(sc[j + 1], qf[kk], b[2], b[3]);
      }
    }
    // Causal mask and online softmax (rows g: c0, c1; row g+8: c2, c3; a row's 64 values live in its quad).
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int p = p0 + j * 8 + 2 * t;
      if (p > lim0) sc[j][0] = -INFINITY;
      if (p + 1 > lim0) sc[j][1] = -INFINITY;
      if (p > lim1) sc[j][2] = -INFINITY;
      if (p + 1 > lim1) sc[j][3] = -INFINITY;
      mx0 = fmaxf(mx0, fmaxf(sc[j][0], sc[j][1]));
      mx1 = fmaxf(mx1, fmaxf(sc[j][2], sc[j][3]));
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
    // A row with nothing visible yet keeps m = -inf: its factors are 0 and its probabilities 0.
    const float c0 = n0 == -INFINITY ? 1.0f : expf(m0 - n0), c1 = n1 == -INFINITY ? 1.0f : expf(m1 - n1);
    m0 = n0, m1 = n1;
    float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      sc[j][0] = n0 == -INFINITY ? 0.0f : expf(sc[j][0] - n0);
      sc[j][1] = n0 == -INFINITY ? 0.0f : expf(sc[j][1] - n0);
      sc[j][2] = n1 == -INFINITY ? 0.0f : expf(sc[j][2] - n1);
      sc[j][3] = n1 == -INFINITY ? 0.0f : expf(sc[j][3] - n1);
      s0 += sc[j][0] + sc[j][1];
      s1 += sc[j][2] + sc[j][3];
    }
    l0 = l0 * c0 + s0;  // this thread's share of the row sum; the quad is summed at the end
    l1 = l1 * c1 + s1;
#pragma unroll
    for (int j = 0; j < 16; ++j) o[j][0] *= c0, o[j][1] *= c0, o[j][2] *= c1, o[j][3] *= c1;
    // O += P V: 4 k-steps of 16 positions; P from the S fragments, V through ldmatrix.trans.
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      uint32_t pa[4];
      pa[0] = fa_h2(sc[2 * kk][0], sc[2 * kk][1]);
      pa[1] = fa_h2(sc[2 * kk][2], sc[2 * kk][3]);
      pa[2] = fa_h2(sc[2 * kk + 1][0], sc[2 * kk + 1][1]);
      pa[3] = fa_h2(sc[2 * kk + 1][2], sc[2 * kk + 1][3]);
#pragma unroll
      for (int j = 0; j < 16; j += 2) {
        uint32_t b[4];
        const int mi = lane >> 3;
        const __half* addr = vs + (kk * 16 + (mi & 1) * 8 + (lane & 7)) * FA_P + (j + (mi >> 1)) * 8;
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(b[0]), "=r"(b[1]), "=r"(b[2]), "=r"(b[3]) : "r"(fa_smem(addr)));
        fa_mma(o[j], pa, b[0], b[1]);
        fa_mma(o[j + 1], pa, b[2], b[3]);
      }
    }
    __syncthreads();  // the next iteration's load overwrites this buffer
  }
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  const float inv0 = 1.0f / l0, inv1 = 1.0f / l1;
#pragma unroll
  for (int j = 0; j < 16; ++j) {
    const int d = j * 8 + 2 * t;
    if (r0 < T) *reinterpret_cast<float2*>(a.out + ((size_t)r0 * a.n_head + h) * FA_HD + d) = make_float2(o[j][0] * inv0, o[j][1] * inv0);
    if (r1 < T) *reinterpret_cast<float2*>(a.out + ((size_t)r1 * a.n_head + h) * FA_HD + d) = make_float2(o[j][2] * inv1, o[j][3] * inv1);
  }
}

size_t attn_smem(int R, int hd) {
  return sizeof(float) * ((size_t)R * hd + TILE * (hd + 1) + TILE * hd + R * TILE + 3 * R);
}

template <typename KV, int QG>
void launch_attn(cudaStream_t s, dim3 grid, size_t smem, const AttnArgs& a, const KVLayer& kv) {
  static size_t configured = 0;
  if (smem > configured) {
    TWC_CHECK(cudaFuncSetAttribute(attn_kernel<KV, QG>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    configured = smem;
  }
  attn_kernel<KV, QG><<<grid, ATHREADS, smem, s>>>(a, (const KV*)kv.k, (const KV*)kv.v);
}

// Prompt chunks: groups of QG consecutive tokens that all belong to one sequence share their K/V tiles.
// Whether every group of n consecutive tokens of the batch belongs to one sequence (host metadata).
bool groupable_n(const BatchView& b, int n) {
  if (!b.host_seq_idx) return false;
  for (int t = 0; t < b.n_tokens; t += n)
    for (int i = t + 1; i < std::min(b.n_tokens, t + n); ++i)
      if (b.host_seq_idx[i] != b.host_seq_idx[t]) return false;
  return true;
}

template <int G>
void launch_fa(cudaStream_t s, dim3 grid, size_t smem, const AttnArgs& a, const __half* kc, const __half* vc) {
  static bool configured = false;
  if (!configured) {
    TWC_CHECK(cudaFuncSetAttribute(attn_prefill_fa<G>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    configured = true;
  }
  attn_prefill_fa<G><<<grid, G * 32, smem, s>>>(a, kc, vc);
}

// One token per CTA, F16 cache, head 128: the single-pass decode kernel, unless few long contexts would leave most
// SMs idle (then the split kernel spreads each context over CTAs).
bool decode_kernel_fits(const DeviceInfo& dev, const BatchView& b, const AttentionShape& sh) {
  const int G = sh.n_head / sh.n_head_kv;
  return sh.kv_type == 1 && sh.head_dim == 128 && (G == 1 || G == 2 || G == 4 || G == 8) &&
         (b.max_pos + 1 <= 512 || b.n_tokens * sh.n_head_kv >= 2 * dev.sm_count) &&
         !std::getenv("TWINFER_CUDA_SPLIT_ATTENTION");
}

// split_heads (DeviceInfo::attn_split_heads): one CTA per query head instead of per KV head — G times the CTAs
// (8 -> 32 for one Llama-3-8B token), each with a G-th of the score and P.V arithmetic; K/V rows are then read by
// G CTAs (from L2), and with RoPE fused each rotates and writes the token's K/V row (the same bytes).
template <bool ROPE>
void launch_decode(cudaStream_t s, bool pdl, bool split_heads, int sm_count_hint, int G, dim3 grid, const AttnArgs& a,
                   const __half* kc, const __half* vc) {
  const dim3 block(128);
  // Only while the per-KV-head grid leaves most SMs idle: at 64 sequences (512 CTAs) the split doubled the kernel's
  // time (H100, 52 -> 100 us per layer; batched64 q4_0 4632 vs 5866 tok/s before, bench/NOTES.md run 17).
  if (split_heads && G > 1 && (int)(grid.x * grid.y) < sm_count_hint) {
    grid.z = G;
    G = 1;
  }
  if (ROPE && G == 1 && a.prefetch && (int)(grid.x * grid.y * grid.z) < sm_count_hint) {
    launch_kernel(pdl, attn_decode_kernel<1, ROPE, true>, grid, block, s, a, kc, vc);
    return;
  }
  switch (G) {
    case 1: launch_kernel(pdl, attn_decode_kernel<1, ROPE>, grid, block, s, a, kc, vc); break;
    case 2: launch_kernel(pdl, attn_decode_kernel<2, ROPE>, grid, block, s, a, kc, vc); break;
    case 4: launch_kernel(pdl, attn_decode_kernel<4, ROPE>, grid, block, s, a, kc, vc); break;
    default: launch_kernel(pdl, attn_decode_kernel<8, ROPE>, grid, block, s, a, kc, vc); break;
  }
}

constexpr int QG_PREFILL = 4;
bool groupable(const BatchView& b, int G, int hd) {
  if (!b.host_seq_idx || b.n_tokens < 2 * QG_PREFILL || QG_PREFILL * G * hd > MAXACC * ATHREADS) return false;
  for (int t = 0; t < b.n_tokens; t += QG_PREFILL)
    for (int i = t + 1; i < std::min(b.n_tokens, t + QG_PREFILL); ++i)
      if (b.host_seq_idx[i] != b.host_seq_idx[t]) return false;
  return true;
}

}  // namespace

void rope_store_kv(cudaStream_t s, float* q, float* k, const float* v, const BatchView& b, const KVLayer& kv,
                   const AttentionShape& sh, int rope_mode, float theta, float freq_scale) {
  if (b.n_tokens <= 0) return;
  const float theta_scale = powf(theta, -2.0f / sh.head_dim);
  const int neox = rope_mode == 2 ? 1 : 0;
  const dim3 grid(b.n_tokens, sh.n_head + sh.n_head_kv + 1);
  const int threads = std::min(128, std::max(32, (sh.head_dim / 2 + 31) / 32 * 32));
  if (sh.kv_type == 1)
    rope_store_kernel<__half><<<grid, threads, 0, s>>>(q, k, v, b.pos, b.slot, (__half*)kv.k, (__half*)kv.v,
                                                          sh.n_head, sh.n_head_kv, sh.head_dim, neox, theta_scale,
                                                          freq_scale);
  else
    rope_store_kernel<float><<<grid, threads, 0, s>>>(q, k, v, b.pos, b.slot, (float*)kv.k, (float*)kv.v,
                                                         sh.n_head, sh.n_head_kv, sh.head_dim, neox, theta_scale,
                                                         freq_scale);
  TWC_LAUNCHED("rope_store_kv");
}

bool attention_rope_fusable(const DeviceInfo& dev, const BatchView& b, const AttentionShape& sh) {
  if (!b.host_seq_idx || b.n_tokens > b.n_seqs || !decode_kernel_fits(dev, b, sh) ||
      std::getenv("TWINFER_CUDA_NO_ROPE_FUSION"))
    return false;
  // every sequence row at most once: no token reads another's freshly written K/V
  std::vector<uint8_t> seen((size_t)b.n_seqs, 0);
  for (int t = 0; t < b.n_tokens; ++t) {
    const int r = b.host_seq_idx[t];
    if (r < 0 || r >= b.n_seqs || seen[r]) return false;
    seen[r] = 1;
  }
  return true;
}

// The fields every attention launch shares: the batch's tokens, positions and block tables, the head shape.
static AttnArgs attn_args(const float* q, const BatchView& b, const AttentionShape& sh, float* out) {
  AttnArgs a{};
  a.n_tokens = b.n_tokens;
  a.q = q;
  a.pos = b.pos;
  a.seq_idx = b.seq_idx;
  a.block_tables = b.block_tables;
  a.blocks_per_seq = b.blocks_per_seq;
  a.block_size = sh.block_size;
  a.n_head = sh.n_head;
  a.n_head_kv = sh.n_head_kv;
  a.hd = sh.head_dim;
  a.scale = sh.scale;
  a.out = out;
  return a;
}

bool attention_rope(cudaStream_t s, const DeviceInfo& dev, float* q, const float* k, const float* v, const BatchView& b,
                    const KVLayer& kv, const AttentionShape& sh, int rope_mode, float theta, float freq_scale,
                    float* out, int8_t* oq, float2* ods) {
  const int T = b.n_tokens;
  if (T <= 0) return false;
  AttnArgs a = attn_args(q, b, sh, out);
  a.k = k;
  a.v = v;
  a.slot = b.slot;
  a.theta_scale = powf(theta, -2.0f / sh.head_dim);  // as rope_store_kv
  a.freq_scale = freq_scale;
  a.neox = rope_mode == 2 ? 1 : 0;
  a.prefetch = dev.attn_prefetch ? 1 : 0;
  a.self_kv = dev.attn_self_kv ? 1 : 0;
  a.oq = oq;
  a.ods = ods;
  launch_decode<true>(s, dev.pdl_gemv, dev.attn_split_heads, dev.sm_count, sh.n_head / sh.n_head_kv, dim3(T, sh.n_head_kv), a, (const __half*)kv.k,
                      (const __half*)kv.v);
  TWC_LAUNCHED("attention (decode, rope fused)");
  return oq != nullptr;
}

// Everything attention() and the backend's RoPE fusion decide on the host from the batch (beyond the pointers and
// shape): which kernel, the fusion, the split of the context. Two steps of equal plans launch the same kernels with
// the same parameters, so a CUDA graph captured for one replays the other (positions are read on the device).
uint64_t attention_plan(const DeviceInfo& dev, const BatchView& b, const AttentionShape& sh) {
  const int T = b.n_tokens;
  if (T <= 0 || sh.n_head_kv <= 0) return 0;
  const int G = sh.n_head / sh.n_head_kv;
  const uint64_t fus = attention_rope_fusable(dev, b, sh) ? 1 : 0;
  if (sh.kv_type == 1 && sh.head_dim == FA_HD && (G == 1 || G == 2 || G == 4 || G == 8) && T >= 2 * FA_TQ &&
      groupable_n(b, FA_TQ) && !std::getenv("TWINFER_CUDA_SIMT_ATTENTION"))
    return 2 | fus << 1;
  const int QG = groupable(b, G, sh.head_dim) ? QG_PREFILL : 1;
  if (QG == 1 && decode_kernel_fits(dev, b, sh)) return 4 | fus << 1;
  const int max_len = b.max_pos + 1;
  const int tiles = ceil_div(max_len, TILE);
  const int ctas = ceil_div(T, QG) * sh.n_head_kv;
  const int want = std::max(1, std::min(tiles, ceil_div(2 * std::max(dev.sm_count, 1), ctas)));
  const int chunk = TILE * ceil_div(tiles, want);
  const int splits = ceil_div(max_len, chunk);
  return 8 | fus << 1 | (uint64_t)QG << 4 | (uint64_t)splits << 8 | (uint64_t)chunk << 32;
}

bool attention_supported(const AttentionShape& sh) {
  const int G = sh.n_head / sh.n_head_kv;
  return sh.n_head % sh.n_head_kv == 0 && G * sh.head_dim <= MAXACC * ATHREADS && sh.head_dim % 2 == 0;
}

bool attention(cudaStream_t s, const DeviceInfo& dev, Scratch& scratch, const float* q, const BatchView& b,
               const KVLayer& kv, const AttentionShape& sh, float* out, int8_t* oq, float2* ods) {
  const int T = b.n_tokens;
  if (T <= 0) return false;
  const int G = sh.n_head / sh.n_head_kv;
  const int max_len = b.max_pos + 1;
  const int tiles = ceil_div(max_len, TILE);
  // Prompt chunks: 16 consecutive tokens of one sequence per CTA on tensor cores, where the shape allows.
  if (sh.kv_type == 1 && sh.head_dim == FA_HD && (G == 1 || G == 2 || G == 4 || G == 8) && T >= 2 * FA_TQ &&
      groupable_n(b, FA_TQ) && !std::getenv("TWINFER_CUDA_SIMT_ATTENTION")) {
    AttnArgs a = attn_args(q, b, sh, out);
    const dim3 grid(ceil_div(T, FA_TQ), sh.n_head_kv);
    const size_t smem = 2 * 2 * FA_TK * FA_P * sizeof(__half);
    const __half* kc = (const __half*)kv.k;
    const __half* vc = (const __half*)kv.v;
    switch (G) {
      case 1: launch_fa<1>(s, grid, smem, a, kc, vc); break;
      case 2: launch_fa<2>(s, grid, smem, a, kc, vc); break;
      case 4: launch_fa<4>(s, grid, smem, a, kc, vc); break;
      default: launch_fa<8>(s, grid, smem, a, kc, vc); break;
    }
    TWC_LAUNCHED("attention (prompt, tensor cores)");
    return false;
  }
  const int QG = groupable(b, G, sh.head_dim) ? QG_PREFILL : 1;
  if (QG == 1 && decode_kernel_fits(dev, b, sh)) {
    AttnArgs a = attn_args(q, b, sh, out);
    const dim3 grid(T, sh.n_head_kv);
    const __half* kc = (const __half*)kv.k;
    const __half* vc = (const __half*)kv.v;
    a.oq = oq;
    a.ods = ods;
    launch_decode<false>(s, dev.pdl_gemv, dev.attn_split_heads, dev.sm_count, G, grid, a, kc, vc);
    TWC_LAUNCHED("attention (decode)");
    return oq != nullptr;
  }
  const int groups = ceil_div(T, QG);
  const int ctas = groups * sh.n_head_kv;
  int want = std::max(1, std::min(tiles, ceil_div(2 * std::max(dev.sm_count, 1), ctas)));
  const int chunk = TILE * ceil_div(tiles, want);
  int splits = ceil_div(max_len, chunk);

  AttnArgs a = attn_args(q, b, sh, out);
  a.chunk = chunk;
  if (splits > 1) {
    const size_t per = (size_t)T * sh.n_head;
    float* base = (float*)scratch.get(sizeof(float) * (size_t)splits * per * (2 + sh.head_dim));
    if (!base) {
      splits = 1;
      a.chunk = tiles * TILE;
    } else {
      a.pm = base;
      a.pl = base + (size_t)splits * per;
      a.pacc = base + 2 * (size_t)splits * per;
    }
  }
  a.splits = splits;
  const size_t smem = attn_smem(QG * G, sh.head_dim);
  dim3 grid(groups, sh.n_head_kv, splits);
  if (sh.kv_type == 1) {
    if (QG == 1) launch_attn<__half, 1>(s, grid, smem, a, kv);
    else launch_attn<__half, QG_PREFILL>(s, grid, smem, a, kv);
  } else {
    if (QG == 1) launch_attn<float, 1>(s, grid, smem, a, kv);
    else launch_attn<float, QG_PREFILL>(s, grid, smem, a, kv);
  }
  TWC_LAUNCHED("attention");
  if (splits > 1) {
    attn_combine<<<dim3(T, sh.n_head), 128, 0, s>>>(a.pm, a.pl, a.pacc, splits, T, sh.n_head, sh.head_dim, out);
    TWC_LAUNCHED("attn_combine");
  }
  return false;
}

}  // namespace cuda
}  // namespace tw
