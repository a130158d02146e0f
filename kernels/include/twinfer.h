/*
 * twinfer C ABI — the one interface that both bindings (core-wasm via emscripten, core-cuda via N-API) expose.
 *
 * An engine owns: a backend (CPU or CUDA), the model weights (registered one tensor at a time while the file
 * streams in), and a paged KV cache (a pool of physical blocks of `kv_block_size` tokens each). The caller — the
 * TypeScript scheduler — owns the block tables: which physical blocks hold which sequence's positions. A forward
 * step takes a batch of tokens from any number of sequences, each token with its own position and sequence row.
 *
 * Every function returns 0 on success or a TW_ERR_* code; tw_last_error() gives the message of the last failure.
 */
#ifndef TWINFER_H
#define TWINFER_H

#include <stddef.h>
#include <stdint.h>

#if defined(__EMSCRIPTEN__)
#include <emscripten/emscripten.h>
#define TW_API EMSCRIPTEN_KEEPALIVE
#else
#define TW_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* GGUF tensor type ids (ggml_type numbering, so the file's id is used as is). */
enum tw_type {
  TW_TYPE_F32 = 0,
  TW_TYPE_F16 = 1,
  TW_TYPE_Q4_0 = 2,
  TW_TYPE_Q4_1 = 3,
  TW_TYPE_Q5_0 = 6,
  TW_TYPE_Q5_1 = 7,
  TW_TYPE_Q8_0 = 8,
  TW_TYPE_Q8_1 = 9,
  TW_TYPE_Q2_K = 10,
  TW_TYPE_Q3_K = 11,
  TW_TYPE_Q4_K = 12,
  TW_TYPE_Q5_K = 13,
  TW_TYPE_Q6_K = 14,
  TW_TYPE_Q8_K = 15,
  TW_TYPE_BF16 = 30,
};

enum tw_arch { TW_ARCH_LLAMA = 0, TW_ARCH_QWEN2 = 1 };

/* RoPE layouts: NORMAL rotates adjacent pairs (x[2i], x[2i+1]) as in Llama; NEOX rotates (x[i], x[i+d/2]). */
enum tw_rope_mode { TW_ROPE_NORMAL = 0, TW_ROPE_NEOX = 2 };

/* What a weight tensor is for; the SDK maps GGUF names (blk.N.attn_q.weight, ...) to these. */
enum tw_role {
  TW_ROLE_TOK_EMBD = 0,
  TW_ROLE_OUTPUT_NORM = 1,
  TW_ROLE_OUTPUT = 2,
  TW_ROLE_ATTN_NORM = 3,
  TW_ROLE_ATTN_Q = 4,
  TW_ROLE_ATTN_K = 5,
  TW_ROLE_ATTN_V = 6,
  TW_ROLE_ATTN_OUT = 7,
  TW_ROLE_ATTN_Q_BIAS = 8,
  TW_ROLE_ATTN_K_BIAS = 9,
  TW_ROLE_ATTN_V_BIAS = 10,
  TW_ROLE_FFN_NORM = 11,
  TW_ROLE_FFN_GATE = 12,
  TW_ROLE_FFN_UP = 13,
  TW_ROLE_FFN_DOWN = 14,
  TW_ROLE_COUNT = 15,
};

enum tw_error {
  TW_OK = 0,
  TW_ERR_INVALID_ARGUMENT = 1,
  TW_ERR_UNSUPPORTED_TYPE = 2,
  TW_ERR_OUT_OF_MEMORY = 3,
  TW_ERR_MISSING_TENSOR = 4,
  TW_ERR_SHAPE_MISMATCH = 5,
  TW_ERR_KV_CACHE = 6,
  TW_ERR_BACKEND = 7,
};

typedef struct tw_hparams {
  int32_t arch;          /* tw_arch */
  int32_t n_vocab;
  int32_t n_embd;
  int32_t n_layer;
  int32_t n_head;
  int32_t n_head_kv;
  int32_t head_dim;      /* usually n_embd / n_head */
  int32_t n_ff;
  int32_t n_ctx_train;
  int32_t rope_mode;     /* tw_rope_mode */
  float rope_theta;
  float rope_freq_scale; /* 1.0 = none (linear scaling factor) */
  float rms_eps;
} tw_hparams;

typedef struct tw_runtime_config {
  int32_t n_threads;        /* CPU backend: total threads including the caller; <= 0 means all cores */
  int32_t kv_type;          /* TW_TYPE_F32 or TW_TYPE_F16 */
  int32_t kv_block_size;    /* tokens per KV block (e.g. 16) */
  int32_t kv_n_blocks;      /* physical blocks in the pool */
  int32_t max_batch_tokens; /* largest n_tokens a forward step may take */
  int32_t max_outputs;      /* largest number of logit rows a step may return */
  int32_t device;           /* CUDA: device ordinal */
  int32_t flags;            /* TW_FLAG_* */
} tw_runtime_config;

