// The CPU backend: memory is plain host (WASM linear) memory, ops run on a persistent thread pool, matrix
// products read quantized blocks directly (dot.h).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <unordered_map>
#include <vector>

#include "../include/twinfer.h"
#include "../model/backend.h"
#include "activation.h"
#include "dot.h"
#include "float_panel.h"
#include "panel.h"
#include "qdot.h"
#include "qdot_x4.h"
#include "repack.h"
#include "thread_pool.h"

namespace tw {

namespace {

// Time per op, for finding where a step goes (build with TWINFER_WASM_PROFILE=1; printed when the backend is
// destroyed). Compiled out otherwise.
#if defined(TW_PROFILE)
struct OpProfile {
  const char* name[16] = {};
  double ms[16] = {};
  long calls[16] = {};
  void print() {
    for (int i = 0; i < 16; ++i) if (name[i]) std::fprintf(stderr, "[profile] %-14s %10.1f ms %8ld calls\n", name[i], ms[i], calls[i]);
  }
};
OpProfile& op_profile() { static OpProfile p; return p; }
struct OpTimer {
  int slot;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  OpTimer(int i, const char* n) : slot(i) { op_profile().name[i] = n; }
  ~OpTimer() {
    op_profile().ms[slot] += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    ++op_profile().calls[slot];
  }
};
#define TW_PROF_CAT2(a, b) a##b
#define TW_PROF_CAT(a, b) TW_PROF_CAT2(a, b)
#define TW_PROF(i, n) OpTimer TW_PROF_CAT(tw_op_timer_, __LINE__)(i, n)
#else
#define TW_PROF(i, n)
#endif

// Rows of W handled by one task, at least (a multiple of 4: x4 quads never straddle tasks). Prompts use it as is;
// decode steps take larger chunks (rows_per_task) so each thread streams long contiguous runs of weights and claims
// few tasks: with 16-row tasks a TinyLlama decode step was ~27k claims (426k rows / 16), two contended atomics
// each, and a thread's weight stream restarted every 20 KB — two threads ran the step's products only 1.25x faster
// than one.
constexpr int kRowsPerTask = 16;
// Target multiply-adds per task (about 50-100 us of one thread), capped so every thread still gets ~8 tasks of a
// job to balance with.
constexpr int64_t kTaskWork = 1 << 20;
inline int64_t rows_per_task(int64_t R, int64_t K, int n, int threads) {
  int64_t rows = std::min<int64_t>(kTaskWork / std::max<int64_t>(1, K * n), R / (8 * (int64_t)threads));
  rows = std::max<int64_t>(kRowsPerTask, rows);
  return (rows + kRowsPerTask - 1) / kRowsPerTask * kRowsPerTask;
}
// Tokens processed against one chunk of rows while the rows are hot in cache (prefill).
constexpr int kTokenTile = 8;
// Below this many multiply-adds a job runs on the calling thread: waking the pool costs more than it saves.
constexpr int64_t kMinParallelWork = 1 << 17;

// Local name for the opt-out bit until twinfer.h declares it (see /work/notes/cpu-requests.md): float activations
// in quantized products (exact arithmetic on the stored weights; slower).
constexpr int32_t kFlagFloatActivations = 2;

// Types whose products run on integer dot products against 8-bit activations (qdot.h).
bool int8_activation_type(int32_t type) {
  switch (type) {
    case TW_TYPE_Q4_0: case TW_TYPE_Q4_1: case TW_TYPE_Q5_0: case TW_TYPE_Q5_1: case TW_TYPE_Q8_0:
    case TW_TYPE_Q4_K: case TW_TYPE_Q5_K: case TW_TYPE_Q6_K:
      return true;
    default:
      return false;
  }
}

// Rows x tokens of one quantized product: tokens in tiles of up to 4 so each unpacked weight group is used 4 times.
template <int TYPE>
void qmatmul_rows(const char* base, size_t rb, int64_t r0, int64_t r1, const ActRow* act, int n, int64_t K,
                  int64_t R, float* y) {
#if defined(__wasm_simd128__)
  float out[4];
  for (int t0 = 0; t0 < n; t0 += 4) {
    const int nt = std::min(4, n - t0);
    for (int64_t r = r0; r < r1; ++r) {
      const void* row = base + rb * r;
      switch (nt) {
        case 4: qdot_rows<TYPE, 4>(row, act + t0, K, out); break;
        case 3: qdot_rows<TYPE, 3>(row, act + t0, K, out); break;
        case 2: qdot_rows<TYPE, 2>(row, act + t0, K, out); break;
        default: qdot_rows<TYPE, 1>(row, act + t0, K, out); break;
      }
      for (int t = 0; t < nt; ++t) y[(size_t)(t0 + t) * R + r] = out[t];
    }
  }
#else
  for (int t = 0; t < n; ++t)
    for (int64_t r = r0; r < r1; ++r) y[(size_t)t * R + r] = qdot_row_scalar(TYPE, base + rb * r, act[t], K);
#endif
}

using QMatmulFn = void (*)(const char*, size_t, int64_t, int64_t, const ActRow*, int, int64_t, int64_t, float*);

// Rows [r0, r1) (whole quads) of an x4-repacked weight times n activation rows, in tiles of up to 4 tokens; long rows
// chunk by chunk (repack.h), the chunks' partial sums added in column order.
template <int TYPE>
void qmatmul_x4_rows(const char* base, size_t rb, int64_t r0, int64_t r1, const ActRow* act, int n, int64_t K,
                     int64_t R, float* y) {
  (void)rb;  // quads are addressed through repack.h's pair and chunk layout
  float out[16];
  for (int c = 0; c < x4_chunks(TYPE, K); ++c) {
    const X4Chunk ch = x4_chunk(TYPE, K, R, c);
    const uint8_t* data = (const uint8_t*)base + ch.offset;
    const int64_t ng = ch.K / QA, g0 = ch.k0 / QA;
    auto put = [&](float* dst, const float* v, int count) {
      if (c == 0) std::memcpy(dst, v, count * sizeof(float));
      else for (int i = 0; i < count; ++i) dst[i] += v[i];
    };
    ActRow ca[4];  // the tile's activation rows from column k0 on
#if defined(__wasm_simd128__)
    constexpr bool kPairKernel = TYPE == TW_TYPE_Q4_0 || TYPE == TW_TYPE_Q8_0 || TYPE == TW_TYPE_Q4_K || TYPE == TW_TYPE_Q6_K;
    for (int t0 = 0; t0 < n; t0 += 4) {
      const int nt = std::min(4, n - t0);
      for (int t = 0; t < nt; ++t) ca[t] = act_row_from(act[t0 + t], g0);
      for (int64_t r = r0; r < r1; r += 4) {
        const int64_t q = r / 4;
        const uint8_t* quad = x4_quad_ptr(data, TYPE, ch.K, R, q);
        const size_t stride = x4_rec_stride(TYPE, R, q);
        if constexpr (kPairKernel) {
          if (n == 1 && (q & 1) == 0 && x4_paired(TYPE, R, q) && r + 8 <= r1) {  // decode: both quads of a stored pair
            if constexpr (TYPE == TW_TYPE_Q4_K) qdot_q4k_x4_pair(quad, ca[0], ng, out);
            else if constexpr (TYPE == TW_TYPE_Q6_K) qdot_q6k_x4_pair(quad, ca[0], ng, out);
            else qdot_x4_pair<TYPE>(quad, ca[0], ng, out);
            put(y + r, out, 8);
            r += 4;
            continue;
          }
        }
        switch (nt) {
          case 4: qdot_x4_tile<TYPE, 4>(quad, stride, ca, ng, out); break;
          case 3: qdot_x4_tile<TYPE, 3>(quad, stride, ca, ng, out); break;
          case 2: qdot_x4_tile<TYPE, 2>(quad, stride, ca, ng, out); break;
          default: qdot_x4_tile<TYPE, 1>(quad, stride, ca, ng, out); break;
        }
        for (int t = 0; t < nt; ++t) put(y + (size_t)(t0 + t) * R + r, out + 4 * t, 4);
      }
    }
#else
    for (int t = 0; t < n; ++t) {
      ca[0] = act_row_from(act[t], g0);
      for (int64_t r = r0; r < r1; r += 4) {
        qdot_x4_scalar(TYPE, x4_quad_ptr(data, TYPE, ch.K, R, r / 4), x4_rec_stride(TYPE, R, r / 4), ca[0], ng, out);
        put(y + (size_t)t * R + r, out, 4);
      }
    }
#endif
  }
}

#if defined(__wasm_simd128__)
// Rows [r0, r1) (whole quads) of an x4 weight (or GGUF q5_K rows) times n activation rows on row-pair panels (panel.h):
// the task's quads widened once into pan, then tiles of up to kPanelTilePairs token pairs (xact: the tiles'
// interleaved activations, panel_tile_i16(K) apart) against each quad.
template <int TYPE>
void panel_rows(const char* base, int64_t r0, int64_t r1, const int16_t* xact, int n, int64_t K, int64_t R,
                int16_t* pan, float* y) {
  const uint8_t* data = (const uint8_t*)base;
  const int64_t nq = (r1 - r0) / 4;
  constexpr int32_t kTile = panel_layout(TYPE);
  const size_t quad_i16 = panel_quad_i16(kTile, K), tile_i16 = panel_tile_i16(K);
  for (int64_t j = 0; j < nq; ++j) {
    const int64_t q = r0 / 4 + j;
    if constexpr (TYPE == TW_TYPE_Q5_K) {
      const size_t rb = row_bytes(TYPE, K);
      panel_widen_q5k_rows(data + rb * (size_t)(r0 + 4 * j), rb, K, pan + j * quad_i16);
    } else {
      for (int c = 0; c < x4_chunks(TYPE, K); ++c) {  // long rows: one chunk after the other (repack.h)
        const X4Chunk ch = x4_chunk(TYPE, K, R, c);
        panel_widen_quad<TYPE>(x4_quad_ptr(data + ch.offset, TYPE, ch.K, R, q), x4_rec_stride(TYPE, R, q), ch.K / QA,
                               pan + j * quad_i16 + panel_quad_i16(kTile, ch.k0));
      }
    }
  }
  const int npairs = (n + 1) / 2;
  float out[2 * kPanelTilePairs * 4];
  for (int p0 = 0; p0 < npairs; p0 += kPanelTilePairs) {
    const int tp = std::min(kPanelTilePairs, npairs - p0);
    const int16_t* xt = xact + (size_t)(p0 / kPanelTilePairs) * tile_i16;
    for (int64_t j = 0; j < nq; ++j) {
      // long x4 rows: the chunks' partial sums added in column order, as qmatmul_x4_rows does
      for (int c = 0; c < x4_chunks(TYPE, K); ++c) {  // (q5_K rows, not x4, are one chunk)
        const X4Chunk ch = x4_chunk(TYPE, K, R, c);
        const int16_t* pq = pan + j * quad_i16 + panel_quad_i16(kTile, ch.k0);
        const int16_t* xc = xt + panel_tile_i16(ch.k0);
        switch (tp) {
          case 4: panel_tile<kTile, 4>(pq, xc, ch.K / QA, out); break;
          case 3: panel_tile<kTile, 3>(pq, xc, ch.K / QA, out); break;
          case 2: panel_tile<kTile, 2>(pq, xc, ch.K / QA, out); break;
          default: panel_tile<kTile, 1>(pq, xc, ch.K / QA, out); break;
        }
        for (int rp = 0; rp < 2; ++rp)
          for (int p = 0; p < tp; ++p) {
            const float* v = out + 4 * (rp * tp + p);
            const int64_t ra = r0 + 4 * j + 2 * rp;
            const size_t t = 2 * (size_t)(p0 + p);
            float* y0 = y + t * R + ra;
            if (c == 0) y0[0] = v[0], y0[1] = v[2];
            else y0[0] += v[0], y0[1] += v[2];
            if ((int)t + 1 < n) {
              float* y1 = y0 + R;
              if (c == 0) y1[0] = v[1], y1[1] = v[3];
              else y1[0] += v[1], y1[1] += v[3];
            }
          }
      }
    }
  }
}

using PanelFn = void (*)(const char*, int64_t, int64_t, const int16_t*, int, int64_t, int64_t, int16_t*, float*);
PanelFn panel_fn(int32_t type) {
  switch (type) {
    case TW_TYPE_Q4_0: return panel_rows<TW_TYPE_Q4_0>;
    case TW_TYPE_Q8_0: return panel_rows<TW_TYPE_Q8_0>;
    case TW_TYPE_Q4_K: return panel_rows<TW_TYPE_Q4_K>;
    case TW_TYPE_Q5_K: return panel_rows<TW_TYPE_Q5_K>;
    default: return panel_rows<TW_TYPE_Q6_K>;
  }
}
#endif

// The row-chunk function for a weight: the x4 kernels where prepare_weight repacked it, the row kernels otherwise.
template <int TYPE>
QMatmulFn rows_fn(bool x4) {
  if constexpr (TYPE == TW_TYPE_Q4_0 || TYPE == TW_TYPE_Q8_0 || TYPE == TW_TYPE_Q4_K || TYPE == TW_TYPE_Q6_K)
    if (x4) return qmatmul_x4_rows<TYPE>;
  return qmatmul_rows<TYPE>;
}
QMatmulFn qmatmul_fn(const Tensor& w) {
  const bool x4 = w.layout == kLayoutX4;
  switch (w.type) {
    case TW_TYPE_Q4_0: return rows_fn<TW_TYPE_Q4_0>(x4);
    case TW_TYPE_Q4_1: return rows_fn<TW_TYPE_Q4_1>(x4);
    case TW_TYPE_Q5_0: return rows_fn<TW_TYPE_Q5_0>(x4);
    case TW_TYPE_Q5_1: return rows_fn<TW_TYPE_Q5_1>(x4);
    case TW_TYPE_Q8_0: return rows_fn<TW_TYPE_Q8_0>(x4);
    case TW_TYPE_Q4_K: return rows_fn<TW_TYPE_Q4_K>(x4);
    case TW_TYPE_Q5_K: return rows_fn<TW_TYPE_Q5_K>(x4);
    case TW_TYPE_Q6_K: return rows_fn<TW_TYPE_Q6_K>(x4);
    default: return nullptr;
  }
}

class CpuBackend final : public Backend {
 public:
  CpuBackend(int n_threads, int32_t flags) : pool_(n_threads), int8_act_(!(flags & kFlagFloatActivations)) {
    fp16_table();  // build the lookup tables before any worker can race on them
#if defined(__wasm_simd128__)
    bit16_table();
#endif
  }
  const char* name() const override { return "cpu"; }
#if defined(TW_PROFILE)
  ~CpuBackend() override { op_profile().print(); }
  std::chrono::steady_clock::time_point step_t0_;
  void begin_step(const BatchView&) override { step_t0_ = std::chrono::steady_clock::now(); }
  void end_step() override {
    op_profile().name[11] = "step";
    op_profile().ms[11] += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - step_t0_).count();
    ++op_profile().calls[11];
  }
#endif

