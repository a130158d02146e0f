// The C ABI (twinfer.h): engine lifetime, weight registration with shape checks, KV cache allocation.
#include "engine.h"

#include <cstdio>
#include <cstring>
#include <new>
#include <string>

#include "../common/quants.h"

namespace {
thread_local std::string g_last_error;

const char* role_name(int32_t role) {
  static const char* names[TW_ROLE_COUNT] = {
      "token_embd", "output_norm", "output",  "attn_norm", "attn_q",   "attn_k",   "attn_v",  "attn_output",
      "attn_q.bias", "attn_k.bias", "attn_v.bias", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"};
  return role >= 0 && role < TW_ROLE_COUNT ? names[role] : "?";
}

bool is_global(int32_t role) {
  return role == TW_ROLE_TOK_EMBD || role == TW_ROLE_OUTPUT_NORM || role == TW_ROLE_OUTPUT;
}

bool is_optional(int32_t role, int32_t arch) {
  if (role == TW_ROLE_OUTPUT) return true;  // tied to the token embedding when absent
  if (role == TW_ROLE_ATTN_Q_BIAS || role == TW_ROLE_ATTN_K_BIAS || role == TW_ROLE_ATTN_V_BIAS)
    return arch != TW_ARCH_QWEN2;
  return false;
}

// Expected (ne0, ne1) of each role for these hyperparameters.
void expected_shape(const tw_hparams& hp, int32_t role, int64_t* ne0, int64_t* ne1) {
  const int64_t d = hp.n_embd, qd = (int64_t)hp.n_head * hp.head_dim, kvd = (int64_t)hp.n_head_kv * hp.head_dim;
  switch (role) {
    case TW_ROLE_TOK_EMBD: case TW_ROLE_OUTPUT: *ne0 = d; *ne1 = hp.n_vocab; return;
    case TW_ROLE_OUTPUT_NORM: case TW_ROLE_ATTN_NORM: case TW_ROLE_FFN_NORM: *ne0 = d; *ne1 = 1; return;
    case TW_ROLE_ATTN_Q: *ne0 = d; *ne1 = qd; return;
    case TW_ROLE_ATTN_K: case TW_ROLE_ATTN_V: *ne0 = d; *ne1 = kvd; return;
    case TW_ROLE_ATTN_OUT: *ne0 = qd; *ne1 = d; return;
    case TW_ROLE_ATTN_Q_BIAS: *ne0 = qd; *ne1 = 1; return;
    case TW_ROLE_ATTN_K_BIAS: case TW_ROLE_ATTN_V_BIAS: *ne0 = kvd; *ne1 = 1; return;
    case TW_ROLE_FFN_GATE: case TW_ROLE_FFN_UP: *ne0 = d; *ne1 = hp.n_ff; return;
    case TW_ROLE_FFN_DOWN: *ne0 = hp.n_ff; *ne1 = d; return;
    default: *ne0 = *ne1 = -1;
  }
}

tw::Tensor* find_tensor(tw_engine* e, int32_t role, int32_t layer) {
  if (role < 0 || role >= TW_ROLE_COUNT) return nullptr;
  if (is_global(role)) return &e->globals[role];
  if (layer < 0 || layer >= e->hp.n_layer) return nullptr;
  return &e->layers[layer][role];
}

std::string tensor_label(int32_t role, int32_t layer) {
  return is_global(role) ? std::string(role_name(role)) : "blk." + std::to_string(layer) + "." + role_name(role);
}

void* scratch(tw_engine* e, size_t bytes) {
  void* p = e->be->alloc(bytes);
  if (p) {
    e->scratch_allocs.push_back(p);
    e->bytes_scratch += bytes;
  }
  return p;
}
}  // namespace

namespace tw {
int fail(int code, const std::string& message) {
  g_last_error = message;
  return code;
}
}  // namespace tw

extern "C" {

const char* tw_last_error(void) { return g_last_error.c_str(); }

size_t tw_type_row_size(int32_t type, int64_t n) { return tw::row_bytes(type, n); }
int32_t tw_type_block_size(int32_t type) { return tw::type_traits(type).block_size; }
int tw_type_supported(int32_t type) { return tw::type_traits(type).block_size != 0; }

int tw_dequantize(int32_t type, const void* src, float* dst, int64_t n) {
  const tw::TypeTraits t = tw::type_traits(type);
  if (t.block_size == 0) return tw::fail(TW_ERR_UNSUPPORTED_TYPE, "unsupported tensor type id " + std::to_string(type));
  if (n % t.block_size != 0) return tw::fail(TW_ERR_SHAPE_MISMATCH, "element count is not a multiple of the block size");
  tw::dequantize_row(type, src, dst, n);
  return TW_OK;
}

int tw_engine_create(const tw_hparams* hp, const tw_runtime_config* rc, tw_engine** out) {
  if (!hp || !rc || !out) return tw::fail(TW_ERR_INVALID_ARGUMENT, "null argument");
  *out = nullptr;
  if (hp->arch != TW_ARCH_LLAMA && hp->arch != TW_ARCH_QWEN2)
    return tw::fail(TW_ERR_INVALID_ARGUMENT, "unknown architecture id " + std::to_string(hp->arch));
  if (hp->n_vocab <= 0 || hp->n_embd <= 0 || hp->n_layer <= 0 || hp->n_head <= 0 || hp->n_head_kv <= 0 ||
      hp->head_dim <= 0 || hp->n_ff <= 0 || hp->n_head % hp->n_head_kv != 0 || hp->head_dim % 2 != 0)
    return tw::fail(TW_ERR_INVALID_ARGUMENT, "invalid hyperparameters");
  if (rc->kv_type != TW_TYPE_F32 && rc->kv_type != TW_TYPE_F16)
    return tw::fail(TW_ERR_INVALID_ARGUMENT, "KV cache type must be F32 or F16");
  if (rc->kv_block_size <= 0 || rc->kv_n_blocks <= 0 || rc->max_batch_tokens <= 0 || rc->max_outputs <= 0)
    return tw::fail(TW_ERR_INVALID_ARGUMENT, "invalid runtime configuration");

  char err[256] = {0};
  tw::Backend* be = tw::make_backend(rc->n_threads, rc->device, rc->flags, err, sizeof err);
  if (!be) return tw::fail(TW_ERR_BACKEND, err[0] ? err : "backend could not be created");

  tw_engine* e = new (std::nothrow) tw_engine();
  if (!e) {
    delete be;
    return tw::fail(TW_ERR_OUT_OF_MEMORY, "out of memory");
  }
  e->hp = *hp;
  e->rc = *rc;
  e->be = be;
  e->layers.resize(hp->n_layer);

  // KV cache.
  const size_t kv_dim = (size_t)hp->n_head_kv * hp->head_dim;
  e->kv_slot_bytes = kv_dim * (rc->kv_type == TW_TYPE_F32 ? 4 : 2);
  const size_t layer_bytes = e->kv_slot_bytes * (size_t)rc->kv_block_size * (size_t)rc->kv_n_blocks;
  e->kv.resize(hp->n_layer);
  for (int l = 0; l < hp->n_layer; ++l) {
    e->kv[l].k = be->alloc(layer_bytes);
    e->kv[l].v = be->alloc(layer_bytes);
    if (!e->kv[l].k || !e->kv[l].v) {
      tw_engine_free(e);
      return tw::fail(TW_ERR_OUT_OF_MEMORY, "out of memory allocating the KV cache (" +
                                                std::to_string(2 * layer_bytes * hp->n_layer) + " bytes)");
    }
    e->bytes_kv += 2 * layer_bytes;
  }

  // Activation scratch.
  const size_t T = rc->max_batch_tokens, O = rc->max_outputs;
  const size_t qd = (size_t)hp->n_head * hp->head_dim;
  bool ok = (e->x = (float*)scratch(e, T * hp->n_embd * 4)) && (e->h = (float*)scratch(e, T * hp->n_embd * 4)) &&
            (e->q = (float*)scratch(e, T * qd * 4)) && (e->k = (float*)scratch(e, T * kv_dim * 4)) &&
            (e->v = (float*)scratch(e, T * kv_dim * 4)) && (e->attn = (float*)scratch(e, T * qd * 4)) &&
            (e->gate = (float*)scratch(e, T * hp->n_ff * 4)) && (e->up = (float*)scratch(e, T * hp->n_ff * 4)) &&
            (e->rows = (float*)scratch(e, O * hp->n_embd * 4)) &&
            (e->logits = (float*)scratch(e, O * (size_t)hp->n_vocab * 4)) &&
            (e->d_meta = (int32_t*)scratch(e, (4 * T + O) * 4));
  if (ok) {
    e->d_tokens = e->d_meta, e->d_pos = e->d_meta + T, e->d_seq = e->d_meta + 2 * T, e->d_slot = e->d_meta + 3 * T;
    e->d_out_rows = e->d_meta + 4 * T;
    e->h_meta.assign(4 * T + O, 0);
  }
  if (!ok) {
    tw_engine_free(e);
    return tw::fail(TW_ERR_OUT_OF_MEMORY, "out of memory allocating activation buffers");
  }
  *out = e;
  return TW_OK;
}

void tw_engine_free(tw_engine* e) {
  if (!e) return;
  if (e->be) {
    e->be->synchronize();
    for (auto& t : e->globals)
      if (t.data) e->be->release(t.data);
    for (auto& layer : e->layers)
      for (auto& t : layer)
        if (t.data) e->be->release(t.data);
    for (auto& kv : e->kv) {
      if (kv.k) e->be->release(kv.k);
      if (kv.v) e->be->release(kv.v);
    }
    for (void* p : e->scratch_allocs) e->be->release(p);
    if (e->d_block_tables) e->be->release(e->d_block_tables);
    delete e->be;
  }
  delete e;
}

int tw_tensor_alloc(tw_engine* e, int32_t role, int32_t layer, int32_t type, int64_t ne0, int64_t ne1,
                    void** host_ptr) {
  if (!e) return tw::fail(TW_ERR_INVALID_ARGUMENT, "null engine");
  if (host_ptr) *host_ptr = nullptr;
  tw::Tensor* t = find_tensor(e, role, layer);
  if (!t) return tw::fail(TW_ERR_INVALID_ARGUMENT, "unknown tensor role " + std::to_string(role) + " / layer " +
                                                       std::to_string(layer));
  const std::string label = tensor_label(role, layer);
  if (t->data) return tw::fail(TW_ERR_INVALID_ARGUMENT, "tensor " + label + " registered twice");
  const tw::TypeTraits tt = tw::type_traits(type);
  if (tt.block_size == 0)
    return tw::fail(TW_ERR_UNSUPPORTED_TYPE, "tensor " + label + " has unsupported type id " + std::to_string(type));
  int64_t want0, want1;
  expected_shape(e->hp, role, &want0, &want1);
  if (ne0 != want0 || ne1 != want1)
    return tw::fail(TW_ERR_SHAPE_MISMATCH, "tensor " + label + " has shape [" + std::to_string(ne0) + ", " +
                                               std::to_string(ne1) + "], expected [" + std::to_string(want0) + ", " +
                                               std::to_string(want1) + "]");
  const bool vector_role = want1 == 1;
  if (vector_role && type != TW_TYPE_F32)
    return tw::fail(TW_ERR_UNSUPPORTED_TYPE, "tensor " + label + " (a norm or bias) must be F32, is " + tt.name);
  if (ne0 % tt.block_size != 0)
    return tw::fail(TW_ERR_SHAPE_MISMATCH, "tensor " + label + ": row length " + std::to_string(ne0) +
                                               " is not a multiple of the " + tt.name + " block size " +
                                               std::to_string(tt.block_size));
  const size_t bytes = tw::row_bytes(type, ne0) * (size_t)ne1;
  void* p = e->be->alloc(bytes);
  if (!p) return tw::fail(TW_ERR_OUT_OF_MEMORY, "out of memory allocating " + std::to_string(bytes) +
                                                    " bytes for tensor " + label);
  t->data = p;
  t->type = type;
  t->ne0 = ne0;
  t->ne1 = ne1;
  t->nbytes = bytes;
  e->bytes_weights += bytes;
  if (host_ptr) *host_ptr = e->be->host_view(p);
  return TW_OK;
}

int tw_tensor_write(tw_engine* e, int32_t role, int32_t layer, size_t offset, const void* src, size_t n) {
  if (!e || !src) return tw::fail(TW_ERR_INVALID_ARGUMENT, "null argument");
  tw::Tensor* t = find_tensor(e, role, layer);
  if (!t || !t->data) return tw::fail(TW_ERR_INVALID_ARGUMENT, "tensor not allocated");
  if (offset > t->nbytes || n > t->nbytes - offset)
    return tw::fail(TW_ERR_INVALID_ARGUMENT, "write past the end of tensor " + tensor_label(role, layer));
  e->be->upload((char*)t->data + offset, src, n);
  return TW_OK;
}

// Let the backend rearrange a complete weight (Backend::prepare_weight), counting any bytes its layout adds.
static int prepare(tw_engine* e, tw::Tensor& t, int32_t role, int32_t layer) {
  const size_t before = t.stored_bytes ? t.stored_bytes : t.nbytes;
  if (!e->be->prepare_weight(t))
    return tw::fail(TW_ERR_OUT_OF_MEMORY, "out of memory preparing tensor " + tensor_label(role, layer));
  const size_t after = t.stored_bytes ? t.stored_bytes : t.nbytes;
  e->bytes_weights += after - before;
  return TW_OK;
}

int tw_tensor_finalize(tw_engine* e, int32_t role, int32_t layer) {
  if (!e) return tw::fail(TW_ERR_INVALID_ARGUMENT, "null engine");
  tw::Tensor* t = find_tensor(e, role, layer);
  if (!t || !t->data) return tw::fail(TW_ERR_INVALID_ARGUMENT, "tensor not allocated");
  // The token embedding is only read a row at a time unless it doubles as the output matrix (tied embeddings),
  // which is known once every tensor is in: tw_engine_ready prepares it then.
  if (role == TW_ROLE_TOK_EMBD) return TW_OK;
  return prepare(e, *t, role, layer);
}

int tw_tensor_dequantize(tw_engine* e, int32_t role, int32_t layer, float* out) {
  if (!e || !out) return tw::fail(TW_ERR_INVALID_ARGUMENT, "null argument");
  tw::Tensor* t = find_tensor(e, role, layer);
  if (!t || !t->data) return tw::fail(TW_ERR_MISSING_TENSOR, "tensor " + tensor_label(role, layer) + " not loaded");
  std::vector<char> host(t->nbytes);
  e->be->read_weight(*t, host.data());
  tw::dequantize_row(t->type, host.data(), out, t->ne0 * t->ne1);
  return TW_OK;
}

int tw_engine_ready(tw_engine* e) {
  if (!e) return tw::fail(TW_ERR_INVALID_ARGUMENT, "null engine");
  for (int32_t role : {TW_ROLE_TOK_EMBD, TW_ROLE_OUTPUT_NORM})
    if (!e->globals[role].data) return tw::fail(TW_ERR_MISSING_TENSOR, std::string("missing tensor ") + role_name(role));
  for (int l = 0; l < e->hp.n_layer; ++l)
    for (int32_t role = TW_ROLE_ATTN_NORM; role < TW_ROLE_COUNT; ++role)
      if (!e->layers[l][role].data && !is_optional(role, e->hp.arch))
        return tw::fail(TW_ERR_MISSING_TENSOR, "missing tensor " + tensor_label(role, l));
  tw::Tensor& embd = e->globals[TW_ROLE_TOK_EMBD];
  if (!e->globals[TW_ROLE_OUTPUT].present()) return prepare(e, embd, TW_ROLE_TOK_EMBD, -1);  // tied
  return TW_OK;
}

int tw_kv_copy_block(tw_engine* e, int32_t src, int32_t dst) {
  if (!e) return tw::fail(TW_ERR_INVALID_ARGUMENT, "null engine");
  if (src < 0 || dst < 0 || src >= e->rc.kv_n_blocks || dst >= e->rc.kv_n_blocks)
    return tw::fail(TW_ERR_KV_CACHE, "KV block id out of range");
  const size_t block_bytes = e->kv_slot_bytes * e->rc.kv_block_size;
  for (auto& kv : e->kv) {
    e->be->copy((char*)kv.k + dst * block_bytes, (char*)kv.k + src * block_bytes, block_bytes);
    e->be->copy((char*)kv.v + dst * block_bytes, (char*)kv.v + src * block_bytes, block_bytes);
  }
  return TW_OK;
}

int tw_engine_memory(tw_engine* e, double* weights, double* kv_cache, double* scratch_bytes) {
  if (!e) return tw::fail(TW_ERR_INVALID_ARGUMENT, "null engine");
  if (weights) *weights = (double)e->bytes_weights;
  if (kv_cache) *kv_cache = (double)e->bytes_kv;
  if (scratch_bytes) *scratch_bytes = (double)(e->bytes_scratch + e->block_table_capacity * 4);
  return TW_OK;
}

int tw_engine_forward(tw_engine* e, const tw_batch* b) { return tw::forward(e, b); }

int tw_engine_submit_top(tw_engine* e, const tw_batch* b, int32_t k, int32_t chain, int32_t* top_ids, float* top_logits) {
  if (!e || !b) return tw::fail(TW_ERR_INVALID_ARGUMENT, "null argument");
  if (k < 1 || k > e->hp.n_vocab)
    return tw::fail(TW_ERR_INVALID_ARGUMENT, "top k " + std::to_string(k) + " outside 1.." + std::to_string(e->hp.n_vocab));
  if (b->n_outputs > 0 && (!top_ids || !top_logits)) return tw::fail(TW_ERR_INVALID_ARGUMENT, "null top-k output");
  return tw::forward(e, b, k, top_ids, top_logits, true, chain != 0);
}

int tw_engine_wait_top(tw_engine* e) {
  if (!e) return tw::fail(TW_ERR_INVALID_ARGUMENT, "null engine");
  if (e->inflight == 0) return tw::fail(TW_ERR_INVALID_ARGUMENT, "no submitted step to wait for");
  e->be->wait_step();
  --e->inflight;
  return TW_OK;
}

int tw_engine_forward_top(tw_engine* e, const tw_batch* b, int32_t k, int32_t* top_ids, float* top_logits) {
  if (!e || !b) return tw::fail(TW_ERR_INVALID_ARGUMENT, "null argument");
  if (k < 1 || k > e->hp.n_vocab)
    return tw::fail(TW_ERR_INVALID_ARGUMENT, "top k " + std::to_string(k) + " outside 1.." + std::to_string(e->hp.n_vocab));
  if (b->n_outputs > 0 && (!top_ids || !top_logits)) return tw::fail(TW_ERR_INVALID_ARGUMENT, "null top-k output");
  return tw::forward(e, b, k, top_ids, top_logits);
}

}  // extern "C"
