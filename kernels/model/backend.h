// The small op set the forward pass is written against (ggml's idea: the model is written once, backends swap
// underneath). A backend owns memory (weights, KV cache, activations live in its address space) and implements
// each op over that memory. Activations are row-major F32 matrices [n_tokens][width]; weights are quantized
// matrices in GGUF block layout, [ne1 rows][ne0 columns]. Every pointer passed to an op is backend memory.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace tw {

struct Tensor {
  void* data = nullptr;  // backend memory
  int32_t type = -1;     // tw_type
  int64_t ne0 = 0;       // row length (contiguous)
  int64_t ne1 = 0;       // number of rows
  size_t nbytes = 0;
  int32_t layout = 0;    // backend-private arrangement of the bytes (0 = GGUF blocks; see prepare_weight)
  size_t stored_bytes = 0;  // bytes the backend holds for it when its layout is not GGUF's (0: nbytes)
  bool present() const { return data != nullptr; }
};

// Where one step's tokens go and what they see, already uploaded to backend memory by the forward pass.
struct BatchView {
  int32_t n_tokens = 0;
  const int32_t* pos = nullptr;           // [n_tokens] position in its sequence
  const int32_t* seq_idx = nullptr;       // [n_tokens] row of block_tables
  const int32_t* slot = nullptr;          // [n_tokens] physical cache slot = block * block_size + pos % block_size
  const int32_t* block_tables = nullptr;  // [n_seqs][blocks_per_seq] physical block ids
  int32_t n_seqs = 0;
  int32_t blocks_per_seq = 0;
  int32_t max_pos = 0;                    // largest pos in the batch (host-side hint for kernel launch sizes)
  // Host copies of the same arrays, for backends that schedule work on the host (CPU) or size launches.
  const int32_t* host_pos = nullptr;
  const int32_t* host_seq_idx = nullptr;
  const int32_t* host_block_tables = nullptr;
};

// One layer's K/V storage: n_blocks * block_size slots of kv_dim values each, of type kv_type (F32 or F16).
struct KVLayer {
  void* k = nullptr;
  void* v = nullptr;
};

struct AttentionShape {
  int32_t n_head;
  int32_t n_head_kv;
  int32_t head_dim;
  int32_t block_size;
  int32_t kv_type;
  float scale;  // 1/sqrt(head_dim)
};

struct Backend {
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // ---- memory ----
  virtual void* alloc(size_t bytes) = 0;                 // nullptr on failure
  virtual void release(void* p) = 0;
  virtual void* host_view(void* p) = 0;                  // directly writable host address of p, or nullptr
  virtual void upload(void* dst, const void* src, size_t n) = 0;
  virtual void download(void* dst, const void* src, size_t n) = 0;
  virtual void copy(void* dst, const void* src, size_t n) = 0;   // backend to backend
  virtual void synchronize() {}
  // Called once a weight's bytes are all written: a backend may repack it into a faster layout, in place or into a
  // new allocation of its own (then it releases the old one, replaces data and sets stored_bytes).
  virtual bool prepare_weight(Tensor& /*w*/) { return true; }
  // The weight's bytes in GGUF block layout (undoing whatever prepare_weight did), into host memory dst.
  virtual void read_weight(const Tensor& w, void* dst) { download(dst, w.data, w.nbytes); }
  // Called at the start and end of a forward step (e.g. to capture/replay graphs or bracket thread-pool work).
  virtual void begin_step(const BatchView& /*b*/) {}
  virtual void end_step() {}
  // Pipelined decode (tw_engine_submit_top). A backend whose steps can finish after the call returns says so here;
  // end_step_async() then leaves the step's top-k downloads in flight (into the host buffers given to top_k) and
  // wait_step() completes the oldest such step. chain_tokens() writes the best id of each of the last top_k's
  // first n rows (stride k) into tokens (backend memory), in stream order, without the host seeing them: false if
  // those ids are not in backend memory. The defaults (host backends) finish every step at once.
  virtual bool async_steps() const { return false; }
  virtual void end_step_async() { end_step(); }
  virtual void wait_step() {}
  virtual bool chain_tokens(int32_t* /*tokens*/, int /*n*/, int /*k*/) { return false; }

