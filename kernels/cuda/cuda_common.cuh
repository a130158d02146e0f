// Shared helpers of the CUDA backend: error checks, warp reductions, element access to GGUF weight blocks.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../common/quants.h"

namespace tw {
namespace cuda {

// Kernel launches are checked at the backend level (cudaGetLastError after each op in debug, at sync points
// otherwise), so launchers return nothing; this records the first failure so the engine can report it.
void note_error(cudaError_t e, const char* where);
#define TWC_CHECK(call) ::tw::cuda::note_error((call), #call)
#define TWC_LAUNCHED(name) ::tw::cuda::note_error(cudaGetLastError(), name)

// Programmatic dependent launch (sm_90): a kernel launched with the PDL attribute (the matmuls) may start while the
// previous kernel of the stream still runs, once every CTA of that kernel has called pdl_trigger(); it must call
// pdl_wait() before it reads anything the previous kernel writes (or writes anything it reads). The matmuls stream
// their first weight stage in between: weights are never written by a step. No-ops before sm_90.
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// A kernel launch with `smem` bytes of dynamic shared memory, with programmatic dependent launch when pdl is set
// (the kernel then must pdl_wait() before it touches anything an earlier kernel of the stream writes or reads).
template <typename... KArgs, typename... Args>
inline void launch_kernel_smem(bool pdl, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                               const char* what, Args... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl ? 1 : 0;
  note_error(cudaLaunchKernelEx(&cfg, kernel, args...), what);
}
template <typename... KArgs, typename... Args>
inline void launch_kernel(bool pdl, void (*kernel)(KArgs...), dim3 grid, dim3 block, cudaStream_t s, Args... args) {
  launch_kernel_smem(pdl, kernel, grid, block, 0, s, "kernel launch", args...);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// fp16 bits -> float through the hardware conversion: exact, so identical to fp16_to_f32, in one instruction.
__device__ __forceinline__ float h2f(uint16_t bits) { return __half2float(__ushort_as_half(bits)); }

// Type code the kernels dispatch on for Q4_0 weights that prepare_weight rearranged (Tensor::layout 1, repack.cu):
// 256-value groups of 144 bytes, 16 chunks of 8 nibble bytes (chunk p: values 16p..16p+15, byte i holds value i
// in its low and value i + 8 in its high nibble), then the group's eight fp16 scales. kernel_type() (cuda_ops.h)
// maps a tensor to it.
constexpr int32_t kQ4_0T = 0x1002;

// Element j (0-based within the row) of a weight row in GGUF block layout (or kQ4_0T's), as F32: exact (ggml's
// arithmetic).
__device__ __forceinline__ float load_elem(int32_t type, const uint8_t* row, int64_t j) {
  switch (type) {
    case kQ4_0T: {
      const uint8_t* g = row + (j / 256) * 144;
      const int e = (int)(j % 256), m = e % 16;
      const int q = (g[8 * (e / 16) + (m & 7)] >> (4 * (m >> 3))) & 0x0F;
      return (q - 8) * h2f(*reinterpret_cast<const uint16_t*>(g + 128 + 2 * (e / 32)));
    }
    case 0: return reinterpret_cast<const float*>(row)[j];
    case 1: return h2f(reinterpret_cast<const uint16_t*>(row)[j]);
    case 30: return bf16_to_f32(reinterpret_cast<const uint16_t*>(row)[j]);
    case 2: {
      const block_q4_0* b = reinterpret_cast<const block_q4_0*>(row) + j / QK4_0;
      const int i = (int)(j % QK4_0);
      const int q = i < QK4_0 / 2 ? (b->qs[i] & 0x0F) : (b->qs[i - QK4_0 / 2] >> 4);
      return (q - 8) * h2f(b->d);
    }
    case 8: {
      const block_q8_0* b = reinterpret_cast<const block_q8_0*>(row) + j / QK8_0;
      return b->qs[j % QK8_0] * h2f(b->d);
    }
    case 3: {
      const block_q4_1* b = reinterpret_cast<const block_q4_1*>(row) + j / QK4_1;
      const int i = (int)(j % QK4_1);
      const int q = i < 16 ? (b->qs[i] & 0x0F) : (b->qs[i - 16] >> 4);
      return mul_add_exact((float)q, h2f(b->d), h2f(b->m));
    }
    case 6:
    case 7: {  // Q5_0 / Q5_1: the fifth bit of element i is bit i of qh
      const int i = (int)(j % 32);
      const uint8_t* b = row + (j / 32) * (type == 6 ? sizeof(block_q5_0) : sizeof(block_q5_1));
      const uint8_t* qh = b + (type == 6 ? 2 : 4);
      const uint8_t* qs = qh + 4;
      const int q = (i < 16 ? (qs[i] & 0x0F) : (qs[i - 16] >> 4)) | (((load_u32_le(qh) >> i) & 1) << 4);
      const float d = h2f(*reinterpret_cast<const uint16_t*>(b));
      if (type == 6) return (float)(q - 16) * d;
      return mul_add_exact((float)q, d, h2f(*reinterpret_cast<const uint16_t*>(b + 2)));
    }
    case 12:
    case 13: {  // Q4_K / Q5_K, as dequant_block_q{4,5}_K: d*sc * q - dmin*m, sub-block u = i / 32
      const int i = (int)(j % QK_K), u = i / 32, l = i % 32;
      const uint8_t* b = row + (j / QK_K) * (type == 12 ? sizeof(block_q4_K) : sizeof(block_q5_K));
      const float d = h2f(*reinterpret_cast<const uint16_t*>(b));
      const float dmin = h2f(*reinterpret_cast<const uint16_t*>(b + 2));
      uint8_t sc, m;
      get_scale_min_k4(u, b + 4, &sc, &m);
      const uint8_t* qs = b + (type == 12 ? 16 : 48) + 32 * (u / 2);
      int q = (u & 1) ? (qs[l] >> 4) : (qs[l] & 0x0F);
      if (type == 13 && ((b[16 + l] >> u) & 1)) q += 16;
      return mul_sub_exact(d * sc, (float)q, dmin * m);
    }
    case 14: {  // Q6_K, as dequant_block_q6_K: (d * sc) * (q - 32)
      const int i = (int)(j % QK_K), hh = i / 128, p = (i % 128) / 32, l = i % 32;
      const block_q6_K* b = reinterpret_cast<const block_q6_K*>(row) + j / QK_K;
      const uint8_t lo = b->ql[64 * hh + 32 * (p & 1) + l];
      const int q = (((p >> 1) ? (lo >> 4) : (lo & 0x0F)) | (((b->qh[32 * hh + l] >> (2 * p)) & 3) << 4)) - 32;
      return h2f(b->d) * (float)b->scales[8 * hh + 2 * p + l / 16] * (float)q;
    }
    default: return 0.0f;
  }
}

inline int ceil_div(int64_t a, int64_t b) { return (int)((a + b - 1) / b); }

}  // namespace cuda
}  // namespace tw
