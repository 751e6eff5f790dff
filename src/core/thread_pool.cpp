#include "lowbit/core/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <string>

namespace lowbit {
namespace {
// Set while a thread runs a chunk: a nested parallel_for then runs serially instead of deadlocking.
thread_local bool t_inside_job = false;
}  // namespace

// One parallel_for call: chunks are claimed through an atomic counter so fast threads take more.
struct ThreadPool::Job {
  const std::function<void(int64_t, int64_t)>* body;
  int64_t count;
  int64_t grain;
  std::atomic<int64_t> next{0};
  std::atomic<unsigned> active{0};
  std::mutex error_mutex;
  std::exception_ptr error;

  void run() {
    t_inside_job = true;
    struct Reset { ~Reset() { t_inside_job = false; } } reset;
    for (;;) {
      const int64_t begin = next.fetch_add(grain);
      if (begin >= count) return;
      try {
        (*body)(begin, std::min(count, begin + grain));
      } catch (...) {
        std::lock_guard lock(error_mutex);
        if (!error) error = std::current_exception();
        next.store(count);  // stop handing out chunks
      }
    }
  }
};

ThreadPool::ThreadPool(unsigned threads) {
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  for (unsigned i = 1; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::worker_loop() {
  uint64_t seen = 0;
  for (;;) {
    Job* job;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || (job_ && generation_ != seen); });
      if (stopping_) return;
      seen = generation_;
      job = job_;
      job->active.fetch_add(1);
    }
    job->run();
    {
      std::lock_guard lock(mutex_);
      job->active.fetch_sub(1);
    }
    wake_.notify_all();
  }
}

void ThreadPool::parallel_for(int64_t count, int64_t grain, const std::function<void(int64_t, int64_t)>& body) {
  if (count <= 0) return;
  if (grain <= 0) grain = std::max<int64_t>(1, count / (int64_t(size()) * 4));
  if (workers_.empty() || count <= grain || t_inside_job) {
    for (int64_t b = 0; b < count; b += grain) body(b, std::min(count, b + grain));
    return;
  }
  Job job;
  job.body = &body;
  job.count = count;
  job.grain = grain;
  {
    std::lock_guard lock(mutex_);
    job_ = &job;
    ++generation_;
  }
  wake_.notify_all();
  job.run();
  {
    // Retire the job: no worker may pick it up after this, and all that did must have finished.
    std::unique_lock lock(mutex_);
    job_ = nullptr;
    wake_.wait(lock, [&] { return job.active.load() == 0; });
  }
  if (job.error) std::rethrow_exception(job.error);
}

ThreadPool& ThreadPool::global() {
  static ThreadPool pool([] {
    const char* env = std::getenv("LOWBIT_THREADS");
    return env ? unsigned(std::max(0, std::atoi(env))) : 0u;
  }());
  return pool;
}

}  // namespace lowbit
