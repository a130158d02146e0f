// Weight layouts of the CPU backend's fast path: four rows interleaved ("x4"), repacked once when a weight is
// loaded (Backend::prepare_weight).
//
// Why: WASM SIMD128's best multiply-add is i32x4.dot_i16x8_s (x86 pmaddwd): 8 int16 products summed in pairs into
// 4 int32 lanes. If those 4 lanes are 4 different weight rows, one dot gives 2 terms of 4 rows' dot products at
// once, the activation side is a 32-bit broadcast of 2 adjacent values (v128.load32_splat), and per 32-value group
// the 4 rows' sums land in one vector, scaled by the 4 rows' block scales as one vector — no horizontal sums, no
// per-row scalar scale work. In GGUF's row-major block layout each of those steps costs extra shuffles.
//
// A quad (4 rows) of a row length K is K/32 groups; group g of a quad is one record:
//   q4_0x4: 64 bytes of nibbles, then the 4 rows' scales d as f32 in row order (80 bytes; 4 GGUF blocks are 72)
//   q8_0x4: 128 bytes of int8,   then the 4 rows' scales d as f32 in row order (144 bytes; 4 GGUF blocks are 136)
//           (f32, not the file's fp16: widening 4 fp16 lanes with shifts and masks cost ~10 of the ~45 cycles a
//           group takes in the decode kernel; the f32 holds the fp16 exactly, so reading back stays bit-exact)
//   q4_Kx4: per super-block of 256 (one record = 4 GGUF blocks + 16 bytes, 592 bytes): 8 groups of 64 bytes of
//           nibbles as in q4_0x4; the 6-bit scales of the 4 rows x 8 groups as bytes, then the mins likewise, both
//           ordered [group pair][row][2] (so one v128.load8x8_u gives a group pair's 4 rows as int16 pairs: the mins
//           term of a super-block is 4 pmaddwd against pairs of activation sums, and a group's 4 scales are one mask
//           or shift of that load); then the 4 rows' fp16 d and fp16 dmin
//   q6_Kx4: per super-block (1096 bytes = 4 GGUF blocks + 256): 8 groups of 128 bytes holding the 6-bit values
//           (0..63) one per byte, laid out as q8_0x4's int8 (so a pair vector is one v128.load8x8_u: the nibble and
//           high-pair merging cost ~3 vector ops per pair vector, more than the kernel's multiply-adds); the 16 int8
//           sub-block scales ordered [sub-block pair][row][2] (as q4_K's: one v128.load8x8_s serves a group's two
//           sub-blocks and the super-block's -32 * sum(q) correction as pmaddwd); the 4 rows' fp16 d
// The K-quants' fp16 scales are stored in row order 0, 2, 1, 3: read as two 32-bit words, the low halves are rows
// 0 and 1 and the high halves rows 2 and 3, which the kernels widen to f32 lanes 0..3 with shifts and masks (one
// widening per super-block of 8 groups, so they stay fp16 and the record stays the size of the blocks).
// Inside a record the weights form 16 int16x8 "pair vectors" P_j, j = 4c + i (c = 0..3 covers positions 8c..8c+7;
// i = 0..3), each holding two rows' runs of 4 positions: lane L of P_{4c+i} is row 2 (i & 1) + L / 4 at position
// k = 8c + 4 (i >> 1) + L % 4. A 64-bit broadcast of 4 adjacent activations (v128.load64_splat) then serves two
// pmaddwd (rows 0-1 and rows 2-3), whose int32 lanes are [row a, row a, row b, row b] partial sums, folded into
// one vector of the 4 rows per group with two shuffles and an add: half the broadcasts of a one-row-pair-per-lane
// layout (prompt tile 23.5 -> 27 GMAC/s per thread, bench/NOTES.md).
//   q4_0x4: 4 little-endian u16x8 words W_c (16 bytes each); nibble i of lane L of W_c is lane L of P_{4c+i}
//           (so P = (W >> 4i) & 15: one shift and one mask per pair vector; values 0..15, the -8 comes later)
//   q8_0x4: 8 int8x16 vectors V_m; bytes 0..7 are P_{2m}'s lanes, bytes 8..15 are P_{2m+1}'s (sign-extend low/high)
// q4_0 / q8_0 / q4_K / q6_K records are 8 / 8 / 32 / 288 bytes larger than the 4 GGUF blocks they replace
// (11 % / 6 % / 6 % / 34 %), so the backend repacks a tensor into a new buffer (x4_tensor_bytes).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../common/quants.h"
#include "../common/quants_k.h"
#include "../include/twinfer.h"

