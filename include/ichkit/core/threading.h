#pragma once
/// \file threading.h
/// Thread count used by ichkit's compute kernels (OpenMP) and, once the model module is
/// linked, by LibTorch's intra-op pool. Defaults to $OMP_NUM_THREADS where set, otherwise to
/// the cores this process may use (cores.h: its CPU affinity within its cgroup's CPU quota).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "ichkit/core/cores.h"
#include "ichkit/core/error.h"

namespace ichkit {
namespace detail {
inline std::atomic<int>& thread_count() {
  static std::atomic<int> n{default_num_threads()};
  return n;
}
inline std::vector<std::function<void(int)>>& thread_hooks() {
  static std::vector<std::function<void(int)>> hooks;
  return hooks;
}
inline std::mutex& thread_hooks_mutex() {
  static std::mutex m;
  return m;
}
inline int& thread_cap() {
  thread_local int cap = 0;  // 0: no cap on this thread
  return cap;
}
}  // namespace detail

/// Number of threads compute kernels use (>= 1): set_num_threads's number, or less on a thread
/// inside a ThreadCap.
inline int num_threads() {
  const int n = detail::thread_count().load(), cap = detail::thread_cap();
  return cap > 0 ? std::min(n, cap) : n;
}

/// While it lives, ichkit's kernels called from this thread use at most `n` threads (n <= 0:
/// no cap). For work that runs beside other work, such as a cohort's reader threads, which
/// preprocess while the network runs: one thread each keeps the cores from being
/// oversubscribed. Caps nest; LibTorch's own pool is not affected.
class ThreadCap {
public:
  explicit ThreadCap(int n) : previous_(detail::thread_cap()) { detail::thread_cap() = n > 0 ? n : 0; }
  ~ThreadCap() { detail::thread_cap() = previous_; }
  ThreadCap(const ThreadCap&) = delete;
  ThreadCap& operator=(const ThreadCap&) = delete;

private:
  int previous_;
};

/// Set the number of threads every kernel uses; `n <= 0` means the default
/// (default_num_threads(): $OMP_NUM_THREADS, otherwise the cores this process may use); more
/// than kMaxThreads (1024) is an InvalidArgument.
/// Also forwards the number to registered back-ends (LibTorch's pool in the compiled library).
inline void set_num_threads(int n) {
  if (n > kMaxThreads)
    throw InvalidArgument("set_num_threads: at most " + std::to_string(kMaxThreads) + " threads, got " + std::to_string(n));
  if (n <= 0) n = default_num_threads();
  detail::thread_count().store(n);
  std::lock_guard<std::mutex> lock(detail::thread_hooks_mutex());
  for (auto& hook : detail::thread_hooks()) hook(n);
}

/// Register a callback told of every thread-count change (used to keep LibTorch in step).
inline void on_num_threads_changed(std::function<void(int)> hook) {
  std::lock_guard<std::mutex> lock(detail::thread_hooks_mutex());
  hook(num_threads());
  detail::thread_hooks().push_back(std::move(hook));
}

/// Run `fn(begin, end)` over [0, n) in contiguous chunks on num_threads() threads.
/// Exceptions thrown by `fn` are rethrown in the caller (the first one wins).
template <class Fn>
void parallel_for(std::int64_t n, Fn&& fn, std::int64_t grain = 1) {
  if (n <= 0) return;
  const int threads = static_cast<int>(std::min<std::int64_t>(num_threads(), std::max<std::int64_t>(1, n / std::max<std::int64_t>(1, grain))));
  if (threads <= 1) {
    fn(std::int64_t{0}, n);
    return;
  }
  std::exception_ptr error;
  std::mutex error_mutex;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    const int nt = omp_get_num_threads();
#else
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back([&, t] {
    const int nt = threads;
#endif
    const std::int64_t b = n * t / nt, e = n * (t + 1) / nt;
    try {
      if (b < e) fn(b, e);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
    }
#ifdef _OPENMP
  }
#else
  });
  for (auto& th : pool) th.join();
#endif
  if (error) std::rethrow_exception(error);
}

}  // namespace ichkit
