// Weights rearranged once at load time (Backend::prepare_weight) into a layout the decode products read faster.
//
// Q4_0 (layout 1, kernel type kQ4_0T): GGUF blocks are 18 bytes (fp16 d, 16 nibble bytes), so a block's nibbles sit
// 2 bytes off a 4-byte boundary and the one-token integer-dot kernel loaded each block as five 4-byte words (lanes 18
// bytes apart: ~5 cache lines per warp load), and its activations as two 16-byte loads per lane 32 bytes apart (8
// lines each): ~45 L1 wavefronts per 576 bytes of weights, at ~2.26 TB/s per 8B layer on an H100 (bench/NOTES.md
// run 19). Here every 256 values (8 blocks, 144 bytes: the same bytes, so in place) become 16 chunks of 8 bytes —
// chunk p holds values 16p..16p+15, byte i value i in its low and value i + 8 in its high nibble — followed by the 8
// scales. A lane of mmvq_q4t_kernel then takes 16 consecutive values: its 8 weight bytes are contiguous with its
// neighbours' (lanes 0-15 read one group's 128 bytes), and its activations are one 16-byte load at a 16-byte lane
// stride (4 lines per warp load). The tensor-core kernels (matmul.cu) read a group as one stage of 8 units, as before.
// Rows must be whole groups (K % 256 == 0, so rows stay 16-byte aligned); other Q4_0 weights keep GGUF blocks.
//
// Opt-in (TWINFER_CUDA_Q4_0_TILES=1): measured on H100s (bench/NOTES.md run 20) it did not pay. Per 8B layer at one
// token 53.6 vs 54.5 us (two rows per warp 52.8 vs 53.5), but decode end to end within noise (graph GPU time
// 2166-2169 vs 2176-2200 us; with the pipelined decode tg128 436.8-437.0 vs 434.4-438.7 tok/s) and batched8 2-5 %
// slower (1671-1709 vs 1703-1760 tok/s). So the L1 wavefronts of the GGUF layout were not what bounds the kernel.
#include <cstdlib>
#include <cstring>

#include "cuda_common.cuh"
#include "cuda_ops.h"

namespace tw {
namespace cuda {

namespace {

int g_q4_0_tiles = -1;  // set_q4_0_tiles

// Read at every weight (not once per process): gpu-run.mjs decode-ab switches it between model loads.
bool q4_0_tiles_enabled() {
  if (g_q4_0_tiles >= 0) return g_q4_0_tiles == 1;
  const char* v = std::getenv("TWINFER_CUDA_Q4_0_TILES");
  return v && v[0] == '1';
}

// One thread per 144-byte group, in place (each thread reads its whole group before writing it).
__global__ void q4_0_to_tiles_kernel(uint8_t* __restrict__ w, int64_t groups) {
  const int64_t gi = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (gi >= groups) return;
  uint4* p = reinterpret_cast<uint4*>(w + gi * 144);
  uint8_t in[144], out[144];
#pragma unroll
  for (int v = 0; v < 9; ++v) reinterpret_cast<uint4*>(in)[v] = p[v];
#pragma unroll
  for (int b = 0; b < 8; ++b) {
    const uint8_t* blk = in + 18 * b;  // d, qs[16]: value i < 16 low nibble of qs[i], value 16 + i its high nibble
    out[128 + 2 * b] = blk[0];
    out[129 + 2 * b] = blk[1];
#pragma unroll
    for (int h = 0; h < 2; ++h)  // chunk 2b + h: values 16h..16h+15 of the block, nibble h of qs
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const int lo = (blk[2 + i] >> (4 * h)) & 0x0F, hi = (blk[2 + i + 8] >> (4 * h)) & 0x0F;
        out[8 * (2 * b + h) + i] = (uint8_t)(lo | (hi << 4));
      }
  }
#pragma unroll
  for (int v = 0; v < 9; ++v) p[v] = reinterpret_cast<const uint4*>(out)[v];
}

}  // namespace

int32_t kernel_type(const Tensor& w) { return w.type == 2 && w.layout == 1 ? kQ4_0T : w.type; }

void set_q4_0_tiles(int mode) { g_q4_0_tiles = mode; }

bool prepare_weight(cudaStream_t s, Tensor& w) {
  if (w.type != 2 || w.layout != 0 || w.ne0 % 256 != 0 || ((uintptr_t)w.data & 15) != 0 || !q4_0_tiles_enabled())
    return false;
  const int64_t groups = w.ne0 / 256 * w.ne1;
  q4_0_to_tiles_kernel<<<(unsigned)((groups + 127) / 128), 128, 0, s>>>((uint8_t*)w.data, groups);
  TWC_LAUNCHED("q4_0_to_tiles");
  w.layout = 1;
  return true;
}

void weight_to_gguf(const Tensor& w, void* host) {
  if (w.type != 2 || w.layout != 1) return;
  uint8_t* p = (uint8_t*)host;
  const int64_t groups = w.ne0 / 256 * w.ne1;
  uint8_t out[144];
  for (int64_t gi = 0; gi < groups; ++gi, p += 144) {
    for (int b = 0; b < 8; ++b) {
      uint8_t* blk = out + 18 * b;
      blk[0] = p[128 + 2 * b];
      blk[1] = p[129 + 2 * b];
      for (int i = 0; i < 16; ++i) {  // qs[i]: value i (chunk 2b) low, value 16 + i (chunk 2b + 1) high
        const int m = i & 7, sh = 4 * (i >> 3);
        const int lo = (p[8 * (2 * b) + m] >> sh) & 0x0F, hi = (p[8 * (2 * b + 1) + m] >> sh) & 0x0F;
        blk[2 + i] = (uint8_t)(lo | (hi << 4));
      }
    }
    std::memcpy(p, out, 144);
  }
}

}  // namespace cuda
}  // namespace tw
