// A small worker pool for the kernels: chunks handed out dynamically (an atomic counter), so a worker
// that the OS has not scheduled yet costs nothing — the caller takes its chunks — and the caller waits
// only for chunks already started. Workers spin briefly between jobs (the gaps inside one decode step
// are microseconds), then sleep on a condition variable (the gaps between steps are milliseconds).
// libgomp's passive waits instead pay a futex wake-up per parallel region and wait for every thread.
#pragma once
#include <immintrin.h>
#include <stdint.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace hg {

class Pool {
 public:
  using Fn = void (*)(void*, int);

  // fn(ctx, c) for c in [0, n_chunks) on the caller and up to `workers` pool threads.
  void run(int n_chunks, int workers, Fn fn, void* ctx) {
    grow(workers);
    fn_.store(fn, std::memory_order_relaxed);
    ctx_.store(ctx, std::memory_order_relaxed);
    n_chunks_.store(n_chunks, std::memory_order_relaxed);
    allowed_.store(workers, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    const uint64_t gen = (state_.load(std::memory_order_relaxed) >> 32) + 1;
    state_.store(gen << 32, std::memory_order_seq_cst);  // publishes the fields above
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> lock(mutex_);
      wake_.notify_all();
    }
    int mine = work(gen);
    // Only chunks already started remain: short, unless the OS preempted their thread — then yield,
    // so that on a busy machine it may run on this core instead of waiting for its own slot.
    for (int i = 0; done_.load(std::memory_order_acquire) + mine < n_chunks; ++i) {
      if (i < 2048) {
        _mm_pause();
      } else {
        std::this_thread::yield();
      }
    }
  }

  void set_spin_us(int us) { spin_us_.store(us < 0 ? 0 : us, std::memory_order_relaxed); }

 private:
  // Take and run chunks of job `gen` until none is left; returns how many this thread ran.
  int work(uint64_t gen) {
    int ran = 0;
    for (;;) {
      uint64_t s = state_.load(std::memory_order_acquire);
      if ((s >> 32) != gen) return ran;
      const int c = static_cast<int>(s & 0xffffffffu);
      if (c >= n_chunks_.load(std::memory_order_relaxed)) return ran;
      if (!state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) continue;
      fn_.load(std::memory_order_relaxed)(ctx_.load(std::memory_order_relaxed), c);
      ++ran;
    }
  }

  void grow(int workers) {
    while (static_cast<int>(threads_) < workers) {
      const int id = static_cast<int>(threads_++);
      std::thread([this, id] { loop(id); }).detach();  // the pool lives as long as the process
    }
  }

  void loop(int id) {
    uint64_t seen = state_.load(std::memory_order_acquire) >> 32;
    for (;;) {
      uint64_t gen = wait_for_job(seen);
      seen = gen;
      if (id >= allowed_.load(std::memory_order_relaxed)) continue;
      int ran = work(gen);
      if (ran) done_.fetch_add(ran, std::memory_order_acq_rel);
    }
  }

  uint64_t wait_for_job(uint64_t seen) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us_.load());
    for (int i = 0;; ++i) {
      uint64_t gen = state_.load(std::memory_order_acquire) >> 32;
      if (gen != seen) return gen;
      _mm_pause();
      if ((i & 255) == 255) {
        if (std::chrono::steady_clock::now() > until) break;
        std::this_thread::yield();  // a busy machine's other threads (ours included) come first
      }
    }
    std::unique_lock<std::mutex> lock(mutex_);
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    wake_.wait(lock, [&] { return (state_.load(std::memory_order_seq_cst) >> 32) != seen; });
    sleepers_.fetch_sub(1, std::memory_order_relaxed);
    return state_.load(std::memory_order_acquire) >> 32;
  }

  std::atomic<uint64_t> state_{0};  // generation << 32 | next chunk
  std::atomic<Fn> fn_{nullptr};
  std::atomic<void*> ctx_{nullptr};
  std::atomic<int> n_chunks_{0}, allowed_{0}, done_{0}, sleepers_{0}, spin_us_{200};
  std::atomic<unsigned> threads_{0};
  std::mutex mutex_;
  std::condition_variable wake_;
};

inline Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: its detached threads may outlive static destructors
  return *p;
}

// f(c) for c in [0, n_chunks) on `threads` threads (the caller one of them).
template <class F>
void parallel_for(int n_chunks, int threads, F&& f) {
  if (threads <= 1 || n_chunks <= 1) {
    for (int c = 0; c < n_chunks; ++c) f(c);
    return;
  }
  pool().run(n_chunks, threads - 1, [](void* ctx, int c) { (*static_cast<std::remove_reference_t<F>*>(ctx))(c); },
             &f);
}

}  // namespace hg