  void* alloc(size_t bytes) override {
    void* p = nullptr;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) return nullptr;
    return p;
  }
  void release(void* p) override {
    const auto it = shifted_.find(p);
    if (it != shifted_.end()) {
      p = it->second;
      shifted_.erase(it);
    }
    free(p);
  }
  void* host_view(void* p) override { return p; }
  void upload(void* dst, const void* src, size_t n) override { std::memcpy(dst, src, n); }
  void download(void* dst, const void* src, size_t n) override { std::memcpy(dst, src, n); }
  void copy(void* dst, const void* src, size_t n) override { std::memmove(dst, src, n); }

  // Quantized weights the integer kernels read four rows at a time are interleaved once, here (repack.h), into a
  // new buffer (q4_0 / q8_0 records are larger than the blocks they replace); the GGUF copy is released at once, so
  // loading holds at most one tensor twice. Float-activation mode (exact products) keeps GGUF layout: its kernels
  // read rows.
  bool prepare_weight(Tensor& w) override {
    if (int8_act_ && w.layout == kLayoutGGUF && x4_type(w.type) && w.ne1 % 4 == 0 && w.ne0 % QA == 0) {
      const size_t rb = row_bytes(w.type, w.ne0);
      const size_t bytes = x4_tensor_bytes(w.type, w.ne0, w.ne1);
      uint8_t* dst = alloc_shifted(bytes, x4_base_offset(w.type));
      if (!dst) return false;
      const uint8_t* src = (const uint8_t*)w.data;
      constexpr int64_t kQuadsPerTask = 16;
      const int64_t quads = w.ne1 / 4;
      run((int)((quads + kQuadsPerTask - 1) / kQuadsPerTask), w.ne0 * w.ne1, [&](int task, int) {
        const int64_t q1 = std::min(quads, (task + 1) * kQuadsPerTask);
        for (int64_t q = task * kQuadsPerTask; q < q1; ++q) x4_repack_quad(w.type, src + 4 * rb * q, w.ne0, w.ne1, q, dst);
      });
      release(w.data);
      w.data = dst;
      w.stored_bytes = bytes;
      w.layout = kLayoutX4;
    }
    return true;
  }
  void read_weight(const Tensor& w, void* dst) override {
    if (w.layout != kLayoutX4) {
      std::memcpy(dst, w.data, w.nbytes);
      return;
    }
    const size_t rb = row_bytes(w.type, w.ne0);
    for (int64_t r = 0; r < w.ne1; ++r) x4_read_row(w.type, (const uint8_t*)w.data, w.ne0, w.ne1, r, (uint8_t*)dst + rb * r);
  }