  // ---- ops ----
  // out[t] = table row ids[t], converted to F32.
  virtual void get_rows(const Tensor& table, const int32_t* ids, int n, float* out) = 0;
  // out[t] = x[t] / rms(x[t]) * w   (w is F32 [dim])
  virtual void rms_norm(const float* x, const Tensor& w, float* out, int n, int dim, float eps) = 0;
  // y[t][r] = sum_k W[r][k] * x[t][k]   for t < n, r < W.ne1, k < W.ne0
  virtual void matmul(const Tensor& W, const float* x, int n, float* y) = 0;
  // Several products of the same activations: y[i] = W[i] x for i < count (Q/K/V, gate/up). A backend may share the
  // activation preparation and schedule all rows as one job; the default is one matmul after another.
  virtual void matmul_many(const Tensor* const* W, int count, const float* x, int n, float* const* y) {
    for (int i = 0; i < count; ++i) matmul(*W[i], x, n, y[i]);
  }
  // y[t] += b   (b is F32 [width])
  virtual void add_bias(float* y, const Tensor& b, int n) = 0;
  // Rotate q (n x n_head x head_dim) and k (n x n_head_kv x head_dim) by their positions, then write k and v
  // into the cache slots of this batch.
  virtual void rope_store_kv(float* q, float* k, const float* v, const BatchView& b, const KVLayer& kv,
                             const AttentionShape& s, int rope_mode, float theta, float freq_scale) = 0;
  // out[t] = softmax(q[t] . K[0..pos[t]] * scale) V, per head, K/V read through the block table of token t.
  virtual void attention(const float* q, const BatchView& b, const KVLayer& kv, const AttentionShape& s,
                         float* out) = 0;
  // out = silu(gate) * up, elementwise over n values
  virtual void swiglu(const float* gate, const float* up, float* out, size_t n) = 0;
  // x += y, elementwise over n values
  virtual void add(float* x, const float* y, size_t n) = 0;
  // out[i] = x[rows[i]] for i < n (rows of width floats)
  virtual void gather_rows(const float* x, const int32_t* rows, int n, int width, float* out) = 0;
  // The k largest values of each of `rows` rows of `x` (rows x width floats, backend memory) and their column ids,
  // best first, into host memory ids[rows][k] / vals[rows][k]. Order: larger value first, lower id first on ties;
  // NaN ranks (and is returned) as -Infinity. 1 <= k <= width. The default downloads each row and selects on the
  // host — right for the CPU backend, whose memory is host memory; a GPU backend overrides it so only k values per
  // row cross the bus (greedy / top-k sampling of a batch of sequences without shipping every logit).
  virtual void top_k(const float* x, int rows, int width, int k, int32_t* ids, float* vals) {
    std::vector<float> row((size_t)width);
    std::vector<int32_t> order((size_t)width);
    for (int r = 0; r < rows; ++r) {
      download(row.data(), x + (size_t)r * width, (size_t)width * sizeof(float));
      for (int i = 0; i < width; ++i) {
        order[i] = i;
        if (std::isnan(row[i])) row[i] = -INFINITY;
      }
      std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
        return row[a] > row[b] || (row[a] == row[b] && a < b);
      });
      for (int j = 0; j < k; ++j) {
        ids[(size_t)r * k + j] = order[j];
        vals[(size_t)r * k + j] = row[order[j]];
      }
    }
  }
};

// Implemented by exactly one backend per build (cpu/ or cuda/).
Backend* make_backend(int32_t n_threads, int32_t device, int32_t flags, char* err, size_t err_len);

}  // namespace tw
