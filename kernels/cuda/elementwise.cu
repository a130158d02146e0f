// Row-wise and elementwise ops: embedding lookup, RMSNorm, bias, SwiGLU, residual add, row gather.
// All are memory-bound one-pass kernels; what matters is one read and one write per element.
#include "cuda_common.cuh"
#include "cuda_ops.h"
#include "norm_fused.cuh"

namespace tw {
namespace cuda {

namespace {

__global__ void get_rows_kernel(int32_t type, const uint8_t* table, size_t row_bytes, const int32_t* ids, int64_t ne0,
                                float* out) {
  pdl_trigger();  // lets a following matmul start streaming its weights
  const int t = blockIdx.x;
  const uint8_t* row = table + (size_t)ids[t] * row_bytes;
  float* o = out + (size_t)t * ne0;
  for (int64_t j = threadIdx.x; j < ne0; j += blockDim.x) o[j] = load_elem(type, row, j);
}

// One block per row: sum of squares in float (ggml sums in float too, then divides by dim).
__global__ void rms_norm_kernel(const float* x, const float* w, float* out, int dim, float eps) {
  pdl_trigger();  // lets a following matmul start streaming its weights
  const float* xr = x + (size_t)blockIdx.x * dim;
  float* o = out + (size_t)blockIdx.x * dim;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
  __shared__ float red[32];
  ss = warp_sum(ss);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = ss;
  __syncthreads();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < (blockDim.x >> 5) ? red[threadIdx.x] : 0.0f;
    v = warp_sum(v);
    if (threadIdx.x == 0) red[0] = v;
  }
  __syncthreads();
  const float scale = 1.0f / sqrtf(red[0] / dim + eps);
  // out may alias x: each element is read and written by the same thread after the reduction.
  for (int i = threadIdx.x; i < dim; i += blockDim.x) o[i] = xr[i] * scale * w[i];
}

__global__ void add_rms_norm_kernel(float* x, const float* y, const float* w, float* out, int dim, float eps) {
  pdl_trigger();  // lets a following matmul start streaming its weights
  float* xr = x + (size_t)blockIdx.x * dim;
  const float* yr = y + (size_t)blockIdx.x * dim;
  float* o = out + (size_t)blockIdx.x * dim;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    const float v = xr[i] + yr[i];
    xr[i] = v;
    ss += v * v;
  }
  __shared__ float red[32];
  ss = warp_sum(ss);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = ss;
  __syncthreads();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < (blockDim.x >> 5) ? red[threadIdx.x] : 0.0f;
    v = warp_sum(v);
    if (threadIdx.x == 0) red[0] = v;
  }
  __syncthreads();
  const float scale = 1.0f / sqrtf(red[0] / dim + eps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) o[i] = xr[i] * scale * w[i];
}

// Rows of dim % 4 == 0, dim <= 4 * NPT * 256: each of 256 threads holds NPT float4 of the row in registers, so the
// row is read once with 16-byte loads (the generic kernels above re-read it and issue 4-byte loads one after the
// other: ~7 us per decode-step norm, run 4). ADD: x += y first (the residual), written back.
// q / ds (not null; dim % 32 == 0): the output also as int8 blocks of 32 with (d, d * sum q), exactly as mmvq.cu's
// quantize_q8_kernel would compute them from `out` — the next decode product then needs no quantization launch.
template <bool ADD, int NPT>
__global__ void __launch_bounds__(256) rms_norm_v4_kernel(float* x, const float* y, const float* w, float* out,
                                                          int dim, float eps, int8_t* q, float2* ds) {
  pdl_trigger();  // lets a following matmul start streaming its weights
  pdl_wait();     // launched with PDL (decode rows): the previous kernel's output is read below
  const int d4 = dim / 4;
  float4* xr = reinterpret_cast<float4*>(x + (size_t)blockIdx.x * dim);
  const float4* yr = reinterpret_cast<const float4*>(y + (size_t)blockIdx.x * dim);
  float4* o = reinterpret_cast<float4*>(out + (size_t)blockIdx.x * dim);
  const float4* w4 = reinterpret_cast<const float4*>(w);
  float4 v[NPT], yv[NPT];
#pragma unroll
  for (int i = 0; i < NPT; ++i) {
    const int j = threadIdx.x + i * 256;
    v[i] = j < d4 ? xr[j] : make_float4(0, 0, 0, 0);
    if (ADD) yv[i] = j < d4 ? yr[j] : make_float4(0, 0, 0, 0);
  }
  float ss = 0.0f;
#pragma unroll
  for (int i = 0; i < NPT; ++i) {
    if (ADD) {
      v[i].x += yv[i].x, v[i].y += yv[i].y, v[i].z += yv[i].z, v[i].w += yv[i].w;
      const int j = threadIdx.x + i * 256;
      if (j < d4) xr[j] = v[i];
    }
    ss += v[i].x * v[i].x + v[i].y * v[i].y + v[i].z * v[i].z + v[i].w * v[i].w;
  }
  __shared__ float red[8];
  ss = warp_sum(ss);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = ss;
  __syncthreads();
  float tot = 0.0f;
#pragma unroll
  for (int i = 0; i < 8; ++i) tot += red[i];
  const float scale = 1.0f / sqrtf(tot / dim + eps);
#pragma unroll
  for (int i = 0; i < NPT; ++i) {
    const int j = threadIdx.x + i * 256;
    float4 r = make_float4(0, 0, 0, 0);
    if (j < d4) {
      const float4 ww = w4[j];
      r = make_float4(v[i].x * scale * ww.x, v[i].y * scale * ww.y, v[i].z * scale * ww.z, v[i].w * scale * ww.w);
      o[j] = r;
    }
    if (q) {  // uniform branch; 8 consecutive threads hold one 32-value block (d4 % 8 == 0: all in or all out)
      float amax = fmaxf(fmaxf(fabsf(r.x), fabsf(r.y)), fmaxf(fabsf(r.z), fabsf(r.w)));
#pragma unroll
      for (int m = 1; m < 8; m <<= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, m));
      const float d = amax / 127.0f;
      const int q0 = amax == 0.0f ? 0 : __float2int_rn(r.x / d), q1 = amax == 0.0f ? 0 : __float2int_rn(r.y / d);
      const int q2 = amax == 0.0f ? 0 : __float2int_rn(r.z / d), q3 = amax == 0.0f ? 0 : __float2int_rn(r.w / d);
      float sum = (float)(q0 + q1 + q2 + q3);
#pragma unroll
      for (int m = 1; m < 8; m <<= 1) sum += __shfl_xor_sync(0xffffffffu, sum, m);
      if (j < d4) {
        const size_t e = (size_t)blockIdx.x * dim + 4 * (size_t)j;
        *reinterpret_cast<char4*>(q + e) = make_char4((signed char)q0, (signed char)q1, (signed char)q2, (signed char)q3);
        if ((threadIdx.x & 7) == 0) ds[e / 32] = make_float2(d, d * sum);
      }
    }
  }
}