  void get_rows(const Tensor& table, const int32_t* ids, int n, float* out) override {
    TW_PROF(0, "get_rows");
    const size_t rb = row_bytes(table.type, table.ne0);
    if (table.layout == kLayoutX4) row_tmp_.resize(rb);
    for (int t = 0; t < n; ++t) {
      const char* row = (const char*)table.data + rb * ids[t];
      if (table.layout == kLayoutX4) {
        x4_read_row(table.type, (const uint8_t*)table.data, table.ne0, table.ne1, ids[t], row_tmp_.data());
        row = (const char*)row_tmp_.data();
      }
      dequantize_row(table.type, row, out + (size_t)t * table.ne0, table.ne0);
    }
  }

  void rms_norm(const float* x, const Tensor& w, float* out, int n, int dim, float eps) override {
    TW_PROF(1, "rms_norm");
    const float* g = (const float*)w.data;
    for (int t = 0; t < n; ++t) {
      const float* xr = x + (size_t)t * dim;
      float* yr = out + (size_t)t * dim;
      double sum = 0;  // ggml accumulates the mean square in double
      for (int i = 0; i < dim; ++i) sum += (double)(xr[i] * xr[i]);
      const float scale = 1.0f / std::sqrt((float)(sum / dim) + eps);
      for (int i = 0; i < dim; ++i) yr[i] = xr[i] * scale * g[i];
    }
  }

