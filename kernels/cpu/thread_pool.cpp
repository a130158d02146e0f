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

void ThreadPool::work(int thread, uint32_t gen) {
  const int n = n_tasks_.load(std::memory_order_acquire);
  uint64_t v = claim_.load(std::memory_order_acquire);
  for (;;) {
    if ((uint32_t)(v >> 32) != gen || (int)(uint32_t)v >= n) return;
    if (!claim_.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
    // The job cannot end while this claimed task is unfinished, so fn_/ctx_ are still this job's.
    fn_(ctx_, (int)(uint32_t)v, thread);
    done_.fetch_add(1, std::memory_order_acq_rel);
    v = claim_.load(std::memory_order_acquire);
  }
}

void ThreadPool::dispatch(int n_tasks, JobFn fn, void* ctx) {
  const uint32_t gen = generation_.load(std::memory_order_relaxed) + 1;
  fn_ = fn;
  ctx_ = ctx;
  done_.store(0, std::memory_order_relaxed);
  // claim_ before n_tasks_ (both release): a worker still on the previous job that reads this job's task count
  // (acquire) is then guaranteed to see this job's generation in claim_ and backs off.
  claim_.store((uint64_t)gen << 32, std::memory_order_release);
  n_tasks_.store(n_tasks, std::memory_order_release);
  // Publish the job, then wake sleepers. Sequentially consistent on both sides (a worker raises sleeping_ before
  // re-checking generation_) so a worker that is falling asleep either sees the new job or is notified.
  generation_.store(gen, std::memory_order_seq_cst);
  if (sleeping_.load(std::memory_order_seq_cst) > 0) {
    std::lock_guard<std::mutex> lock(mutex_);
    wake_.notify_all();
  }
  work(0, gen);
  while (done_.load(std::memory_order_acquire) < n_tasks) cpu_relax();
}

void ThreadPool::worker_main(int thread) {
  // Start from generation 0, not from a load: a WASM pthread may start running after the first job was already
  // published, and reading the counter here would make it wait for the job after that — a deadlock.
  uint32_t seen = 0;
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
    work(thread, seen);
  }
}

}  // namespace tw
