// Pinned staging ring for host-to-device uploads (see memory.cu).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>

namespace tw {
namespace cuda {

struct Staging {
  void* buf[2] = {nullptr, nullptr};
  cudaEvent_t done[2] = {nullptr, nullptr};
  size_t chunk = 0;
  int next = 0;
  bool init(size_t chunk_bytes);
  void destroy();
  void upload(cudaStream_t s, void* dst, const void* src, size_t n);
  void download(cudaStream_t s, void* dst, const void* src, size_t n);
  // Several small device ranges to host memory with one wait: each into pinned memory (asynchronous), then one
  // stream synchronization and host copies. False (nothing done) when they do not fit one buffer.
  struct Piece {
    void* dst;
    const void* src;
    size_t n;
  };
  bool download_pieces(cudaStream_t s, const Piece* p, size_t count);
};

}  // namespace cuda
}  // namespace tw