  bool uses_int8(const Tensor& W) const {
    return (int8_act_ && int8_activation_type(W.type) && W.ne0 % QA == 0) || W.layout == kLayoutX4;
  }

  void matmul(const Tensor& W, const float* x, int n, float* y) override {
    TW_PROF(2, "matmul");
    const int64_t K = W.ne0, R = W.ne1;
    const size_t rb = row_bytes(W.type, K);
    const char* base = (const char*)W.data;
    if (uses_int8(W)) {
      qmatmul(W, x, n, y);
      return;
    }
    if (int8_act_ && W.type == TW_TYPE_F16) {
      // llama.cpp multiplies F16 weights with activations rounded to F16 (its vec_dot_type); doing the same keeps our
      // logits on top of its logits instead of adding a second, independent rounding noise. (BF16: below, always.)
      if (xr_.size() < (size_t)n * K) xr_.resize((size_t)n * K);
      for (size_t i = 0; i < (size_t)n * K; ++i) xr_[i] = fp16_to_f32(f32_to_fp16(x[i]));
      x = xr_.data();
    }
    if (W.type == TW_TYPE_BF16) {
      // llama.cpp rounds the activations to BF16 (its vec_dot_type for BF16 weights) before these products; doing
      // the same keeps our logits where users compare them.
      bf16_act_.resize((size_t)n * K);
      for (size_t i = 0; i < bf16_act_.size(); ++i) bf16_act_[i] = bf16_to_f32(f32_to_bf16(x[i]));
      x = bf16_act_.data();
    }
    const int64_t rpt = rows_per_task(R, K, n, pool_.size());
    const int n_tasks = (int)((R + rpt - 1) / rpt);
#if defined(__wasm_simd128__)
    if (n >= kPanelMinTokens && float_panel_type(W.type)) {
      float_panel_matmul(W, x, n, y, rpt, n_tasks);
      return;
    }
#endif
    // Prompts with F16/BF16 weights: each row is converted to F32 once per token tile (exact) instead of once per
    // token inside the dot product.
    const bool convert_rows = n > 1 && (W.type == TW_TYPE_F16 || W.type == TW_TYPE_BF16);
    if (convert_rows && (int)rowf_.size() < pool_.size()) rowf_.resize(pool_.size());
    run(n_tasks, R * K * n, [&](int task, int thread) {
      const int64_t r0 = (int64_t)task * rpt, r1 = std::min<int64_t>(R, r0 + rpt);
      for (int t0 = 0; t0 < n; t0 += kTokenTile) {
        const int t1 = std::min(n, t0 + kTokenTile);
        for (int64_t r = r0; r < r1; ++r) {
          const void* row = base + rb * r;
          if (convert_rows) {
            std::vector<float>& rf = rowf_[thread];
            if ((int64_t)rf.size() < K) rf.resize(K);
            half_row_to_f32(W.type, (const uint16_t*)row, rf.data(), K);
            for (int t = t0; t < t1; ++t) y[(size_t)t * R + r] = dot_f32(rf.data(), x + (size_t)t * K, K);
          } else {
            for (int t = t0; t < t1; ++t) y[(size_t)t * R + r] = dot_row(W.type, row, x + (size_t)t * K, K);
          }
        }
      }
    });
  }

  // Products of one activation matrix with several weights: one shared quantization and one job when every weight
  // runs on the integer kernels with the same activation format; otherwise one after another.
  void matmul_many(const Tensor* const* W, int count, const float* x, int n, float* const* y) override {
    bool shared = count <= 8;
    for (int i = 0; i < count && shared; ++i) {
      const Tensor& w = *W[i];
      shared = uses_int8(w) && w.ne0 == W[0]->ne0 && act_spec(w.type).span == act_spec(W[0]->type).span &&
               act_spec(w.type).fp16_scale == act_spec(W[0]->type).fp16_scale;
    }
    if (!shared) {
      for (int i = 0; i < count; ++i) matmul(*W[i], x, n, y[i]);
      return;
    }
    TW_PROF(2, "matmul");
    qmatmul_many(W, count, x, n, y);
  }

  void add_bias(float* y, const Tensor& b, int n) override {
    TW_PROF(3, "add_bias");
    const float* bias = (const float*)b.data;
    for (int t = 0; t < n; ++t)
      for (int64_t i = 0; i < b.ne0; ++i) y[(size_t)t * b.ne0 + i] += bias[i];
  }

