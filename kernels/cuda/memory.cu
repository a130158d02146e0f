// Device memory of the CUDA backend: plain cudaMalloc allocations (never managed memory), growable scratch, and the
// bounded pinned staging ring through which weights stream from the file to the GPU without a full host copy.
#include <atomic>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>

#include "cuda_common.cuh"
#include "cuda_ops.h"
#include "memory.h"
#include "twinfer_cuda.h"

namespace tw {
namespace cuda {

namespace {
std::mutex g_err_mu;
std::string g_err;        // first error since the last twcuda_take_error
std::string g_err_taken;  // storage for the returned pointer
}  // namespace

void note_error(cudaError_t e, const char* where) {
  if (e == cudaSuccess) return;
  std::lock_guard<std::mutex> lk(g_err_mu);
  if (g_err.empty()) g_err = std::string(where) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
}

namespace {
std::atomic<uint64_t> g_scratch_gen{0};
}  // namespace

uint64_t scratch_generation() { return g_scratch_gen.load(); }

void* Scratch::get(size_t need) {
  if (need <= bytes && ptr) return ptr;
  if (frozen) {  // capturing a graph: no allocation now; the caller takes its no-scratch path, grow afterwards
    if (need > wanted) wanted = need;
    return nullptr;
  }
  if (ptr) cudaFree(ptr);  // synchronizes the device: nothing in flight still reads the old buffer
  ++g_scratch_gen;
  ptr = nullptr;
  bytes = 0;
  size_t want = need + need / 4;  // grow with headroom so steps of slowly rising size do not reallocate each time
  if (cudaMalloc(&ptr, want) != cudaSuccess) {
    cudaGetLastError();
    ptr = nullptr;
    if (cudaMalloc(&ptr, need) != cudaSuccess) {
      cudaGetLastError();
      ptr = nullptr;
      return nullptr;
    }
    want = need;
  }
  bytes = want;
  return ptr;
}

void* Scratch::get_zeroed(size_t need) {
  if (need <= bytes && ptr) return ptr;
  if (frozen) {
    if (need > wanted) wanted = need;
    return nullptr;
  }
  void* p = get(need);
  if (p && cudaMemset(p, 0, bytes) != cudaSuccess) {
    cudaGetLastError();
    return nullptr;
  }
  return p;
}

void Scratch::thaw(bool zeroed) {
  frozen = false;
  if (wanted > bytes) zeroed ? get_zeroed(wanted) : get(wanted);
  wanted = 0;
}

void Scratch::free_all() {
  if (ptr) cudaFree(ptr), ++g_scratch_gen;
  ptr = nullptr;
  bytes = 0;
}

bool Staging::init(size_t chunk_bytes) {
  chunk = chunk_bytes;
  for (int i = 0; i < 2; ++i) {
    if (cudaHostAlloc(&buf[i], chunk, cudaHostAllocDefault) != cudaSuccess) {
      cudaGetLastError();
      buf[i] = nullptr;
      return false;
    }
    if (cudaEventCreateWithFlags(&done[i], cudaEventDisableTiming) != cudaSuccess) return false;
  }
  return true;
}

void Staging::destroy() {
  for (int i = 0; i < 2; ++i) {
    if (done[i]) cudaEventSynchronize(done[i]), cudaEventDestroy(done[i]);
    if (buf[i]) cudaFreeHost(buf[i]);
    done[i] = nullptr;
    buf[i] = nullptr;
  }
}

// Double-buffered: while the GPU copies chunk i out of one pinned buffer, the CPU fills the other. The caller's
// memory may be reused as soon as this returns (every byte has been copied into pinned memory by then).
void Staging::upload(cudaStream_t s, void* dst, const void* src, size_t n) {
  const uint8_t* in = (const uint8_t*)src;
  uint8_t* out = (uint8_t*)dst;
  size_t off = 0;
  while (off < n) {
    const size_t len = n - off < chunk ? n - off : chunk;
    TWC_CHECK(cudaEventSynchronize(done[next]));
    std::memcpy(buf[next], in + off, len);
    TWC_CHECK(cudaMemcpyAsync(out + off, buf[next], len, cudaMemcpyHostToDevice, s));
    TWC_CHECK(cudaEventRecord(done[next], s));
    next ^= 1;
    off += len;
  }
}

// The reverse ring: chunk i is copied device -> pinned buffer while the CPU copies chunk i-1 out to `dst`. A plain
// cudaMemcpyAsync into pageable memory stages through the driver's own small buffers (a 513 KB logits row took
// ~170 us on an H200, bench/NOTES.md run 4). Synchronous: `dst` holds the bytes when this returns.
void Staging::download(cudaStream_t s, void* dst, const void* src, size_t n) {
  const uint8_t* in = (const uint8_t*)src;
  uint8_t* out = (uint8_t*)dst;
  size_t off = 0, prev_off = 0, prev_len = 0;
  int prev = -1;
  // Pieces smaller than the ring's chunk so that the CPU's copy-out overlaps the next device copy.
  const size_t piece = chunk < ((size_t)2 << 20) ? chunk : ((size_t)2 << 20);
  while (off < n) {
    const size_t len = n - off < piece ? n - off : piece;
    TWC_CHECK(cudaEventSynchronize(done[next]));  // an upload or an earlier chunk may still use this buffer
    TWC_CHECK(cudaMemcpyAsync(buf[next], in + off, len, cudaMemcpyDeviceToHost, s));
    TWC_CHECK(cudaEventRecord(done[next], s));
    if (prev >= 0) {
      TWC_CHECK(cudaEventSynchronize(done[prev]));
      std::memcpy(out + prev_off, buf[prev], prev_len);
    }
    prev = next, prev_off = off, prev_len = len;
    next ^= 1;
    off += len;
  }
  if (prev >= 0) {
    TWC_CHECK(cudaEventSynchronize(done[prev]));
    std::memcpy(out + prev_off, buf[prev], prev_len);
  }
}

bool Staging::download_pieces(cudaStream_t s, const Piece* p, size_t count) {
  size_t total = 0;
  for (size_t i = 0; i < count; ++i) total += (p[i].n + 15) / 16 * 16;
  if (total > chunk) return false;
  TWC_CHECK(cudaEventSynchronize(done[next]));  // an upload may still read this buffer
  uint8_t* b = (uint8_t*)buf[next];
  size_t off = 0;
  for (size_t i = 0; i < count; ++i) {
    TWC_CHECK(cudaMemcpyAsync(b + off, p[i].src, p[i].n, cudaMemcpyDeviceToHost, s));
    off += (p[i].n + 15) / 16 * 16;
  }
  TWC_CHECK(cudaStreamSynchronize(s));
  off = 0;
  for (size_t i = 0; i < count; ++i) {
    std::memcpy(p[i].dst, b + off, p[i].n);
    off += (p[i].n + 15) / 16 * 16;
  }
  return true;
}

}  // namespace cuda
}  // namespace tw

