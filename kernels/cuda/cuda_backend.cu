// tw::Backend on one CUDA device: weights, KV cache and activations in device memory; every op is a kernel on the
// backend's stream, so a forward step runs without host synchronization until its logits are downloaded.
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

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

// TWINFER_CUDA_PROFILE=1: GPU time of every op, measured with events around its launches on the stream and summed
// per op name; printed to stderr when the backend is destroyed (model dispose). Graphs are off while profiling.
class OpProfiler {
 public:
  const bool on = [] {
    const char* v = std::getenv("TWINFER_CUDA_PROFILE");
    return v && v[0] == '1';
  }();
  void begin(cudaStream_t s, const char* name) {
    if (!on) return;
    cudaEvent_t a = take(), b = take();
    cudaEventRecord(a, s);
    open_.push_back({name, a, b});
  }
  void end(cudaStream_t s) {
    if (!on || open_.empty()) return;
    Rec r = open_.back();
    open_.pop_back();
    cudaEventRecord(r.b, s);
    done_.push_back(r);
  }
  // After a stream synchronization: fold the finished pairs into the totals.
  void collect() {
    if (!on) return;
    for (const Rec& r : done_) {
      float ms = 0;
      if (cudaEventElapsedTime(&ms, r.a, r.b) == cudaSuccess) {
        auto& t = totals_[r.name];
        t.first += ms;
        t.second += 1;
      } else {
        cudaGetLastError();
      }
      pool_.push_back(r.a);
      pool_.push_back(r.b);
    }
    done_.clear();
  }
  void step() { steps_ += on ? 1 : 0; }
  void report() {
    if (!on || totals_.empty()) return;
    double all = 0;
    for (auto& kv : totals_) all += kv.second.first;
    std::fprintf(stderr, "[cuda profile] %ld steps, %.3f ms GPU op time per step\n", steps_, steps_ ? all / steps_ : 0.0);
    for (auto& kv : totals_)
      std::fprintf(stderr, "[cuda profile] %-16s %10.3f ms total %8ld launches %8.2f us each %8.3f ms/step\n",
                   kv.first.c_str(), kv.second.first, kv.second.second, 1000.0 * kv.second.first / kv.second.second,
                   steps_ ? kv.second.first / steps_ : 0.0);
  }
  ~OpProfiler() {
    for (cudaEvent_t e : pool_) cudaEventDestroy(e);
  }