  void rope_store_kv(float* q, float* k, const float* v, const BatchView& b, const KVLayer& kv,
                     const AttentionShape& s, int rope_mode, float theta, float freq_scale) override {
    TW_PROF(3, "rope_store_kv");
    const int hd = s.head_dim, half = hd / 2;
    const size_t kv_dim = (size_t)s.n_head_kv * hd;
    std::vector<float> cs(hd);  // cos, sin pairs for one position
    for (int t = 0; t < b.n_tokens; ++t) {
      // theta_i = pos * freq_scale * base^(-2i/hd), built by repeated multiplication as ggml does.
      const float theta_scale = std::pow(theta, -2.0f / hd);
      float th = (float)b.host_pos[t];
      for (int i = 0; i < half; ++i) {
        const float a = th * freq_scale;
        cs[2 * i] = std::cos(a);
        cs[2 * i + 1] = std::sin(a);
        th *= theta_scale;
      }
      auto rotate = [&](float* head) {
        for (int i = 0; i < half; ++i) {
          const int i0 = rope_mode == TW_ROPE_NEOX ? i : 2 * i;
          const int i1 = rope_mode == TW_ROPE_NEOX ? i + half : 2 * i + 1;
          const float c = cs[2 * i], sn = cs[2 * i + 1];
          const float x0 = head[i0], x1 = head[i1];
          head[i0] = x0 * c - x1 * sn;
          head[i1] = x0 * sn + x1 * c;
        }
      };
      for (int h = 0; h < s.n_head; ++h) rotate(q + ((size_t)t * s.n_head + h) * hd);
      for (int h = 0; h < s.n_head_kv; ++h) rotate(k + ((size_t)t * s.n_head_kv + h) * hd);
      const size_t slot = (size_t)b.slot[t];
      const float* kt = k + t * kv_dim;
      const float* vt = v + t * kv_dim;
      if (s.kv_type == TW_TYPE_F32) {
        std::memcpy((float*)kv.k + slot * kv_dim, kt, kv_dim * 4);
        std::memcpy((float*)kv.v + slot * kv_dim, vt, kv_dim * 4);
      } else {
        uint16_t* kd = (uint16_t*)kv.k + slot * kv_dim;
        uint16_t* vd = (uint16_t*)kv.v + slot * kv_dim;
        for (size_t i = 0; i < kv_dim; ++i) {
          kd[i] = f32_to_fp16(kt[i]);
          vd[i] = f32_to_fp16(vt[i]);
        }
      }
    }
  }

