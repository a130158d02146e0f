// A persistent pool of worker threads for the CPU backend. Threads are created once (creating a WASM pthread
// costs tens of microseconds and, on the Node main thread, needs a pre-spawned worker) and then park between
// jobs: they spin briefly — a decode step issues a few hundred small jobs back to back — and then sleep on a
// condition variable so an idle model costs no CPU.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace tw {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);  // total threads including the caller
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return (int)workers_.size() + 1; }

  // Calls f(task, thread) for every task in [0, n_tasks), spread over the pool; returns when all are done.
  template <class F>
  void run(int n_tasks, F&& f) {
    if (n_tasks <= 0) return;
    if (n_tasks == 1 || workers_.empty()) {
      for (int i = 0; i < n_tasks; ++i) f(i, 0);
      return;
    }
    using Fn = typename std::remove_reference<F>::type;
    dispatch(n_tasks, [](void* ctx, int task, int thread) { (*(Fn*)ctx)(task, thread); }, (void*)&f);
  }

 private:
  using JobFn = void (*)(void* ctx, int task, int thread);
  void dispatch(int n_tasks, JobFn fn, void* ctx);
  void work(int thread, uint32_t gen);
  void worker_main(int thread);

  std::vector<std::thread> workers_;
  JobFn fn_ = nullptr;
  void* ctx_ = nullptr;
  std::atomic<int> n_tasks_{0};
  // (job generation << 32) | next task index. A worker claims a task with one compare-and-swap that also checks the
  // generation, so a worker that wakes late can never take a task of a later job.
  std::atomic<uint64_t> claim_{0};
  // Tasks finished in the current job. The caller waits for this — not for every worker to check in — so a worker
  // that the OS has descheduled (a shared or oversubscribed machine) costs nothing unless it holds a claimed task.
  std::atomic<int> done_{0};
  std::atomic<uint32_t> generation_{0};
  std::atomic<bool> stop_{false};
  std::atomic<int> sleeping_{0};
  std::mutex mutex_;
  std::condition_variable wake_;
};

}  // namespace tw
