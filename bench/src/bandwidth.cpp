// Memory read bandwidth of this machine: T threads each stream over their share of a buffer much larger than the
// last-level cache, summing 64-bit words (the compiler vectorizes the sum). A decode step reads every weight byte
// once, so bytes-per-token / this number is the physical floor of decode time. Best of several passes.
// Build: g++ -O3 -march=native -pthread bandwidth.cpp -o bandwidth; run: ./bandwidth [threads] [MiB]
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const size_t mib = argc > 2 ? (size_t)std::atoll(argv[2]) : 1024;
  const size_t n = mib * 1024 * 1024 / 8;
  uint64_t* buf = (uint64_t*)aligned_alloc(64, n * 8);
  std::memset(buf, 1, n * 8);  // touch every page so the passes measure reads, not page faults
  double best = 0;
  std::vector<uint64_t> sink(threads * 8);
  for (int pass = 0; pass < 7; ++pass) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t)
      ts.emplace_back([&, t] {
        const size_t a = n * t / threads, b = n * (t + 1) / threads;
        uint64_t s0 = 0;
        for (size_t i = a; i < b; ++i) s0 ^= buf[i];  // vectorized at -O3 (wide loads, one xor each)
        sink[t * 8] = s0;
      });
    for (auto& t : ts) t.join();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double gbs = n * 8 / s / 1e9;
    if (gbs > best) best = gbs;
  }
  uint64_t total = 0;
  for (auto v : sink) total += v;
  std::printf("{\"threads\":%d,\"mib\":%zu,\"read_gbs\":%.3f,\"check\":%llu}\n", threads, mib, best,
              (unsigned long long)(total & 1));
  return 0;
}