template <bool ADD>
bool rms_norm_v4(cudaStream_t s, float* x, const float* y, const float* w, float* out, int n, int dim, float eps,
                 int8_t* q, float2* ds, bool pdl) {
  const bool aligned = ((uintptr_t)x | (uintptr_t)y | (uintptr_t)w | (uintptr_t)out) % 16 == 0;
  if (dim % 4 != 0 || !aligned) return false;
  if (dim % 32 != 0) q = nullptr, ds = nullptr;
  const int npt = (dim / 4 + 255) / 256;
  switch (npt) {
    case 1: launch_kernel(pdl, rms_norm_v4_kernel<ADD, 1>, dim3(n), dim3(256), s, x, y, w, out, dim, eps, q, ds); break;
    case 2: launch_kernel(pdl, rms_norm_v4_kernel<ADD, 2>, dim3(n), dim3(256), s, x, y, w, out, dim, eps, q, ds); break;
    case 3:
    case 4: launch_kernel(pdl, rms_norm_v4_kernel<ADD, 4>, dim3(n), dim3(256), s, x, y, w, out, dim, eps, q, ds); break;
    case 5: case 6: case 7:
    case 8: launch_kernel(pdl, rms_norm_v4_kernel<ADD, 8>, dim3(n), dim3(256), s, x, y, w, out, dim, eps, q, ds); break;
    default: return false;
  }
  return true;
}

__global__ void add_bias_kernel(float* y, const float* b, size_t total, int width) {
  pdl_trigger();  // lets a following matmul start streaming its weights
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
    y[i] += b[i % width];
}

__global__ void swiglu_kernel(const float* g, const float* u, float* out, size_t n) {
  pdl_trigger();  // lets a following matmul start streaming its weights
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const float x = g[i];
    out[i] = x / (1.0f + expf(-x)) * u[i];  // ggml_silu_f32 * up
  }
}

__global__ void add_kernel(float* x, const float* y, size_t n) {
  pdl_trigger();  // lets a following matmul start streaming its weights
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    x[i] += y[i];
}

__global__ void gather_rows_kernel(const float* x, const int32_t* rows, int width, float* out) {
  pdl_trigger();  // lets a following matmul start streaming its weights
  const float* src = x + (size_t)rows[blockIdx.x] * width;
  float* dst = out + (size_t)blockIdx.x * width;
  for (int i = threadIdx.x; i < width; i += blockDim.x) dst[i] = src[i];
}

__global__ void f32_to_f16_kernel(const float* x, __half* out, size_t n) {
  pdl_trigger();  // lets a following matmul start streaming its weights
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    out[i] = __float2half_rn(x[i]);
}

__global__ void swiglu_f16_kernel(const float* g, const float* u, __half* out, size_t n) {
  pdl_trigger();  // lets a following matmul start streaming its weights
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const float x = g[i];
    out[i] = __float2half_rn(x / (1.0f + expf(-x)) * u[i]);  // swiglu_kernel's value, then f32_to_f16's rounding
  }
}

// One warp per 32-value block (norm_fused.cuh).
__global__ void __launch_bounds__(256) norm_blocks_kernel(NormOut no, int blocks) {
  pdl_trigger();  // lets the products that read u start streaming their weights
  pdl_wait();
  const int gb = blockIdx.x * 8 + (threadIdx.x >> 5);
  if (gb < blocks) norm_block(no, gb, threadIdx.x & 31);
}

