// K-quant block dequantization (q4_K, q5_K, q6_K), exactly ggml's dequantize_row_q{4,5,6}_K: same operations, same
// order, so the floats match bit for bit. Included by quants.h (block structs live there).
#pragma once
#include <cstdint>

namespace tw {

// Scale and min j (0..7) of a q4_K/q5_K super-block, 6 bits each, packed in 12 bytes (ggml's get_scale_min_k4).
TW_HD void get_scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
  }
}

TW_HD void dequant_block_q4_K(const block_q4_K* b, float* y) {
  const uint8_t* q = b->qs;
  const float d = fp16_to_f32(b->d), min = fp16_to_f32(b->dmin);
  int is = 0;
  uint8_t sc, m;
  for (int j = 0; j < QK_K; j += 64) {
    get_scale_min_k4(is + 0, b->scales, &sc, &m);
    const float d1 = d * sc, m1 = min * m;
    get_scale_min_k4(is + 1, b->scales, &sc, &m);
    const float d2 = d * sc, m2 = min * m;
    for (int l = 0; l < 32; ++l) *y++ = mul_sub_exact(d1, (float)(q[l] & 0xF), m1);
    for (int l = 0; l < 32; ++l) *y++ = mul_sub_exact(d2, (float)(q[l] >> 4), m2);
    q += 32;
    is += 2;
  }
}

TW_HD void dequant_block_q5_K(const block_q5_K* b, float* y) {
  const uint8_t* ql = b->qs;
  const uint8_t* qh = b->qh;
  const float d = fp16_to_f32(b->d), min = fp16_to_f32(b->dmin);
  int is = 0;
  uint8_t sc, m;
  uint8_t u1 = 1, u2 = 2;
  for (int j = 0; j < QK_K; j += 64) {
    get_scale_min_k4(is + 0, b->scales, &sc, &m);
    const float d1 = d * sc, m1 = min * m;
    get_scale_min_k4(is + 1, b->scales, &sc, &m);
    const float d2 = d * sc, m2 = min * m;
    for (int l = 0; l < 32; ++l) *y++ = mul_sub_exact(d1, (float)((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)), m1);
    for (int l = 0; l < 32; ++l) *y++ = mul_sub_exact(d2, (float)((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)), m2);
    ql += 32;
    is += 2;
    u1 <<= 2;
    u2 <<= 2;
  }
}

TW_HD void dequant_block_q6_K(const block_q6_K* b, float* y) {
  const float d = fp16_to_f32(b->d);
  const uint8_t* ql = b->ql;
  const uint8_t* qh = b->qh;
  const int8_t* sc = b->scales;
  for (int n = 0; n < QK_K; n += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int8_t q1 = (int8_t)((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int8_t q2 = (int8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int8_t q3 = (int8_t)((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int8_t q4 = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      // (d * sc) * q, left to right as in C
      y[l + 0] = d * (float)sc[is + 0] * (float)q1;
      y[l + 32] = d * (float)sc[is + 2] * (float)q2;
      y[l + 64] = d * (float)sc[is + 4] * (float)q3;
      y[l + 96] = d * (float)sc[is + 6] * (float)q4;
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

}  // namespace tw
