// The engine object behind the C ABI: hyperparameters, the weights by role, the paged KV cache, scratch buffers.
#pragma once
#include <array>
#include <string>
#include <vector>

#include "../include/twinfer.h"
#include "backend.h"

struct tw_engine {
  tw_hparams hp{};
  tw_runtime_config rc{};
  tw::Backend* be = nullptr;

  // Weights: globals (token embedding, output norm, output) and per-layer, indexed by tw_role.
  std::array<tw::Tensor, TW_ROLE_COUNT> globals{};
  std::vector<std::array<tw::Tensor, TW_ROLE_COUNT>> layers;

  // Paged KV cache: one K and one V buffer per layer, kv_n_blocks * kv_block_size slots each.
  std::vector<tw::KVLayer> kv;
  size_t kv_slot_bytes = 0;  // bytes of one slot (kv_dim values) in one of K or V

  // Activation scratch (backend memory), sized for max_batch_tokens.
  float* x = nullptr;       // residual stream [T][n_embd]
  float* h = nullptr;       // normed input [T][n_embd]
  float* q = nullptr;       // [T][n_head*head_dim]
  float* k = nullptr;       // [T][n_head_kv*head_dim]
  float* v = nullptr;       // [T][n_head_kv*head_dim]
  float* attn = nullptr;    // [T][n_head*head_dim]
  float* gate = nullptr;    // [T][n_ff]
  float* up = nullptr;      // [T][n_ff]
  float* rows = nullptr;    // gathered output rows [max_outputs][n_embd]
  float* logits = nullptr;  // [max_outputs][n_vocab]
  // The step's per-token arrays in one backend buffer (one upload per step: a pipelined step's uploads must not wait
  // for the step before it), tokens | pos | seq | slot at max_batch_tokens apart, then the output rows.
  int32_t* d_meta = nullptr;
  int32_t* d_tokens = nullptr;
  int32_t* d_pos = nullptr;
  int32_t* d_seq = nullptr;
  int32_t* d_slot = nullptr;
  int32_t* d_out_rows = nullptr;
  int32_t* d_block_tables = nullptr;
  size_t block_table_capacity = 0;  // int32 entries

  // Host staging of per-step metadata (d_meta's layout).
  std::vector<int32_t> h_meta;

  // Pipelined decode (tw_engine_submit_top): steps submitted and not yet waited for, and what a chained step takes
  // its tokens from — the previous submitted step's output count and k, and (host backends) its best ids.
  int inflight = 0;
  int32_t chain_rows = 0, chain_k = 0;
  std::vector<int32_t> chain_ids;

  std::vector<void*> scratch_allocs;
  size_t bytes_weights = 0, bytes_kv = 0, bytes_scratch = 0;
};

namespace tw {
// The transformer step, written once against the op interface (forward.cpp).
// top_k > 0: return the top_k logits of each output row (and their ids) instead of whole rows (tw_engine_forward_top).
// submit: tw_engine_submit_top's step (chain: tokens from the previous step's best ids; results may arrive later).
int forward(tw_engine* e, const tw_batch* b, int32_t top_k = 0, int32_t* top_ids = nullptr, float* top_logits = nullptr,
            bool submit = false, bool chain = false);
// Waits for every submitted step (their results land where their submissions said).
void drain(tw_engine* e);
// Sets the thread-local error message returned by tw_last_error; returns code.
int fail(int code, const std::string& message);
}  // namespace tw
