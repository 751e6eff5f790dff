// A fixed pool of worker threads and parallel_for over an index range.
// The calling thread works too; the first exception thrown by any chunk is rethrown to the caller.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace lowbit {

class ThreadPool {
 public:
  // threads = total workers including the caller; 0 means std::thread::hardware_concurrency().
  explicit ThreadPool(unsigned threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  unsigned size() const { return unsigned(workers_.size()) + 1; }

  // Calls body(begin, end) on disjoint chunks covering [0, count), each at most `grain` long
  // (0 picks a grain giving about 4 chunks per thread). Returns when all chunks are done.
  void parallel_for(int64_t count, int64_t grain, const std::function<void(int64_t, int64_t)>& body);

  // The process-wide pool, sized from LOWBIT_THREADS or the hardware.
  static ThreadPool& global();

 private:
  struct Job;
  void worker_loop();

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  Job* job_ = nullptr;
  uint64_t generation_ = 0;
  bool stopping_ = false;
};

// parallel_for on the global pool.
inline void parallel_for(int64_t count, int64_t grain, const std::function<void(int64_t, int64_t)>& body) {
  ThreadPool::global().parallel_for(count, grain, body);
}

}  // namespace lowbit