  // One task per (token, KV head): the K and V rows of that head are converted to F32 once and used by all the
  // query heads of its group (GQA: 8 query heads per KV head in TinyLlama), instead of once per query head.
  // Per query head the arithmetic is the same as a plain loop (same dot, same order of the V accumulation).
  void attention(const float* q, const BatchView& b, const KVLayer& kv, const AttentionShape& s,
                 float* out) override {
    TW_PROF(b.n_tokens == 1 ? 5 : 4, b.n_tokens == 1 ? "attention(n=1)" : "attention(n>1)");
    const int hd = s.head_dim;
    const int group = s.n_head / s.n_head_kv;
    const size_t kv_dim = (size_t)s.n_head_kv * hd;
    const int n_tasks = b.n_tokens * s.n_head_kv;
    if ((int)scores_.size() < pool_.size()) scores_.resize(pool_.size());
    if ((int)rowbuf_.size() < pool_.size()) rowbuf_.resize(pool_.size());
    int64_t work = 0;
    for (int t = 0; t < b.n_tokens; ++t) work += (int64_t)(b.host_pos[t] + 1) * hd * s.n_head * 2;
    // F16 cache: a sequence with several tokens in this batch (a prompt chunk) would convert each of its K/V rows once
    // per token that reads it (O(T^2) conversions); convert its rows 0..max pos once, in parallel, and read floats.
    seq_rows_.assign(b.n_seqs, -1);
    if (s.kv_type == TW_TYPE_F16 && b.n_tokens >= 4) {
      std::vector<int> count(b.n_seqs, 0), max_pos(b.n_seqs, -1);
      for (int t = 0; t < b.n_tokens; ++t) {
        ++count[b.host_seq_idx[t]];
        max_pos[b.host_seq_idx[t]] = std::max(max_pos[b.host_seq_idx[t]], b.host_pos[t]);
      }
      struct Span { int seq, p0, p1; };
      std::vector<Span> spans;
      size_t rows = 0;
      for (int sq = 0; sq < b.n_seqs; ++sq) {
        if (count[sq] < 4) continue;
        seq_rows_[sq] = (int64_t)rows;
        for (int p0 = 0; p0 <= max_pos[sq]; p0 += 16) spans.push_back({sq, p0, std::min(max_pos[sq] + 1, p0 + 16)});
        rows += (size_t)max_pos[sq] + 1;
      }
      if (kvf_.size() < rows * kv_dim * 2) kvf_.resize(rows * kv_dim * 2);
      run((int)spans.size(), (int64_t)rows * kv_dim * 16, [&](int i, int) {
        const Span& sp = spans[i];
        const int32_t* table = b.host_block_tables + (size_t)sp.seq * b.blocks_per_seq;
        for (int p = sp.p0; p < sp.p1; ++p) {
          const size_t slot = (size_t)table[p / s.block_size] * s.block_size + p % s.block_size;
          float* dst = kvf_.data() + ((size_t)seq_rows_[sp.seq] + p) * kv_dim * 2;
          f16_row_to_f32((const uint16_t*)kv.k + slot * kv_dim, dst, (int64_t)kv_dim);
          f16_row_to_f32((const uint16_t*)kv.v + slot * kv_dim, dst + kv_dim, (int64_t)kv_dim);
        }
      });
    }
    run(n_tasks, work, [&](int task, int thread) {
      const int t = task / s.n_head_kv, hk = task % s.n_head_kv;
      const int n_ctx = b.host_pos[t] + 1;
      const int32_t* table = b.host_block_tables + (size_t)b.host_seq_idx[t] * b.blocks_per_seq;
      std::vector<float>& sc = scores_[thread];
      std::vector<float>& rb = rowbuf_[thread];  // up to 4 K or V rows converted from an F16 cache
      if (sc.size() < (size_t)n_ctx * group) sc.resize((size_t)n_ctx * group);
      if (rb.size() < (size_t)4 * hd) rb.resize((size_t)4 * hd);
      const float* q0 = q + ((size_t)t * s.n_head + (size_t)hk * group) * hd;  // first query head of the group
      float* o0 = out + ((size_t)t * s.n_head + (size_t)hk * group) * hd;
      const int64_t converted = seq_rows_[b.host_seq_idx[t]];
      // This head's K or V row at position p as floats: the prompt chunk's converted rows, the F32 cache itself, or
      // converted from the F16 cache into buf (hd floats).
      auto row = [&](const void* base, int p, float* buf) -> const float* {
        if (converted >= 0)
          return kvf_.data() + ((size_t)converted + p) * kv_dim * 2 + (base == kv.v ? kv_dim : 0) + (size_t)hk * hd;
        const size_t slot = (size_t)table[p / s.block_size] * s.block_size + p % s.block_size;
        if (s.kv_type == TW_TYPE_F32) return (const float*)base + slot * kv_dim + (size_t)hk * hd;
        f16_row_to_f32((const uint16_t*)base + slot * kv_dim + (size_t)hk * hd, buf, hd);
        return buf;
      };
#if defined(__wasm_simd128__)
      // Head sizes of real models (a multiple of 16): positions in blocks of four, each block's K rows (and later V
      // rows) fetched once — as floats from the prompt chunk's converted rows or the F32 cache, or converted from the
      // F16 cache into a 4-row buffer — and used by every query head of the group while in L1. Per block and head:
      // four dots with one horizontal reduction; V accumulated 16 outputs at a time in registers. Working memory is
      // 4 rows per thread, not the whole context as floats (n_ctx * head_dim * 8 bytes: 32 MB at 32k positions of
      // 128-value heads). The speed is that of the gathered version (both ~7.7 GMAC/s per thread at 1k positions:
      // f32 has no multiply-add in SIMD128, and V8 adds about as many scalar instructions; bench/NOTES.md).
      const bool blocked = hd % 16 == 0;
      auto rows4 = [&](const void* base, int p0, int np, const float* out4[4]) {
        for (int i = 0; i < np; ++i) out4[i] = row(base, p0 + i, rb.data() + (size_t)i * hd);
      };
      if (blocked) {
        for (int p0 = 0; p0 < n_ctx; p0 += 4) {
          const int np = std::min(4, n_ctx - p0);
          const float* k4[4];
          rows4(kv.k, p0, np, k4);
          for (int g = 0; g < group; ++g) {
            const float* qg = q0 + (size_t)g * hd;
            float* sg = sc.data() + (size_t)g * n_ctx;
            if (np < 4) {
              for (int i = 0; i < np; ++i) sg[p0 + i] = dot_f32(k4[i], qg, hd) * s.scale;
              continue;
            }
            v128_t a0 = wasm_f32x4_splat(0), a1 = a0, a2 = a0, a3 = a0;
            for (int i = 0; i < hd; i += 4) {
              const v128_t qv = wasm_v128_load(qg + i);
              a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(wasm_v128_load(k4[0] + i), qv));
              a1 = wasm_f32x4_add(a1, wasm_f32x4_mul(wasm_v128_load(k4[1] + i), qv));
              a2 = wasm_f32x4_add(a2, wasm_f32x4_mul(wasm_v128_load(k4[2] + i), qv));
              a3 = wasm_f32x4_add(a3, wasm_f32x4_mul(wasm_v128_load(k4[3] + i), qv));
            }
            // transpose-add: lane j of the result = sum of a_j's lanes
            const v128_t t01 = wasm_f32x4_add(wasm_i32x4_shuffle(a0, a1, 0, 4, 1, 5), wasm_i32x4_shuffle(a0, a1, 2, 6, 3, 7));
            const v128_t t23 = wasm_f32x4_add(wasm_i32x4_shuffle(a2, a3, 0, 4, 1, 5), wasm_i32x4_shuffle(a2, a3, 2, 6, 3, 7));
            const v128_t sum = wasm_f32x4_add(wasm_i32x4_shuffle(t01, t23, 0, 1, 4, 5), wasm_i32x4_shuffle(t01, t23, 2, 3, 6, 7));
            wasm_v128_store(sg + p0, wasm_f32x4_mul(sum, wasm_f32x4_splat(s.scale)));
          }
        }
      } else
#endif
      {
        for (int p = 0; p < n_ctx; ++p) {
          const float* kr = row(kv.k, p, rb.data());
          for (int g = 0; g < group; ++g) sc[(size_t)g * n_ctx + p] = dot_f32(kr, q0 + (size_t)g * hd, hd) * s.scale;
        }
      }
      for (int g = 0; g < group; ++g) {
        float* sg = sc.data() + (size_t)g * n_ctx;
        float mx = -INFINITY;
        for (int p = 0; p < n_ctx; ++p) mx = std::max(mx, sg[p]);
        double sum = 0;
        int p = 0;
#if defined(__wasm_simd128__)
        const v128_t vmx = wasm_f32x4_splat(mx);
        v128_t vsum = wasm_f32x4_splat(0);
        for (; p + 4 <= n_ctx; p += 4) {
          const v128_t e = exp_f32x4(wasm_f32x4_sub(wasm_v128_load(sg + p), vmx));
          wasm_v128_store(sg + p, e);
          vsum = wasm_f32x4_add(vsum, e);
        }
        sum = (double)hsum_f32(vsum);
#endif
        for (; p < n_ctx; ++p) {
          sg[p] = std::exp(sg[p] - mx);
          sum += sg[p];
        }
        const float inv = (float)(1.0 / sum);
        for (int p = 0; p < n_ctx; ++p) sg[p] *= inv;
        std::fill(o0 + (size_t)g * hd, o0 + (size_t)(g + 1) * hd, 0.0f);
      }
#if defined(__wasm_simd128__)
      if (blocked) {  // o0's group outputs are zero (above); per block of 4 positions every head adds its weighted V rows
        for (int p0 = 0; p0 < n_ctx; p0 += 4) {
          const int np = std::min(4, n_ctx - p0);
          const float* v4[4];
          rows4(kv.v, p0, np, v4);
          for (int g = 0; g < group; ++g) {
            const float* sg = sc.data() + (size_t)g * n_ctx + p0;
            float* og = o0 + (size_t)g * hd;
            for (int c0 = 0; c0 < hd; c0 += 16) {
              v128_t o[4];
              for (int j = 0; j < 4; ++j) o[j] = wasm_v128_load(og + c0 + 4 * j);
              for (int i = 0; i < np; ++i) {
                const v128_t w = wasm_f32x4_splat(sg[i]);
                for (int j = 0; j < 4; ++j) o[j] = wasm_f32x4_add(o[j], wasm_f32x4_mul(w, wasm_v128_load(v4[i] + c0 + 4 * j)));
              }
              for (int j = 0; j < 4; ++j) wasm_v128_store(og + c0 + 4 * j, o[j]);
            }
          }
        }
        return;
      }
#endif
      for (int p = 0; p < n_ctx; ++p) {
        const float* vr = row(kv.v, p, rb.data());
        for (int g = 0; g < group; ++g) axpy_f32(o0 + (size_t)g * hd, sc[(size_t)g * n_ctx + p], vr, hd);
      }
    });
  }

  void swiglu(const float* gate, const float* up, float* out, size_t n) override {
    TW_PROF(6, "swiglu");
    constexpr size_t kChunk = 2048;
    const int n_tasks = (int)((n + kChunk - 1) / kChunk);
    run(n_tasks, (int64_t)n * 32, [&](int task, int) {
      const size_t i0 = (size_t)task * kChunk, len = std::min(kChunk, n - i0);
      silu_mul(gate + i0, up + i0, out + i0, len);
    });
  }


  void add(float* x, const float* y, size_t n) override {
    TW_PROF(7, "add");
    for (size_t i = 0; i < n; ++i) x[i] += y[i];
  }

  void gather_rows(const float* x, const int32_t* rows, int n, int width, float* out) override {
    TW_PROF(8, "gather_rows");
    for (int i = 0; i < n; ++i) std::memmove(out + (size_t)i * width, x + (size_t)rows[i] * width, (size_t)width * 4);
  }

 private:
  std::vector<float> bf16_act_;  // activations rounded to BF16 for BF16 weights (see matmul)
  std::vector<uint8_t> row_tmp_;  // one GGUF row read back from an x4 table (get_rows)

  // Quantize the n activation rows once (in parallel for prompts), then integer products over row chunks.
  void qmatmul(const Tensor& W, const float* x, int n, float* y) {
    const Tensor* ws[1] = {&W};
    float* ys[1] = {y};
    qmatmul_many(ws, 1, x, n, ys);
  }

