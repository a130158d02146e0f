// F16 weight x F32 activation products for one or two tokens (single-stream decode): a plain matrix-vector kernel.
//
// The tensor-core decode kernel (matmul.cu) puts one token into an m16n8k16 tile that is 7/8 empty and stages the
// weights through shared memory with split-K: 2.55 TB/s per 8B layer on an H100 (bench/NOTES.md run 16). Here R
// weight rows per warp stream straight from memory into registers with 16-byte loads (8 halves per lane, lanes on
// consecutive 16-byte chunks, so a warp load is 512 contiguous bytes per row), U x R loads issued before any is
// used; each half is widened to F32 and multiplied with the F32 activation (read through L1, shared by the warp's R
// rows), accumulated in F32 and reduced across the warp. More precise than the FP16 tile (activations stay F32).
//
// PAIR: the gate and up products of a SwiGLU block in one warp (row r of both weights), so the epilogue writes
// silu(gate) * up directly (the separate SwiGLU launch and its read of gate/up disappear).
#include <cstdlib>

#include "cuda_common.cuh"
#include "cuda_ops.h"
#include "norm_fused.cuh"

namespace tw {
namespace cuda {

namespace {

constexpr int kWarps = 8;

struct FGroup {
  const uint8_t* W[3];
  float* y[3];
  int M[3];
  int row0[4];
};

// Weights are read once per step: keep them out of L1 (the activations live there).
__device__ __forceinline__ uint4 ld_stream(const uint4* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

__device__ __forceinline__ float2 hf2(uint32_t w) { return __half22float2(*reinterpret_cast<const __half2*>(&w)); }

__device__ __forceinline__ float dot8(uint4 w, float4 a, float4 b, float acc) {
  const float2 w0 = hf2(w.x), w1 = hf2(w.y), w2 = hf2(w.z), w3 = hf2(w.w);
  acc = fmaf(w0.x, a.x, acc);
  acc = fmaf(w0.y, a.y, acc);
  acc = fmaf(w1.x, a.z, acc);
  acc = fmaf(w1.y, a.w, acc);
  acc = fmaf(w2.x, b.x, acc);
  acc = fmaf(w2.y, b.y, acc);
  acc = fmaf(w3.x, b.z, acc);
  acc = fmaf(w3.y, b.w, acc);
  return acc;
}

// A warp's task: R rows (PAIR: row r of gate and up). The grid is one wave of CTAs, a whole multiple of the SM count
// (pick_grid), and warps stride over the tasks, so every SM gets the same number of rows: with one task per warp and
// whatever grid the row count gives, Q/K/V (6144 rows) ran in 1.45 waves of CTAs.
// ni: x is a split norm's u (norm_fused.cuh): every result is scaled by its s, and h is written.
template <int NC, int R, int U, bool PAIR>
__global__ void __launch_bounds__(kWarps * 32) gemv_f16_kernel(FGroup g, int K, const float* __restrict__ x,
                                                               float* __restrict__ pair_out, int tasks, NormIn ni) {
  pdl_trigger();
  const int lane = threadIdx.x & 31;
  const size_t rb = (size_t)K * 2;
  const int nch = K / 8;  // 16-byte chunks per row
  bool waited = false;
  NormPre<NC> pre;
  float s[NC];
  bool have_s = false;
#pragma unroll
  for (int c = 0; c < NC; ++c) s[c] = 1.0f;
  // pdl_wait, then the split norm's loads (norm_prefetch) while the first weights are on their way.
  auto wait = [&] {
    pdl_wait();
    waited = true;
    if (ni.ssq) norm_prefetch<NC>(ni, lane, pre);
  };
  for (int task = blockIdx.x * kWarps + (threadIdx.x >> 5); task < tasks; task += gridDim.x * kWarps) {
    const uint4* rows[R];
    int i = 0, r = 0;
    if constexpr (PAIR) {  // R == 2: row r of W[0] (gate) and of W[1] (up)
      r = task;
      rows[0] = reinterpret_cast<const uint4*>(g.W[0] + (size_t)r * rb);
      rows[1] = reinterpret_cast<const uint4*>(g.W[1] + (size_t)r * rb);
    } else {
      const int row = task * R;
      i = row >= g.row0[2] ? 2 : row >= g.row0[1] ? 1 : 0;
      r = row - (i == 2 ? g.row0[2] : i == 1 ? g.row0[1] : 0);
      const uint8_t* w0 = (i == 2 ? g.W[2] : i == 1 ? g.W[1] : g.W[0]) + (size_t)r * rb;
#pragma unroll
      for (int rr = 0; rr < R; ++rr) rows[rr] = reinterpret_cast<const uint4*>(w0 + rr * rb);
    }
    float acc[R][NC];
#pragma unroll
    for (int rr = 0; rr < R; ++rr)
#pragma unroll
      for (int c = 0; c < NC; ++c) acc[rr][c] = 0.0f;
    for (int c0 = lane; c0 < nch; c0 += 32 * U) {
      uint4 w[U][R];
#pragma unroll
      for (int u = 0; u < U; ++u)
#pragma unroll
        for (int rr = 0; rr < R; ++rr)
          if (c0 + 32 * u < nch) w[u][rr] = ld_stream(rows[rr] + c0 + 32 * u);
      // Programmatic dependent launch: the first weights are in flight before the previous kernel is waited for
      // (weights are never written by a step); the activations only after.
      if (!waited) wait();
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int ch = c0 + 32 * u;
        if (ch >= nch) break;
#pragma unroll
        for (int c = 0; c < NC; ++c) {
          const float4* xp = reinterpret_cast<const float4*>(x + (size_t)c * K + (size_t)ch * 8);
          const float4 a = __ldg(xp), b = __ldg(xp + 1);
#pragma unroll
          for (int rr = 0; rr < R; ++rr) acc[rr][c] = dot8(w[u][rr], a, b, acc[rr][c]);
        }
      }
    }
    if (!waited) wait();  // (no chunk for this lane: it still must not write before the wait)
    if (ni.ssq && !have_s) {
#pragma unroll
      for (int c = 0; c < NC; ++c) s[c] = norm_scale_of(ni, pre.sp[c]);
      have_s = true;
    }
#pragma unroll
    for (int rr = 0; rr < R; ++rr)
#pragma unroll
      for (int c = 0; c < NC; ++c) acc[rr][c] = warp_sum(acc[rr][c]) * s[c];
    if (lane != 0) continue;
    if constexpr (PAIR) {
      const int M = g.M[0];
#pragma unroll
      for (int c = 0; c < NC; ++c) {
        const float gv = acc[0][c], uv = acc[1][c];
        g.y[1][(size_t)c * M + r] = uv;                              // up, as the grouped product would leave it
        pair_out[(size_t)c * M + r] = gv / (1.0f + expf(-gv)) * uv;  // swiglu_kernel's value
      }
    } else {
      float* y = i == 2 ? g.y[2] : i == 1 ? g.y[1] : g.y[0];
      const int M = i == 2 ? g.M[2] : i == 1 ? g.M[1] : g.M[0];
#pragma unroll
      for (int rr = 0; rr < R; ++rr)
#pragma unroll
        for (int c = 0; c < NC; ++c) y[(size_t)c * M + r + rr] = acc[rr][c];
    }
  }
  if (ni.ssq) {
    if (!waited) wait();
    if (!have_s)
#pragma unroll
      for (int c = 0; c < NC; ++c) s[c] = norm_scale_of(ni, pre.sp[c]);
    norm_write_h<NC>(ni, pre, s, lane);
  }
}

int sm_count() {
  static const int n = [] {
    int d = 0, v = 0;
    cudaGetDevice(&d);
    cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, d);
    return v > 0 ? v : 1;
  }();
  return n;
}

// CTAs for `tasks` warp tasks: one wave (at most `occ` CTAs per SM), a multiple of the SM count, and among those the
// largest whose rounds (tasks per warp, rounded up) waste at most 5 % against an exact split.
int pick_grid(int tasks, int occ) {
  const int sms = sm_count();
  const int one_round = ceil_div(tasks, kWarps);
  if (one_round <= sms * occ) return one_round;  // every task at once
  int best = sms, best_waste = 1 << 30;
  for (int c = occ; c >= 1; --c) {
    const long warps = (long)sms * c * kWarps;
    const long rounds = (tasks + warps - 1) / warps;
    const int waste = (int)(1000 * (rounds * warps - tasks) / tasks);  // per mille
    if (waste <= 50) return sms * c;
    if (waste < best_waste) best_waste = waste, best = sms * c;
  }
  return best;
}

template <int NC, int R, int U, bool PAIR>
void launch_one(cudaStream_t s, bool pdl, const FGroup& g, int K, const float* x, float* pair_out, int tasks,
                const NormIn& ni) {
  static const int occ = [] {
    int n = 0;
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, gemv_f16_kernel<NC, R, U, PAIR>, kWarps * 32, 0);
    return n > 0 ? n : 1;
  }();
  launch_kernel(pdl, gemv_f16_kernel<NC, R, U, PAIR>, dim3(pick_grid(tasks, occ)), dim3(kWarps * 32), s, g, K, x,
                pair_out, tasks, ni);
}

// One row per task for the plain products (the finest split of the rows over the SMs), gate and up rows in pairs.
// cfg (DeviceInfo::gemv_cfg, TWINFER_CUDA_GEMV_CFG, a sweep knob): 10 * R + U / 4 for the plain products at one
// token — 12: R = 1, U = 8 (the default), 11: U = 4, 13: U = 12, 22: R = 2, U = 8, 21: R = 2, U = 4.
template <int NC, bool PAIR>
void launch(cudaStream_t s, bool pdl, int cfg, const FGroup& g, int K, const float* x, float* pair_out,
            const NormIn& ni) {
  // U: 16-byte chunks per row in flight per lane (U = 16 took 142 registers, one CTA per SM; at 8, 48 registers and
  // five CTAs per SM: 160 KB per SM requested before the previous kernel is waited for).
  constexpr int U = NC == 1 ? 8 : 4;
  const bool even = g.M[0] % 2 == 0 && g.M[1] % 2 == 0 && g.M[2] % 2 == 0;
  if (PAIR) launch_one<NC, 2, U, true>(s, pdl, g, K, x, pair_out, g.M[0], ni);
  else if (NC == 1 && cfg == 11) launch_one<NC, 1, 4, false>(s, pdl, g, K, x, nullptr, g.row0[3], ni);
  else if (NC == 1 && cfg == 13) launch_one<NC, 1, 12, false>(s, pdl, g, K, x, nullptr, g.row0[3], ni);
  else if (NC == 1 && cfg == 22 && even) launch_one<NC, 2, 8, false>(s, pdl, g, K, x, nullptr, g.row0[3] / 2, ni);
  else if (NC == 1 && cfg == 21 && even) launch_one<NC, 2, 4, false>(s, pdl, g, K, x, nullptr, g.row0[3] / 2, ni);
  else launch_one<NC, 1, U, false>(s, pdl, g, K, x, nullptr, g.row0[3], ni);
  TWC_LAUNCHED("gemv_f16");
}

FGroup make_group(const Tensor* const* W, float* const* y, int count) {
  FGroup g{};
  g.row0[0] = 0;
  for (int i = 0; i < 3; ++i) {
    const int j = i < count ? i : count - 1;
    g.W[i] = (const uint8_t*)W[j]->data;
    g.y[i] = y[j];
    g.M[i] = (int)W[j]->ne1;
    g.row0[i + 1] = g.row0[i] + (i < count ? (int)W[i]->ne1 : 0);
  }
  return g;
}

}  // namespace

