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

// Element j (0-based within the row) of a weight row in GGUF block layout, as F32: exact (ggml's arithmetic).
__device__ __forceinline__ float load_elem(int32_t type, const uint8_t* row, int64_t j) {
  switch (type) {
    case 0: return reinterpret_cast<const float*>(row)[j];
    case 1: return fp16_to_f32(reinterpret_cast<const uint16_t*>(row)[j]);
    case 30: return bf16_to_f32(reinterpret_cast<const uint16_t*>(row)[j]);
    case 2: {
      const block_q4_0* b = reinterpret_cast<const block_q4_0*>(row) + j / QK4_0;
      const int i = (int)(j % QK4_0);
      const int q = i < QK4_0 / 2 ? (b->qs[i] & 0x0F) : (b->qs[i - QK4_0 / 2] >> 4);
      return (q - 8) * fp16_to_f32(b->d);
    }
    case 8: {
      const block_q8_0* b = reinterpret_cast<const block_q8_0*>(row) + j / QK8_0;
      return b->qs[j % QK8_0] * fp16_to_f32(b->d);
    }
    default: return 0.0f;
  }
}

inline int ceil_div(int64_t a, int64_t b) { return (int)((a + b - 1) / b); }

}  // namespace cuda
}  // namespace tw
