// Test-only entry points into the CPU kernels (not part of twinfer.h): unit tests call them from JS to compare each
// SIMD kernel with its scalar reference on random blocks. Exported from the WASM module by EMSCRIPTEN_KEEPALIVE.
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "../include/twinfer.h"
#include "../model/backend.h"
#include "dot.h"
#include "qdot.h"

extern "C" {

/* One row of n values of `type` against activations x[n]:
 *   out[0] = kernel result with 8-bit activations (SIMD in the WASM build; 0 for F32/F16/BF16)
 *   out[1] = scalar reference of the same integer arithmetic (same quantized activations)
 *   out[2] = kernel result with float activations (dot_row)
 *   out[3] = double-precision dot of the exact dequantized row with x
 *   out[4] = number of activation values where the SIMD and scalar activation quantizers disagree
 *   out[5] = bound on |out[0] - out[3]| from 8-bit activation rounding: sum |w_i| * amax(span of i) / 254, plus
 *            1e-3 * sum |w_i x_i| for the fp16 rounding of the activation scale and float summation
 * Returns 0, or TW_ERR_UNSUPPORTED_TYPE / TW_ERR_SHAPE_MISMATCH. */
TW_API int tw_test_dot(int32_t type, const void* row, const float* x, int64_t n, float* out) {
  const tw::TypeTraits tt = tw::type_traits(type);
  if (tt.block_size == 0) return TW_ERR_UNSUPPORTED_TYPE;
  if (n <= 0 || n % tt.block_size != 0) return TW_ERR_SHAPE_MISMATCH;
  std::vector<float> deq(n);
  tw::dequantize_row(type, row, deq.data(), n);
  double ref = 0;
  for (int64_t i = 0; i < n; ++i) ref += (double)deq[i] * x[i];
  out[2] = tw::dot_row(type, row, x, n);
  out[3] = (float)ref;
  out[0] = out[1] = out[4] = out[5] = 0;
  if (n % tw::QA != 0 || tt.block_size == 1) return TW_OK;
  {
    const int span = n % tw::act_spec(type).span == 0 ? tw::act_spec(type).span : tw::QA;
    double bound = 0;
    for (int64_t s0 = 0; s0 < n; s0 += span) {
      float amax = 0;
      for (int j = 0; j < span; ++j) amax = std::fmax(amax, std::fabs(x[s0 + j]));
      for (int j = 0; j < span; ++j)
        bound += std::fabs((double)deq[s0 + j]) * amax / 254.0 + 1e-3 * std::fabs((double)deq[s0 + j] * x[s0 + j]);
    }
    out[5] = (float)bound;
  }
  std::vector<char> a(tw::act_row_bytes(n) + 16), b(tw::act_row_bytes(n) + 16);
  tw::ActRow fast = tw::act_row_at(a.data(), n), slow = tw::act_row_at(b.data(), n);
  const tw::ActSpec spec = tw::act_spec(type);
  tw::quantize_act_row(x, n, fast, spec);
  tw::quantize_act_row_scalar(x, n, slow, spec);
  int mismatches = 0;
  for (int64_t i = 0; i < n; ++i) mismatches += fast.q[i] != slow.q[i];
  out[4] = (float)mismatches;
  out[1] = tw::qdot_row_scalar(type, row, slow, n);
#if defined(__wasm_simd128__)
  float r = 0;
  switch (type) {
    case TW_TYPE_Q4_0: tw::qdot_rows<TW_TYPE_Q4_0, 1>(row, &slow, n, &r); break;
    case TW_TYPE_Q4_1: tw::qdot_rows<TW_TYPE_Q4_1, 1>(row, &slow, n, &r); break;
    case TW_TYPE_Q5_0: tw::qdot_rows<TW_TYPE_Q5_0, 1>(row, &slow, n, &r); break;
    case TW_TYPE_Q5_1: tw::qdot_rows<TW_TYPE_Q5_1, 1>(row, &slow, n, &r); break;
    case TW_TYPE_Q8_0: tw::qdot_rows<TW_TYPE_Q8_0, 1>(row, &slow, n, &r); break;
    case TW_TYPE_Q4_K: tw::qdot_rows<TW_TYPE_Q4_K, 1>(row, &slow, n, &r); break;
    case TW_TYPE_Q5_K: tw::qdot_rows<TW_TYPE_Q5_K, 1>(row, &slow, n, &r); break;
    case TW_TYPE_Q6_K: tw::qdot_rows<TW_TYPE_Q6_K, 1>(row, &slow, n, &r); break;
    default: break;
  }
  out[0] = r;
#else
  out[0] = out[1];
#endif
  return TW_OK;
}

/* The backend's matmul (threads, row chunks, token tiles) on a weight of R rows x K values and n activation rows:
 * y[t*R + r]. flags as in tw_runtime_config (bit 2 = float activations). The weight is prepared first as the engine
 * does (the CPU backend repacks Q4_0/Q8_0/Q4_K/Q6_K with R % 4 == 0) and must read back byte-identical
 * (TW_ERR_BACKEND otherwise). */
TW_API int tw_test_matmul(int32_t type, const void* w, int64_t K, int64_t R, const float* x, int32_t n,
                          int32_t n_threads, int32_t flags, float* y) {
  const tw::TypeTraits tt = tw::type_traits(type);
  if (tt.block_size == 0) return TW_ERR_UNSUPPORTED_TYPE;
  if (K <= 0 || R <= 0 || n <= 0 || K % tt.block_size != 0) return TW_ERR_SHAPE_MISMATCH;
  char err[128];
  std::unique_ptr<tw::Backend> be(tw::make_backend(n_threads, 0, flags, err, sizeof err));
  if (!be) return TW_ERR_BACKEND;
  tw::Tensor t;
  t.type = type;
  t.ne0 = K;
  t.ne1 = R;
  t.nbytes = tw::row_bytes(type, K) * (size_t)R;
  // The weight as the engine sees it: in backend memory, prepared (possibly repacked into a new buffer), and
  // readable back exactly.
  t.data = be->alloc(t.nbytes);
  if (!t.data) return TW_ERR_OUT_OF_MEMORY;
  be->upload(t.data, w, t.nbytes);
  std::vector<uint8_t> back(t.nbytes);
  int rc = TW_OK;
  if (!be->prepare_weight(t)) {
    rc = TW_ERR_BACKEND;
  } else {
    be->matmul(t, x, n, y);
    be->read_weight(t, back.data());
    if (std::memcmp(back.data(), w, t.nbytes) != 0) rc = TW_ERR_BACKEND;
  }
  be->release(t.data);
  return rc;
}

}  // extern "C"
