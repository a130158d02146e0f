// One transformer step for the Llama family (llama, qwen2), written once against the backend op interface.
//
// A step takes T tokens from any number of sequences. Each token's K/V goes into its own paged-cache slot before
// attention reads the cache, so prompt chunks, single decode tokens and mixed batches all take the same path.
#include <cmath>
#include <string>

#include "engine.h"

namespace tw {

namespace {

int validate(tw_engine* e, const tw_batch* b, bool want_logits, bool chain) {
  const tw_runtime_config& rc = e->rc;
  if (b->n_tokens <= 0 || b->n_tokens > rc.max_batch_tokens)
    return fail(TW_ERR_INVALID_ARGUMENT, "batch of " + std::to_string(b->n_tokens) + " tokens (max " +
                                             std::to_string(rc.max_batch_tokens) + ")");
  if (b->n_outputs < 0 || b->n_outputs > rc.max_outputs)
    return fail(TW_ERR_INVALID_ARGUMENT, "batch asks for " + std::to_string(b->n_outputs) + " outputs (max " +
                                             std::to_string(rc.max_outputs) + ")");
  if (b->n_seqs <= 0 || b->blocks_per_seq <= 0 || (!chain && !b->tokens) || !b->pos || !b->seq_idx || !b->out_idx ||
      !b->block_tables || (want_logits && b->n_outputs > 0 && !b->logits))
    return fail(TW_ERR_INVALID_ARGUMENT, "incomplete batch");
  const int64_t table_entries = (int64_t)b->n_seqs * b->blocks_per_seq;
  for (int64_t i = 0; i < table_entries; ++i) {
    const int32_t blk = b->block_tables[i];
    if (blk < -1 || blk >= rc.kv_n_blocks) return fail(TW_ERR_KV_CACHE, "block table names block " + std::to_string(blk));
  }
  int outputs_seen = 0;
  for (int i = 0; i < b->n_tokens; ++i) {
    if (!chain && (b->tokens[i] < 0 || b->tokens[i] >= e->hp.n_vocab))
      return fail(TW_ERR_INVALID_ARGUMENT, "token id " + std::to_string(b->tokens[i]) + " outside the vocabulary");
    if (b->seq_idx[i] < 0 || b->seq_idx[i] >= b->n_seqs) return fail(TW_ERR_INVALID_ARGUMENT, "bad sequence row");
    const int32_t p = b->pos[i];
    if (p < 0 || p / rc.kv_block_size >= b->blocks_per_seq)
      return fail(TW_ERR_KV_CACHE, "position " + std::to_string(p) + " has no block in its block table");
    // Every block the token attends to (0..p) must be mapped.
    const int32_t* table = b->block_tables + (int64_t)b->seq_idx[i] * b->blocks_per_seq;
    for (int j = 0; j <= p / rc.kv_block_size; ++j)
      if (table[j] < 0) return fail(TW_ERR_KV_CACHE, "position " + std::to_string(p) + " reads an unmapped block");
    if (b->out_idx[i] >= b->n_outputs) return fail(TW_ERR_INVALID_ARGUMENT, "output row out of range");
    if (b->out_idx[i] >= 0) ++outputs_seen;
  }
  if (outputs_seen != b->n_outputs) return fail(TW_ERR_INVALID_ARGUMENT, "out_idx does not cover n_outputs rows");
  return TW_OK;
}

const Tensor& output_matrix(tw_engine* e) {
  return e->globals[TW_ROLE_OUTPUT].present() ? e->globals[TW_ROLE_OUTPUT] : e->globals[TW_ROLE_TOK_EMBD];
}

}  // namespace

void drain(tw_engine* e) {
  for (; e->inflight > 0; --e->inflight) e->be->wait_step();
}

int forward(tw_engine* e, const tw_batch* b, int32_t top_k, int32_t* top_ids, float* top_logits, bool submit,
            bool chain) {
  if (!e || !b) return fail(TW_ERR_INVALID_ARGUMENT, "null argument");
  if (int rc = validate(e, b, top_k <= 0, chain)) return rc;
  if (chain && (e->chain_rows == 0 || b->n_tokens != e->chain_rows))
    return fail(TW_ERR_INVALID_ARGUMENT, "a chained step takes one token per output row of the step submitted before it");
  Backend& be = *e->be;
  // At most two steps in flight (the one computing, the one queued behind it); plain steps run after all of them.
  if (!submit) drain(e);
  else if (e->inflight >= 2) be.wait_step(), --e->inflight;
  const tw_hparams& hp = e->hp;
  const int T = b->n_tokens;
  const int D = hp.n_embd;
  const int B = e->rc.kv_block_size;
  const int TM = e->rc.max_batch_tokens;  // d_meta's pitch

  // Per-token cache slots and the list of rows that want logits, computed on the host, with the tokens, positions
  // and sequence rows in d_meta's layout; a chained step's tokens come from the previous step's best ids.
  int32_t* m = e->h_meta.data();
  const bool device_chain = chain && be.async_steps();
  for (int i = 0; i < T; ++i) m[i] = !chain ? b->tokens[i] : device_chain ? 0 : e->chain_ids[i];
  int32_t max_pos = 0;
  for (int i = 0; i < T; ++i) {
    const int32_t p = b->pos[i];
    const int32_t blk = b->block_tables[(int64_t)b->seq_idx[i] * b->blocks_per_seq + p / B];
    m[TM + i] = p;
    m[2 * TM + i] = b->seq_idx[i];
    m[3 * TM + i] = blk * B + p % B;
    if (b->out_idx[i] >= 0) m[4 * TM + b->out_idx[i]] = i;
    if (p > max_pos) max_pos = p;
  }

  const size_t table_entries = (size_t)b->n_seqs * b->blocks_per_seq;
  if (table_entries > e->block_table_capacity) {
    if (e->d_block_tables) be.release(e->d_block_tables);
    e->d_block_tables = (int32_t*)be.alloc(table_entries * 4);
    e->block_table_capacity = e->d_block_tables ? table_entries : 0;
    if (!e->d_block_tables) return fail(TW_ERR_OUT_OF_MEMORY, "out of memory for block tables");
  }
  be.upload(e->d_meta, m, (4 * (size_t)TM + b->n_outputs) * 4);
  if (device_chain && !be.chain_tokens(e->d_tokens, T, e->chain_k))
    return fail(TW_ERR_BACKEND, "the previous step's best ids are not on the device; submit this step unchained");
  be.upload(e->d_block_tables, b->block_tables, table_entries * 4);

  BatchView view;
  view.n_tokens = T;
  view.pos = e->d_pos;
  view.seq_idx = e->d_seq;
  view.slot = e->d_slot;
  view.block_tables = e->d_block_tables;
  view.n_seqs = b->n_seqs;
  view.blocks_per_seq = b->blocks_per_seq;
  view.max_pos = max_pos;
  view.host_pos = b->pos;
  view.host_seq_idx = b->seq_idx;
  view.host_block_tables = b->block_tables;

  AttentionShape shape;
  shape.n_head = hp.n_head;
  shape.n_head_kv = hp.n_head_kv;
  shape.head_dim = hp.head_dim;
  shape.block_size = B;
  shape.kv_type = e->rc.kv_type;
  shape.scale = 1.0f / std::sqrt((float)hp.head_dim);

  be.begin_step(view);
  be.get_rows(e->globals[TW_ROLE_TOK_EMBD], e->d_tokens, T, e->x);

  for (int l = 0; l < hp.n_layer; ++l) {
    const auto& w = e->layers[l];
    // Attention block.
    be.rms_norm(e->x, w[TW_ROLE_ATTN_NORM], e->h, T, D, hp.rms_eps);
    {
      const Tensor* qkv[3] = {&w[TW_ROLE_ATTN_Q], &w[TW_ROLE_ATTN_K], &w[TW_ROLE_ATTN_V]};
      float* out[3] = {e->q, e->k, e->v};
      be.matmul_many(qkv, 3, e->h, T, out);
    }
    if (w[TW_ROLE_ATTN_Q_BIAS].present()) be.add_bias(e->q, w[TW_ROLE_ATTN_Q_BIAS], T);
    if (w[TW_ROLE_ATTN_K_BIAS].present()) be.add_bias(e->k, w[TW_ROLE_ATTN_K_BIAS], T);
    if (w[TW_ROLE_ATTN_V_BIAS].present()) be.add_bias(e->v, w[TW_ROLE_ATTN_V_BIAS], T);
    be.rope_store_kv(e->q, e->k, e->v, view, e->kv[l], shape, hp.rope_mode, hp.rope_theta, hp.rope_freq_scale);
    be.attention(e->q, view, e->kv[l], shape, e->attn);
    be.matmul(w[TW_ROLE_ATTN_OUT], e->attn, T, e->h);
    be.add(e->x, e->h, (size_t)T * D);
    // Feed-forward block (SwiGLU).
    be.rms_norm(e->x, w[TW_ROLE_FFN_NORM], e->h, T, D, hp.rms_eps);
    {
      const Tensor* gate_up[2] = {&w[TW_ROLE_FFN_GATE], &w[TW_ROLE_FFN_UP]};
      float* out[2] = {e->gate, e->up};
      be.matmul_many(gate_up, 2, e->h, T, out);
    }
    be.swiglu(e->gate, e->up, e->gate, (size_t)T * hp.n_ff);
    be.matmul(w[TW_ROLE_FFN_DOWN], e->gate, T, e->h);
    be.add(e->x, e->h, (size_t)T * D);
  }

  // Logits only for the rows that asked for them.
  if (b->n_outputs > 0) {
    be.gather_rows(e->x, e->d_out_rows, b->n_outputs, D, e->rows);
    be.rms_norm(e->rows, e->globals[TW_ROLE_OUTPUT_NORM], e->rows, b->n_outputs, D, hp.rms_eps);
    be.matmul(output_matrix(e), e->rows, b->n_outputs, e->logits);
    if (top_k > 0) be.top_k(e->logits, b->n_outputs, hp.n_vocab, top_k, top_ids, top_logits);
    else be.download(b->logits, e->logits, (size_t)b->n_outputs * hp.n_vocab * 4);
  }
  // What a chained step after this one reads: the output count and k, and on a host backend the best ids now.
  e->chain_rows = top_k > 0 ? b->n_outputs : 0;
  e->chain_k = top_k;
  if (top_k > 0 && !be.async_steps()) {
    e->chain_ids.resize(b->n_outputs);
    for (int r = 0; r < b->n_outputs; ++r) e->chain_ids[r] = top_ids[(size_t)r * top_k];
  }
  if (submit) {
    be.end_step_async();
    ++e->inflight;
  } else {
    be.end_step();
  }
  return TW_OK;
}

}  // namespace tw