namespace tw {

enum WeightLayout : int32_t {
  kLayoutGGUF = 0,  // rows of GGUF blocks
  kLayoutX4 = 1,    // quads of interleaved rows (this file)
};

inline bool x4_type(int32_t type) {
  return type == TW_TYPE_Q4_0 || type == TW_TYPE_Q8_0 || type == TW_TYPE_Q4_K || type == TW_TYPE_Q6_K;
}
// One record = one GGUF block of each of the 4 rows, with f32 instead of fp16 scales (d, and q4_K's dmin): no
// conversion in the kernels, and no subnormal f32 multiplies (the synthetic models' tiny K-quant scales are fp16
// subnormals; the q4_K decode kernel ran 12 % slower on them).
inline size_t x4_record_bytes(int32_t type) {
  const size_t extra = type == TW_TYPE_Q4_0 || type == TW_TYPE_Q8_0 ? 8 : type == TW_TYPE_Q4_K ? 32 : type == TW_TYPE_Q6_K ? 288 : 0;
  return 4 * type_traits(type).block_bytes + extra;
}
// Bytes of one quad (4 rows of K values) and of a whole [R x K] tensor in x4 layout.
inline size_t x4_quad_bytes(int32_t type, int64_t K) { return x4_record_bytes(type) * (size_t)(K / type_traits(type).block_size); }
// q6_K quads always come in pairs (below): an odd last quad gets an empty partner.
inline size_t x4_flat_bytes(int32_t type, int64_t K, int64_t R) {
  return x4_quad_bytes(type, K) * (size_t)(type == TW_TYPE_Q6_K ? (R / 4 + 1) / 2 * 2 : R / 4);
}

// Rows longer than kX4ChunkCols values are stored as column chunks: the tensor is a sequence of [R x 2048] x4 tensors
// (the last one narrower), and a product runs chunk after chunk, adding the partial sums. A decode task then streams
// its rows' part of one chunk (one forward stream) with that chunk's 4 KB of activations staying in L1; with whole
// rows a pair's weights and activations (q4_K at K = 5632: 27 + 12 KB) overflowed L1 between two uses of an activation
// line, and those misses held up the weight stream: long-row products ran 15-35 % slower (bench/NOTES.md, session 6).
// q4_0 too since its pair kernel holds two sums per quad (session 7): 5632 x 2048 decode products, one thread, whole
// rows 18.6-18.8 against chunks 21.7-22.0 GMAC/s (session 6's end-to-end 0.94x vs 0.99x, before, was within noise).
constexpr int64_t kX4ChunkCols = 2048;
inline bool x4_chunked(int32_t type, int64_t K) { return K > kX4ChunkCols && x4_type(type); }
inline int x4_chunks(int32_t type, int64_t K) {
  return x4_chunked(type, K) ? (int)((K + kX4ChunkCols - 1) / kX4ChunkCols) : 1;
}
struct X4Chunk {
  int64_t k0, K;  // columns [k0, k0 + K)
  size_t offset;  // bytes from the tensor's start
};
inline X4Chunk x4_chunk(int32_t type, int64_t K, int64_t R, int c) {
  if (!x4_chunked(type, K)) return {0, K, 0};
  const int64_t k0 = c * kX4ChunkCols;
  return {k0, std::min(kX4ChunkCols, K - k0), x4_flat_bytes(type, kX4ChunkCols, R) * (size_t)c};
}
inline size_t x4_tensor_bytes(int32_t type, int64_t K, int64_t R) {
  const int nc = x4_chunks(type, K);
  const X4Chunk last = x4_chunk(type, K, R, nc - 1);
  return last.offset + x4_flat_bytes(type, last.K, R);
}

// Quads are stored in pairs, the two quads' records of a group side by side (quad 2p's record g, then quad 2p+1's,
// then group g+1's): the decode kernel reads a pair (8 rows) as one forward stream. Two quads 5 KB apart were two
// streams, and one core then fetched only ~8 GB/s from DRAM where one stream gives ~14 (bench/NOTES.md). A last
// quad without a partner (R / 4 odd) keeps its records contiguous. q6_K pairs interleave finer, per 32-value group
// (its records are 1 KB of values: two records side by side, read alternately, fetched at half the speed of one
// stream): quad 2p+1's record starts 128 bytes after quad 2p's, each group's 128 value bytes are 256 apart
// (kQ6KGroupStride) and a pair of records takes 2 x x4_record_bytes; a last odd q6_K quad has an empty partner.
// A quad of a tensor with R rows starts at x4_quad_ptr and its records are x4_rec_stride bytes apart.
inline bool x4_paired(int32_t type, int64_t R, int64_t q) { (void)type; return (q | 1) < R / 4; }
inline size_t x4_rec_stride(int32_t type, int64_t R, int64_t q) {
  return x4_record_bytes(type) * (type == TW_TYPE_Q6_K || x4_paired(type, R, q) ? 2 : 1);
}
template <class T>
inline T* x4_quad_ptr(T* data, int32_t type, int64_t K, int64_t R, int64_t q) {
  if (type == TW_TYPE_Q6_K) return data + x4_quad_bytes(type, K) * (size_t)(q & ~(int64_t)1) + (q & 1 ? 128 : 0);
  if (!x4_paired(type, R, q)) return data + x4_quad_bytes(type, K) * (size_t)q;
  return data + x4_quad_bytes(type, K) * (size_t)(q & ~(int64_t)1) + (q & 1 ? x4_record_bytes(type) : 0);
}

// Where an x4 tensor starts relative to a 64-byte boundary (cpu_backend's prepare_weight). Measured on Zen 4 from
// DRAM (bench/NOTES.md, session 6): the q4_K decode kernel ran 14.5 GMAC/s per thread with its records' 64-byte nibble
// groups on cache-line boundaries and 19 GMAC/s with them 16 bytes past one; q4_0 / q8_0 records (80 / 144 bytes) drift
// across lines anyway and did not care.
inline size_t x4_base_offset(int32_t type) { return type == TW_TYPE_Q4_K ? 16 : 0; }

// q4_0 / q8_0 record: offset of the f32 scales.
inline size_t x4_scales_offset(int32_t type) { return x4_record_bytes(type) - 16; }

// Exact inverse of fp16_to_f32 for every input (NaN payloads included), for reading a widened scale back.
inline uint16_t x4_f32_to_fp16_exact(float f) {
  const uint32_t x = f32_to_bits(f);
  if ((x & 0x7f800000u) == 0x7f800000u) return (uint16_t)(((x >> 16) & 0x8000u) | 0x7c00u | ((x >> 13) & 0x3ffu));
  return f32_to_fp16(f);
}
// Row r's fp16 scale widened to f32 in a record's f32x4 field, and back (exact both ways).
inline void x4_set_f32(uint8_t* field, int r, uint16_t h) {
  const float f = fp16_to_f32(h);
  std::memcpy(field + 4 * r, &f, 4);
}
inline uint16_t x4_get_fp16(const uint8_t* field, int r) {
  float f;
  std::memcpy(&f, field + 4 * r, 4);
  return x4_f32_to_fp16_exact(f);
}

// q4_Kx4 record offsets
constexpr int kQ4KScales = 512;  // 32 bytes of 6-bit scales [group pair][row][2]
constexpr int kQ4KMins = 544;    // 32 bytes of 6-bit mins, same order
constexpr int kQ4KD = 576;       // 4 x f32 d (row order)
constexpr int kQ4KDmin = 592;    // 4 x f32 dmin
// q6_Kx4 record offsets (records of a pair interleaved, above: the partner's bytes lie 128 further on)
constexpr int kQ6KGroupStride = 256;  // group j's 128 value bytes at 256 j
constexpr int kQ6KScales = 2048;      // 16 int8 sub-block scales x 4 rows, [sub-block pair][row][2]
constexpr int kQ6KD = 2112;           // 4 x f32 d (row order)

// Value of row r (0..3), position k (0..31) of a record, as the small integer the kernels multiply (q4_0: 0..15).
// q6_Kx4: byte of row r, position k (0..255) of a record.
inline size_t x4_q6_offset(int r, int k) { return kQ6KGroupStride * (k / 32) + 8 * ((k % 32) / 2) + 2 * r + k % 2; }
inline const uint8_t* x4_value_ptr_q6(const uint8_t* rec, int r, int k) { return rec + x4_q6_offset(r, k); }

// Where row r (0..3), position k (0..31) of a q4_0 / q8_0 / q4_K group sits: pair vector 4c + i, lane L (above).
struct X4Slot {
  int c, i, lane;
};
inline X4Slot x4_slot(int r, int k) { return {k / 8, 2 * ((k % 8) / 4) + (r >> 1), 4 * (r & 1) + k % 4}; }

inline uint8_t* x4_value_ptr_q8(uint8_t* rec, int r, int k) {
  const X4Slot s = x4_slot(r, k);
  return rec + 32 * s.c + 16 * (s.i >> 1) + 8 * (s.i & 1) + s.lane;
}

inline int x4_value(int32_t type, const uint8_t* rec, int r, int k) {
  if (type == TW_TYPE_Q6_K) return *x4_value_ptr_q6(rec, r, k);  // 6-bit q (0..63)
  if (type == TW_TYPE_Q4_K) {
    rec += 64 * (k / 32);
    k %= 32;
  }
  if (type == TW_TYPE_Q4_0 || type == TW_TYPE_Q4_K) {
    const X4Slot s = x4_slot(r, k);
    const uint16_t word = (uint16_t)(rec[16 * s.c + 2 * s.lane] | (rec[16 * s.c + 2 * s.lane + 1] << 8));
    return (word >> (4 * s.i)) & 15;
  }
  return (int8_t)*x4_value_ptr_q8(const_cast<uint8_t*>(rec), r, k);
}

// Byte of row r, item i (q4_K group, q6_K sub-block) in an area ordered [item pair][row][2].
inline int x4_pair_index(int r, int i) { return 8 * (i / 2) + 2 * r + (i & 1); }
// q4_Kx4: 6-bit scale (which = 0) or min (which = 1) of row r, group j.
inline int x4_q4k_scale(const uint8_t* rec, int r, int j, int which) {
  return rec[kQ4KScales + 32 * which + x4_pair_index(r, j)];
}
inline void x4_q4k_set_scale(uint8_t* rec, int r, int j, int which, int v) {
  rec[kQ4KScales + 32 * which + x4_pair_index(r, j)] = (uint8_t)v;
}
// q6_Kx4: int8 scale of row r, sub-block sub (0..15).
inline uint8_t& x4_q6k_scale(uint8_t* rec, int r, int sub) { return rec[kQ6KScales + x4_pair_index(r, sub)]; }
inline int x4_q6k_scale(const uint8_t* rec, int r, int sub) { return (int8_t)rec[kQ6KScales + x4_pair_index(r, sub)]; }

// A 64-byte nibble area from a getter nib(r, k) (row 0..3, position 0..31): word c, lane L holds the nibbles of
// pair vectors 4c .. 4c+3 at bits 0, 4, 8, 12 (the layout above, one 16-bit store per lane).
template <class Nib>
inline void x4_fill_nibbles(uint8_t* area, Nib nib) {
  for (int c = 0; c < 4; ++c)
    for (int lane = 0; lane < 8; ++lane) {
      unsigned v = 0;
      for (int i = 0; i < 4; ++i) v |= nib(2 * (i & 1) + lane / 4, 8 * c + 4 * (i >> 1) + lane % 4) << (4 * i);
      area[16 * c + 2 * lane] = (uint8_t)v;
      area[16 * c + 2 * lane + 1] = (uint8_t)(v >> 8);
    }
}

// One group of 4 GGUF blocks (blocks[r] = row r's block) -> one record.
inline void x4_pack_group(int32_t type, const uint8_t* const blocks[4], uint8_t* rec) {
  if (type == TW_TYPE_Q6_K) {  // every byte of its own written; no memset: the pair partner's bytes are interleaved
    for (int r = 0; r < 4; ++r) {
      const block_q6_K* b = (const block_q6_K*)blocks[r];
      for (int k = 0; k < 256; ++k) {  // GGUF: low nibble in ql, high pair in qh (dequantize_row_q6_K's order)
        const int j = k / 32, i = k % 32, half = j / 4, kq = j % 4;
        const uint8_t l = b->ql[64 * half + 32 * (kq & 1) + i];
        const int lo = (kq >> 1) ? l >> 4 : l & 15, hi = (b->qh[32 * half + i] >> (2 * kq)) & 3;
        rec[x4_q6_offset(r, k)] = (uint8_t)(lo | hi << 4);
      }
      for (int sb = 0; sb < 16; ++sb) x4_q6k_scale(rec, r, sb) = (uint8_t)b->scales[sb];
      x4_set_f32(rec + kQ6KD, r, b->d);
    }
    return;
  }
  std::memset(rec, 0, x4_record_bytes(type));
  if (type == TW_TYPE_Q4_K) {
    for (int j = 0; j < 8; ++j)
      x4_fill_nibbles(rec + 64 * j, [&](int r, int kk) -> unsigned {
        const uint8_t byte = ((const block_q4_K*)blocks[r])->qs[32 * (j / 2) + kk];
        return (j & 1) ? byte >> 4 : byte & 15;
      });
    for (int r = 0; r < 4; ++r) {
      const block_q4_K* b = (const block_q4_K*)blocks[r];
      for (int j = 0; j < 8; ++j) {
        uint8_t sc, m;
        get_scale_min_k4(j, b->scales, &sc, &m);
        x4_q4k_set_scale(rec, r, j, 0, sc);
        x4_q4k_set_scale(rec, r, j, 1, m);
      }
      x4_set_f32(rec + kQ4KD, r, b->d);
      x4_set_f32(rec + kQ4KDmin, r, b->dmin);
    }
    return;
  }
  uint8_t* scales = rec + x4_scales_offset(type);
  if (type == TW_TYPE_Q4_0)
    x4_fill_nibbles(rec, [&](int r, int k) -> unsigned {
      const uint8_t* qs = ((const block_q4_0*)blocks[r])->qs;
      return k < 16 ? qs[k] & 15 : qs[k - 16] >> 4;
    });
  for (int r = 0; r < 4; ++r) {
    uint16_t h;
    if (type == TW_TYPE_Q4_0) {
      std::memcpy(&h, &((const block_q4_0*)blocks[r])->d, 2);
    } else {
      const block_q8_0* b = (const block_q8_0*)blocks[r];
      for (int k = 0; k < 32; ++k) *x4_value_ptr_q8(rec, r, k) = (uint8_t)b->qs[k];
      std::memcpy(&h, &b->d, 2);
    }
    const float d = fp16_to_f32(h);
    std::memcpy(scales + 4 * r, &d, 4);
  }
}

// One record -> the 4 GGUF blocks it came from (exact inverse of x4_pack_group).
inline void x4_unpack_group(int32_t type, const uint8_t* rec, uint8_t* const blocks[4]) {
  if (type == TW_TYPE_Q6_K) {
    for (int r = 0; r < 4; ++r) {
      block_q6_K* b = (block_q6_K*)blocks[r];
      std::memset(b->ql, 0, sizeof b->ql);
      std::memset(b->qh, 0, sizeof b->qh);
      for (int k = 0; k < 256; ++k) {
        const int j = k / 32, i = k % 32, half = j / 4, kq = j % 4;
        const int q = x4_value(type, rec, r, k);
        b->ql[64 * half + 32 * (kq & 1) + i] |= (uint8_t)((q & 15) << ((kq >> 1) ? 4 : 0));
        b->qh[32 * half + i] |= (uint8_t)((q >> 4) << (2 * kq));
      }
      for (int sb = 0; sb < 16; ++sb) b->scales[sb] = (int8_t)x4_q6k_scale(rec, r, sb);
      b->d = x4_get_fp16(rec + kQ6KD, r);
    }
    return;
  }
  if (type == TW_TYPE_Q4_K) {
    for (int r = 0; r < 4; ++r) {
      block_q4_K* b = (block_q4_K*)blocks[r];
      for (int i = 0; i < 128; ++i) {
        const int j = 2 * (i / 32), kk = i % 32;
        b->qs[i] = (uint8_t)(x4_value(type, rec, r, 32 * j + kk) | (x4_value(type, rec, r, 32 * (j + 1) + kk) << 4));
      }
      int sc[8], m[8];
      for (int j = 0; j < 8; ++j) {
        sc[j] = x4_q4k_scale(rec, r, j, 0);
        m[j] = x4_q4k_scale(rec, r, j, 1);
      }
      // inverse of get_scale_min_k4: 8 scales and 8 mins of 6 bits in 12 bytes
      for (int j = 0; j < 4; ++j) {
        b->scales[j] = (uint8_t)((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
        b->scales[j + 4] = (uint8_t)((m[j] & 63) | ((m[j + 4] >> 4) << 6));
        b->scales[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
      }
      b->d = x4_get_fp16(rec + kQ4KD, r);
      b->dmin = x4_get_fp16(rec + kQ4KDmin, r);
    }
    return;
  }
  for (int r = 0; r < 4; ++r) {
    float d;
    std::memcpy(&d, rec + x4_scales_offset(type) + 4 * r, 4);
    const uint16_t h = x4_f32_to_fp16_exact(d);
    if (type == TW_TYPE_Q4_0) {
      block_q4_0* b = (block_q4_0*)blocks[r];
      for (int k = 0; k < 16; ++k)
        b->qs[k] = (uint8_t)(x4_value(type, rec, r, k) | (x4_value(type, rec, r, k + 16) << 4));
      std::memcpy(&b->d, &h, 2);
    } else {
      block_q8_0* b = (block_q8_0*)blocks[r];
      for (int k = 0; k < 32; ++k) b->qs[k] = (int8_t)x4_value(type, rec, r, k);
      std::memcpy(&b->d, &h, 2);
    }
  }
}

// Rows [4q, 4q+4) of a [R x K] GGUF tensor (src = row 4q) -> quad q's records in the x4 tensor dst (every chunk).
// Not inlined on purpose: the engine calls it once per quad, so V8 tiers it up after the first few quads (a single
// long call would run to its end in the baseline compiler — wasm has no on-stack replacement).
__attribute__((noinline)) inline void x4_repack_quad(int32_t type, const uint8_t* src, int64_t K, int64_t R, int64_t q,
                                                     uint8_t* dst) {
  const size_t rb = row_bytes(type, K), bb = type_traits(type).block_bytes, stride = x4_rec_stride(type, R, q);
  const int64_t bs = type_traits(type).block_size;
  for (int c = 0; c < x4_chunks(type, K); ++c) {
    const X4Chunk ch = x4_chunk(type, K, R, c);
    uint8_t* quad = x4_quad_ptr(dst + ch.offset, type, ch.K, R, q);
    for (int64_t g = 0; g < ch.K / bs; ++g) {
      const int64_t b = ch.k0 / bs + g;
      const uint8_t* blocks[4] = {&src[b * bb], &src[rb + b * bb], &src[2 * rb + b * bb], &src[3 * rb + b * bb]};
      x4_pack_group(type, blocks, quad + g * stride);
    }
  }
}

// The whole tensor (R a multiple of 4): GGUF bytes in src, x4_tensor_bytes in dst.
inline void x4_repack(int32_t type, const uint8_t* src, int64_t K, int64_t R, uint8_t* dst) {
  const size_t rb = row_bytes(type, K);
  for (int64_t q = 0; q < R / 4; ++q) x4_repack_quad(type, src + 4 * rb * q, K, R, q, dst);
}

// Row r of an [R x K] x4 tensor back in GGUF block layout (K / block_size blocks) — for get_rows and reading weights
// back.
inline void x4_read_row(int32_t type, const uint8_t* data, int64_t K, int64_t R, int64_t r, uint8_t* out) {
  const size_t bb = type_traits(type).block_bytes, rec = x4_rec_stride(type, R, r / 4);
  const int64_t bs = type_traits(type).block_size;
  uint8_t tmp[4][sizeof(block_q6_K)];
  for (int c = 0; c < x4_chunks(type, K); ++c) {
    const X4Chunk ch = x4_chunk(type, K, R, c);
    const uint8_t* quad = x4_quad_ptr(data + ch.offset, type, ch.K, R, r / 4);
    for (int64_t g = 0; g < ch.K / bs; ++g) {
      uint8_t* blocks[4] = {tmp[0], tmp[1], tmp[2], tmp[3]};
      x4_unpack_group(type, quad + g * rec, blocks);
      std::memcpy(out + (ch.k0 / bs + g) * bb, tmp[r % 4], bb);
    }
  }
}

}  // namespace tw
