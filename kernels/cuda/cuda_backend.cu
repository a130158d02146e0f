// tw::Backend on one CUDA device: weights, KV cache and activations in device memory; every op is a kernel on the
// backend's stream, so a forward step runs without host synchronization until its logits are downloaded.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <set>
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

// TWINFER_CUDA_STEP_TIMES=1: where the wall time of a replayed (CUDA graph) step goes, printed at dispose:
//   caller  from the end of one step to the first upload of the next (the SDK: sampling, detokenizing, N-API)
//   prep    first upload to begin_step (the forward pass's host work and its small uploads)
//   begin..end  begin_step to the end of end_step: the graph launch, its GPU time (events around the launch) and
//               the downloads with their waits
// Only steps that replayed a graph count (the steady state of decode); graphs stay on.
class StepTimer {
 public:
  const bool on = [] {
    const char* v = std::getenv("TWINFER_CUDA_STEP_TIMES");
    return v && v[0] == '1';
  }();
  static double now_us() {
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now().time_since_epoch()).count();
  }
  void upload() {
    if (on && t_up_ < 0) t_up_ = now_us();
  }
  void begin(cudaStream_t s, bool replay, int n_tokens) {
    if (!on) return;
    t_begin_ = now_us();
    k_ = n_tokens < kMax ? n_tokens : kMax - 1;
    if (!ev0_) cudaEventCreate(&ev0_), cudaEventCreate(&ev1_);
    replay_ = replay;
    if (replay) cudaEventRecord(ev0_, s);
  }
  void before_downloads(cudaStream_t s) {
    if (on && replay_) cudaEventRecord(ev1_, s);
  }
  void end(bool counted) {
    if (!on) return;
    const double t = now_us();
    if (replay_ && counted && t_up_ >= 0) {
      float ms = 0;
      if (cudaEventElapsedTime(&ms, ev0_, ev1_) != cudaSuccess) cudaGetLastError(), ms = 0;
      Acc& a = acc_[k_];
      if (t_end_ >= 0) a.caller += t_up_ - t_end_, ++a.n_caller;
      a.prep += t_begin_ - t_up_;
      a.in += t - t_begin_;
      a.gpu += 1000.0 * ms;
      ++a.n;
    }
    t_end_ = t;
    t_up_ = -1;
    replay_ = false;
  }
  ~StepTimer() {
    for (int k = 0; on && k < kMax; ++k) {
      const Acc& a = acc_[k];
      if (!a.n) continue;
      std::fprintf(stderr,
                   "[cuda steps] %d token(s): %ld replayed steps, per step (us): caller %.1f, prep+uploads %.1f, "
                   "begin..end %.1f (graph GPU time %.1f, so launch/download/wait %.1f)\n",
                   k, a.n, a.n_caller ? a.caller / a.n_caller : 0.0, a.prep / a.n, a.in / a.n, a.gpu / a.n,
                   (a.in - a.gpu) / a.n);
    }
    if (ev0_) cudaEventDestroy(ev0_), cudaEventDestroy(ev1_);
  }

 private:
  cudaEvent_t ev0_ = nullptr, ev1_ = nullptr;
  double t_up_ = -1, t_begin_ = 0, t_end_ = -1;
  bool replay_ = false;
  static constexpr int kMax = 10;  // by tokens in the step (9: more)
  int k_ = 0;
  struct Acc {
    double caller = 0, prep = 0, in = 0, gpu = 0;
    long n = 0, n_caller = 0;
  } acc_[kMax];
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
    // The decode products (one or two tokens) stream their first weights while the previous kernel finishes:
    // H100, graphs on, tg128 f16 160.5 vs 157, q4_0 ~+3 % (bench/NOTES.md run 17); the tensor-core kernel at n = 8
    // measured slower with it (q4_0 batched8 1600 vs 1700-1770), so that one stays opt-in.
    dev_.pdl_gemv = p.major >= 9 && !(pdl && pdl[0] == '0');
    // One decode-attention CTA per query head: H100, graphs on, tg128 f16 164-165 vs 158-160, q4_0 402-408 vs
    // 382-393 tok/s (bench/NOTES.md run 17). TWINFER_CUDA_ATTN_HEADS=0: one per KV head.
    const char* ah = std::getenv("TWINFER_CUDA_ATTN_HEADS");
    dev_.attn_split_heads = !(ah && ah[0] == '0');
    const char* ap = std::getenv("TWINFER_CUDA_ATTN_PREFETCH");
    dev_.attn_prefetch = !(ap && ap[0] == '0');
    const char* as = std::getenv("TWINFER_CUDA_ATTN_SELF");
    dev_.attn_self_kv = !(as && as[0] == '0');
    const char* gc = std::getenv("TWINFER_CUDA_GEMV_CFG");
    dev_.gemv_cfg = gc ? std::atoi(gc) : 0;
    const char* mt = std::getenv("TWINFER_CUDA_MMVQ_TMA");
    // Default 3: the staged kernel for Q6_K only (H100, µs per 8B layer of Q6_K at n=1: 86.8 vs 99.1; Q4_0 58.5 vs
    // 54.5 and Q4_K 71.8 vs 57.5 stay on the warp-per-row kernels; bench/NOTES.md run 19).
    dev_.mmvq_tma = mt ? std::atoi(mt) : 3;
    if (dev_.mmvq_tma == 1 && p.major < 9) dev_.mmvq_tma = 0;
    const char* ts = std::getenv("TWINFER_CUDA_TMA_SMEM");
    if (ts && std::atoi(ts) > 0) dev_.tma_smem_kb = std::atoi(ts);
    const char* tt = std::getenv("TWINFER_CUDA_TMA_TILE");
    if (tt && std::atoi(tt) > 0) dev_.tma_tile = std::atoi(tt);
    const char* tw = std::getenv("TWINFER_CUDA_TMA_WARPS");
    if (tw && std::atoi(tw) == 16) dev_.tma_warps = 16;
    const char* tc = std::getenv("TWINFER_CUDA_TMA_CTAS");
    if (tc && std::atoi(tc) > 0) dev_.tma_ctas = std::atoi(tc);
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
    if (tab_) cudaFree(tab_);
    if (std::getenv("TWINFER_CUDA_GRAPH_STATS"))
      std::fprintf(stderr, "[cuda graphs] %ld captured, %ld steps replayed, %ld replays that did not match\n", captured_,
                   replayed_, replay_misses_);
    mm_.free_all();
    attn_.free_all();
    topk_.free_all();
    for (auto& sl : slots_) {
      if (sl.ev) cudaEventDestroy(sl.ev);
      if (sl.buf) cudaFreeHost(sl.buf);
    }
    staging_.destroy();
    if (stream_) cudaStreamDestroy(stream_);
  }

  const char* name() const override { return "cuda"; }

  void* alloc(size_t bytes) override {
    abort_step_graph();
    void* p = nullptr;
    if (cudaMalloc(&p, bytes + kPad) != cudaSuccess) {
      cudaGetLastError();  // an allocation failure is not sticky: clear it so later calls work
      return nullptr;
    }
    return p;
  }
  void release(void* p) override {
    abort_step_graph();
    flush();
    mm_.clear_pre();  // x may be rewritten from here on
    if (p && graph_ptrs_.count(p)) drop_graphs();  // a captured step reads or writes it
    if (p) cudaFree(p);
  }
  void* host_view(void*) override { return nullptr; }
  void upload(void* dst, const void* src, size_t n) override {
    steps_.upload();
    abort_step_graph();
    flush();
    mm_.clear_pre();  // x may be rewritten from here on
    prof_.begin(stream_, "upload");
    staging_.upload(stream_, dst, src, n);
    prof_.end(stream_);
  }
  // Q4_0 weights of whole 256-value groups are rearranged in place for the decode products (repack.cu; opt-in).
  bool prepare_weight(Tensor& w) override {
    abort_step_graph();
    flush();
    cuda::prepare_weight(stream_, w);
    return true;
  }
  void read_weight(const Tensor& w, void* dst) override {
    download(dst, w.data, w.nbytes);
    synchronize();
    cuda::weight_to_gguf(w, dst);
  }
  void download(void* dst, const void* src, size_t n) override {
    if (track(Hash().s("download").p(src).i(n))) {
      deferred_.push_back([=] { download_impl(dst, src, n); });
      pending_.push_back({dst, src, n});
      return;
    }
    download_impl(dst, src, n);
  }

  // CUDA graphs for decode-sized steps (n_tokens <= kGraphMaxTokens; TWINFER_CUDA_GRAPHS=0 turns them off).
  // A step is keyed at begin_step by what the host knows then (token and sequence counts, the batch arrays' device
  // pointers, the attention plan: attention_plan()). The first step of a key runs eagerly (kernel attributes and
  // scratch buffers settle), the second is captured into a graph, later ones launch that graph at once from
  // begin_step and only hash the ops the forward pass then calls (no launches); end_step compares that hash with
  // the captured step's and copies the downloads out. A different hash (say, another output count) means the graph
  // did not compute this step: the recorded ops then run eagerly after it (a graph run writes only this step's
  // activations, scratch and cache slots, which the eager run writes again). Positions, slots and block tables are
  // read on the device; the block tables are copied at begin_step into a table of the backend's own (fixed pitch and
  // address), so neither a growing table nor the engine reallocating it changes a captured kernel's parameters.
  void begin_step(const BatchView& b) override {
    flush();
    mm_.clear_pre();  // x may be rewritten from here on
    prof_.step();
    mode_ = Mode::Eager;
    tracking_ = false;
    map_src_ = nullptr;
    deferred_.clear();
    pending_.clear();
    if (!graphs_enabled_ || prof_.on || b.n_tokens > kGraphMaxTokens || b.n_seqs <= 0 || b.blocks_per_seq <= 0)
      return;
    // The block tables into the backend's own copy (pitch tab_pitch_ entries).
    if (b.blocks_per_seq > tab_pitch_ || b.n_seqs > tab_rows_) {
      if (tab_) cudaFree(tab_), tab_ = nullptr;
      drop_graphs();
      tab_pitch_ = std::max(tab_pitch_, (b.blocks_per_seq + 63) / 64 * 64);
      tab_rows_ = std::max(tab_rows_, std::max(64, b.n_seqs));
      if (cudaMalloc(&tab_, (size_t)tab_pitch_ * tab_rows_ * 4) != cudaSuccess) {
        cudaGetLastError();
        tab_ = nullptr;
        tab_pitch_ = tab_rows_ = 0;
        return;
      }
    }
    if (cudaMemcpy2DAsync(tab_, (size_t)tab_pitch_ * 4, b.block_tables, (size_t)b.blocks_per_seq * 4,
                          (size_t)b.blocks_per_seq * 4, b.n_seqs, cudaMemcpyDeviceToDevice, stream_) != cudaSuccess) {
      cudaGetLastError();
      return;
    }
    map_src_ = b.block_tables;
    map_bps_ = b.blocks_per_seq;
    tracking_ = true;
    clean_ = true;
    sig_ = Hash();
    Hash key;
    key.i(b.n_tokens).i(b.n_seqs).p(b.pos).p(b.seq_idx).p(b.slot).p(tab_).i(tab_pitch_);
    if (have_shape_) {
      const BatchView v = mapped(b);
      key.i(cuda::attention_plan(dev_, v, last_shape_));
    }
    key_ = key.v;
    const uint64_t gen = generation();
    auto it = graphs_.find(key_);
    if (it != graphs_.end() && it->second.gen != gen) {  // holds stale pointers
      cudaGraphExecDestroy(it->second.exec);
      graphs_.erase(it);
      it = graphs_.end();
    }
    if (it != graphs_.end()) {
      steps_.begin(stream_, true, b.n_tokens);
      if (cudaGraphLaunch(it->second.exec, stream_) == cudaSuccess) {
        mode_ = Mode::Replay;
        return;
      }
      cudaGetLastError();
      cudaGraphExecDestroy(it->second.exec);
      graphs_.erase(it);
    }
    if (seen_.count(key_)) {  // seen once, eagerly and cleanly: capture this one
      mm_.freeze();
      attn_.frozen = true;
      topk_.frozen = true;
      capture_gen_ = gen;
      if (cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal) == cudaSuccess) {
        mode_ = Mode::Capture;
      } else {
        cudaGetLastError();
        thaw_all();
      }
    }
  }

  void end_step() override {
    bool counted = false;  // a replayed graph computed this step (StepTimer)
    if (mode_ == Mode::Replay) {
      auto it = graphs_.find(key_);
      const bool same = it != graphs_.end() && clean_ && sig_.v == it->second.sig && it->second.gen == generation();
      if (same) {
        ++replayed_;
        steps_.before_downloads(stream_);
        finish_downloads();
        counted = true;
      } else {  // the graph computed some other step: this one's ops, eagerly
        ++replay_misses_;
        TWC_CHECK(cudaStreamSynchronize(stream_));
        if (it != graphs_.end()) {
          cudaGraphExecDestroy(it->second.exec);
          graphs_.erase(it);
        }
        run_deferred_eagerly();
        flush();
        TWC_CHECK(cudaStreamSynchronize(stream_));
      }
    } else if (mode_ == Mode::Capture) {
      flush();
      cudaGraph_t g = nullptr;
      cudaError_t e = cudaStreamEndCapture(stream_, &g);
      cudaGraphExec_t exec = nullptr;
      if (e == cudaSuccess) e = cudaGraphInstantiate(&exec, g, 0);
      if (e == cudaSuccess) e = cudaGraphLaunch(exec, stream_);
      if (g) cudaGraphDestroy(g);
      if (e != cudaSuccess) {  // not captured: run the step's ops eagerly
        cudaGetLastError();
        if (exec) cudaGraphExecDestroy(exec);
        exec = nullptr;
        thaw_all();
        run_deferred_eagerly();
        flush();
        TWC_CHECK(cudaStreamSynchronize(stream_));
      } else {
        finish_downloads();
        thaw_all();  // after the synchronization: growing a scratch frees the buffer the graph just used
        if (generation() == capture_gen_) {  // nothing the graph holds moved
          graphs_[key_] = Graph{exec, sig_.v, capture_gen_};
          ++captured_;
        } else {
          cudaGraphExecDestroy(exec);
        }
      }
    } else {
      flush();
      if (tracking_ && clean_) seen_.insert(key_);
    }
    steps_.end(counted);
    mode_ = Mode::Eager;
    tracking_ = false;
    map_src_ = nullptr;
    deferred_.clear();
    pending_.clear();
    mm_.clear_pre();  // x may be rewritten from here on
  }
  // Pipelined decode (tw_engine_submit_top): a replayed step's top-k results go into a pinned slot of their own,
  // followed by an event, and the call returns; wait_step copies the oldest step's out. The next step's uploads,
  // its chained tokens (chain_tokens: the best ids, device to device) and its graph queue behind it on the stream,
  // so the GPU does not wait for the host between steps (bench/NOTES.md run 20).
  bool async_steps() const override { return true; }
  void end_step_async() override {
    const size_t before = inflight_.size();
    async_end_ = true;
    end_step();
    async_end_ = false;
    if (inflight_.size() == before) inflight_.push_back(Inflight{});  // its results were copied out already
  }
  void wait_step() override {
    if (inflight_.empty()) return;
    const Inflight f = std::move(inflight_.front());
    inflight_.pop_front();
    if (f.slot < 0) return;
    const ResultSlot& sl = slots_[f.slot];
    TWC_CHECK(cudaEventSynchronize(sl.ev));
    for (const auto& p : f.pieces) std::memcpy(p.dst, (const uint8_t*)sl.buf + p.off, p.n);
  }
  bool chain_tokens(int32_t* tokens, int n, int k) override {
    if (!last_ids_) return false;
    abort_step_graph();
    flush();
    mm_.clear_pre();
    TWC_CHECK(cudaMemcpy2DAsync(tokens, 4, last_ids_, (size_t)k * 4, 4, n, cudaMemcpyDeviceToDevice, stream_));
    return true;
  }
  void copy(void* dst, const void* src, size_t n) override {
    abort_step_graph();
    flush();
    mm_.clear_pre();  // x may be rewritten from here on
    TWC_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, stream_));
  }
  void synchronize() override {
    abort_step_graph();
    flush();
    mm_.clear_pre();  // x may be rewritten from here on
    TWC_CHECK(cudaStreamSynchronize(stream_));
    prof_.collect();
  }

  // ---- ops: each one hashed into the step's signature while a graph is considered, deferred while one replays ----
  void get_rows(const Tensor& table, const int32_t* ids, int n, float* out) override {
    if (track(Hash().s("get_rows").t(table).p(ids).i(n).p(out))) {
      deferred_.push_back([=] { get_rows_impl(table, ids, n, out); });
      return;
    }
    get_rows_impl(table, ids, n, out);
  }
  void rms_norm(const float* x, const Tensor& w, float* out, int n, int dim, float eps) override {
    if (track(Hash().s("rms_norm").p(x).t(w).p(out).i(n).i(dim).f(eps))) {
      deferred_.push_back([=] { rms_norm_impl(x, w, out, n, dim, eps); });
      return;
    }
    rms_norm_impl(x, w, out, n, dim, eps);
  }
  void matmul(const Tensor& W, const float* x, int n, float* y) override {
    if (track(Hash().s("matmul").t(W).p(x).i(n).p(y))) {
      deferred_.push_back([=] { matmul_impl(W, x, n, y); });
      return;
    }
    matmul_impl(W, x, n, y);
  }
  void add_bias(float* y, const Tensor& b, int n) override {
    if (track(Hash().s("add_bias").p(y).t(b).i(n))) {
      deferred_.push_back([=] { add_bias_impl(y, b, n); });
      return;
    }
    add_bias_impl(y, b, n);
  }
  void rope_store_kv(float* q, float* k, const float* v, const BatchView& b, const KVLayer& kv,
                     const AttentionShape& s, int rope_mode, float theta, float freq_scale) override {
    if (track(Hash().s("rope").p(q).p(k).p(v).view(mapped(b)).p(kv.k).p(kv.v).shape(s).i(rope_mode).f(theta).f(freq_scale))) {
      deferred_.push_back([=] { rope_store_kv_impl(q, k, v, b, kv, s, rope_mode, theta, freq_scale); });
      return;
    }
    rope_store_kv_impl(q, k, v, b, kv, s, rope_mode, theta, freq_scale);
  }
  void attention(const float* q, const BatchView& b, const KVLayer& kv, const AttentionShape& s,
                 float* out) override {
    last_shape_ = s;
    have_shape_ = true;
    if (tracking_) {
      const BatchView v = mapped(b);
      if (track(Hash().s("attention").p(q).view(v).p(kv.k).p(kv.v).shape(s).p(out).i(cuda::attention_plan(dev_, v, s)))) {
        deferred_.push_back([=] { attention_impl(q, b, kv, s, out); });
        return;
      }
    }
    attention_impl(q, b, kv, s, out);
  }
  void swiglu(const float* gate, const float* up, float* out, size_t n) override {
    if (track(Hash().s("swiglu").p(gate).p(up).p(out).i(n))) {
      deferred_.push_back([=] { swiglu_impl(gate, up, out, n); });
      return;
    }
    swiglu_impl(gate, up, out, n);
  }
  void add(float* x, const float* y, size_t n) override {
    if (track(Hash().s("add").p(x).p(y).i(n))) {
      deferred_.push_back([=] { add_impl(x, y, n); });
      return;
    }
    add_impl(x, y, n);
  }
  void gather_rows(const float* x, const int32_t* rows, int n, int width, float* out) override {
    if (track(Hash().s("gather_rows").p(x).p(rows).i(n).i(width).p(out))) {
      deferred_.push_back([=] { gather_rows_impl(x, rows, n, width, out); });
      return;
    }
    gather_rows_impl(x, rows, n, width, out);
  }
  void top_k(const float* x, int rows, int width, int k, int32_t* ids, float* vals) override {
    if (track(Hash().s("top_k").p(x).i(rows).i(width).i(k))) {
      deferred_.push_back([=] { top_k_impl(x, rows, width, k, ids, vals); });
      // The graph ran the selection; its results still have to come out (the same buffers as when captured).
      float* dv = nullptr;
      int32_t* di = nullptr;
      if (rows <= 0) return;
      if (!topk_buffers(rows, width, k, &dv, &di, nullptr)) {
        abort_step_graph();  // runs the deferred ops, this one included, eagerly
        return;
      }
      last_ids_ = di;
      pending_.push_back({vals, dv, (size_t)rows * k * 4});
      pending_.push_back({ids, di, (size_t)rows * k * 4});
      return;
    }
    top_k_impl(x, rows, width, k, ids, vals);
  }

 private:
  // ---- graph bookkeeping ----
  enum class Mode { Eager, Capture, Replay };
  struct Hash {
    uint64_t v = 1469598103934665603ull;
    Hash& i(uint64_t x) {
      for (int b = 0; b < 8; ++b) v = (v ^ ((x >> (8 * b)) & 0xFF)) * 1099511628211ull;
      return *this;
    }
    Hash& p(const void* x) { return i((uint64_t)(uintptr_t)x); }
    Hash& f(float x) {
      uint32_t u;
      std::memcpy(&u, &x, 4);
      return i(u);
    }
    Hash& s(const char* x) {
      while (*x) v = (v ^ (uint8_t)*x++) * 1099511628211ull;
      return *this;
    }
    Hash& t(const Tensor& w) { return p(w.data).i(w.type).i(w.ne0).i(w.ne1).i(w.layout); }
    Hash& view(const BatchView& b) {
      return i(b.n_tokens).p(b.pos).p(b.seq_idx).p(b.slot).p(b.block_tables).i(b.n_seqs).i(b.blocks_per_seq);
    }
    Hash& shape(const AttentionShape& a) {
      return i(a.n_head).i(a.n_head_kv).i(a.head_dim).i(a.block_size).i(a.kv_type).f(a.scale);
    }
  };
  // Hashes an op into the step's signature; true when the op must not run now (a graph replays the step: the
  // caller records it in deferred_ for the fallback). While capturing, the op runs (into the graph) and is recorded.
  bool track(const Hash& h) {
    if (!tracking_) return false;
    sig_.i(h.v);
    if (mode_ == Mode::Replay) return true;
    return false;
  }
  // The batch as the kernels see it while a graph is considered: block tables from the backend's copy.
  BatchView mapped(const BatchView& b) const {
    if (!map_src_ || b.block_tables != map_src_ || b.blocks_per_seq != map_bps_) return b;
    BatchView v = b;
    v.block_tables = tab_;
    v.blocks_per_seq = tab_pitch_;
    return v;
  }
  uint64_t generation() const { return cuda::scratch_generation() + graph_gen_; }
  void thaw_all() {
    mm_.thaw();
    attn_.thaw();
    topk_.thaw();
  }
  void drop_graphs() {
    if (!graphs_.empty()) cudaStreamSynchronize(stream_);
    for (auto& kv : graphs_) cudaGraphExecDestroy(kv.second.exec);
    graphs_.clear();
    graph_ptrs_.clear();
    ++graph_gen_;
  }
  // The step's results (top-k ids and values, or logits rows): through pinned memory with one wait where they fit
  // (each copy into pageable memory waited for itself: a second round trip to the GPU per step), else directly.
  void finish_downloads() {
    if (async_end_ && mode_ == Mode::Replay && download_async()) {
      pending_.clear();
      return;
    }
    std::vector<Staging::Piece> pieces;
    pieces.reserve(pending_.size());
    for (const auto& d : pending_) pieces.push_back({d.dst, d.src, d.n});
    if (pieces.empty() || !staging_.download_pieces(stream_, pieces.data(), pieces.size())) {
      for (const auto& d : pending_) TWC_CHECK(cudaMemcpyAsync(d.dst, d.src, d.n, cudaMemcpyDeviceToHost, stream_));
      TWC_CHECK(cudaStreamSynchronize(stream_));
    }
    pending_.clear();
  }
  // The step's pending downloads into the next result slot (pinned, its own event) for wait_step; false: not
  // possible (no pinned memory), copy them out now instead.
  bool download_async() {
    size_t total = 0;
    for (const auto& d : pending_) total += (d.n + 15) / 16 * 16;
    ResultSlot& sl = slots_[next_slot_];
    if (sl.ev) TWC_CHECK(cudaEventSynchronize(sl.ev));  // its step was waited for: at most two are in flight
    if (sl.bytes < total) {
      if (sl.buf) cudaFreeHost(sl.buf);
      sl.buf = nullptr;
      sl.bytes = 0;
      if (cudaHostAlloc(&sl.buf, total, cudaHostAllocDefault) != cudaSuccess) {
        cudaGetLastError();
        sl.buf = nullptr;
        return false;
      }
      sl.bytes = total;
    }
    if (!sl.ev && cudaEventCreateWithFlags(&sl.ev, cudaEventDisableTiming) != cudaSuccess) {
      cudaGetLastError();
      sl.ev = nullptr;
      return false;
    }
    Inflight f;
    f.slot = next_slot_;
    size_t off = 0;
    for (const auto& d : pending_) {
      TWC_CHECK(cudaMemcpyAsync((uint8_t*)sl.buf + off, d.src, d.n, cudaMemcpyDeviceToHost, stream_));
      f.pieces.push_back({d.dst, off, d.n});
      off += (d.n + 15) / 16 * 16;
    }
    TWC_CHECK(cudaEventRecord(sl.ev, stream_));
    inflight_.push_back(std::move(f));
    next_slot_ ^= 1;
    return true;
  }
  // The step's ops so far, eagerly (after a graph that did not match, or when something a graph cannot hold
  // happens mid-step); the rest of the step then runs eagerly too.
  void run_deferred_eagerly() {
    mode_ = Mode::Eager;
    clean_ = false;
    pending_.clear();
    std::vector<std::function<void()>> ops;
    ops.swap(deferred_);
    for (auto& op : ops) op();
  }
  // Memory management, uploads, copies or a synchronization inside a step that a graph replays or captures.
  void abort_step_graph() {
    if (!tracking_) return;
    clean_ = false;
    if (mode_ == Mode::Replay) {
      TWC_CHECK(cudaStreamSynchronize(stream_));
      auto it = graphs_.find(key_);
      if (it != graphs_.end()) {
        cudaGraphExecDestroy(it->second.exec);
        graphs_.erase(it);
      }
      run_deferred_eagerly();
    } else if (mode_ == Mode::Capture) {
      cudaGraph_t g = nullptr;
      cudaStreamEndCapture(stream_, &g);
      cudaGetLastError();
      if (g) cudaGraphDestroy(g);
      mode_ = Mode::Eager;
      // reset the fusion state the captured ops left behind: they never ran
      rope_ = {};
      add_ = {};
      norm_ = {};
      sw_ = {};
      mm_q_ = {};
      mm_.clear_pre();
      thaw_all();
      run_deferred_eagerly();
    }
  }
  // While capturing, ops run into the graph and are also recorded (deferred_) in case the capture is abandoned.
  template <class F> void record_capture(F&& f) {
    if (tracking_ && mode_ == Mode::Capture) deferred_.emplace_back(std::forward<F>(f));
  }

  // ---- the ops ----
  void download_impl(void* dst, const void* src, size_t n) {
    flush();
    mm_.clear_pre();  // x may be rewritten from here on
    if (mode_ == Mode::Capture) {  // the step is being recorded: copy once the graph has run (end_step)
      record_capture([=] { download_impl(dst, src, n); });
      pending_.push_back({dst, src, n});
      return;
    }
    prof_.begin(stream_, "download");
    staging_.download(stream_, dst, src, n);
    prof_.end(stream_);
    TWC_CHECK(cudaStreamSynchronize(stream_));
    prof_.collect();
  }
  void get_rows_impl(const Tensor& table, const int32_t* ids, int n, float* out) {
    record_capture([=] { get_rows_impl(table, ids, n, out); });
    note_ptrs({table.data, ids, out});
    flush();
    mm_.clear_pre();  // x may be rewritten from here on
    prof_.begin(stream_, "get_rows");
    cuda::get_rows(stream_, table, ids, n, out);
    prof_.end(stream_);
  }
  // Three ops are held back one step so they can merge with the next: a residual add with the RMSNorm that reads
  // the same rows, products of the same activations (Q/K/V, gate/up) into one grouped launch, and SwiGLU into the
  // activation load of the product that consumes it (the down projection). Every other
  // entry point flushes first, so the observable order of effects is unchanged.
  void rms_norm_impl(const float* x, const Tensor& w, float* out, int n, int dim, float eps) {
    record_capture([=] { rms_norm_impl(x, w, out, n, dim, eps); });
    note_ptrs({x, w.data, out});
    flush_rope();
    const bool with_add = add_.x && add_.x == x && add_.n == (size_t)n * dim;  // then at most its product is pending
    if (!with_add) flush();
    if (with_add && mm_q_.count) {  // the product that writes the add's input (add_impl): add and norm in its launch
      if (split_norm(add_.x, add_.y, w, out, n, dim, eps, true)) {
        add_ = {};
        return;
      }
      flush_matmuls();
      mm_.clear_pre();  // as add_impl does where nothing stays pending
    }
    // (without the add, x is only read: the const_cast is for the shared NormOut)
    if (split_norm(with_add ? add_.x : const_cast<float*>(x), with_add ? add_.y : nullptr, w, out, n, dim, eps)) {
      if (with_add) add_ = {};
      return;
    }
    int8_t* q = nullptr;
    float2* ds = nullptr;
    bool quantized = false;
    if (with_add) {
      norm_q8(n, dim, &q, &ds);
      prof_.begin(stream_, "add_rms_norm");
      quantized = cuda::add_rms_norm(stream_, add_.x, add_.y, (const float*)w.data, out, n, dim, eps, q, ds,
                                     dev_.pdl_gemv);
      prof_.end(stream_);
      add_ = {};
    } else {
      norm_q8(n, dim, &q, &ds);
      prof_.begin(stream_, "rms_norm");
      quantized = cuda::rms_norm(stream_, x, (const float*)w.data, out, n, dim, eps, q, ds, dev_.pdl_gemv);
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
  // The split norm (norm_fused.cuh; decode rows, TWINFER_CUDA_SPLIT_NORM=0: off): the block kernel (with the residual
  // add of y) writes u and the block sums; `out` is written by the products that read it (or by finish_norm).
  // False (nothing launched) where the shape or the scratch does not allow it.
  // product: the pending product (mm_q_) writes y; its launch also does the add and the block kernel's work where
  // mmvq can (one token, 32-row blocks: norm_out_epilogue), else it is launched first and the block kernel after it.
  bool split_norm(float* x, const float* y, const Tensor& w, float* out, int n, int dim, float eps,
                  bool product = false) {
    // out may be y (the engine adds h into x and normalizes into h): the block kernel reads y before any product
    // writes out. out == x (a norm in place) would let the products' h overwrite x while others still read it.
    if (!split_norm_enabled_ || n > 2 || dim % 32 != 0 || dim > 8192 || out == x || w.type != 0 || norm_.out)
      return false;
    // Scratch rn: block sums, F32 u, u's int8 blocks and their (d, d * sum) pairs (mmvq's layout), apart from nq
    // (the attention output's int8 blocks) so that the two never share a buffer.
    const int nblk = dim / 32;
    const size_t ssq_bytes = ((size_t)2 * nblk * 4 + 15) / 16 * 16, uf_bytes = (size_t)2 * dim * 4;
    const size_t qbytes = ((size_t)n * dim + 15) / 16 * 16;
    char* rb = (char*)mm_.rn.get(ssq_bytes + uf_bytes + (size_t)2 * dim + (size_t)2 * nblk * 8 + 16);
    if (!rb) return false;
    cuda::NormOut no;
    no.x = x;
    no.y = y;
    no.w = (const float*)w.data;
    no.ssq = (float*)rb;
    no.uf = (float*)(rb + ssq_bytes);
    no.q = (int8_t*)(rb + ssq_bytes + uf_bytes);
    no.ds = (float2*)((char*)no.q + qbytes);
    no.dim = dim;
    bool fused = false;
    if (product) {
      prof_.begin(stream_, "matmul+add+norm blocks");
      fused = cuda::matmul_norm(stream_, dev_, mm_, mm_q_.W[0], mm_q_.x, mm_q_.up, mm_q_.y[0], no);
      prof_.end(stream_);
      if (fused) mm_q_ = {};
      else flush_matmuls();
    }
    if (!fused) {
      prof_.begin(stream_, y ? "add+norm blocks" : "norm blocks");
      cuda::norm_blocks(stream_, no, n, dev_.pdl_gemv);
      prof_.end(stream_);
    }
    mm_.clear_pre();
    mm_.pre_x = out;
    mm_.pre_n = n;
    mm_.pre_k = dim;
    mm_.pre_norm.ssq = no.ssq;
    mm_.pre_norm.x = x;
    mm_.pre_norm.w = no.w;
    mm_.pre_norm.h = out;
    mm_.pre_norm.eps = eps;
    mm_.pre_norm.dim = dim;
    mm_.pre_uf = no.uf;
    mm_.pre_q = no.q;
    norm_ = {out, n};
    return true;
  }
  // The split norm's output, written now: nothing that takes u read it before this op.
  void finish_norm() {
    if (!norm_.out) return;
    prof_.begin(stream_, "norm_finish");
    cuda::norm_finish(stream_, mm_.pre_norm, norm_.n, dev_.pdl_gemv);
    prof_.end(stream_);
    norm_ = {};
    mm_.clear_pre();
  }
  void matmul_impl(const Tensor& W, const float* x, int n, float* y) {
    record_capture([=] { matmul_impl(W, x, n, y); });
    note_ptrs({W.data, x, y});
    flush_rope();
    if (sw_.out && sw_.out == x && sw_.n == (size_t)n * W.ne0 && cuda::tc_eligible(W)) {
      // The pending SwiGLU's product is this matmul's input: computed as the activations are loaded instead of
      // through memory. sw_.out is then never written; the forward pass reads it only here.
      if (fuse_norm_enabled_ && n == 1 && !mm_q_.count && !add_.x && !norm_.out) {
        // One token: held like a grouped product, so that the residual add and norm that follow can run in its
        // launch (rms_norm_impl, mmvq's norm_out_epilogue).
        mm_q_ = {};
        mm_q_.x = sw_.gate;
        mm_q_.up = sw_.up;
        mm_q_.n = n;
        mm_q_.W[0] = W;
        mm_q_.y[0] = y;
        mm_q_.count = 1;
        sw_ = {};
        return;
      }
      prof_.begin(stream_, n <= 8 ? "matmul+swiglu n<=8" : "matmul+swiglu n>8");
      cuda::matmul_swiglu(stream_, dev_, mm_, W, sw_.gate, sw_.up, n, y);
      prof_.end(stream_);
      sw_ = {};
      return;
    }
    if (mm_q_.count > 0 && mm_q_.count < 3 && mm_q_.x == x && mm_q_.n == n && !mm_q_.up &&
        cuda::matmul_groupable(mm_q_.W[0], W)) {
      mm_q_.W[mm_q_.count] = W;
      mm_q_.y[mm_q_.count++] = y;
      return;
    }
    flush(norm_.out && x == norm_.out);  // a product of the split norm's output: the norm stays split
    mm_q_ = {};
    mm_q_.x = x;
    mm_q_.n = n;
    mm_q_.W[0] = W;
    mm_q_.y[0] = y;
    mm_q_.count = 1;
  }
  void add_bias_impl(float* y, const Tensor& b, int n) {
    record_capture([=] { add_bias_impl(y, b, n); });
    note_ptrs({y, b.data});
    flush();
    mm_.clear_pre();  // x may be rewritten from here on
    prof_.begin(stream_, "add_bias");
    cuda::add_bias(stream_, y, (const float*)b.data, n, (int)b.ne0);
    prof_.end(stream_);
  }
  // Held back like the ops above: a decode step's attention that reads these q and this cache does the rotation
  // and the cache write itself (attention_rope); anything else runs it first.
  void rope_store_kv_impl(float* q, float* k, const float* v, const BatchView& b0, const KVLayer& kv,
                          const AttentionShape& s, int rope_mode, float theta, float freq_scale) {
    record_capture([=] { rope_store_kv_impl(q, k, v, b0, kv, s, rope_mode, theta, freq_scale); });
    const BatchView b = mapped(b0);
    note_ptrs({q, k, v, kv.k, kv.v, b.pos, b.seq_idx, b.slot, b.block_tables});
    flush();
    mm_.clear_pre();  // x may be rewritten from here on
    rope_ = {q, k, v, b, kv, s, rope_mode, theta, freq_scale, true};
  }
  void attention_impl(const float* q, const BatchView& b0, const KVLayer& kv, const AttentionShape& s, float* out) {
    record_capture([=] { attention_impl(q, b0, kv, s, out); });
    const BatchView b = mapped(b0);
    note_ptrs({q, kv.k, kv.v, out, b.pos, b.seq_idx, b.slot, b.block_tables});
    if (rope_.pending && rope_.q == q && rope_.kv.k == kv.k && rope_.b.pos == b.pos && rope_.b.n_tokens == b.n_tokens &&
        attention_supported(s) && cuda::attention_rope_fusable(dev_, b, s)) {
      rope_.pending = false;
      flush();
      mm_.clear_pre();
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
    mm_.clear_pre();
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
    mm_.clear_pre();
    mm_.pre_x = quantized ? x : nullptr;
    mm_.pre_n = n;
    mm_.pre_k = k;
  }
  void swiglu_impl(const float* gate, const float* up, float* out, size_t n) {
    record_capture([=] { swiglu_impl(gate, up, out, n); });
    note_ptrs({gate, up, out});
    // The pending gate/up products of these buffers (F16, one or two tokens): one GEMV launch computes both rows of
    // each pair and writes silu(gate) * up into out (= gate) and up itself, no separate SwiGLU pass.
    // x the split norm's output: the GEMV reads u and scales by s (and writes the norm's output).
    const bool split = mm_q_.count == 2 && mm_.pre_norm.ssq && mm_.pre_x == mm_q_.x && mm_.pre_n == mm_q_.n &&
                       mm_.pre_k == mm_q_.W[0].ne0 && mm_.pre_uf;
    const float* gx = split ? mm_.pre_uf : mm_q_.x;
    if (!split && norm_.out && mm_q_.count && mm_q_.x == norm_.out) finish_norm();
    if (mm_q_.count == 2 && mm_q_.y[0] == gate && mm_q_.y[1] == up && out == gate && !rope_.pending &&
        n == (size_t)mm_q_.n * mm_q_.W[0].ne1 && cuda::gemv_f16_swiglu_supported(mm_q_.W[0], mm_q_.W[1], gx, mm_q_.n)) {
      prof_.begin(stream_, "gate/up+swiglu gemv");
      cuda::gemv_f16_swiglu(stream_, dev_.pdl_gemv, mm_q_.W[0], mm_q_.W[1], gx, mm_q_.n, mm_q_.y[1], out,
                            split ? &mm_.pre_norm : nullptr);
      prof_.end(stream_);
      if (split && norm_.out == mm_q_.x) norm_ = {};  // written by the GEMV
      mm_q_.count = 0;
      mm_.clear_pre();
      return;
    }
    flush();
    mm_.clear_pre();  // x may be rewritten from here on
    sw_ = {gate, up, out, n};
  }
  void add_impl(float* x, const float* y, size_t n) {
    record_capture([=] { add_impl(x, y, n); });
    note_ptrs({x, y});
    if (product_for_add(y, n)) {  // stays pending: the add (and the norm after it) may run in its launch
      add_ = {x, y, n};
      return;
    }
    flush();
    mm_.clear_pre();  // x may be rewritten from here on
    add_ = {x, y, n};
  }
  // The pending product is one token's single product writing y, the add's whole input, and nothing else is pending.
  bool product_for_add(const float* y, size_t n) const {
    return fuse_norm_enabled_ && mm_q_.count == 1 && mm_q_.n == 1 && mm_q_.y[0] == y &&
           n == (size_t)mm_q_.W[0].ne1 && !rope_.pending && !sw_.out && !add_.x && !norm_.out;
  }
  void gather_rows_impl(const float* x, const int32_t* rows, int n, int width, float* out) {
    record_capture([=] { gather_rows_impl(x, rows, n, width, out); });
    note_ptrs({x, rows, out});
    flush();
    mm_.clear_pre();  // x may be rewritten from here on
    prof_.begin(stream_, "gather_rows");
    cuda::gather_rows(stream_, x, rows, n, width, out);
    prof_.end(stream_);
  }
  // The top-k result buffers (and the kernel's scratch) in topk_; false when there is no room (host selection).
  bool topk_buffers(int rows, int width, int k, float** dv, int32_t** di, void** scratch) {
    // Sized for the largest k at once (and at least 16 rows), so a graph capture of a later step never needs to grow it.
    const int cap_rows = rows < 16 ? 16 : rows;
    const size_t out_bytes = (size_t)cap_rows * cuda::topk_max_k() * 8;
    char* sc = k <= cuda::topk_max_k()
                   ? (char*)topk_.get(out_bytes + cuda::topk_scratch_bytes(cap_rows, width, cuda::topk_max_k()))
                   : nullptr;
    if (!sc) return false;
    *dv = (float*)sc;
    *di = (int32_t*)(sc + (size_t)rows * k * 4);
    if (scratch) *scratch = sc + out_bytes;
    return true;
  }
  // Selection on the device; only rows x k ids and values are downloaded (topk.cu).
  void top_k_impl(const float* x, int rows, int width, int k, int32_t* ids, float* vals) {
    record_capture([=] { top_k_impl(x, rows, width, k, ids, vals); });
    note_ptrs({x});
    flush();
    mm_.clear_pre();  // x may be rewritten from here on
    if (rows <= 0) return;
    float* dv = nullptr;
    int32_t* di = nullptr;
    void* sc = nullptr;
    if (!topk_buffers(rows, width, k, &dv, &di, &sc)) {
      if (tracking_ && mode_ != Mode::Eager) {
        abort_step_graph();  // runs the step so far eagerly, this selection included
        return;
      }
      last_ids_ = nullptr;  // selected on the host: no device ids to chain from
      Backend::top_k(x, rows, width, k, ids, vals);
      return;
    }
    last_ids_ = di;
    prof_.begin(stream_, "top_k");
    cuda::topk(stream_, x, rows, width, k, sc, dv, di);
    prof_.end(stream_);
    if (mode_ == Mode::Capture) {  // copied out once the graph has run (end_step)
      pending_.push_back({vals, dv, (size_t)rows * k * 4});
      pending_.push_back({ids, di, (size_t)rows * k * 4});
      return;
    }
    download_impl(vals, dv, (size_t)rows * k * 4);
    download_impl(ids, di, (size_t)rows * k * 4);
  }
  // While capturing: the device memory the graph touches (releasing any of it drops the graphs).
  void note_ptrs(std::initializer_list<const void*> ps) {
    if (mode_ != Mode::Capture) return;
    for (const void* p : ps)
      if (p) graph_ptrs_.insert(const_cast<void*>(p));
  }
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
  // keep_norm: the op that flushes is a product of the split norm's output (matmul_impl): the norm stays split.
  void flush(bool keep_norm = false) {
    flush_rope();
    flush_matmuls();
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
      mm_.clear_pre();  // as add_impl does where nothing stays pending
    }
    if (!keep_norm) finish_norm();
  }
  void flush_matmuls() {
    if (mm_q_.count && mm_q_.up) {  // a held down projection (matmul_impl)
      prof_.begin(stream_, "matmul+swiglu n<=8");
      cuda::matmul_swiglu(stream_, dev_, mm_, mm_q_.W[0], mm_q_.x, mm_q_.up, mm_q_.n, mm_q_.y[0]);
      prof_.end(stream_);
      mm_q_ = {};
    }
    if (mm_q_.count) {
      // Products of the split norm's output take u and write the output themselves where they can; else it is
      // written first.
      if (norm_.out && mm_q_.x == norm_.out) {
        bool ok = true;
        for (int i = 0; i < mm_q_.count && ok; ++i) ok = cuda::norm_in_supported(mm_q_.W[i], mm_.pre_uf, mm_q_.n);
        if (ok) norm_ = {};
        else finish_norm();
      }
      const Tensor* w[3] = {&mm_q_.W[0], &mm_q_.W[1], &mm_q_.W[2]};
      prof_.begin(stream_, mm_q_.n <= 8 ? "matmul n<=8" : "matmul n>8");
      cuda::matmul_group(stream_, dev_, mm_, w, mm_q_.y, mm_q_.count, mm_q_.x, mm_q_.n);
      prof_.end(stream_);
      mm_q_ = {};
    }
  }
  struct PendingAdd {
    float* x = nullptr;
    const float* y = nullptr;
    size_t n = 0;
  };
  struct PendingMatmuls {
    const float* x = nullptr;
    const float* up = nullptr;  // set: one down projection of silu(x) * up (matmul_impl holds it for the add after)
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
  struct SplitNorm {
    float* out = nullptr;  // the norm's output, not written yet (mm_.pre_norm describes it)
    int n = 0;
  };
  PendingRope rope_;
  PendingAdd add_;
  SplitNorm norm_;  // a split norm whose output no product has written yet
  const bool split_norm_enabled_ = [] {
    const char* v = std::getenv("TWINFER_CUDA_SPLIT_NORM");
    return !(v && v[0] == '0');
  }();
  PendingSwiglu sw_;
  PendingMatmuls mm_q_;

  struct Graph {
    cudaGraphExec_t exec = nullptr;
    uint64_t sig = 0;  // hash of the captured step's ops
    uint64_t gen = 0;  // generation() when captured
  };
  struct PendingCopy {
    void* dst;
    const void* src;
    size_t n;
  };
  // Steps of up to 8 tokens (decode, batched decode of up to 8 sequences). Larger steps are GPU-bound, and F16
  // products from 16 tokens go through cuBLAS, which is not captured here. TWINFER_CUDA_GRAPHS=0: never.
  static constexpr int kGraphMaxTokens = 8;
  // A one-token product followed by the residual add and split norm runs them in its own launch (mmvq.cu's
  // norm_out_epilogue) unless TWINFER_CUDA_FUSE_NORM=0. Read per backend (per model load: decode-ab A/B).
  const bool fuse_norm_enabled_ = [] {
    const char* v = std::getenv("TWINFER_CUDA_FUSE_NORM");
    return !(v && v[0] == '0');
  }();
  const bool graphs_enabled_ = [] {
    const char* v = std::getenv("TWINFER_CUDA_GRAPHS");
    return !(v && v[0] == '0');
  }();
  Mode mode_ = Mode::Eager;
  bool tracking_ = false;  // this step is a graph candidate: ops are hashed into sig_
  bool clean_ = true;      // nothing a graph cannot hold happened in this step
  Hash sig_;
  uint64_t key_ = 0;
  uint64_t capture_gen_ = 0;
  uint64_t graph_gen_ = 0;  // bumped when pointers a graph may hold are released
  std::map<uint64_t, Graph> graphs_;
  std::set<uint64_t> seen_;  // keys of steps that ran eagerly and cleanly
  std::set<void*> graph_ptrs_;
  std::vector<std::function<void()>> deferred_;
  // Pipelined decode: steps whose results are still on their way (wait_step), two pinned result slots.
  struct ResultPiece {
    void* dst;
    size_t off, n;
  };
  struct Inflight {
    int slot = -1;  // -1: finished when submitted
    std::vector<ResultPiece> pieces;
  };
  struct ResultSlot {
    void* buf = nullptr;
    size_t bytes = 0;
    cudaEvent_t ev = nullptr;
  };
  std::deque<Inflight> inflight_;
  ResultSlot slots_[2];
  int next_slot_ = 0;
  bool async_end_ = false;          // end_step_async in progress
  const int32_t* last_ids_ = nullptr;  // the last top_k's ids in device memory (chain_tokens)
  std::vector<PendingCopy> pending_;
  long captured_ = 0, replayed_ = 0, replay_misses_ = 0;
  // The backend's copy of the step's block tables (tab_pitch_ entries per sequence row) and what it replaces.
  int32_t* tab_ = nullptr;
  int tab_pitch_ = 0, tab_rows_ = 0;
  const int32_t* map_src_ = nullptr;
  int map_bps_ = 0;
  AttentionShape last_shape_{};
  bool have_shape_ = false;

  OpProfiler prof_;
  StepTimer steps_;
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