 private:
  struct Rec {
    const char* name;
    cudaEvent_t a, b;
  };
  cudaEvent_t take() {
    if (!pool_.empty()) {
      cudaEvent_t e = pool_.back();
      pool_.pop_back();
      return e;
    }
    cudaEvent_t e = nullptr;
    cudaEventCreate(&e);
    return e;
  }
  std::vector<Rec> open_, done_;
  std::vector<cudaEvent_t> pool_;
  std::map<std::string, std::pair<double, long>> totals_;
  long steps_ = 0;
};

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
    // Opt-in (TWINFER_CUDA_PDL=1): on an H100 it measured slightly slower (q4_0 tg128 206 vs 215 tok/s without,
    // bench/NOTES.md run 6; later runs: within noise either way).
    const char* pdl = std::getenv("TWINFER_CUDA_PDL");
    dev_.pdl = p.major >= 9 && pdl && pdl[0] == '1';
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
    prof_.collect();
    prof_.report();
    for (auto& kv : graphs_) cudaGraphExecDestroy(kv.second.exec);
    mm_.free_all();
    attn_.free_all();
    topk_.free_all();
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
    flush();
    mm_.pre_x = nullptr;  // x may be rewritten from here on
    if (p) cudaFree(p);
  }
  void* host_view(void*) override { return nullptr; }
  void upload(void* dst, const void* src, size_t n) override {
    flush();
    mm_.pre_x = nullptr;  // x may be rewritten from here on
    prof_.begin(stream_, "upload");
    staging_.upload(stream_, dst, src, n);
    prof_.end(stream_);
  }
  void download(void* dst, const void* src, size_t n) override {
    flush();
    mm_.pre_x = nullptr;  // x may be rewritten from here on
    if (capturing_) {  // the step is being recorded: copy once the graph has run (end_step)
      pending_.push_back({dst, src, n});
      return;
    }
    prof_.begin(stream_, "download");
    staging_.download(stream_, dst, src, n);
    prof_.end(stream_);
    TWC_CHECK(cudaStreamSynchronize(stream_));
    prof_.collect();
  }

  // CUDA graphs for small steps (decode): a step of a token count seen before is captured and replayed as one
  // graph launch (updated in place when only kernel parameters changed, e.g. the attention split as the context
  // grows), which removes the per-kernel launch gaps. The first step of each size runs eagerly so every kernel's
  // attributes and scratch buffers are settled before any capture. TWINFER_CUDA_GRAPHS=1 turns it on.
  void begin_step(const BatchView& b) override {
    flush();
    mm_.pre_x = nullptr;  // x may be rewritten from here on
    prof_.step();
    if (!graphs_enabled_ || prof_.on || b.n_tokens > kGraphMaxTokens) return;
    auto it = graphs_.find(b.n_tokens);
    if (it == graphs_.end()) {
      graphs_[b.n_tokens] = Graph{};  // eager this time
      return;
    }
    mm_.freeze();
    attn_.frozen = true;
    topk_.frozen = true;
    if (cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
      cudaGetLastError();
      mm_.thaw();
      attn_.thaw();
      topk_.thaw();
      return;
    }
    capturing_ = true;
    capture_key_ = b.n_tokens;
  }

  void end_step() override {
    flush();
    mm_.pre_x = nullptr;  // x may be rewritten from here on
    if (!capturing_) return;
    capturing_ = false;
    cudaGraph_t g = nullptr;
    cudaError_t e = cudaStreamEndCapture(stream_, &g);
    mm_.thaw();
    attn_.thaw();
    topk_.thaw();
    Graph& gr = graphs_[capture_key_];
    if (e == cudaSuccess) {
      bool ok = false;
      if (gr.exec) {
        cudaGraphExecUpdateResultInfo info;
        ok = cudaGraphExecUpdate(gr.exec, g, &info) == cudaSuccess;
        if (!ok) {
          cudaGetLastError();
          cudaGraphExecDestroy(gr.exec);
          gr.exec = nullptr;
        }
      }
      if (!ok) e = cudaGraphInstantiate(&gr.exec, g, 0);
      if (e == cudaSuccess) e = cudaGraphLaunch(gr.exec, stream_);
    }
    if (g) cudaGraphDestroy(g);
    note_error(e, "CUDA graph of a forward step");
    for (const auto& d : pending_) TWC_CHECK(cudaMemcpyAsync(d.dst, d.src, d.n, cudaMemcpyDeviceToHost, stream_));
    pending_.clear();
    TWC_CHECK(cudaStreamSynchronize(stream_));
  }
  void copy(void* dst, const void* src, size_t n) override {
    flush();
    mm_.pre_x = nullptr;  // x may be rewritten from here on
    TWC_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, stream_));
  }
  void synchronize() override {
    flush();
    mm_.pre_x = nullptr;  // x may be rewritten from here on
    TWC_CHECK(cudaStreamSynchronize(stream_));
    prof_.collect();
  }

  void get_rows(const Tensor& table, const int32_t* ids, int n, float* out) override {
    flush();
    mm_.pre_x = nullptr;  // x may be rewritten from here on
    prof_.begin(stream_, "get_rows");
    cuda::get_rows(stream_, table, ids, n, out);
    prof_.end(stream_);
  }
  // Three ops are held back one step so they can merge with the next: a residual add with the RMSNorm that reads
  // the same rows, products of the same activations (Q/K/V, gate/up) into one grouped launch, and SwiGLU into the
  // activation load of the product that consumes it (the down projection). Every other
  // entry point flushes first, so the observable order of effects is unchanged.
  void rms_norm(const float* x, const Tensor& w, float* out, int n, int dim, float eps) override {
    flush_rope();
    int8_t* q = nullptr;
    float2* ds = nullptr;
    bool quantized = false;
    if (add_.x && add_.x == x && add_.n == (size_t)n * dim) {  // nothing else is pending here: add() flushed
      norm_q8(n, dim, &q, &ds);
      prof_.begin(stream_, "add_rms_norm");
      quantized = cuda::add_rms_norm(stream_, add_.x, add_.y, (const float*)w.data, out, n, dim, eps, q, ds);
      prof_.end(stream_);
      add_ = {};
    } else {
      flush();
      norm_q8(n, dim, &q, &ds);
      prof_.begin(stream_, "rms_norm");
      quantized = cuda::rms_norm(stream_, x, (const float*)w.data, out, n, dim, eps, q, ds);
      prof_.end(stream_);
    }
    mark_quantized(quantized, out, n, dim);
  }
  // Decode rows (n <= 2, where the integer-dot kernel runs): the norm's (and the decode attention's) output also
  // goes out as int8 blocks, so the products that read it next skip their quantization launch (mm_.pre_x).
  void norm_q8(int n, int dim, int8_t** q, float2** ds) {
    if (n > 2 || dim % 32 != 0) return;
    const size_t qbytes = ((size_t)n * dim + 15) / 16 * 16;
    char* buf = (char*)mm_.nq.get(qbytes + (size_t)n * (dim / 32) * sizeof(float2));
    if (!buf) return;
    *q = (int8_t*)buf;
    *ds = (float2*)(buf + qbytes);
  }
  void matmul(const Tensor& W, const float* x, int n, float* y) override {
    flush_rope();
    if (sw_.out && sw_.out == x && sw_.n == (size_t)n * W.ne0 && cuda::tc_eligible(W)) {
      // The pending SwiGLU's product is this matmul's input: computed as the activations are loaded instead of
      // through memory. sw_.out is then never written; the forward pass reads it only here.
      prof_.begin(stream_, n <= 8 ? "matmul+swiglu n<=8" : "matmul+swiglu n>8");
      cuda::matmul_swiglu(stream_, dev_, mm_, W, sw_.gate, sw_.up, n, y);
      prof_.end(stream_);
      sw_ = {};
      return;
    }
    if (mm_q_.count > 0 && mm_q_.count < 3 && mm_q_.x == x && mm_q_.n == n &&
        cuda::matmul_groupable(mm_q_.W[0], W)) {
      mm_q_.W[mm_q_.count] = W;
      mm_q_.y[mm_q_.count++] = y;
      return;
    }
    flush();
    mm_q_.x = x;
    mm_q_.n = n;
    mm_q_.W[0] = W;
    mm_q_.y[0] = y;
    mm_q_.count = 1;
  }
  void add_bias(float* y, const Tensor& b, int n) override {
    flush();
    mm_.pre_x = nullptr;  // x may be rewritten from here on
    prof_.begin(stream_, "add_bias");
    cuda::add_bias(stream_, y, (const float*)b.data, n, (int)b.ne0);
    prof_.end(stream_);
  }
  // Held back like the ops above: a decode step's attention that reads these q and this cache does the rotation
  // and the cache write itself (attention_rope); anything else runs it first.
  void rope_store_kv(float* q, float* k, const float* v, const BatchView& b, const KVLayer& kv,
                     const AttentionShape& s, int rope_mode, float theta, float freq_scale) override {
    flush();
    mm_.pre_x = nullptr;  // x may be rewritten from here on
    rope_ = {q, k, v, b, kv, s, rope_mode, theta, freq_scale, true};
  }
  void attention(const float* q, const BatchView& b, const KVLayer& kv, const AttentionShape& s,
                 float* out) override {
    if (rope_.pending && rope_.q == q && rope_.kv.k == kv.k && rope_.b.pos == b.pos && rope_.b.n_tokens == b.n_tokens &&
        attention_supported(s) && cuda::attention_rope_fusable(dev_, b, s)) {
      rope_.pending = false;
      flush();
      mm_.pre_x = nullptr;
      int8_t* oq = nullptr;
      float2* ods = nullptr;
      norm_q8(b.n_tokens, s.n_head * s.head_dim, &oq, &ods);  // the output projection's int8 activations
      prof_.begin(stream_, "attention+rope");
      const bool quantized = cuda::attention_rope(stream_, dev_, rope_.q, rope_.k, rope_.v, b, kv, s, rope_.mode,
                                                  rope_.theta, rope_.freq_scale, out, oq, ods);
      prof_.end(stream_);
      mark_quantized(quantized, out, b.n_tokens, s.n_head * s.head_dim);
      return;
    }
    flush();
    mm_.pre_x = nullptr;
    if (!attention_supported(s)) {
      note_error(cudaErrorInvalidValue, "attention: unsupported head layout");
      return;
    }
    int8_t* oq = nullptr;
    float2* ods = nullptr;
    norm_q8(b.n_tokens, s.n_head * s.head_dim, &oq, &ods);
    prof_.begin(stream_, "attention");
    const bool quantized = cuda::attention(stream_, dev_, attn_, q, b, kv, s, out, oq, ods);
    prof_.end(stream_);
    mark_quantized(quantized, out, b.n_tokens, s.n_head * s.head_dim);
  }
  // x (n rows of k values) was also written as int8 blocks into mm_.nq: the next product reading x may use them.
  void mark_quantized(bool quantized, const float* x, int n, int k) {
    mm_.pre_x = quantized ? x : nullptr;
    mm_.pre_n = n;
    mm_.pre_k = k;
  }
  void swiglu(const float* gate, const float* up, float* out, size_t n) override {
    flush();
    mm_.pre_x = nullptr;  // x may be rewritten from here on
    sw_ = {gate, up, out, n};
  }
  void add(float* x, const float* y, size_t n) override {
    flush();
    mm_.pre_x = nullptr;  // x may be rewritten from here on
    add_ = {x, y, n};
  }
  void gather_rows(const float* x, const int32_t* rows, int n, int width, float* out) override {
    flush();
    mm_.pre_x = nullptr;  // x may be rewritten from here on
    prof_.begin(stream_, "gather_rows");
    cuda::gather_rows(stream_, x, rows, n, width, out);
    prof_.end(stream_);
  }
  // Selection on the device; only rows x k ids and values are downloaded (topk.cu).
  void top_k(const float* x, int rows, int width, int k, int32_t* ids, float* vals) override {
    flush();
    mm_.pre_x = nullptr;  // x may be rewritten from here on
    if (rows <= 0) return;
    // Sized for the largest k at once (and at least 16 rows), so a graph capture of a later step never needs to grow it.
    const int cap_rows = rows < 16 ? 16 : rows;
    const size_t out_bytes = (size_t)cap_rows * cuda::topk_max_k() * 8;
    char* sc = k <= cuda::topk_max_k()
                   ? (char*)topk_.get(out_bytes + cuda::topk_scratch_bytes(cap_rows, width, cuda::topk_max_k()))
                   : nullptr;
    if (!sc) {
      Backend::top_k(x, rows, width, k, ids, vals);
      return;
    }
    float* dv = (float*)sc;
    int32_t* di = (int32_t*)(sc + (size_t)rows * k * 4);
    prof_.begin(stream_, "top_k");
    cuda::topk(stream_, x, rows, width, k, sc + out_bytes, dv, di);
    prof_.end(stream_);
    download(vals, dv, (size_t)rows * k * 4);
    download(ids, di, (size_t)rows * k * 4);
  }

 private:
  static bool fail(std::string& err, const char* what, cudaError_t e) {
    cudaGetLastError();
    err = std::string(what) + " failed: " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
    return false;
  }

  void flush_rope() {
    if (!rope_.pending) return;
    rope_.pending = false;
    prof_.begin(stream_, "rope_store_kv");
    cuda::rope_store_kv(stream_, rope_.q, rope_.k, rope_.v, rope_.b, rope_.kv, rope_.s, rope_.mode, rope_.theta,
                        rope_.freq_scale);
    prof_.end(stream_);
  }
  void flush() {
    flush_rope();
    if (mm_q_.count) {
      const Tensor* w[3] = {&mm_q_.W[0], &mm_q_.W[1], &mm_q_.W[2]};
      prof_.begin(stream_, mm_q_.n <= 8 ? "matmul n<=8" : "matmul n>8");
      cuda::matmul_group(stream_, dev_, mm_, w, mm_q_.y, mm_q_.count, mm_q_.x, mm_q_.n);
      prof_.end(stream_);
      mm_q_.count = 0;
    }
    if (sw_.out) {
      prof_.begin(stream_, "swiglu");
      cuda::swiglu(stream_, sw_.gate, sw_.up, sw_.out, sw_.n);
      prof_.end(stream_);
      sw_ = {};
    }
    if (add_.x) {
      prof_.begin(stream_, "add");
      cuda::add(stream_, add_.x, add_.y, add_.n);
      prof_.end(stream_);
      add_ = {};
    }
  }
  struct PendingAdd {
    float* x = nullptr;
    const float* y = nullptr;
    size_t n = 0;
  };
  struct PendingMatmuls {
    const float* x = nullptr;
    int n = 0;
    int count = 0;
    Tensor W[3];
    float* y[3] = {nullptr, nullptr, nullptr};
  };
  struct PendingSwiglu {
    const float* gate = nullptr;
    const float* up = nullptr;
    float* out = nullptr;
    size_t n = 0;
  };
  struct PendingRope {
    float* q = nullptr;
    float* k = nullptr;
    const float* v = nullptr;
    BatchView b;
    KVLayer kv;
    AttentionShape s{};
    int mode = 0;
    float theta = 0, freq_scale = 0;
    bool pending = false;
  };
  PendingRope rope_;
  PendingAdd add_;
  PendingSwiglu sw_;
  PendingMatmuls mm_q_;

  struct Graph {
    cudaGraphExec_t exec = nullptr;
  };
  struct PendingCopy {
    void* dst;
    const void* src;
    size_t n;
  };
  // Opt-in: capturing and updating the graph every step cost about what it saved (H200, bench/NOTES.md run 3:
  // single-stream decode 201 vs 203 tok/s without, 8 sequences 1042 vs 1245).
  static constexpr int kGraphMaxTokens = 16;
  const bool graphs_enabled_ = [] {
    const char* v = std::getenv("TWINFER_CUDA_GRAPHS");
    return v && v[0] == '1';
  }();
  bool capturing_ = false;
  int capture_key_ = 0;
  std::map<int, Graph> graphs_;
  std::vector<PendingCopy> pending_;

  OpProfiler prof_;
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  DeviceInfo dev_;
  MatmulScratch mm_;  // split-K partials and counters, FP16 activations
  Scratch attn_;      // flash-decoding partials
  Scratch topk_;      // top-k rounds and their result
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
