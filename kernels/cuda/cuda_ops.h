// Host-side launchers of the CUDA kernels (one .cu file per concept); the backend class calls these on its stream.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "../model/backend.h"

namespace tw {
namespace cuda {

// Growable device scratch owned by the backend (split-K partials, f16 activations, attention partials).
struct Scratch {
  void* ptr = nullptr;
  size_t bytes = 0;
  bool frozen = false;  // set while a CUDA graph is being captured (allocation would break the capture)
  size_t wanted = 0;    // largest size asked for while frozen
  void thaw(bool zeroed = false);
  // Returns nullptr if the allocation fails. Grows synchronously (never during graph capture).
  void* get(size_t need);
  // Like get, but memory added by growth is zeroed (for counters that kernels reset to zero after use).
  void* get_zeroed(size_t need);
  void free_all();
};
// Bumped whenever a Scratch buffer is (re)allocated or freed: CUDA graphs captured before hold stale pointers.
uint64_t scratch_generation();

// The RMSNorm split around the decode products (norm_fused.cuh). NormOut: one warp per 32-value block of x (n rows
// of dim) does x += y (y may be null), u = x * w as int8 blocks (q, then ds at the next 16-byte boundary: the layout
// mmvq reads) and in F32 (uf), and the block's sum of x^2 (ssq).
struct NormOut {
  float* x = nullptr;
  const float* y = nullptr;
  const float* w = nullptr;
  int8_t* q = nullptr;
  float2* ds = nullptr;
  float* uf = nullptr;
  float* ssq = nullptr;
  int dim = 0;
};
// NormIn: a product whose activations are u scales every row by s = 1 / sqrt(sum ssq / dim + eps) and writes
// h = x * s * w (h may be null). ssq == nullptr: off.
struct NormIn {
  const float* ssq = nullptr;
  const float* x = nullptr;
  const float* w = nullptr;
  float* h = nullptr;
  float eps = 0.0f;
  int dim = 0;
};

// Scratch of the matmul kernels: split-K partial sums, their per-tile arrival counters, FP16 activations.
struct MatmulScratch {
  Scratch partial, counters, xh, wh;  // wh: F16 copy of a quantized weight for cuBLAS (cublas.cu)
  Scratch xq;                          // int8 activations of the integer-dot decode kernel (mmvq.cu)
  Scratch nq;                          // the same, written by the RMSNorm that produced x (pre_x)
  Scratch xf;                          // F32 silu(gate) * up for the F16 GEMV (gemv.cu) when given gate and up
  Scratch rn;                          // the split norm's block sums, F32 u, int8 u (NormOut)
  // x already quantized into nq by the norm that wrote it (n rows of k values); the backend clears pre_x as soon
  // as anything else may have written x.
  const float* pre_x = nullptr;
  int pre_n = 0, pre_k = 0;
  // pre_norm.ssq set: pre_x is a split norm's output, not written yet; its u sits at pre_q (int8 blocks, mmvq's
  // layout) and pre_uf (F32), and its products scale by s (NormIn): mmvq and gemv_f16 take it.
  NormIn pre_norm;
  const float* pre_uf = nullptr;
  const int8_t* pre_q = nullptr;
  void clear_pre() {
    pre_x = nullptr;
    pre_norm = NormIn();
    pre_uf = nullptr;
    pre_q = nullptr;
  }
  void freeze() {
    partial.frozen = counters.frozen = xh.frozen = wh.frozen = xq.frozen = nq.frozen = xf.frozen = rn.frozen = true;
  }
  void thaw() {
    partial.thaw();
    counters.thaw(true);
    xh.thaw();
    wh.thaw();
    xq.thaw();
    nq.thaw();
    xf.thaw();
    rn.thaw();
  }
  void free_all() {
    partial.free_all();
    counters.free_all();
    xh.free_all();
    wh.free_all();
    xq.free_all();
    nq.free_all();
    xf.free_all();
    rn.free_all();
  }
};

struct DeviceInfo {
  int sm_count = 0;
  size_t max_smem_optin = 0;
  bool pdl = false;  // launch the matmuls with programmatic dependent launch (sm_90+, TWINFER_CUDA_PDL=1)
  bool pdl_gemv = false;  // the same for the 1-2-token products (gemv.cu, mmvq.cu): on unless TWINFER_CUDA_PDL=0
  bool attn_split_heads = true;  // decode attention: one CTA per query head (TWINFER_CUDA_ATTN_HEADS=0: per KV head)
  int gemv_cfg = 0;               // F16 GEMV variant (gemv.cu; TWINFER_CUDA_GEMV_CFG, 0 = default)
  bool attn_prefetch = true;      // decode attention with RoPE: K/V rows below pos before the PDL wait (attention.cu)
  bool attn_self_kv = true;       // ... and the token's own K/V row from shared memory (TWINFER_CUDA_ATTN_SELF=0: off)
  // One-token integer-dot products (mmvq.cu, TWINFER_CUDA_MMVQ_TMA): 0 the warp-per-row kernels, 1 the bulk-copy
  // pipeline (sm_90+), with its shared memory per CTA (KiB, TWINFER_CUDA_TMA_SMEM), bytes per stage aimed at
  // (TWINFER_CUDA_TMA_TILE) and CTAs per SM (TWINFER_CUDA_TMA_CTAS); 2 the staged kernels (coalesced 16-byte loads
  // through shared memory) for Q4_0 / Q4_K / Q6_K; 3 (the default) staged for Q6_K only; 4 staged for Q6_K and
  // for Q4_0 / Q4_K rows longer than 4096 (the down projection).
  int mmvq_tma = 3;
  int tma_smem_kb = 96, tma_tile = 24576, tma_ctas = 1;
  int tma_warps = 8;  // consumer warps per CTA of the pipeline: 8 or 16 (TWINFER_CUDA_TMA_WARPS)
};

// ---- repack.cu ----
// The type code the kernels dispatch on: the GGUF type, or kQ4_0T (cuda_common.cuh) for a rearranged Q4_0 weight.
int32_t kernel_type(const Tensor& w);
// Backend::prepare_weight: Q4_0 weights whose rows are whole 256-value groups are rearranged in place into kQ4_0T's
// layout (same bytes, same size) where TWINFER_CUDA_Q4_0_TILES=1 (opt-in: no gain measured); returns whether it
// rearranged w.
bool prepare_weight(cudaStream_t s, Tensor& w);
// Backend::read_weight's second half: host bytes downloaded from a rearranged weight back to GGUF blocks, in place.
void weight_to_gguf(const Tensor& w, void* host);
// op_test's A/B: -1 the environment's choice, 0 off, 1 on.
void set_q4_0_tiles(int mode);

// ---- elementwise.cu ----
void get_rows(cudaStream_t s, const Tensor& table, const int32_t* ids, int n, float* out);
// q / ds (optional): also write out as int8 blocks for the integer-dot decode kernel (mmvq.cu); returns whether it
// did (rows of dim % 32 == 0 on the vectorized path).
// pdl: launched with programmatic dependent launch (waits for the previous kernel before reading anything).
bool rms_norm(cudaStream_t s, const float* x, const float* w, float* out, int n, int dim, float eps,
              int8_t* q = nullptr, float2* ds = nullptr, bool pdl = false);
// x += y, then out = rms_norm(x) * w: the residual add and the next layer's norm in one pass.
bool add_rms_norm(cudaStream_t s, float* x, const float* y, const float* w, float* out, int n, int dim, float eps,
                  int8_t* q = nullptr, float2* ds = nullptr, bool pdl = false);
// The split norm's block kernel (NormOut, n rows, dim % 32 == 0).
void norm_blocks(cudaStream_t s, const NormOut& no, int n, bool pdl);
// ni.h = ni.x * s * ni.w for n rows (a split norm whose products could not take u: its output after all).
void norm_finish(cudaStream_t s, const NormIn& ni, int n, bool pdl);
void add_bias(cudaStream_t s, float* y, const float* b, int n, int width);
void swiglu(cudaStream_t s, const float* gate, const float* up, float* out, size_t n);
void add(cudaStream_t s, float* x, const float* y, size_t n);
void gather_rows(cudaStream_t s, const float* x, const int32_t* rows, int n, int width, float* out);
void f32_to_f16(cudaStream_t s, const float* x, __half* out, size_t n);
// out = half(silu(gate) * up): SwiGLU fused into the FP16 conversion of the down projection's activations.
void swiglu_f16(cudaStream_t s, const float* gate, const float* up, __half* out, size_t n);

// ---- matmul.cu ----
// y[t][r] = sum_k W[r][k] x[t][k]. Picks the fused dequant tensor-core kernels where the shape allows, else the
// exact F32 SIMT kernel (always used for F32 weights).
void matmul(cudaStream_t s, const DeviceInfo& dev, MatmulScratch& scratch, const Tensor& W, const float* x, int n,
            float* y);
// Several products of the same x (Q/K/V, gate/up) in one launch; falls back to one launch each where needed.
void matmul_group(cudaStream_t s, const DeviceInfo& dev, MatmulScratch& scratch, const Tensor* const* W,
                  float* const* y, int count, const float* x, int n);
// y = W (silu(gate) * up): the SwiGLU product computed as the activations are loaded (tensor-core path only).
void matmul_swiglu(cudaStream_t s, const DeviceInfo& dev, MatmulScratch& scratch, const Tensor& W, const float* gate,
                   const float* up, int n, float* y);
// One token's y = W x (x = silu(x) * up when up is given), then no.x += y and the split norm's block work on it
// (NormOut, as norm_blocks) in the same launch: mmvq's integer-dot kernels; false, with nothing launched, elsewhere.
bool matmul_norm(cudaStream_t s, const DeviceInfo& dev, MatmulScratch& scratch, const Tensor& W, const float* x,
                 const float* up, float* y, const NormOut& no);
// CTAs per SM that split-K aims for in the tensor-core kernels (default 2; a tuning knob for op_test).
void set_matmul_split_target(int ctas_per_sm);
// Warps (4 or 8, x 16 weight rows) per CTA of the decode matmul for every type; 0 = per type (the default).
void set_matmul_decode_warps(int warps);
// Whether a product of W at n tokens takes a split norm's output (scratch.pre_norm) in matmul_group.
bool norm_in_supported(const Tensor& W, const float* uf, int n);
// Whether W takes the tensor-core kernels (type with fragments, 16-byte aligned rows).
bool tc_eligible(const Tensor& W);
// Whether two weights can share one grouped launch (same type and row length, tensor-core path).
bool matmul_groupable(const Tensor& a, const Tensor& b);

// ---- mmvq.cu ----
// Whether the integer-dot decode kernel takes W at n tokens (Q4_0 n <= 2, Q8_0 / Q4_K n = 1; TWINFER_CUDA_DP4A=0: never).
bool mmvq_supported(const Tensor& W, int n);
// The one-token bulk-copy pipeline on (1), off (0) or as the device decided at init (-1), with these sizes (0: the
// device's): op_test's A/B.
void set_mmvq_tma(int mode, int smem_kb = 0, int tile = 0, int ctas = 0);
// op_test: rows per warp of the warp-per-row integer-dot kernels (1 or 2; 0 the per-type default; -1 the environment's).
void set_mmvq_rows(int rows);
// op_test: tiles per lane in flight for rearranged Q4_0 rows longer than 4096 (4, 7 or 14).
void set_mmvq_q4t_unroll(int u);
// y[i] = W[i] x for i < count (same type and K), x = silu(x) * up when up is given; false if no scratch (then the
// caller takes another kernel). Activations the norm already quantized (scratch.pre_x == x) are used as they are.
// no (one token, one weight of M % 32 == 0 rows, no.dim == M): the residual add and split norm of y in the same
// launch (no.x += y, then as norm_blocks); false, with nothing launched, where that kernel does not apply.
bool mmvq(cudaStream_t s, const DeviceInfo& dev, MatmulScratch& scratch, const Tensor* const* W, float* const* y, int count,
          const float* x, const float* up, int n, const NormOut* no = nullptr);

// ---- gemv.cu ----
// F16 weights at n <= 2 tokens (16-byte-aligned rows and x): a plain GEMV with F32 activations (TWINFER_CUDA_GEMV=0:
// the tensor-core kernel instead).
bool gemv_f16_supported(const Tensor& W, const float* x, int n);
// pdl: launched with programmatic dependent launch (weights stream before the previous kernel has finished).
// ni (optional): x is a split norm's u (norm_fused.cuh): results scaled by its s, h written.
void gemv_f16(cudaStream_t s, bool pdl, int cfg, const Tensor* const* W, float* const* y, int count, const float* x,
              int n, const NormIn* ni = nullptr);
// out = silu(gate x) * (up x) and up_out = up x in one launch (the gate/up products of a SwiGLU block).
bool gemv_f16_swiglu_supported(const Tensor& gate, const Tensor& up, const float* x, int n);
void gemv_f16_swiglu(cudaStream_t s, bool pdl, const Tensor& gate, const Tensor& up, const float* x, int n, float* up_out,
                     float* out, const NormIn* ni = nullptr);

// ---- cublas.cu ----
// y = W x16^T through cuBLAS (loaded at run time) for F16 or, dequantized to F16 first, quantized W; false when
// cuBLAS is not available (TWINFER_CUDA_CUBLAS=0 turns it off; =PATH names the library).
bool cublas_matmul(cudaStream_t s, MatmulScratch& scratch, const Tensor& W, const __half* x16, int n, float* y);
const char* cublas_path();  // the loaded library, or nullptr

// ---- topk.cu ----
// The k best (value desc, id asc; NaN as -Infinity) of each row of x [rows][width] into out_v / out_i [rows][k]
// (device memory). scratch: topk_scratch_bytes(rows, width, k) bytes. k <= topk_max_k().
int topk_max_k();
size_t topk_scratch_bytes(int rows, int width, int k);
void topk(cudaStream_t s, const float* x, int rows, int width, int k, void* scratch, float* out_v, int32_t* out_i);

// ---- attention.cu ----
void rope_store_kv(cudaStream_t s, float* q, float* k, const float* v, const BatchView& b, const KVLayer& kv,
                   const AttentionShape& sh, int rope_mode, float theta, float freq_scale);
bool attention_supported(const AttentionShape& sh);
// The host-side choices of attention() / attention_rope_fusable() for this batch as one number (CUDA graph keys).
uint64_t attention_plan(const DeviceInfo& dev, const BatchView& b, const AttentionShape& sh);
// rope_store_kv + attention as one decode kernel: when every sequence has at most one token in the step (host
// metadata present) and the single-pass decode kernel takes the shape.
bool attention_rope_fusable(const DeviceInfo& dev, const BatchView& b, const AttentionShape& sh);
bool attention_rope(cudaStream_t s, const DeviceInfo& dev, float* q, const float* k, const float* v, const BatchView& b,
                    const KVLayer& kv, const AttentionShape& sh, int rope_mode, float theta, float freq_scale,
                    float* out, int8_t* oq = nullptr, float2* ods = nullptr);
// oq / ods (optional, n_head * head_dim % 32 == 0): the decode kernel also writes out as int8 blocks for the output
// projection (mmvq.cu); returns whether it did (the other kernels do not).
bool attention(cudaStream_t s, const DeviceInfo& dev, Scratch& scratch, const float* q, const BatchView& b,
               const KVLayer& kv, const AttentionShape& sh, float* out, int8_t* oq = nullptr, float2* ods = nullptr);

}  // namespace cuda
}  // namespace tw