extern "C" {

int twcuda_probe(int* count, char* msg, size_t msg_len) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (count) *count = e == cudaSuccess ? n : 0;
  if (e != cudaSuccess) {
    cudaGetLastError();
    const char* what = e == cudaErrorInsufficientDriver ? "CUDA driver not found"
                       : e == cudaErrorNoDevice         ? "no CUDA device"
                                                        : "CUDA not usable";
    if (msg && msg_len) std::snprintf(msg, msg_len, "%s (cudaGetDeviceCount error %d: %s)", what, (int)e,
                                      cudaGetErrorString(e));
    return (int)e;
  }
  if (n == 0 && msg && msg_len) std::snprintf(msg, msg_len, "no CUDA device (cudaGetDeviceCount returned 0)");
  return 0;
}

int twcuda_device_info(int i, char* name, size_t name_len, size_t* total, size_t* free_bytes, int* major,
                       int* minor) {
  cudaDeviceProp p;
  cudaError_t e = cudaGetDeviceProperties(&p, i);
  if (e != cudaSuccess) return cudaGetLastError(), (int)e;
  if (name && name_len) std::snprintf(name, name_len, "%s", p.name);
  if (major) *major = p.major;
  if (minor) *minor = p.minor;
  if (total) *total = p.totalGlobalMem;
  if (free_bytes) {
    *free_bytes = 0;
    size_t f = 0, t = 0;
    int prev = 0;
    cudaGetDevice(&prev);
    if (cudaSetDevice(i) == cudaSuccess && cudaMemGetInfo(&f, &t) == cudaSuccess) *free_bytes = f;
    cudaGetLastError();
    cudaSetDevice(prev);
  }
  return 0;
}

int twcuda_mem_info(int i, size_t* free_bytes, size_t* total) {
  int prev = 0;
  cudaGetDevice(&prev);
  cudaError_t e = cudaSetDevice(i);
  if (e == cudaSuccess) e = cudaMemGetInfo(free_bytes, total);
  cudaGetLastError();
  cudaSetDevice(prev);
  return (int)e;
}

const char* twcuda_take_error(void) {
  std::lock_guard<std::mutex> lk(tw::cuda::g_err_mu);
  tw::cuda::g_err_taken.swap(tw::cuda::g_err);
  tw::cuda::g_err.clear();
  return tw::cuda::g_err_taken.c_str();
}

}  // extern "C"