#if defined(__wasm_simd128__)
  // F16 / BF16 prompts on float panels (float_panel.h): the n activation rows interleaved once per token tile, then
  // tasks of rpt rows convert their whole quads once and run every tile against them; rows past the last whole quad
  // (R % 4) take the row path.
  void float_panel_matmul(const Tensor& W, const float* x, int n, float* y, int64_t rpt, int n_tasks) {
    const int64_t K = W.ne0, R = W.ne1;
    const size_t rb = row_bytes(W.type, K), tile_floats = (size_t)kFloatTileTokens * K;
    const int ntiles = (n + kFloatTileTokens - 1) / kFloatTileTokens;
    if (float_tiles_.size() < ntiles * tile_floats) float_tiles_.resize(ntiles * tile_floats);
    float* tiles = float_tiles_.data();
    run(ntiles, (int64_t)n * K * 4, [&](int tile, int) {
      const int t0 = tile * kFloatTileTokens;
      float_panel_tokens(x + (size_t)t0 * K, std::min(kFloatTileTokens, n - t0), K, tiles + tile * tile_floats);
    });
    if ((int)float_panels_.size() < pool_.size()) float_panels_.resize(pool_.size());
    for (auto& b : float_panels_)
      if (b.size() < (size_t)(rpt + 4) * K) b.resize((size_t)(rpt + 4) * K);
    const char* base = (const char*)W.data;
    run(n_tasks, R * K * n, [&](int task, int thread) {
      const int64_t r0 = (int64_t)task * rpt, r1 = std::min<int64_t>(R, r0 + rpt), nq = (r1 - r0) / 4;
      float* pan = float_panels_[thread].data();
      float* tmp = pan + (size_t)rpt * K;  // 4 K floats: one quad's rows before interleaving, or one tail row
      for (int64_t j = 0; j < nq; ++j) float_panel_quad(W.type, base + rb * (r0 + 4 * j), rb, K, tmp, pan + 4 * K * j);
      float out[4 * kFloatTileTokens];
      for (int tile = 0; tile < ntiles; ++tile) {
        const int t0 = tile * kFloatTileTokens, nt = std::min(kFloatTileTokens, n - t0);
        for (int64_t j = 0; j < nq; ++j) {
          float_panel_tile(pan + 4 * K * j, tiles + tile * tile_floats, K, out);
          for (int t = 0; t < nt; ++t) std::memcpy(y + (size_t)(t0 + t) * R + r0 + 4 * j, out + 4 * t, 4 * sizeof(float));
        }
      }
      for (int64_t r = r0 + 4 * nq; r < r1; ++r) {
        half_row_to_f32(W.type, (const uint16_t*)(base + rb * r), tmp, K);
        for (int t = 0; t < n; ++t) y[(size_t)t * R + r] = dot_f32(tmp, x + (size_t)t * K, K);
      }
    });
  }
