#include "thread_pool.h"

namespace tw {

namespace {
// Spin iterations before a parked worker sleeps: long enough to bridge the gap between the ops of one forward
// step, short enough that an idle model stops burning a core within a millisecond or so.
constexpr int kSpinIterations = 1 << 17;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}
}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this, i] { worker_main(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::work(int thread) {
  const int n = n_tasks_.load(std::memory_order_acquire);
  for (;;) {
    const int task = next_task_.fetch_add(1, std::memory_order_relaxed);
    if (task >= n) break;
    fn_(ctx_, task, thread);
  }
}

void ThreadPool::dispatch(int n_tasks, JobFn fn, void* ctx) {
  fn_ = fn;
  ctx_ = ctx;
  n_tasks_.store(n_tasks, std::memory_order_relaxed);
  next_task_.store(0, std::memory_order_relaxed);
  busy_.store((int)workers_.size(), std::memory_order_relaxed);
  // Publish the job, then wake sleepers. Sequentially consistent on both sides (a worker raises sleeping_ before
  // re-checking generation_) so a worker that is falling asleep either sees the new job or is notified.
  generation_.fetch_add(1, std::memory_order_seq_cst);
  if (sleeping_.load(std::memory_order_seq_cst) > 0) {
    std::lock_guard<std::mutex> lock(mutex_);
    wake_.notify_all();
  }
  work(0);
  while (busy_.load(std::memory_order_acquire) > 0) cpu_relax();
}

void ThreadPool::worker_main(int thread) {
  uint32_t seen = generation_.load(std::memory_order_acquire);
  for (;;) {
    int spins = 0;
    while (generation_.load(std::memory_order_acquire) == seen && spins < kSpinIterations) {
      cpu_relax();
      ++spins;
    }
    if (generation_.load(std::memory_order_acquire) == seen) {
      std::unique_lock<std::mutex> lock(mutex_);
      sleeping_.fetch_add(1, std::memory_order_seq_cst);
      wake_.wait(lock, [&] { return generation_.load(std::memory_order_seq_cst) != seen; });
      sleeping_.fetch_sub(1, std::memory_order_seq_cst);
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load()) return;
    work(thread);
    busy_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

}  // namespace tw
