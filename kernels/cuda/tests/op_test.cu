// Standalone check of every CUDA op against a plain CPU reference (double accumulation), plus timings of the
// matmul kernels on Llama-3-8B shapes. Run on a GPU machine: prints one line per case and exits non-zero on failure.
//   op_test            all correctness cases, then timings
//   op_test --quick    correctness only
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "../../common/quants.h"
#include "../../model/backend.h"
#include "../cuda_ops.h"
#include "../twinfer_cuda.h"

using namespace tw;

static int g_fail = 0;
static std::mt19937 rng(1234);

static void report(const std::string& name, double err, double tol) {
  const bool ok = std::isfinite(err) && err <= tol;
  if (!ok) ++g_fail;
  std::printf("%-4s %-58s rel_err=%.3e (tol %.1e)\n", ok ? "ok" : "FAIL", name.c_str(), err, tol);
}

static double rel_err(const std::vector<float>& a, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (a[i] - ref[i]) * (a[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

static std::vector<float> randn(size_t n, float s) {
  std::normal_distribution<float> d(0.0f, s);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Random weight bytes of a type: plain values from a normal distribution, quant blocks with random codes and scales.
static std::vector<uint8_t> random_weights(int32_t type, int64_t ne0, int64_t ne1) {
  const size_t rb = row_bytes(type, ne0);
  std::vector<uint8_t> w(rb * ne1);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  std::uniform_real_distribution<float> ud(0.002f, 0.02f);
  std::uniform_int_distribution<int> bd(0, 255);
  const int64_t n = ne0 * ne1;
  switch (type) {
    case 0: for (int64_t i = 0; i < n; ++i) ((float*)w.data())[i] = nd(rng); break;
    case 1: for (int64_t i = 0; i < n; ++i) ((uint16_t*)w.data())[i] = f32_to_fp16(nd(rng)); break;
    case 30: for (int64_t i = 0; i < n; ++i) ((uint16_t*)w.data())[i] = (uint16_t)(f32_to_bits(nd(rng)) >> 16); break;
    case 2: {
      auto* b = (block_q4_0*)w.data();
      for (int64_t i = 0; i < n / 32; ++i) {
        b[i].d = f32_to_fp16(ud(rng));
        for (auto& q : b[i].qs) q = (uint8_t)bd(rng);
      }
      break;
    }
    case 8: {
      auto* b = (block_q8_0*)w.data();
      for (int64_t i = 0; i < n / 32; ++i) {
        b[i].d = f32_to_fp16(ud(rng) / 16);
        for (auto& q : b[i].qs) q = (int8_t)(bd(rng) - 128);
      }
      break;
    }
    // The other block types: random bytes everywhere, then finite scales (and minimums) of realistic size in place
    // of the fp16 fields, so every code, scale and bit pattern of the packed fields is exercised.
    default: {
      for (auto& c : w) c = (uint8_t)bd(rng);
      const int bb = type_traits(type).block_bytes, qk = type_traits(type).block_size;
      std::normal_distribution<float> md(0.0f, 0.01f);
      for (int64_t i = 0; i < n / qk; ++i) {
        uint8_t* b = w.data() + i * bb;
        auto put = [&](int off, float v) { const uint16_t h = f32_to_fp16(v); std::memcpy(b + off, &h, 2); };
        switch (type) {
          case 3: case 7: put(0, ud(rng) / 2), put(2, md(rng)); break;  // Q4_1 / Q5_1: d, m
          case 6: put(0, ud(rng) / 2); break;                            // Q5_0: d
          case 12: case 13: put(0, ud(rng) / 16), put(2, ud(rng) / 16); break;  // Q4_K / Q5_K: d, dmin
          case 14: put(208, ud(rng) / 64); break;                        // Q6_K: d (scales are int8 codes)
        }
      }
      break;
    }
  }
  return w;
}

// Weights go through Backend::prepare_weight (the CUDA backend rearranges Q4_0 there: repack.cu), as the engine's
// are once loaded; off for the tests before the rearranged ones, so their random draws and kernels stay.
static bool g_prepare = false;

struct Dev {
  Backend* be;
  void prep(Tensor& w) {
    if (g_prepare) be->prepare_weight(w);
  }
  template <typename T> T* put(const std::vector<T>& v) {
    T* p = (T*)be->alloc(v.size() * sizeof(T));
    be->upload(p, v.data(), v.size() * sizeof(T));
    return p;
  }
  std::vector<float> get(const float* p, size_t n) {
    std::vector<float> v(n);
    be->download(v.data(), p, n * 4);
    return v;
  }
};

static const char* tname(int32_t t) { return type_traits(t).name; }

static bool int8_acts(int32_t type, int n) {
  const char* v = std::getenv("TWINFER_CUDA_DP4A");
  const char* v6 = std::getenv("TWINFER_CUDA_Q6K_DP4A");
  return ((type == 2 && n <= 2) || (type == 12 && n == 1) || (type == 8 && n == 1) ||
          (type == 14 && n == 1 && !(v6 && v6[0] == '0'))) && !(v && v[0] == '0');
}

static void test_matmul(Dev& d, int32_t type, int M, int K, int n) {
  auto wb = random_weights(type, K, M);
  std::vector<float> wf((size_t)M * K);
  for (int r = 0; r < M; ++r) dequantize_row(type, wb.data() + r * row_bytes(type, K), wf.data() + (size_t)r * K, K);
  auto x = randn((size_t)n * K, 1.0f);
  std::vector<double> ref((size_t)n * M);
  for (int t = 0; t < n; ++t)
    for (int r = 0; r < M; ++r) {
      double s = 0;
      for (int k = 0; k < K; ++k) s += (double)wf[(size_t)r * K + k] * x[(size_t)t * K + k];
      ref[(size_t)t * M + r] = s;
    }
  Tensor W;
  W.type = type;
  W.ne0 = K;
  W.ne1 = M;
  W.nbytes = wb.size();
  W.data = d.put(wb);
  d.prep(W);
  float* dx = d.put(x);
  std::vector<float> poison((size_t)n * M, NAN);
  float* dy = d.put(poison);
  d.be->matmul(W, dx, n, dy);
  auto y = d.get(dy, (size_t)n * M);
  // F32 weights take the exact path; the others multiply FP16 fragments (activations rounded to FP16), except Q4_0 /
  // Q8_0 / Q4_K at one token (Q4_0: two), whose integer-dot kernel rounds the activations to int8 per 32 values (~5e-3, as llama.cpp).
  const double tol = type == 0 ? 1e-5 : int8_acts(type, n) ? 1.2e-2 : 3e-3;
  char name[128];
  std::snprintf(name, sizeof name, "matmul %-4s%s M=%d K=%d n=%d", tname(type), W.layout ? " (layout 1)" : "", M, K, n);
  report(name, rel_err(y, ref), tol);
  d.be->release(W.data);
  d.be->release(dx);
  d.be->release(dy);
}

// Three products of the same x issued back to back (as Q/K/V are): the backend merges them into one launch.
static void test_grouped(Dev& d, int32_t type, int n) {
  const int K = 4096;
  const int Ms[3] = {1024, 256, 256};
  auto x = randn((size_t)n * K, 1.0f);
  float* dx = d.put(x);
  Tensor W[3];
  float* dy[3];
  std::vector<std::vector<double>> ref(3);
  for (int i = 0; i < 3; ++i) {
    auto wb = random_weights(type, K, Ms[i]);
    std::vector<float> row(K);
    ref[i].assign((size_t)n * Ms[i], 0.0);
    for (int r = 0; r < Ms[i]; ++r) {
      dequantize_row(type, wb.data() + r * row_bytes(type, K), row.data(), K);
      for (int t = 0; t < n; ++t) {
        double s = 0;
        for (int k = 0; k < K; ++k) s += (double)row[k] * x[(size_t)t * K + k];
        ref[i][(size_t)t * Ms[i] + r] = s;
      }
    }
    W[i].type = type;
    W[i].ne0 = K;
    W[i].ne1 = Ms[i];
    W[i].data = d.put(wb);
    d.prep(W[i]);
    std::vector<float> poison((size_t)n * Ms[i], NAN);
    dy[i] = d.put(poison);
  }
  for (int i = 0; i < 3; ++i) d.be->matmul(W[i], dx, n, dy[i]);
  for (int i = 0; i < 3; ++i) {
    char name[128];
    std::snprintf(name, sizeof name, "matmul grouped %-4s #%d M=%d K=%d n=%d", tname(type), i, Ms[i], K, n);
    report(name, rel_err(d.get(dy[i], (size_t)n * Ms[i]), ref[i]), int8_acts(type, n) ? 1.2e-2 : 3e-3);
  }
  for (int i = 0; i < 3; ++i) d.be->release(W[i].data), d.be->release(dy[i]);
  d.be->release(dx);
}

// SwiGLU followed by the product that reads its output (the down projection): the backend computes silu(g) * u
// while loading the matmul's activations (decode) or in the FP16 conversion (n > 8).
static void test_swiglu_matmul(Dev& d, int32_t type, int n) {
  const int K = 1024, M = 200;
  auto g = randn((size_t)n * K, 2.0f), u = randn((size_t)n * K, 1.0f);
  auto wb = random_weights(type, K, M);
  std::vector<float> wf((size_t)M * K);
  for (int r = 0; r < M; ++r) dequantize_row(type, wb.data() + r * row_bytes(type, K), wf.data() + (size_t)r * K, K);
  std::vector<double> ref((size_t)n * M);
  for (int t = 0; t < n; ++t)
    for (int r = 0; r < M; ++r) {
      double acc = 0;
      for (int k = 0; k < K; ++k) {
        const double x = g[(size_t)t * K + k];
        acc += (double)wf[(size_t)r * K + k] * (x / (1.0 + std::exp(-x)) * u[(size_t)t * K + k]);
      }
      ref[(size_t)t * M + r] = acc;
    }
  Tensor W;
  W.type = type;
  W.ne0 = K;
  W.ne1 = M;
  W.nbytes = wb.size();
  W.data = d.put(wb);
  d.prep(W);
  float *dg = d.put(g), *du = d.put(u);
  float* tmp = (float*)d.be->alloc((size_t)n * K * 4);
  std::vector<float> poison((size_t)n * M, NAN);
  float* dy = d.put(poison);
  d.be->swiglu(dg, du, tmp, (size_t)n * K);
  d.be->matmul(W, tmp, n, dy);
  char name[128];
  std::snprintf(name, sizeof name, "swiglu -> matmul (fused) %-4s K=%d n=%d", tname(type), K, n);
  report(name, rel_err(d.get(dy, (size_t)n * M), ref), int8_acts(type, n) ? 1.2e-2 : 3e-3);
  for (void* p : {W.data, (void*)dg, (void*)du, (void*)tmp, (void*)dy}) d.be->release(p);
}

// A SwiGLU block as the forward pass issues it: gate and up products of x (grouped), swiglu(gate, up) -> gate, the
// down projection of gate. F16 at n <= 2 takes one GEMV launch for gate/up with the SwiGLU in its epilogue.
static void test_ffn(Dev& d, int32_t type, int n) {
  const int D = 1024, F = 768;
  auto x = randn((size_t)n * D, 1.0f);
  auto wg = random_weights(type, D, F), wu = random_weights(type, D, F), wd = random_weights(type, F, D);
  std::vector<float> fg((size_t)F * D), fu((size_t)F * D), fd((size_t)D * F);
  for (int r = 0; r < F; ++r) {
    dequantize_row(type, wg.data() + r * row_bytes(type, D), fg.data() + (size_t)r * D, D);
    dequantize_row(type, wu.data() + r * row_bytes(type, D), fu.data() + (size_t)r * D, D);
  }
  for (int r = 0; r < D; ++r) dequantize_row(type, wd.data() + r * row_bytes(type, F), fd.data() + (size_t)r * F, F);
  std::vector<double> uref((size_t)n * F), h((size_t)n * F), ref((size_t)n * D);
  for (int t = 0; t < n; ++t) {
    for (int r = 0; r < F; ++r) {
      double a = 0, b = 0;
      for (int k = 0; k < D; ++k) {
        a += (double)fg[(size_t)r * D + k] * x[(size_t)t * D + k];
        b += (double)fu[(size_t)r * D + k] * x[(size_t)t * D + k];
      }
      uref[(size_t)t * F + r] = b;
      h[(size_t)t * F + r] = a / (1.0 + std::exp(-a)) * b;
    }
    for (int r = 0; r < D; ++r) {
      double a = 0;
      for (int k = 0; k < F; ++k) a += (double)fd[(size_t)r * F + k] * h[(size_t)t * F + k];
      ref[(size_t)t * D + r] = a;
    }
  }
  Tensor G, U, Dn;
  G.type = U.type = Dn.type = type;
  G.ne0 = U.ne0 = D, G.ne1 = U.ne1 = F;
  Dn.ne0 = F, Dn.ne1 = D;
  G.data = d.put(wg), U.data = d.put(wu), Dn.data = d.put(wd);
  G.nbytes = wg.size(), U.nbytes = wu.size(), Dn.nbytes = wd.size();
  d.prep(G), d.prep(U), d.prep(Dn);
  float* dx = d.put(x);
  std::vector<float> pf((size_t)n * F, NAN), pd((size_t)n * D, NAN);
  float *dg = d.put(pf), *du = d.put(pf), *dy = d.put(pd);
  const Tensor* gu[2] = {&G, &U};
  float* outs[2] = {dg, du};
  d.be->matmul_many(gu, 2, dx, n, outs);
  d.be->swiglu(dg, du, dg, (size_t)n * F);
  d.be->matmul(Dn, dg, n, dy);
  const double tol = int8_acts(type, n) ? 1.2e-2 : 3e-3;
  char name[128];
  std::snprintf(name, sizeof name, "ffn gate/up -> swiglu -> down %-4s n=%d (up)", tname(type), n);
  report(name, rel_err(d.get(du, (size_t)n * F), uref), tol);
  std::snprintf(name, sizeof name, "ffn gate/up -> swiglu -> down %-4s n=%d (down)", tname(type), n);
  report(name, rel_err(d.get(dy, (size_t)n * D), ref), 2 * tol);
  for (void* p : {G.data, U.data, Dn.data, (void*)dx, (void*)dg, (void*)du, (void*)dy}) d.be->release(p);
}

// A residual add followed by the RMSNorm of the same rows (merged by the backend into one kernel).
static void test_add_norm(Dev& d) {
  const int n = 3, dim = 4096;
  auto x = randn((size_t)n * dim, 1.0f), y = randn((size_t)n * dim, 1.0f), w = randn(dim, 1.0f);
  float *dx = d.put(x), *dy = d.put(y);
  Tensor W;
  W.type = 0;
  W.ne0 = dim;
  W.ne1 = 1;
  W.data = d.put(w);
  d.be->add(dx, dy, (size_t)n * dim);
  d.be->rms_norm(dx, W, dy, n, dim, 1e-5f);  // out aliases the added rows' source, as the engine does
  std::vector<double> rx((size_t)n * dim), rn((size_t)n * dim);
  for (int t = 0; t < n; ++t) {
    double ss = 0;
    for (int i = 0; i < dim; ++i) {
      const float v = x[t * dim + i] + y[t * dim + i];
      rx[t * dim + i] = v;
      ss += (double)v * v;
    }
    const double sc = 1.0 / std::sqrt(ss / dim + 1e-5);
    for (int i = 0; i < dim; ++i) rn[t * dim + i] = rx[t * dim + i] * sc * w[i];
  }
  report("add + rms_norm (merged): sum", rel_err(d.get(dx, rx.size()), rx), 1e-7);
  report("add + rms_norm (merged): norm", rel_err(d.get(dy, rn.size()), rn), 1e-6);
  d.be->release(dx), d.be->release(dy), d.be->release(W.data);
}

// Device top-k (Backend::top_k of the CUDA backend) against a host selection with the same total order; the rows
// hold exact ties (coarse values), NaN and -Infinity so the tie and NaN rules are exercised. Exact match required.
static void test_topk(Dev& d, int rows, int width, int k, bool timed = false) {
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> x((size_t)rows * width);
  for (auto& v : x) {
    const float r = u(rng);
    v = r < 0.01f ? NAN : r < 0.02f ? -INFINITY : std::round((u(rng) * 2 - 1) * 64) / 4;
  }
  float* dx = d.put(x);
  std::vector<int32_t> ids((size_t)rows * k);
  std::vector<float> vals((size_t)rows * k);
  d.be->top_k(dx, rows, width, k, ids.data(), vals.data());
  size_t bad = 0;
  std::vector<int32_t> order(width);
  for (int r = 0; r < rows; ++r) {
    const float* row = x.data() + (size_t)r * width;
    auto key = [&](int32_t i) { return std::isnan(row[i]) ? -INFINITY : row[i]; };
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [&](int32_t a, int32_t b) { return key(a) > key(b) || (key(a) == key(b) && a < b); });
    for (int j = 0; j < k; ++j)
      if (ids[(size_t)r * k + j] != order[j] || !(vals[(size_t)r * k + j] == key(order[j]))) ++bad;
  }
  char name[96];
  std::snprintf(name, sizeof name, "top_k rows=%d width=%d k=%d (mismatches)", rows, width, k);
  report(name, (double)bad, 0);
  if (timed) {
    d.be->synchronize();
    const int reps = 20;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) d.be->top_k(dx, rows, width, k, ids.data(), vals.data());
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / reps;
    std::printf("time top_k rows=%d width=%d k=%d: %.1f us per call (with the download)\n", rows, width, k, us);
  }
  d.be->release(dx);
}

// A residual add + RMSNorm followed by a decode product of its output, as the engine issues them: the norm is split
// (norm_fused.cuh: the product reads u and scales by s). The product must equal the reference within the int8
// tolerance, and so must the same product after the norm's output was touched (the matmul then reads the h that the
// first product wrote, quantizing it itself).
static void test_norm_matmul(Dev& d, int32_t type, int n) {
  const int K = 4096, M = 1000;
  auto x = randn((size_t)n * K, 1.0f), y = randn((size_t)n * K, 1.0f), g = randn(K, 1.0f);
  auto wb = random_weights(type, K, M);
  std::vector<float> wf((size_t)M * K);
  for (int r = 0; r < M; ++r) dequantize_row(type, wb.data() + r * row_bytes(type, K), wf.data() + (size_t)r * K, K);
  std::vector<double> ref((size_t)n * M);
  for (int t = 0; t < n; ++t) {
    double ss = 0;
    std::vector<double> h(K);
    for (int i = 0; i < K; ++i) {
      const float v = x[(size_t)t * K + i] + y[(size_t)t * K + i];
      h[i] = v;
      ss += (double)v * v;
    }
    const double sc = 1.0 / std::sqrt(ss / K + 1e-5);
    for (int r = 0; r < M; ++r) {
      double acc = 0;
      for (int i = 0; i < K; ++i) acc += (double)wf[(size_t)r * K + i] * h[i] * sc * g[i];
      ref[(size_t)t * M + r] = acc;
    }
  }
  Tensor W, G;
  W.type = type, W.ne0 = K, W.ne1 = M, W.nbytes = wb.size(), W.data = d.put(wb);
  d.prep(W);
  G.type = 0, G.ne0 = K, G.ne1 = 1, G.data = d.put(g);
  float *dx = d.put(x), *dy = d.put(y);
  float* dh = (float*)d.be->alloc((size_t)n * K * 4);
  std::vector<float> poison((size_t)n * M, NAN);
  float *o1 = d.put(poison), *o2 = d.put(poison);
  d.be->add(dx, dy, (size_t)n * K);
  d.be->rms_norm(dx, G, dh, n, K, 1e-5f);
  d.be->matmul(W, dh, n, o1);
  d.be->gather_rows(dh, nullptr, 0, K, dh);  // touches nothing, but ends what the norm quantized
  d.be->matmul(W, dh, n, o2);
  auto a = d.get(o1, (size_t)n * M), b = d.get(o2, (size_t)n * M);
  char name[128];
  std::snprintf(name, sizeof name, "add + rms_norm -> matmul %-4s n=%d (norm-quantized activations)", tname(type), n);
  // The norm's output (gaussian x gaussian gamma) has heavier tails than test_matmul's inputs, so a block's int8
  // step is coarser (Q4_K n=1 measured 1.29e-2); the bit-identity below is what checks the fusion.
  report(name, rel_err(a, ref), int8_acts(type, n) ? 2e-2 : 3e-3);
  std::snprintf(name, sizeof name, "  the same product of the written norm output %-4s n=%d", tname(type), n);
  report(name, rel_err(b, ref), int8_acts(type, n) ? 2e-2 : 3e-3);
  for (void* p : {W.data, G.data, (void*)dx, (void*)dy, (void*)dh, (void*)o1, (void*)o2}) d.be->release(p);
}

// The RMSNorm split around the decode products (norm_fused.cuh), in the engine's order: a product of a (or, ffn:
// gate/up of a, SwiGLU, the down projection) into h, x += h, h = rms_norm(x) * g, then a product of h. The block
// kernel adds into x and prepares u and the block sums; the product (ctype) scales by s and writes h — or, where it
// cannot take u (F32 weights), the norm is finished by its own kernel first. x, h and the product are checked
// against a double reference (the int8 steps of a, of the SwiGLU output and of u set the tolerances).
// A: the width of the attention output / FFN hidden state (the O / down projection's K).
static void test_split_norm(Dev& d, int32_t type, int32_t ctype, int n, bool ffn, int A = 1024) {
  const int D = 4096, M = 512;
  auto x = randn((size_t)n * D, 1.0f), a = randn((size_t)n * A, 1.0f), g = randn(D, 1.0f);
  auto wo = random_weights(type, A, D), wq = random_weights(ctype, D, M);
  auto wg = random_weights(type, A, A), wu = random_weights(type, A, A);
  std::vector<float> fo((size_t)D * A), fq((size_t)M * D), fg((size_t)A * A), fu((size_t)A * A);
  for (int r = 0; r < D; ++r) dequantize_row(type, wo.data() + r * row_bytes(type, A), fo.data() + (size_t)r * A, A);
  for (int r = 0; r < M; ++r) dequantize_row(ctype, wq.data() + r * row_bytes(ctype, D), fq.data() + (size_t)r * D, D);
  for (int r = 0; r < A; ++r) {
    dequantize_row(type, wg.data() + r * row_bytes(type, A), fg.data() + (size_t)r * A, A);
    dequantize_row(type, wu.data() + r * row_bytes(type, A), fu.data() + (size_t)r * A, A);
  }
  std::vector<double> xr((size_t)n * D), hr((size_t)n * D), yr((size_t)n * M);
  for (int t = 0; t < n; ++t) {
    std::vector<double> in(A);
    for (int k = 0; k < A; ++k) in[k] = a[(size_t)t * A + k];
    if (ffn) {
      std::vector<double> sw(A);
      for (int r = 0; r < A; ++r) {
        double p = 0, q = 0;
        for (int k = 0; k < A; ++k) p += (double)fg[(size_t)r * A + k] * in[k], q += (double)fu[(size_t)r * A + k] * in[k];
        sw[r] = p / (1.0 + std::exp(-p)) * q;
      }
      in = sw;
    }
    double ss = 0;
    for (int r = 0; r < D; ++r) {
      double p = 0;
      for (int k = 0; k < A; ++k) p += (double)fo[(size_t)r * A + k] * in[k];
      xr[(size_t)t * D + r] = x[(size_t)t * D + r] + p;
      ss += xr[(size_t)t * D + r] * xr[(size_t)t * D + r];
    }
    const double sc = 1.0 / std::sqrt(ss / D + 1e-5);
    for (int i = 0; i < D; ++i) hr[(size_t)t * D + i] = xr[(size_t)t * D + i] * sc * g[i];
    for (int r = 0; r < M; ++r) {
      double p = 0;
      for (int i = 0; i < D; ++i) p += (double)fq[(size_t)r * D + i] * hr[(size_t)t * D + i];
      yr[(size_t)t * M + r] = p;
    }
  }
  Tensor Wo, Wq, Wg, Wu, G;
  Wo.type = Wg.type = Wu.type = type, Wq.type = ctype;
  Wo.ne0 = A, Wo.ne1 = D, Wo.nbytes = wo.size(), Wo.data = d.put(wo);
  Wq.ne0 = D, Wq.ne1 = M, Wq.nbytes = wq.size(), Wq.data = d.put(wq);
  Wg.ne0 = Wu.ne0 = A, Wg.ne1 = Wu.ne1 = A, Wg.nbytes = wg.size(), Wu.nbytes = wu.size();
  Wg.data = d.put(wg), Wu.data = d.put(wu);
  d.prep(Wo), d.prep(Wq), d.prep(Wg), d.prep(Wu);
  G.type = 0, G.ne0 = D, G.ne1 = 1, G.data = d.put(g);
  std::vector<float> poison((size_t)n * D, NAN);
  float *dx = d.put(x), *da = d.put(a), *dh = d.put(poison), *dy = d.put(poison);
  float *dg = d.put(poison), *du = d.put(poison);
  const float* in = da;
  if (ffn) {
    const Tensor* gu[2] = {&Wg, &Wu};
    float* outs[2] = {dg, du};
    d.be->matmul_many(gu, 2, da, n, outs);
    d.be->swiglu(dg, du, dg, (size_t)n * A);
    in = dg;
  }
  d.be->matmul(Wo, in, n, dh);
  d.be->add(dx, dh, (size_t)n * D);
  d.be->rms_norm(dx, G, dh, n, D, 1e-5f);
  d.be->matmul(Wq, dh, n, dy);
  auto y = d.get(dy, (size_t)n * M), xo = d.get(dx, (size_t)n * D), ho = d.get(dh, (size_t)n * D);
  const bool i8 = int8_acts(type, n), c8 = int8_acts(ctype, n);
  char name[128];
  std::snprintf(name, sizeof name, "split norm %s %-4s -> %-4s n=%d A=%d (x)", ffn ? "ffn" : "attn", tname(type),
                tname(ctype), n, A);
  report(name, rel_err(xo, xr), i8 ? 2e-2 : 1e-3);
  std::snprintf(name, sizeof name, "split norm %s %-4s -> %-4s n=%d A=%d (h)", ffn ? "ffn" : "attn", tname(type),
                tname(ctype), n, A);
  report(name, rel_err(ho, hr), i8 ? 2e-2 : 1e-3);
  std::snprintf(name, sizeof name, "split norm %s %-4s -> %-4s n=%d A=%d (product)", ffn ? "ffn" : "attn", tname(type),
                tname(ctype), n, A);
  report(name, rel_err(y, yr), i8 || c8 ? 3e-2 : 2e-3);
  for (void* p : {Wo.data, Wq.data, Wg.data, Wu.data, G.data, (void*)dx, (void*)da, (void*)dh, (void*)dy, (void*)dg,
                  (void*)du})
    d.be->release(p);
}

static void test_get_rows(Dev& d, int32_t type) {
  const int K = 256, M = 50, n = 7;
  auto wb = random_weights(type, K, M);
  std::vector<int32_t> ids = {3, 0, 49, 17, 17, 8, 22};
  std::vector<double> ref((size_t)n * K);
  std::vector<float> row(K);
  for (int t = 0; t < n; ++t) {
    dequantize_row(type, wb.data() + ids[t] * row_bytes(type, K), row.data(), K);
    for (int k = 0; k < K; ++k) ref[(size_t)t * K + k] = row[k];
  }
  Tensor W;
  W.type = type;
  W.ne0 = K;
  W.ne1 = M;
  W.nbytes = wb.size();
  W.data = d.put(wb);
  d.prep(W);
  int32_t* dids = d.put(ids);
  float* out = (float*)d.be->alloc((size_t)n * K * 4);
  d.be->get_rows(W, dids, n, out);
  auto y = d.get(out, (size_t)n * K);
  report(std::string("get_rows ") + tname(type) + " (exact)", rel_err(y, ref), 0.0);
  d.be->release(W.data);
  d.be->release(dids);
  d.be->release(out);
}

// prepare_weight then read_weight gives back the GGUF bytes exactly (tw_tensor_dequantize reads weights this way).
static void test_read_weight(Dev& d, int32_t type, int M, int K) {
  auto wb = random_weights(type, K, M);
  Tensor W;
  W.type = type, W.ne0 = K, W.ne1 = M, W.nbytes = wb.size(), W.data = d.put(wb);
  d.prep(W);
  std::vector<uint8_t> back(wb.size());
  d.be->read_weight(W, back.data());
  size_t ndiff = 0;
  for (size_t i = 0; i < wb.size(); ++i) ndiff += back[i] != wb[i];
  char name[128];
  std::snprintf(name, sizeof name, "read_weight %-4s M=%d K=%d layout %d (differing bytes)", tname(type), M, K, W.layout);
  report(name, (double)ndiff, 0);
  d.be->release(W.data);
}

// A one-token product then the residual add of its output, with no norm after it: the backend holds the product
// for the add (it may run the add and norm in its launch) and must still run both in order when nothing follows.
static void test_product_add(Dev& d, int32_t type) {
  const int K = 1024, M = 512;
  auto x = randn(K, 1.0f), r = randn(M, 1.0f);
  auto wb = random_weights(type, K, M);
  std::vector<float> wf((size_t)M * K);
  for (int i = 0; i < M; ++i) dequantize_row(type, wb.data() + i * row_bytes(type, K), wf.data() + (size_t)i * K, K);
  std::vector<double> ref(M);
  for (int i = 0; i < M; ++i) {
    double s = 0;
    for (int k = 0; k < K; ++k) s += (double)wf[(size_t)i * K + k] * x[k];
    ref[i] = r[i] + s;
  }
  Tensor W;
  W.type = type, W.ne0 = K, W.ne1 = M, W.nbytes = wb.size(), W.data = d.put(wb);
  d.prep(W);
  std::vector<float> poison(M, NAN);
  float *dx = d.put(x), *dr = d.put(r), *dy = d.put(poison);
  d.be->matmul(W, dx, 1, dy);
  d.be->add(dr, dy, M);
  char name[128];
  std::snprintf(name, sizeof name, "product then add, no norm %-4s M=%d K=%d", tname(type), M, K);
  report(name, rel_err(d.get(dr, M), ref), int8_acts(type, 1) ? 1.2e-2 : 3e-3);
  for (void* p : {W.data, (void*)dx, (void*)dr, (void*)dy}) d.be->release(p);
}

static void test_elementwise(Dev& d) {
  const int n = 5, dim = 4096 + 64;
  auto x = randn((size_t)n * dim, 2.0f), w = randn(dim, 1.0f), y = randn((size_t)n * dim, 1.0f);
  float* dx = d.put(x);
  float* dy = d.put(y);
  Tensor W;
  W.type = 0;
  W.ne0 = dim;
  W.ne1 = 1;
  W.data = d.put(w);
  float* out = (float*)d.be->alloc((size_t)n * dim * 4);
  d.be->rms_norm(dx, W, out, n, dim, 1e-5f);
  std::vector<double> ref((size_t)n * dim);
  for (int t = 0; t < n; ++t) {
    double ss = 0;
    for (int i = 0; i < dim; ++i) ss += (double)x[t * dim + i] * x[t * dim + i];
    const double sc = 1.0 / std::sqrt(ss / dim + 1e-5);
    for (int i = 0; i < dim; ++i) ref[t * dim + i] = x[t * dim + i] * sc * w[i];
  }
  report("rms_norm", rel_err(d.get(out, ref.size()), ref), 1e-6);
  d.be->swiglu(dx, dy, out, (size_t)n * dim);
  for (size_t i = 0; i < ref.size(); ++i) ref[i] = x[i] / (1.0 + std::exp(-(double)x[i])) * y[i];
  report("swiglu", rel_err(d.get(out, ref.size()), ref), 1e-6);
  d.be->add_bias(dx, W, n);
  for (size_t i = 0; i < ref.size(); ++i) ref[i] = (double)x[i] + w[i % dim];
  report("add_bias", rel_err(d.get(dx, ref.size()), ref), 1e-7);
  d.be->add(dx, dy, (size_t)n * dim);
  for (size_t i = 0; i < ref.size(); ++i) ref[i] = (double)x[i] + w[i % dim] + y[i];
  report("add", rel_err(d.get(dx, ref.size()), ref), 1e-7);
  std::vector<int32_t> rows = {4, 1, 1};
  int32_t* drows = d.put(rows);
  d.be->gather_rows(dy, drows, 3, dim, out);
  std::vector<double> gref((size_t)3 * dim);
  for (int r = 0; r < 3; ++r)
    for (int i = 0; i < dim; ++i) gref[r * dim + i] = y[rows[r] * dim + i];
  report("gather_rows", rel_err(d.get(out, gref.size()), gref), 0.0);
  for (void* p : {(void*)dx, (void*)dy, W.data, (void*)out, (void*)drows}) d.be->release(p);
}

// Paged attention: sequences of different lengths in shuffled physical blocks, RoPE + cache write, then attention
// for every token (prefill-like), then for one token of the longest sequence alone (decode: the context is split).
static void test_attention(Dev& d, int n_head, int n_head_kv, int hd, int kv_type, int rope_mode) {
  const int B = 16;
  // Groups of 16 (and 4) tokens never straddle two sequences, so the prompt kernels (tensor-core FA for F16 / head
  // 128, the SIMT one otherwise) take the whole batch; 592 > 512 keeps the split decode kernel in the last case.
  const std::vector<int> lens = {592, 32, 16};
  int T = 0, max_blocks = 0;
  for (int L : lens) T += L, max_blocks = std::max(max_blocks, (L + B - 1) / B);
  const int n_seqs = (int)lens.size(), bps = max_blocks;
  const int n_blocks = n_seqs * bps + 3;
  std::vector<int32_t> perm(n_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<int32_t> tables((size_t)n_seqs * bps, -1);
  int next = 0;
  for (int s = 0; s < n_seqs; ++s)
    for (int j = 0; j < (lens[s] + B - 1) / B; ++j) tables[s * bps + j] = perm[next++];
  std::vector<int32_t> pos, seq, slot;
  for (int s = 0; s < n_seqs; ++s)
    for (int p = 0; p < lens[s]; ++p) {
      pos.push_back(p);
      seq.push_back(s);
      slot.push_back(tables[s * bps + p / B] * B + p % B);
    }
  const int qd = n_head * hd, kvd = n_head_kv * hd;
  auto q = randn((size_t)T * qd, 1.0f), k = randn((size_t)T * kvd, 1.0f), v = randn((size_t)T * kvd, 1.0f);
  const float theta = 10000.0f, fs = 1.0f, scale = 1.0f / std::sqrt((float)hd);

  // CPU reference: rotate, round K/V to the cache type, attend.
  auto rot = [&](std::vector<float>& x, int t, int h, int nh) {
    float* r = &x[((size_t)t * nh + h) * hd];
    for (int i = 0; i < hd / 2; ++i) {
      const double th = pos[t] * std::pow((double)theta, -2.0 * i / hd) * fs;
      const int i0 = rope_mode == 2 ? i : 2 * i, i1 = rope_mode == 2 ? i + hd / 2 : 2 * i + 1;
      const double a = r[i0], b = r[i1];
      r[i0] = (float)(a * std::cos(th) - b * std::sin(th));
      r[i1] = (float)(a * std::sin(th) + b * std::cos(th));
    }
  };
  auto qr = q, kr = k;
  for (int t = 0; t < T; ++t) {
    for (int h = 0; h < n_head; ++h) rot(qr, t, h, n_head);
    for (int h = 0; h < n_head_kv; ++h) rot(kr, t, h, n_head_kv);
  }
  auto cache_round = [&](float f) { return kv_type == 1 ? fp16_to_f32(f32_to_fp16(f)) : f; };
  std::vector<int> first(n_seqs, 0);
  for (int s = 1; s < n_seqs; ++s) first[s] = first[s - 1] + lens[s - 1];
  std::vector<double> ref((size_t)T * qd);
  std::vector<double> sc;
  for (int t = 0; t < T; ++t) {
    const int s = seq[t];
    for (int h = 0; h < n_head; ++h) {
      const int g = h / (n_head / n_head_kv);
      sc.assign(pos[t] + 1, 0.0);
      double mx = -1e300;
      for (int p = 0; p <= pos[t]; ++p) {
        const int tt = first[s] + p;
        double dot = 0;
        for (int i = 0; i < hd; ++i) dot += (double)qr[((size_t)t * n_head + h) * hd + i] * cache_round(kr[((size_t)tt * n_head_kv + g) * hd + i]);
        sc[p] = dot * scale;
        mx = std::max(mx, sc[p]);
      }
      double sum = 0;
      for (auto& e : sc) sum += (e = std::exp(e - mx));
      for (int i = 0; i < hd; ++i) {
        double o = 0;
        for (int p = 0; p <= pos[t]; ++p) o += sc[p] * cache_round(v[((size_t)(first[s] + p) * n_head_kv + g) * hd + i]);
        ref[((size_t)t * n_head + h) * hd + i] = o / sum;
      }
    }
  }

  float *dq = d.put(q), *dk = d.put(k), *dv = d.put(v);
  int32_t *dpos = d.put(pos), *dseq = d.put(seq), *dslot = d.put(slot), *dtab = d.put(tables);
  const size_t esz = kv_type == 1 ? 2 : 4;
  KVLayer kv;
  kv.k = d.be->alloc((size_t)n_blocks * B * kvd * esz);
  kv.v = d.be->alloc((size_t)n_blocks * B * kvd * esz);
  float* out = (float*)d.be->alloc((size_t)T * qd * 4);
  BatchView bv;
  bv.n_tokens = T;
  bv.pos = dpos;
  bv.seq_idx = dseq;
  bv.slot = dslot;
  bv.block_tables = dtab;
  bv.n_seqs = n_seqs;
  bv.blocks_per_seq = bps;
  bv.max_pos = *std::max_element(pos.begin(), pos.end());
  bv.host_pos = pos.data();
  bv.host_seq_idx = seq.data();
  bv.host_block_tables = tables.data();
  AttentionShape sh{n_head, n_head_kv, hd, B, kv_type, scale};
  d.be->rope_store_kv(dq, dk, dv, bv, kv, sh, rope_mode, theta, fs);
  std::vector<double> qref(qr.begin(), qr.end());
  char name[160];
  std::snprintf(name, sizeof name, "rope %s h=%d/%d hd=%d", rope_mode == 2 ? "neox" : "norm", n_head, n_head_kv, hd);
  report(name, rel_err(d.get(dq, qr.size()), qref), 5e-5);
  const double atol = kv_type == 1 ? 2e-3 : 5e-5;
  // Prompt-style batch: 4 tokens per CTA (the host sees every group of 4 belongs to one sequence).
  d.be->attention(dq, bv, kv, sh, out);
  std::snprintf(name, sizeof name, "attention all %d tokens (grouped) h=%d/%d hd=%d kv=%s %s", T, n_head, n_head_kv,
                hd, kv_type == 1 ? "F16" : "F32", rope_mode == 2 ? "neox" : "norm");
  report(name, rel_err(d.get(out, ref.size()), ref), atol);
  // Same batch without host metadata: one token per CTA.
  bv.host_seq_idx = nullptr;
  {
    std::vector<float> poison((size_t)T * qd, NAN);  // through the backend's stream, so it is ordered
    d.be->upload(out, poison.data(), poison.size() * 4);
  }
  d.be->attention(dq, bv, kv, sh, out);
  std::snprintf(name, sizeof name, "attention all %d tokens (per token) hd=%d kv=%s", T, hd, kv_type == 1 ? "F16" : "F32");
  report(name, rel_err(d.get(out, ref.size()), ref), atol);

  // Decode: the last token of sequence 0 alone (its K/V are already in the cache), split across CTAs.
  const int t_last = lens[0] - 1;
  bv.n_tokens = 1;
  bv.pos = dpos + t_last;
  bv.seq_idx = dseq + t_last;
  bv.slot = dslot + t_last;
  bv.max_pos = pos[t_last];
  d.be->attention(dq + (size_t)t_last * qd, bv, kv, sh, out);
  std::vector<double> r1(ref.begin() + (size_t)t_last * qd, ref.begin() + (size_t)(t_last + 1) * qd);
  std::snprintf(name, sizeof name, "attention decode pos=%d (split) hd=%d kv=%s", pos[t_last], hd,
                kv_type == 1 ? "F16" : "F32");
  report(name, rel_err(d.get(out, qd), r1), atol);
  // Decode at a short context (the last token of sequence 1): the single-pass decode kernel where it applies.
  const int t1 = lens[0] + lens[1] - 1;
  bv.pos = dpos + t1;
  bv.seq_idx = dseq + t1;
  bv.slot = dslot + t1;
  bv.max_pos = pos[t1];
  d.be->attention(dq + (size_t)t1 * qd, bv, kv, sh, out);
  std::vector<double> r2(ref.begin() + (size_t)t1 * qd, ref.begin() + (size_t)(t1 + 1) * qd);
  std::snprintf(name, sizeof name, "attention decode pos=%d (short) h=%d/%d hd=%d kv=%s", pos[t1], n_head, n_head_kv,
                hd, kv_type == 1 ? "F16" : "F32");
  report(name, rel_err(d.get(out, qd), r2), atol);

  // A decode step as the engine issues it: the last tokens of sequences 1 and 2 (one token per sequence),
  // unrotated, rope_store_kv then attention with nothing between, so the backend may fuse the two (F16 cache,
  // head 128: the rotation and the cache write happen inside the decode attention kernel). Their cache slots are
  // poisoned first: the result is right only if this step wrote them again.
  {
    const int ts[2] = {lens[0] + lens[1] - 1, lens[0] + lens[1] + lens[2] - 1};
    std::vector<float> q2((size_t)2 * qd), k2((size_t)2 * kvd), v2((size_t)2 * kvd);
    std::vector<int32_t> pos2(2), seq2(2), slot2(2);
    std::vector<double> r3((size_t)2 * qd);
    const std::vector<uint8_t> nan_row((size_t)kvd * esz, 0xFF);  // NaN in F16 and F32
    for (int j = 0; j < 2; ++j) {
      const int t = ts[j];
      std::copy(q.begin() + (size_t)t * qd, q.begin() + (size_t)(t + 1) * qd, q2.begin() + (size_t)j * qd);
      std::copy(k.begin() + (size_t)t * kvd, k.begin() + (size_t)(t + 1) * kvd, k2.begin() + (size_t)j * kvd);
      std::copy(v.begin() + (size_t)t * kvd, v.begin() + (size_t)(t + 1) * kvd, v2.begin() + (size_t)j * kvd);
      std::copy(ref.begin() + (size_t)t * qd, ref.begin() + (size_t)(t + 1) * qd, r3.begin() + (size_t)j * qd);
      pos2[j] = pos[t], seq2[j] = seq[t], slot2[j] = slot[t];
      d.be->upload((char*)kv.k + (size_t)slot[t] * kvd * esz, nan_row.data(), nan_row.size());
      d.be->upload((char*)kv.v + (size_t)slot[t] * kvd * esz, nan_row.data(), nan_row.size());
    }
    float *dq2 = d.put(q2), *dk2 = d.put(k2), *dv2 = d.put(v2);
    int32_t *dpos2 = d.put(pos2), *dseq2 = d.put(seq2), *dslot2 = d.put(slot2);
    BatchView b2 = bv;
    b2.n_tokens = 2;
    b2.pos = dpos2;
    b2.seq_idx = dseq2;
    b2.slot = dslot2;
    b2.max_pos = std::max(pos2[0], pos2[1]);
    b2.host_pos = pos2.data();
    b2.host_seq_idx = seq2.data();
    d.be->rope_store_kv(dq2, dk2, dv2, b2, kv, sh, rope_mode, theta, fs);
    d.be->attention(dq2, b2, kv, sh, out);
    std::snprintf(name, sizeof name, "attention decode step (rope fused where it applies) h=%d/%d hd=%d kv=%s %s",
                  n_head, n_head_kv, hd, kv_type == 1 ? "F16" : "F32", rope_mode == 2 ? "neox" : "norm");
    // The output projection right after (a Q4_0 decode product): with the activations the decode attention kernel
    // quantized as it wrote `out`, the same bits as when the product quantizes `out` itself.
    Tensor Wo;
    auto wob = random_weights(2, qd, 64);
    Wo.type = 2, Wo.ne0 = qd, Wo.ne1 = 64, Wo.nbytes = wob.size(), Wo.data = d.put(wob);
    d.prep(Wo);
    std::vector<float> poison2((size_t)2 * 64, NAN);
    float *p1 = d.put(poison2), *p2 = d.put(poison2);  // uploads: ordered after the attention, before the products
    d.be->rope_store_kv(dq2, dk2, dv2, b2, kv, sh, rope_mode, theta, fs);
    d.be->attention(dq2, b2, kv, sh, out);
    d.be->matmul(Wo, out, 2, p1);
    d.be->gather_rows(out, nullptr, 0, qd, out);  // touches nothing, but ends what the attention quantized
    d.be->matmul(Wo, out, 2, p2);
    auto m1 = d.get(p1, 128), m2 = d.get(p2, 128);
    size_t ndiff = 0;
    for (int i = 0; i < 128; ++i) ndiff += std::memcmp(&m1[i], &m2[i], 4) != 0 || !std::isfinite(m1[i]);
    std::snprintf(name, sizeof name, "  attention -> Q4_0 output product: same bits as self-quantized (differing)");
    report(name, (double)ndiff, 0);
    for (void* p : {(void*)dq2, (void*)dk2, (void*)dv2, (void*)dpos2, (void*)dseq2, (void*)dslot2, Wo.data, (void*)p1,
                    (void*)p2})
      d.be->release(p);
  }
  for (void* p : {(void*)dq, (void*)dk, (void*)dv, (void*)dpos, (void*)dseq, (void*)dslot, (void*)dtab, kv.k, kv.v,
                  (void*)out})
    d.be->release(p);
}

static double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

static void time_matmul(Dev& d, int32_t type, int n, bool per_shape = false) {
  // One Llama-3-8B layer's matrices plus the output matrix: the bytes a decode step streams.
  const int shapes[][2] = {{4096, 4096}, {1024, 4096}, {1024, 4096}, {4096, 4096}, {14336, 4096}, {14336, 4096},
                           {4096, 14336}};
  std::vector<Tensor> ws;
  size_t bytes = 0;
  double flops = 0;
  for (auto& s : shapes) {
    Tensor W;
    W.type = type;
    W.ne1 = s[0];
    W.ne0 = s[1];
    W.nbytes = row_bytes(type, s[1]) * s[0];
    W.data = d.be->alloc(W.nbytes);
    cudaMemset(W.data, 0x11, W.nbytes);  // not zeros: arbitrary finite codes
    d.prep(W);
    bytes += W.nbytes;
    flops += 2.0 * s[0] * s[1] * n;
    ws.push_back(W);
  }
  auto x = randn((size_t)n * 14336, 1.0f);
  float* dx = d.put(x);
  float* dy = (float*)d.be->alloc((size_t)n * 14336 * 4);
  // 8 copies of the layer so the weights do not sit in L2 between repetitions.
  const int reps = 8;
  std::vector<std::vector<Tensor>> layers(reps, ws);
  for (int r = 1; r < reps; ++r)
    for (auto& W : layers[r]) {
      W.data = d.be->alloc(W.nbytes);
      cudaMemset(W.data, 0x11, W.nbytes);
      W.layout = 0;
      d.prep(W);
    }
  cudaDeviceSynchronize();
  auto run = [&]() {
    for (auto& L : layers)
      for (auto& W : L) d.be->matmul(W, dx, n, dy);
  };
  if (per_shape) {  // each distinct shape alone: 8 copies back to back, 10 rounds
    for (int k : {0, 1, 4, 6}) {
      auto one = [&]() {
        for (auto& L : layers) d.be->matmul(L[k], dx, n, dy);
      };
      one();
      d.be->synchronize();
      const double t0 = now();
      for (int i = 0; i < 10; ++i) one();
      d.be->synchronize();
      const double dt = (now() - t0) / (10 * reps);
      std::printf("time matmul %-4s n=%d %5dx%-5d %7.1f us  %7.1f GB/s\n", tname(type), n, (int)ws[k].ne1,
                  (int)ws[k].ne0, dt * 1e6, ws[k].nbytes / dt / 1e9);
    }
  }
  run();
  d.be->synchronize();
  const int iters = n <= 8 ? 10 : 3;
  const double t0 = now();
  for (int i = 0; i < iters; ++i) run();
  d.be->synchronize();
  const double dt = (now() - t0) / (iters * reps);
  std::printf("time matmul %-4s n=%-4d layer: %8.1f us  %7.1f GB/s  %6.1f TFLOP/s\n", tname(type), n, dt * 1e6,
              bytes / dt / 1e9, flops / dt / 1e12);
  for (auto& L : layers)
    for (auto& W : L) d.be->release(W.data);
  d.be->release(dx);
  d.be->release(dy);
}

// GPU time of the per-layer small ops of a Llama-3-8B step (32/8 heads, head 128, F16 cache), queued back to back so
// that the host's launch rate does not enter: T tokens of T different sequences (decode, batched decode) at context
// `ctx`, or one sequence's T-token prompt chunk (prefill = true).
static void time_small_ops(Dev& d, int T, int ctx, bool prefill) {
  const int nh = 32, nkv = 8, hd = 128, B = 16, D = 4096;
  const int n_seqs = prefill ? 1 : T;
  const int bps = (ctx + B - 1) / B;
  const int n_blocks = n_seqs * bps;
  std::vector<int32_t> tables((size_t)n_seqs * bps), pos(T), seq(T), slot(T);
  for (int i = 0; i < n_seqs * bps; ++i) tables[i] = i;
  for (int t = 0; t < T; ++t) {
    seq[t] = prefill ? 0 : t;
    pos[t] = prefill ? ctx - T + t : ctx - 1;
    slot[t] = tables[seq[t] * bps + pos[t] / B] * B + pos[t] % B;
  }
  auto q = randn((size_t)T * nh * hd, 1.0f), k = randn((size_t)T * nkv * hd, 1.0f), x = randn((size_t)T * D, 1.0f);
  float *dq = d.put(q), *dk = d.put(k), *dv = d.put(k), *dx = d.put(x), *dy = d.put(x);
  float* out = (float*)d.be->alloc((size_t)T * nh * hd * 4);
  int32_t *dpos = d.put(pos), *dseq = d.put(seq), *dslot = d.put(slot), *dtab = d.put(tables);
  KVLayer kv;
  const size_t kvb = (size_t)n_blocks * B * nkv * hd * 2;
  kv.k = d.be->alloc(kvb);
  kv.v = d.be->alloc(kvb);
  cudaMemset(kv.k, 0x22, kvb);  // finite halves
  cudaMemset(kv.v, 0x22, kvb);
  Tensor W;
  W.type = 0;
  W.ne0 = D;
  W.ne1 = 1;
  W.data = d.put(randn(D, 1.0f));
  BatchView bv;
  bv.n_tokens = T;
  bv.pos = dpos;
  bv.seq_idx = dseq;
  bv.slot = dslot;
  bv.block_tables = dtab;
  bv.n_seqs = n_seqs;
  bv.blocks_per_seq = bps;
  bv.max_pos = ctx - 1;
  bv.host_pos = pos.data();
  bv.host_seq_idx = seq.data();
  bv.host_block_tables = tables.data();
  AttentionShape sh{nh, nkv, hd, B, 1, 1.0f / std::sqrt((float)hd)};
  auto timeit = [&](const char* what, auto&& fn) {
    fn();
    d.be->synchronize();
    const int iters = 200;
    const double t0 = now();
    for (int i = 0; i < iters; ++i) fn();
    d.be->synchronize();
    std::printf("time %-13s T=%-4d ctx=%-5d %s %8.2f us\n", what, T, ctx, prefill ? "prefill" : "decode ",
                (now() - t0) / iters * 1e6);
  };
  timeit("attention", [&] { d.be->attention(dq, bv, kv, sh, out); });
  timeit("rope_store_kv", [&] { d.be->rope_store_kv(dq, dk, dv, bv, kv, sh, 0, 500000.0f, 1.0f); });
  timeit("add+rms_norm", [&] {
    d.be->add(dx, dy, (size_t)T * D);
    d.be->rms_norm(dx, W, out, T, D, 1e-5f);
  });
  for (void* p : {(void*)dq, (void*)dk, (void*)dv, (void*)dx, (void*)dy, (void*)out, (void*)dpos, (void*)dseq,
                  (void*)dslot, (void*)dtab, kv.k, kv.v, W.data})
    d.be->release(p);
}

static void time_copy() {
  const size_t n = (size_t)4 << 30;
  void *a = nullptr, *b = nullptr;
  if (cudaMalloc(&a, n) != cudaSuccess || cudaMalloc(&b, n) != cudaSuccess) {
    cudaGetLastError();
    std::printf("time copy: skipped (no memory)\n");
    if (a) cudaFree(a);
    return;
  }
  cudaMemset(a, 1, n);
  cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice);
  cudaDeviceSynchronize();
  const double t0 = now();
  for (int i = 0; i < 5; ++i) cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice);
  cudaDeviceSynchronize();
  const double dt = (now() - t0) / 5;
  std::printf("time device-to-device copy: %.1f GB/s (read+write)\n", 2.0 * n / dt / 1e9);
  cudaFree(a);
  cudaFree(b);
}

// mmvq's one-token kernels (mmvq.cu): warp per row (0), staged for Q6_K (3, the default), staged for Q4_0 / Q4_K /
// Q6_K (2), bulk-copy pipeline (1; shared memory KiB, bytes per stage, CTAs per SM): one 8B layer per type.
static void sweep_tma(Dev& d) {
  // Q4_0 in GGUF blocks vs rearranged (repack.cu): rows per warp, tiles in flight for the 14336-long rows; twice.
  const int q4[][3] = {{0, 1, 4}, {1, 1, 4}, {1, 2, 4}, {1, 1, 7}, {1, 2, 7}, {1, 1, 14}};
  for (int round = 0; round < 2; ++round)
    for (auto& c : q4) {
      g_prepare = c[0] == 1;
      tw::cuda::set_q4_0_tiles(c[0]);
      tw::cuda::set_mmvq_rows(c[1]);
      tw::cuda::set_mmvq_q4t_unroll(c[2]);
      std::printf("q4_0 %s, %d row(s) per warp, long rows %d tiles per lane:\n", c[0] ? "rearranged" : "GGUF blocks",
                  c[1], c[2]);
      time_matmul(d, 2, 1, round == 0);
      if (round == 0 && c[1] == 1 && c[2] == 4) time_matmul(d, 2, 2);
    }
  g_prepare = false;
  tw::cuda::set_q4_0_tiles(-1);
  tw::cuda::set_mmvq_rows(-1);
  tw::cuda::set_mmvq_q4t_unroll(4);
  if (std::getenv("TW_SWEEP_Q4T_ONLY")) return;
  const int cfgs[][4] = {{0, 0, 0, 0}, {3, 0, 0, 0}, {2, 0, 0, 0}, {4, 0, 0, 0}, {1, 96, 24576, 1},
                         {0, 0, 0, 0}, {3, 0, 0, 0}, {4, 0, 0, 0}};
  for (auto& c : cfgs) {
    tw::cuda::set_mmvq_tma(c[0], c[1], c[2], c[3]);
    std::printf("mmvq tma %d smem %d KiB stage %d B ctas %d:\n", c[0], c[1], c[2], c[3]);
    for (int32_t t : {2, 12, 14, 8}) time_matmul(d, t, 1);
  }
  // Per shape (Q/O 4096x4096, K/V 1024x4096, gate/up 14336x4096, down 4096x14336), modes 0 / 2.
  for (int mode : {0, 2, 0, 2}) {
    tw::cuda::set_mmvq_tma(mode);
    for (int32_t t : {2, 12, 14}) time_matmul(d, t, 1, true);
  }
  tw::cuda::set_mmvq_tma(-1);
}

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  // --times: only the decode / batched matmul and top-k timings (A/B of kernel switches in one device call)
  const bool times_only = argc > 1 && std::strcmp(argv[1], "--times") == 0;
  // --mmvq: only the one-token integer-dot products with mmvq's bulk-copy pipeline off and in several shapes
  const bool mmvq_only = argc > 1 && std::strcmp(argv[1], "--mmvq") == 0;
  char err[256] = {0};
  Backend* be = make_backend(0, 0, 0, err, sizeof err);
  if (!be) {
    std::printf("SKIP: %s\n", err);
    return 0;
  }
  int count = 0;
  twcuda_probe(&count, nullptr, 0);
  char name[256];
  size_t total = 0, freeb = 0;
  int ma = 0, mi = 0;
  twcuda_device_info(0, name, sizeof name, &total, &freeb, &ma, &mi);
  std::printf("device: %s, %.1f GiB, sm_%d%d\n", name, total / 1073741824.0, ma, mi);
  Dev d{be};
  const char* cub = tw::cuda::cublas_path();
  std::printf("cublas: %s\n", cub ? cub : "not found (tensor-core kernels for every n)");
  if (mmvq_only) {
    sweep_tma(d);
    delete be;
    return 0;
  }
  if (times_only) {
    for (int32_t t : {2, 8, 1, 12, 14})
      for (int n : {1, 2, 8, 64}) time_matmul(d, t, n);
    sweep_tma(d);
    test_topk(d, 64, 128256, 1, true);
    test_topk(d, 64, 128256, 40, true);
    test_topk(d, 1, 128256, 1, true);
    delete be;
    return g_fail ? 1 : 0;
  }
  const int32_t all_types[] = {0, 1, 30, 8, 2, 3, 6, 7, 12, 13, 14};
  for (int32_t t : all_types) test_get_rows(d, t);
  test_elementwise(d);
  for (int32_t t : all_types) {
    const bool kq = type_traits(t).block_size == QK_K;
    for (int n : {1, 3, 8, 9, 64, 100}) test_matmul(d, t, 200, 512, n);
    test_matmul(d, t, 1000, 4096, 1);
    test_matmul(d, t, 1000, 4096, 64);
    test_matmul(d, t, 300, 4096, 200);  // prompt-sized: cuBLAS (with dequantization) where present
    if (kq) {
      test_matmul(d, t, 72, 768, 5);    // 3 super-blocks: rows not 16-byte aligned for Q6_K (fallback path)
      test_matmul(d, t, 72, 768, 33);
      test_matmul(d, t, 300, 14336, 1);  // FFN-down row length: 56 super-blocks, Q6_K stages at every shift
      test_matmul(d, t, 300, 14336, 20);
    } else {
      test_matmul(d, t, 72, 320, 5);    // partial last stage / unaligned rows: fallback paths
      test_matmul(d, t, 72, 320, 33);
    }
  }
  test_matmul(d, 1, 40, 172, 3);  // F16 FFN-down of stories260K: 344-byte rows
  for (int32_t t : {2, 8, 12, 14}) test_matmul(d, t, 201, 512, 1);  // odd row count: one row per warp in mmvq
  tw::cuda::set_matmul_decode_warps(8);  // the 8-warp decode variant (TWINFER_CUDA_DECODE_WARPS=8)
  for (int32_t t : {2, 8, 1, 12, 14}) {
    test_matmul(d, t, 1000, 4096, 1);
    test_matmul(d, t, 300, 4096, 8);
  }
  test_grouped(d, 12, 1);
  test_swiglu_matmul(d, 14, 5);
  tw::cuda::set_matmul_decode_warps(4);  // and the 4-warp one for the same types
  for (int32_t t : {2, 12, 14}) test_matmul(d, t, 1000, 4096, 1);
  tw::cuda::set_matmul_decode_warps(0);
  for (int32_t t : {2, 8, 1, 12, 14})
    for (int n : {1, 8, 40}) test_grouped(d, t, n);
  for (int32_t t : {2, 12, 14, 1})
    for (int n : {1, 5, 40, 150}) test_swiglu_matmul(d, t, n);
  for (int32_t t : {1, 2, 8, 12, 14})
    for (int n : {1, 2, 3}) test_ffn(d, t, n);
  test_add_norm(d);
  for (int32_t t : {2, 8, 12, 14, 1})
    for (int n : {1, 2}) test_norm_matmul(d, t, n);
  for (int32_t t : {2, 8, 12, 14, 1})
    for (int n : {1, 2})
      for (bool ffn : {false, true}) test_split_norm(d, t, t, n, ffn);
  test_split_norm(d, 2, 0, 1, false);   // F32 consumer: the norm finished by its own kernel
  test_split_norm(d, 12, 14, 1, true);  // Q4_K producer, Q6_K consumer (the Q4_K_M mix)
  test_split_norm(d, 2, 12, 2, false);  // Q4_K at two tokens takes the FP16 kernel: finished norm
  for (int k : {1, 2, 40, 256}) test_topk(d, 64, 128256, k, k != 2);
  test_topk(d, 1, 128256, 1, true);
  test_topk(d, 3, 512, 1);     // stories260K vocabulary: one segment
  test_topk(d, 3, 512, 300);   // k > segment share
  test_topk(d, 5, 9000, 256);  // three segments, two rounds
  test_topk(d, 2, 300, 300);   // k = width
  test_attention(d, 8, 4, 8, 0, 0);     // stories260K shape
  test_attention(d, 32, 8, 128, 1, 0);  // Llama-3-8B shape, F16 cache
  test_attention(d, 32, 8, 128, 0, 2);  // F32 cache, NEOX
  test_attention(d, 14, 2, 64, 1, 2);   // Qwen2-0.5B shape
  test_attention(d, 64, 8, 128, 1, 2);  // 8 query heads per KV head (decode kernel G = 8)
  // mmvq's one-token variants last (the tests above keep their random draws). The bulk-copy pipeline: many groups
  // per CTA, the stage ring wraps.
  tw::cuda::set_mmvq_tma(1);
  for (int32_t t : {2, 8, 12, 14}) {
    test_matmul(d, t, 14336, 4096, 1);
    test_matmul(d, t, 4096, 14336, 1);
    test_matmul(d, t, 201, 512, 1);
  }
  // The staged kernels for all three types: one chunk (4096), 3.5 chunks (14336), split norm, grouped weights.
  tw::cuda::set_mmvq_tma(2);
  for (int32_t t : {2, 12, 14}) {
    test_matmul(d, t, 1000, 4096, 1);
    test_matmul(d, t, 300, 14336, 1);
    test_matmul(d, t, 201, 512, 1);
    test_grouped(d, t, 1);
    for (bool ffn : {false, true}) test_split_norm(d, t, t, 1, ffn);
  }
  test_split_norm(d, 12, 14, 1, true);
  tw::cuda::set_mmvq_tma(0);  // and the warp-per-row kernels
  for (int32_t t : {2, 8, 12, 14}) test_matmul(d, t, 1000, 4096, 1);
  tw::cuda::set_mmvq_tma(-1);
  // Q4_0 rearranged at load time (repack.cu) through every path that reads it: the one- and two-token integer-dot
  // kernel (whole and partial 1024-value tiles, one and two rows per warp), the tensor-core kernels, get_rows, fused
  // SwiGLU / split norm, read-back. K = 320 is not rearranged (rows not whole groups).
  g_prepare = true;
  tw::cuda::set_q4_0_tiles(1);
  test_read_weight(d, 2, 300, 4096);
  test_read_weight(d, 2, 7, 768);
  test_get_rows(d, 2);
  for (int n : {1, 2, 3, 8, 9, 64, 100}) test_matmul(d, 2, 200, 512, n);
  for (int n : {1, 2, 64, 200}) test_matmul(d, 2, 300, 4096, n);
  for (int n : {1, 2, 20}) test_matmul(d, 2, 300, 14336, n);
  for (int n : {1, 2}) test_matmul(d, 2, 201, 768, n);
  test_matmul(d, 2, 72, 320, 5);
  tw::cuda::set_mmvq_rows(2);
  test_matmul(d, 2, 1000, 4096, 1);
  test_matmul(d, 2, 300, 14336, 2);
  test_matmul(d, 2, 200, 768, 1);
  tw::cuda::set_mmvq_rows(-1);
  for (int u : {7, 14}) {
    tw::cuda::set_mmvq_q4t_unroll(u);
    test_matmul(d, 2, 300, 14336, 1);
    test_matmul(d, 2, 100, 5376, 2);  // 5.25 tiles
  }
  tw::cuda::set_mmvq_q4t_unroll(4);
  for (int n : {1, 8, 40}) test_grouped(d, 2, n);
  for (int n : {1, 5, 40}) test_swiglu_matmul(d, 2, n);
  for (int n : {1, 2, 3}) test_ffn(d, 2, n);
  for (int n : {1, 2}) test_norm_matmul(d, 2, n);
  for (int n : {1, 2})
    for (bool ffn : {false, true}) test_split_norm(d, 2, 2, n, ffn);
  test_attention(d, 32, 8, 128, 1, 0);  // and the Q4_0 output product after the decode attention
  test_product_add(d, 2);
  g_prepare = false;
  for (int32_t t : {2, 8, 12, 14, 1}) test_product_add(d, t);
  // Down projections of longer rows (whole and partial 1024-value tiles) with the add and norm in their launch.
  for (int32_t t : {2, 8, 12}) test_split_norm(d, t, t, 1, true, 2048);
  g_prepare = true;
  tw::cuda::set_q4_0_tiles(1);
  test_split_norm(d, 2, 2, 1, true, 3072);
  tw::cuda::set_mmvq_rows(2);
  test_split_norm(d, 2, 2, 1, true, 2048);
  tw::cuda::set_mmvq_rows(-1);
  g_prepare = false;
  tw::cuda::set_q4_0_tiles(-1);
  tw::cuda::set_q4_0_tiles(-1);
  const char* e = twcuda_take_error();
  if (e[0]) {
    std::printf("FAIL cuda error: %s\n", e);
    ++g_fail;
  }
  std::printf("%s: %d failure(s)\n", g_fail ? "FAILED" : "PASSED", g_fail);
  if (!quick) {
    time_copy();
    for (int32_t t : {2, 8, 1, 12, 14})
      for (int n : {1, 8, 64, 512}) time_matmul(d, t, n);
    // Decode matmul shape sweep: split-K target (CTAs per SM; default 2) x warps per CTA (default per type).
    for (int warps : {4, 8})
      for (int target : {1, 2, 4}) {
        tw::cuda::set_matmul_split_target(target);
        tw::cuda::set_matmul_decode_warps(warps);
        std::printf("split target %d CTAs/SM, %d warps:\n", target, warps);
        for (int32_t t : {2, 8, 1, 12, 14}) time_matmul(d, t, 1);
      }
    tw::cuda::set_matmul_split_target(2);
    tw::cuda::set_matmul_decode_warps(0);
    time_small_ops(d, 1, 128, false);
    time_small_ops(d, 1, 1024, false);
    time_small_ops(d, 64, 256, false);
    time_small_ops(d, 512, 512, true);
    e = twcuda_take_error();
    if (e[0]) std::printf("cuda error during timing: %s\n", e);
  }
  delete be;
  return g_fail ? 1 : 0;
}