#endif

  // Products on integer kernels: quantize the n activation rows once (in parallel for prompts), then one job whose
  // tasks are row chunks of every weight (one wake-up and one wait for Q, K and V together).
  void qmatmul_many(const Tensor* const* W, int count, const float* x, int n, float* const* y) {
    TW_PROF(n == 1 ? 9 : 10, n == 1 ? "qmatmul(n=1)" : "qmatmul(n>1)");
#if defined(TW_PROFILE)
    const int32_t t0 = W[0]->type;
    TW_PROF(t0 == TW_TYPE_Q6_K ? 12 : t0 == TW_TYPE_Q4_K ? 13 : t0 == TW_TYPE_Q8_0 ? 14 : 15,
            t0 == TW_TYPE_Q6_K ? " q6_K" : t0 == TW_TYPE_Q4_K ? " q4_K" : t0 == TW_TYPE_Q8_0 ? " q8_0" : " other");
#endif
    const int64_t K = W[0]->ne0;
    const size_t ab = (act_row_bytes(K) + 15) & ~(size_t)15;
    if (act_buf_.size() < ab * n + 16) act_buf_.resize(ab * n + 16);
    if ((int)acts_.size() < n) acts_.resize(n);
    char* abase = (char*)(((uintptr_t)act_buf_.data() + 15) & ~(uintptr_t)15);
    for (int t = 0; t < n; ++t) acts_[t] = act_row_at(abase + ab * t, K);
    const ActSpec spec = act_spec(W[0]->type);
    run(n, (int64_t)n * K * 64, [&](int t, int) {
      quantize_act_row(x + (size_t)t * K, K, acts_[t], spec);
    });
    struct Job {
      QMatmulFn fn;
      const char* base;
      size_t rb;
      int64_t R;
      int64_t rpt;  // rows per task
      int first_task;
      bool panel;   // prompt on row-pair panels (panel.h)
    };
    Job jobs[8];
    int n_tasks = 0;
    int64_t work = 0;
    size_t panel_i16 = 0;  // per thread: the largest task's widened quads
    for (int i = 0; i < count; ++i) {
      const Tensor& w = *W[i];
      jobs[i].fn = qmatmul_fn(w);
      jobs[i].base = (const char*)w.data;
      jobs[i].rb = w.layout == kLayoutX4 ? 0 : row_bytes(w.type, K);  // x4 quads: addressed through repack.h
      jobs[i].R = w.ne1;
      jobs[i].rpt = rows_per_task(w.ne1, K, n, pool_.size());
      jobs[i].first_task = n_tasks;
#if defined(__wasm_simd128__)
      jobs[i].panel = n >= kPanelMinTokens && panel_weight(w.type, w.layout, w.ne1);
      if (jobs[i].panel)
        panel_i16 = std::max(panel_i16, (size_t)(jobs[i].rpt / 4) * panel_quad_i16(panel_layout(w.type), K));
#else
      jobs[i].panel = false;
#endif
      n_tasks += (int)((w.ne1 + jobs[i].rpt - 1) / jobs[i].rpt);
      work += w.ne1 * K * n;
    }
    const ActRow* act = acts_.data();
#if defined(__wasm_simd128__)
    const int16_t* xact = nullptr;
    if (panel_i16 > 0) {
      const int npairs = (n + 1) / 2, ntiles = (npairs + kPanelTilePairs - 1) / kPanelTilePairs;
      const size_t tile_i16 = panel_tile_i16(K);
      if (panel_act_.size() < ntiles * tile_i16 + 8) panel_act_.resize(ntiles * tile_i16 + 8);
      int16_t* xbase = (int16_t*)(((uintptr_t)panel_act_.data() + 15) & ~(uintptr_t)15);
      run(npairs, (int64_t)n * K * 8, [&](int p, int) {
        panel_interleave_pair(acts_[2 * p], acts_[std::min(2 * p + 1, n - 1)], K / QA, p % kPanelTilePairs,
                              xbase + (size_t)(p / kPanelTilePairs) * tile_i16);
      });
      xact = xbase;
      if (panels_.size() < (size_t)pool_.size()) panels_.resize(pool_.size());
      for (auto& pb : panels_)
        if (pb.size() < panel_i16 + 8) pb.resize(panel_i16 + 8);
    }
#endif
    run(n_tasks, work, [&](int task, int thread) {
      int i = count - 1;
      while (task < jobs[i].first_task) --i;
      const Job& j = jobs[i];
      const int64_t r0 = (int64_t)(task - j.first_task) * j.rpt, r1 = std::min<int64_t>(j.R, r0 + j.rpt);
#if defined(__wasm_simd128__)
      if (j.panel) {
        int16_t* pan = (int16_t*)(((uintptr_t)panels_[thread].data() + 15) & ~(uintptr_t)15);
        panel_fn(W[i]->type)(j.base, r0, r1, xact, n, K, j.R, pan, y[i]);
        return;
      }
#endif
      j.fn(j.base, j.rb, r0, r1, act, n, K, j.R, y[i]);
    });
  }


  template <class F>
  void run(int n_tasks, int64_t work, F&& f) {
    if (work < kMinParallelWork) {
      for (int i = 0; i < n_tasks; ++i) f(i, 0);
    } else {
      pool_.run(n_tasks, f);
    }
  }

  // bytes at `offset` past a 64-byte boundary; release() frees the allocation it came from
  uint8_t* alloc_shifted(size_t bytes, size_t offset) {
    if (offset == 0) return (uint8_t*)alloc(bytes);
    uint8_t* raw = (uint8_t*)alloc(bytes + offset);
    if (!raw) return nullptr;
    shifted_[raw + offset] = raw;
    return raw + offset;
  }

  ThreadPool pool_;
  bool int8_act_;
  std::unordered_map<void*, void*> shifted_;  // alloc_shifted's pointers -> their allocations
  std::vector<char> act_buf_;
  std::vector<float> xr_;
  std::vector<std::vector<float>> rowf_;
  std::vector<ActRow> acts_;
  std::vector<float> float_tiles_;                // F16 / BF16 prompts: token tiles' interleaved activations
  std::vector<std::vector<float>> float_panels_;  // F16 / BF16 prompts: per pool thread, its task's converted quads
  std::vector<int16_t> panel_act_;               // prompts: token tiles' interleaved activations (panel.h)
  std::vector<std::vector<int16_t>> panels_;     // prompts: per pool thread, its task's widened quads (panel.h)
  std::vector<std::vector<float>> scores_, rowbuf_;  // per pool thread: attention scores, K/V rows as floats
  std::vector<float> kvf_;         // F16 K/V rows of prompt chunks converted once per attention call
  std::vector<int64_t> seq_rows_;  // per sequence of the batch: first row in kvf_, or -1
};

}  // namespace

Backend* make_backend(int32_t n_threads, int32_t /*device*/, int32_t flags, char* err, size_t err_len) {
  if (n_threads <= 0) n_threads = (int32_t)std::max(1u, std::thread::hardware_concurrency());
  CpuBackend* be = new (std::nothrow) CpuBackend(n_threads, flags);
  if (!be && err && err_len) std::snprintf(err, err_len, "out of memory creating the CPU backend");
  return be;
}

}  // namespace tw

extern "C" const char* tw_backend_name(void) { return "cpu"; }
