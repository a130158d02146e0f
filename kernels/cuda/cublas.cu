// Many-token products through cuBLAS, when the machine has it: loaded at run time (dlopen), never linked, so the
// addon still loads where only the driver is installed and falls back to its own tensor-core kernels there.
//
// Why: the mma.sync kernel of matmul.cu reaches ~190 TFLOP/s on an H100 at n = 512 (bench/NOTES.md run 6), while
// cuBLAS's Hopper kernels (wgmma) reach several times that. F16 weights go straight in; quantized weights are first
// dequantized to an F16 copy in scratch (one pass over the weight, exact values rounded to half), which pays only
// for prompt-sized n. Activations are rounded to F16 as in the tensor-core path; accumulation and output are F32.
#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "cuda_common.cuh"
#include "cuda_ops.h"

namespace tw {
namespace cuda {

namespace {

// The few cuBLAS entry points used, with their C types spelled as plain ints (no cuBLAS headers needed to build).
using CreateFn = int (*)(void**);
using DestroyFn = int (*)(void*);
using SetStreamFn = int (*)(void*, cudaStream_t);
using GemmExFn = int (*)(void*, int, int, int, int, int, const void*, const void*, int, int, const void*, int, int,
                         const void*, void*, int, int, int, int);
constexpr int kOpN = 0, kOpT = 1;          // cublasOperation_t
constexpr int kR16F = 2, kR32F = 0;        // cudaDataType_t
constexpr int kCompute32F = 68;            // cublasComputeType_t CUBLAS_COMPUTE_32F
constexpr int kGemmDefault = -1;           // cublasGemmAlgo_t CUBLAS_GEMM_DEFAULT

struct Cublas {
  bool tried = false;
  void* lib = nullptr;
  void* handle = nullptr;
  CreateFn create = nullptr;
  DestroyFn destroy = nullptr;
  SetStreamFn set_stream = nullptr;
  GemmExFn gemm = nullptr;
  std::string path;

  bool load() {
    if (tried) return handle != nullptr;
    tried = true;
    const char* off = std::getenv("TWINFER_CUDA_CUBLAS");
    if (off && off[0] == '0') return false;
    const char* names[] = {off && off[0] && off[0] != '1' ? off : nullptr, "libcublas.so.13", "libcublas.so.12",
                           "/usr/local/cuda/lib64/libcublas.so.13", "/usr/local/cuda/lib64/libcublas.so.12",
                           "libcublas.so"};
    for (const char* n : names) {
      if (!n) continue;
      lib = dlopen(n, RTLD_NOW | RTLD_LOCAL);
      if (lib) {
        path = n;
        break;
      }
    }
    if (!lib) return false;
    create = (CreateFn)dlsym(lib, "cublasCreate_v2");
    destroy = (DestroyFn)dlsym(lib, "cublasDestroy_v2");
    set_stream = (SetStreamFn)dlsym(lib, "cublasSetStream_v2");
    gemm = (GemmExFn)dlsym(lib, "cublasGemmEx");
    if (!create || !destroy || !set_stream || !gemm || create(&handle) != 0) {
      handle = nullptr;
      return false;
    }
    return true;
  }
};
Cublas g_cublas;

// One thread per 32-value unit of a weight row: exact values (load_elem, the shared dequantization) rounded to half.
__global__ void dequant_f16_kernel(int32_t type, const uint8_t* __restrict__ W, size_t row_bytes, int64_t rows,
                                   int K, __half* __restrict__ out) {
  const int64_t units = (int64_t)rows * (K / 32);
  for (int64_t u = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; u < units; u += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = u / (K / 32);
    const int k0 = (int)(u - r * (K / 32)) * 32;
    const uint8_t* row = W + r * row_bytes;
    __half2 h[16];
#pragma unroll
    for (int i = 0; i < 16; ++i) h[i] = __floats2half2_rn(load_elem(type, row, k0 + 2 * i), load_elem(type, row, k0 + 2 * i + 1));
    uint4* o = reinterpret_cast<uint4*>(out + r * K + k0);
#pragma unroll
    for (int i = 0; i < 4; ++i) o[i] = *reinterpret_cast<const uint4*>(&h[4 * i]);
  }
}

}  // namespace

const char* cublas_path() { return g_cublas.load() ? g_cublas.path.c_str() : nullptr; }

bool cublas_matmul(cudaStream_t s, MatmulScratch& scratch, const Tensor& W, const __half* x16, int n, float* y) {
  if (!g_cublas.load()) return false;
  const int K = (int)W.ne0, M = (int)W.ne1;
  if (K % 32 != 0) return false;
  const __half* A = nullptr;
  if (W.type == 1) {
    A = (const __half*)W.data;
  } else {
    // The F16 copy lives in scratch for the backend's lifetime: layer matrices only (a 128k-vocabulary output matrix
    // would hold 1 GB), the others keep the tensor-core kernel.
    if ((size_t)M * K * sizeof(__half) > ((size_t)256 << 20)) return false;
    __half* w16 = (__half*)scratch.wh.get((size_t)M * K * sizeof(__half));
    if (!w16) return false;
    const int64_t units = (int64_t)M * (K / 32);
    const int blocks = (int)std::min<int64_t>((units + 255) / 256, 1 << 16);
    dequant_f16_kernel<<<blocks, 256, 0, s>>>(kernel_type(W), (const uint8_t*)W.data, row_bytes(W.type, K), M, K, w16);
    TWC_LAUNCHED("dequant_f16");
    A = w16;
  }
  if (g_cublas.set_stream(g_cublas.handle, s) != 0) return false;
  const float one = 1.0f, zero = 0.0f;
  // Column-major view: y^T (M x n, ld M) = W (K x M col-major = row-major [M][K], transposed) * x^T (K x n, ld K).
  const int st = g_cublas.gemm(g_cublas.handle, kOpT, kOpN, M, n, K, &one, A, kR16F, K, x16, kR16F, K, &zero, y, kR32F,
                               M, kCompute32F, kGemmDefault);
  if (st != 0) {  // e.g. a cuBLAS too old for this GPU: stop using it; the caller's kernels take over
    g_cublas.handle = nullptr;
    return false;
  }
  return true;
}

}  // namespace cuda
}  // namespace tw