// One CTA per row: h = x * s * w from the split norm's block sums (products that could not take u).
__global__ void __launch_bounds__(256) norm_finish_kernel(NormIn ni) {
  pdl_trigger();
  pdl_wait();
  const int c = blockIdx.x, lane = threadIdx.x & 31;
  const float s = norm_scale(ni, c, lane);
  for (int k = threadIdx.x; k < ni.dim; k += blockDim.x)
    ni.h[(size_t)c * ni.dim + k] = ni.x[(size_t)c * ni.dim + k] * s * ni.w[k];
}

int grid_for(size_t n, int threads) {
  size_t g = (n + threads - 1) / threads;
  if (g > 65535) g = 65535;
  return g < 1 ? 1 : (int)g;
}

}  // namespace

void get_rows(cudaStream_t s, const Tensor& table, const int32_t* ids, int n, float* out) {
  if (n <= 0) return;
  get_rows_kernel<<<n, 256, 0, s>>>(kernel_type(table), (const uint8_t*)table.data, row_bytes(table.type, table.ne0), ids,
                                    table.ne0, out);
  TWC_LAUNCHED("get_rows");
}

bool rms_norm(cudaStream_t s, const float* x, const float* w, float* out, int n, int dim, float eps, int8_t* q,
              float2* ds, bool pdl) {
  if (n <= 0) return false;
  if (rms_norm_v4<false>(s, const_cast<float*>(x), x, w, out, n, dim, eps, q, ds, pdl)) {
    TWC_LAUNCHED("rms_norm");
    return q && dim % 32 == 0;
  }
  const int threads = dim >= 1024 ? 1024 : ((dim + 31) / 32) * 32;
  rms_norm_kernel<<<n, threads, 0, s>>>(x, w, out, dim, eps);
  TWC_LAUNCHED("rms_norm");
  return false;
}

bool add_rms_norm(cudaStream_t s, float* x, const float* y, const float* w, float* out, int n, int dim, float eps,
                  int8_t* q, float2* ds, bool pdl) {
  if (n <= 0) return false;
  if (rms_norm_v4<true>(s, x, y, w, out, n, dim, eps, q, ds, pdl)) {
    TWC_LAUNCHED("add_rms_norm");
    return q && dim % 32 == 0;
  }
  const int threads = dim >= 1024 ? 1024 : ((dim + 31) / 32) * 32;
  add_rms_norm_kernel<<<n, threads, 0, s>>>(x, y, w, out, dim, eps);
  TWC_LAUNCHED("add_rms_norm");
  return false;
}

void add_bias(cudaStream_t s, float* y, const float* b, int n, int width) {
  const size_t total = (size_t)n * width;
  if (total == 0) return;
  add_bias_kernel<<<grid_for(total, 256), 256, 0, s>>>(y, b, total, width);
  TWC_LAUNCHED("add_bias");
}

void swiglu(cudaStream_t s, const float* gate, const float* up, float* out, size_t n) {
  if (n == 0) return;
  swiglu_kernel<<<grid_for(n, 256), 256, 0, s>>>(gate, up, out, n);
  TWC_LAUNCHED("swiglu");
}

void add(cudaStream_t s, float* x, const float* y, size_t n) {
  if (n == 0) return;
  add_kernel<<<grid_for(n, 256), 256, 0, s>>>(x, y, n);
  TWC_LAUNCHED("add");
}

void gather_rows(cudaStream_t s, const float* x, const int32_t* rows, int n, int width, float* out) {
  if (n <= 0) return;
  gather_rows_kernel<<<n, 256, 0, s>>>(x, rows, width, out);
  TWC_LAUNCHED("gather_rows");
}

void f32_to_f16(cudaStream_t s, const float* x, __half* out, size_t n) {
  if (n == 0) return;
  f32_to_f16_kernel<<<grid_for(n, 256), 256, 0, s>>>(x, out, n);
  TWC_LAUNCHED("f32_to_f16");
}

void swiglu_f16(cudaStream_t s, const float* gate, const float* up, __half* out, size_t n) {
  if (n == 0) return;
  swiglu_f16_kernel<<<grid_for(n, 256), 256, 0, s>>>(gate, up, out, n);
  TWC_LAUNCHED("swiglu_f16");
}

void norm_blocks(cudaStream_t s, const NormOut& no, int n, bool pdl) {
  const int blocks = n * (no.dim / 32);
  if (blocks <= 0) return;
  launch_kernel(pdl, norm_blocks_kernel, dim3((blocks + 7) / 8), dim3(256), s, no, blocks);
  TWC_LAUNCHED("norm_blocks");
}

void norm_finish(cudaStream_t s, const NormIn& ni, int n, bool pdl) {
  if (n <= 0) return;
  launch_kernel(pdl, norm_finish_kernel, dim3(n), dim3(256), s, ni);
  TWC_LAUNCHED("norm_finish");
}

}  // namespace cuda
}  // namespace tw
