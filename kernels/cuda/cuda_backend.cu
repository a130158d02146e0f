// tw::Backend on one CUDA device: weights, KV cache and activations in device memory; every op is a kernel on the
// backend's stream, so a forward step runs without host synchronization until its logits are downloaded.
#include <cstdio>
#include <string>

#include "cuda_common.cuh"
#include "cuda_ops.h"
#include "memory.h"
#include "twinfer_cuda.h"

namespace tw {
namespace cuda {

namespace {

// Bytes past the end of every allocation: the tensor-core kernels load whole 16-byte chunks of a stage and may read
// past the last row of a weight (the values are masked), so that read must stay inside the allocation.
constexpr size_t kPad = 1024;
// Upload chunk size of each of the two pinned buffers (the whole pinned footprint is twice this).
constexpr size_t kStagingChunk = 16u << 20;

class CudaBackend final : public Backend {
 public:
  bool init(int device, std::string& err) {
    device_ = device;
    cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess) return fail(err, "cudaSetDevice", e);
    cudaDeviceProp p;
    e = cudaGetDeviceProperties(&p, device);
    if (e != cudaSuccess) return fail(err, "cudaGetDeviceProperties", e);
    dev_.sm_count = p.multiProcessorCount;
    dev_.max_smem_optin = p.sharedMemPerBlockOptin;
    if (p.major < 8) {
      err = std::string("CUDA device ") + p.name + " has compute capability " + std::to_string(p.major) + "." +
            std::to_string(p.minor) + "; twinfer needs 8.0 or newer";
      return false;
    }
    e = cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking);
    if (e != cudaSuccess) return fail(err, "cudaStreamCreate", e);
    if (!staging_.init(kStagingChunk)) {
      err = "could not allocate pinned staging memory";
      return false;
    }
    return true;
  }

  ~CudaBackend() override {
    if (stream_) cudaStreamSynchronize(stream_);
    scratch_.free_all();
    xh_.free_all();
    attn_.free_all();
    staging_.destroy();
    if (stream_) cudaStreamDestroy(stream_);
  }

  const char* name() const override { return "cuda"; }

  void* alloc(size_t bytes) override {
    void* p = nullptr;
    if (cudaMalloc(&p, bytes + kPad) != cudaSuccess) {
      cudaGetLastError();  // an allocation failure is not sticky: clear it so later calls work
      return nullptr;
    }
    return p;
  }
  void release(void* p) override {
    if (p) cudaFree(p);
  }
  void* host_view(void*) override { return nullptr; }
  void upload(void* dst, const void* src, size_t n) override { staging_.upload(stream_, dst, src, n); }
  void download(void* dst, const void* src, size_t n) override {
    TWC_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, stream_));
    TWC_CHECK(cudaStreamSynchronize(stream_));
  }
  void copy(void* dst, const void* src, size_t n) override {
    TWC_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, stream_));
  }
  void synchronize() override { TWC_CHECK(cudaStreamSynchronize(stream_)); }

  void get_rows(const Tensor& table, const int32_t* ids, int n, float* out) override {
    cuda::get_rows(stream_, table, ids, n, out);
  }
  void rms_norm(const float* x, const Tensor& w, float* out, int n, int dim, float eps) override {
    cuda::rms_norm(stream_, x, (const float*)w.data, out, n, dim, eps);
  }
  void matmul(const Tensor& W, const float* x, int n, float* y) override {
    cuda::matmul(stream_, dev_, scratch_, xh_, W, x, n, y);
  }
  void add_bias(float* y, const Tensor& b, int n) override {
    cuda::add_bias(stream_, y, (const float*)b.data, n, (int)b.ne0);
  }
  void rope_store_kv(float* q, float* k, const float* v, const BatchView& b, const KVLayer& kv,
                     const AttentionShape& s, int rope_mode, float theta, float freq_scale) override {
    cuda::rope_store_kv(stream_, q, k, v, b, kv, s, rope_mode, theta, freq_scale);
  }
  void attention(const float* q, const BatchView& b, const KVLayer& kv, const AttentionShape& s,
                 float* out) override {
    if (!attention_supported(s)) {
      note_error(cudaErrorInvalidValue, "attention: unsupported head layout");
      return;
    }
    cuda::attention(stream_, dev_, attn_, q, b, kv, s, out);
  }
  void swiglu(const float* gate, const float* up, float* out, size_t n) override {
    cuda::swiglu(stream_, gate, up, out, n);
  }
  void add(float* x, const float* y, size_t n) override { cuda::add(stream_, x, y, n); }
  void gather_rows(const float* x, const int32_t* rows, int n, int width, float* out) override {
    cuda::gather_rows(stream_, x, rows, n, width, out);
  }

 private:
  static bool fail(std::string& err, const char* what, cudaError_t e) {
    cudaGetLastError();
    err = std::string(what) + " failed: " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
    return false;
  }

  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  DeviceInfo dev_;
  Scratch scratch_;  // split-K partial sums
  Scratch xh_;       // FP16 copy of a matmul's activations
  Scratch attn_;     // flash-decoding partials
  Staging staging_;
};

}  // namespace

}  // namespace cuda

Backend* make_backend(int32_t /*n_threads*/, int32_t device, int32_t /*flags*/, char* err, size_t err_len) {
  auto write_err = [&](const std::string& m) {
    if (err && err_len) std::snprintf(err, err_len, "%s", m.c_str());
  };
  int count = 0;
  char msg[256] = {0};
  if (twcuda_probe(&count, msg, sizeof msg) != 0 || count == 0) {
    write_err(msg[0] ? msg : "no CUDA device");
    return nullptr;
  }
  if (device < 0 || device >= count) {
    write_err("CUDA device " + std::to_string(device) + " does not exist (" + std::to_string(count) +
              " device(s) present)");
    return nullptr;
  }
  auto* be = new cuda::CudaBackend();
  std::string e;
  if (!be->init(device, e)) {
    delete be;
    write_err(e);
    return nullptr;
  }
  return be;
}

}  // namespace tw