bool gemv_f16_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("TWINFER_CUDA_GEMV");
    return !(v && v[0] == '0');
  }();
  return on;
}

bool gemv_f16_supported(const Tensor& W, const float* x, int n) {
  return gemv_f16_enabled() && W.type == 1 && n >= 1 && n <= 2 && W.ne0 % 8 == 0 && W.ne0 < (1 << 28) &&
         W.ne1 < (1 << 28) && ((uintptr_t)W.data & 15) == 0 && ((uintptr_t)x & 15) == 0;
}

void gemv_f16(cudaStream_t s, bool pdl, int cfg, const Tensor* const* W, float* const* y, int count, const float* x,
              int n, const NormIn* nip) {
  const FGroup g = make_group(W, y, count);
  const int K = (int)W[0]->ne0;
  const NormIn ni = nip ? *nip : NormIn();
  if (n == 1) launch<1, false>(s, pdl, cfg, g, K, x, nullptr, ni);
  else launch<2, false>(s, pdl, cfg, g, K, x, nullptr, ni);
}

bool gemv_f16_swiglu_supported(const Tensor& gate, const Tensor& up, const float* x, int n) {
  return gemv_f16_supported(gate, x, n) && gemv_f16_supported(up, x, n) && gate.ne0 == up.ne0 && gate.ne1 == up.ne1;
}

void gemv_f16_swiglu(cudaStream_t s, bool pdl, const Tensor& gate, const Tensor& up, const float* x, int n, float* up_out,
                     float* out, const NormIn* nip) {
  const Tensor* W[2] = {&gate, &up};
  float* y[2] = {out, up_out};
  const FGroup g = make_group(W, y, 2);
  const int K = (int)gate.ne0;
  const NormIn ni = nip ? *nip : NormIn();
  if (n == 1) launch<1, true>(s, pdl, 0, g, K, x, out, ni);
  else launch<2, true>(s, pdl, 0, g, K, x, out, ni);
}

}  // namespace cuda
}  // namespace tw