enum tw_flags {
  TW_FLAG_QUANTIZE_ACTIVATIONS = 1, /* CPU: int8 activations in quantized products — the default; kept for compatibility */
  TW_FLAG_FLOAT_ACTIVATIONS = 2,    /* CPU: float activations in every product (exact arithmetic on the stored weights; slower) */
};

typedef struct tw_engine tw_engine;

/* One forward step. Token i belongs to sequence row seq_idx[i] (a row of block_tables) at position pos[i]; its
 * K/V are written to the cache slot block_tables[seq_idx[i]*blocks_per_seq + pos[i]/B]*B + pos[i]%B before any
 * attention of this step reads the cache, and it attends to positions 0..pos[i] of its sequence. out_idx[i] >= 0
 * asks for the logits of token i in row out_idx[i] of `logits` (n_outputs x n_vocab floats, host memory). */
typedef struct tw_batch {
  int32_t n_tokens;
  const int32_t* tokens;
  const int32_t* pos;
  const int32_t* seq_idx;
  const int32_t* out_idx;
  int32_t n_outputs;
  int32_t n_seqs;
  int32_t blocks_per_seq;
  const int32_t* block_tables;
  float* logits;
} tw_batch;

TW_API const char* tw_last_error(void);
TW_API const char* tw_backend_name(void);
/* Size in bytes of n elements of a type (n must be a multiple of the block size); 0 if unknown type. */
TW_API size_t tw_type_row_size(int32_t type, int64_t n);
TW_API int32_t tw_type_block_size(int32_t type);
TW_API int tw_type_supported(int32_t type);

TW_API int tw_engine_create(const tw_hparams* hp, const tw_runtime_config* rc, tw_engine** out);
TW_API void tw_engine_free(tw_engine* e);

/* Reserve storage for a weight. Shape is ne0 (row length, contiguous) x ne1 (rows). *host_ptr, when not NULL on
 * return, is directly writable memory (CPU backend): the caller streams the file's bytes straight into it. When it is
 * NULL (device memory), the caller uploads with tw_tensor_write. Either way tw_tensor_finalize ends the tensor. */
TW_API int tw_tensor_alloc(tw_engine* e, int32_t role, int32_t layer, int32_t type, int64_t ne0, int64_t ne1,
                           void** host_ptr);
TW_API int tw_tensor_write(tw_engine* e, int32_t role, int32_t layer, size_t offset, const void* src, size_t n);
TW_API int tw_tensor_finalize(tw_engine* e, int32_t role, int32_t layer);
/* Dequantize a whole weight tensor to F32 (tests and tools; out holds ne0*ne1 floats). */
TW_API int tw_tensor_dequantize(tw_engine* e, int32_t role, int32_t layer, float* out);
/* Dequantize raw bytes of a type (no engine needed): n elements, n a multiple of the block size. */
TW_API int tw_dequantize(int32_t type, const void* src, float* dst, int64_t n);

/* Checks every required tensor is present; after this, forward may run. */
TW_API int tw_engine_ready(tw_engine* e);
TW_API int tw_engine_forward(tw_engine* e, const tw_batch* b);
/* The same step as tw_engine_forward, but instead of whole logit rows it returns the k largest logits of each
 * output row and their token ids, best first (larger logit first, lower id first on ties; a NaN logit counts as
 * -Infinity): top_ids / top_logits hold n_outputs x k entries, row out_idx[i] for token i. b->logits is not used.
 * The selection is exact over the logits tw_engine_forward would return, so greedy and top-k sampling (with a
 * repetition penalty: k = wanted + penalized ids) choose the same tokens from it while only k values per row
 * leave the device. 1 <= k <= n_vocab. */
TW_API int tw_engine_forward_top(tw_engine* e, const tw_batch* b, int32_t k, int32_t* top_ids, float* top_logits);
/* Pipelined decode: the step of tw_engine_forward_top, started without waiting for its results where the backend
 * can (CUDA; a host backend finishes it before returning). tw_engine_wait_top waits for the oldest submitted step;
 * its results are then in the top_ids / top_logits given at its submission (which must stay valid until then). At
 * most two steps are in flight (a third submission first waits for the oldest); tw_engine_forward and
 * tw_engine_forward_top wait for all of them first. chain != 0: b->tokens is not read (may be NULL): token i is the
 * best id (top_ids[i * k]) of output row i of the step submitted just before, taken where it was computed, so step
 * N+1 can be queued before step N's results reach the host; n_tokens must equal that step's n_outputs. */
TW_API int tw_engine_submit_top(tw_engine* e, const tw_batch* b, int32_t k, int32_t chain, int32_t* top_ids,
                                float* top_logits);
TW_API int tw_engine_wait_top(tw_engine* e);
/* Copy the K/V of physical block src into dst in every layer (copy-on-write for shared prefixes). */
TW_API int tw_kv_copy_block(tw_engine* e, int32_t src, int32_t dst);
/* Bytes used by weights, by the KV cache, and by scratch buffers. */
TW_API int tw_engine_memory(tw_engine* e, double* weights, double* kv_cache, double* scratch);

#ifdef __cplusplus
}
#endif
#endif
