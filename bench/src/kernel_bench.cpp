// Single-thread speed of the CPU matmul kernels (the WASM build's qdot.h / qdot_x4.h), without the model around
// them: a [R x K] weight of each type times 1 (decode) or 4 (prefill tile) activation rows, repeated; prints GMAC/s
// and weight GB/s. Types the backend repacks (repack.h: Q4_0, Q8_0, Q4_K, Q6_K) run the x4 kernels on repacked
// weights, as the engine does; every output is stored (nothing for the compiler to drop). Build: emcc -O3 -msimd128 bench/src/kernel_bench.cpp -o /tmp/kb.js && node /tmp/kb.js
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "../../kernels/cpu/qdot_x4.h"

using namespace tw;

template <int TYPE, int NT>
double bench(int64_t K, int64_t R, double* gbs) {
  const TypeTraits tt = type_traits(TYPE);
  const size_t rb = row_bytes(TYPE, K);
  std::vector<uint8_t> w(rb * R);
  uint32_t s = 1;
  for (auto& b : w) b = (uint8_t)((s = s * 1664525u + 1013904223u) >> 24);
  for (int64_t r = 0; r < R; ++r)  // sane fp16 scales
    for (int64_t b = 0; b < K / tt.block_size; ++b) {
      uint8_t* blk = w.data() + r * rb + b * tt.block_bytes;
      const int off = TYPE == TW_TYPE_Q6_K ? 208 : 0;
      blk[off] = 0x00; blk[off + 1] = 0x20;
      if (TYPE == TW_TYPE_Q4_K || TYPE == TW_TYPE_Q5_K || TYPE == TW_TYPE_Q4_1 || TYPE == TW_TYPE_Q5_1) { blk[2] = 0; blk[3] = 0x20; }
    }
  std::vector<float> x(K * NT);
  for (auto& v : x) v = (float)((s = s * 1664525u + 1013904223u) >> 8) / (1 << 24) - 0.5f;
  std::vector<char> abuf((act_row_bytes(K) + 16) * NT);
  ActRow act[NT];
  for (int t = 0; t < NT; ++t) {
    act[t] = act_row_at(abuf.data() + (act_row_bytes(K) + 16) * t, K);
    quantize_act_row(x.data() + K * t, K, act[t], act_spec(TYPE));
  }
  std::vector<float> y(R * NT);
  float out[4 * NT];
  double best = 1e30;
  const bool x4 = x4_type(TYPE);
  if (x4) {
    std::vector<uint8_t> packed(x4_tensor_bytes(TYPE, K, R));
    x4_repack(TYPE, w.data(), K, R, packed.data());
    w.swap(packed);
  }
  for (int rep = 0; rep < 5; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    if (x4) {
      for (int64_t r = 0; r < R; r += 4) {
        const uint8_t* quad = x4_quad_ptr(w.data(), TYPE, K, R, r / 4);
        if constexpr (TYPE == TW_TYPE_Q4_0 || TYPE == TW_TYPE_Q8_0 || TYPE == TW_TYPE_Q4_K || TYPE == TW_TYPE_Q6_K)
          qdot_x4_tile<TYPE, NT>(quad, x4_rec_stride(TYPE, R, r / 4), act, K / QA, out);
        for (int t = 0; t < NT; ++t)
          for (int i = 0; i < 4; ++i) y[t * R + r + i] = out[4 * t + i];
      }
    } else {
      for (int64_t r = 0; r < R; ++r) {
        qdot_rows<TYPE, NT>(w.data() + rb * r, act, K, out);
        for (int t = 0; t < NT; ++t) y[t * R + r] = out[t];
      }
    }
    double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    static volatile float sink;
    float sum = 0;
    for (float v : y) sum += v;
    sink = sum;  // every output is used
    if (sec < best) best = sec;
  }
  *gbs = rb * R / best / 1e9;
  return (double)K * R * NT / best / 1e9;
}

int main() {
  const int64_t K = 2048, R = 5632;
  // Best of 3 interleaved repetitions, the first of which also lets V8 tier every kernel up from Liftoff to
  // TurboFan (measuring a kernel's first calls measures the baseline compiler). Or run node --no-liftoff.
  const char* names[] = {"Q4_0", "Q8_0", "Q4_K", "Q6_K", "Q5_0", "Q4_1", "Q5_K", "Q5_1"};
  double best[8][2] = {}, gbs[8] = {};
  for (int rep = 0; rep < 3; ++rep) {
    double g;
#define RUN(i, T)                                       \
  {                                                     \
    double a = bench<T, 1>(K, R, &g);                   \
    if (a > best[i][0]) best[i][0] = a, gbs[i] = g;     \
    double b = bench<T, 4>(K, R, &g);                   \
    if (b > best[i][1]) best[i][1] = b;                 \
  }
    RUN(0, TW_TYPE_Q4_0) RUN(1, TW_TYPE_Q8_0) RUN(2, TW_TYPE_Q4_K) RUN(3, TW_TYPE_Q6_K) RUN(4, TW_TYPE_Q5_0)
    RUN(5, TW_TYPE_Q4_1) RUN(6, TW_TYPE_Q5_K) RUN(7, TW_TYPE_Q5_1)
  }
  for (int i = 0; i < 8; ++i)
    std::printf("%-5s  1 row: %6.2f GMAC/s (%5.2f GB/s of weights)   4-row tile: %6.2f GMAC/s\n", names[i], best[i][0],
                gbs[i], best[i][1]);
  return 0;
}
