// How a kernel call splits over threads: OpenMP's static shares (default) or the pool (pool.h), and
// only above a minimum of work.
#pragma once
#include <omp.h>

#include <atomic>

#include "pool.h"

namespace {

// Below this many multiply-adds a call stays on the calling thread: waking a peer costs 10-40 µs here
// (passive OpenMP waits, a busy machine), more than splitting SmolLM2's layer matmuls (30-100 µs of
// work) saves; its LM head (57 M) and larger models' matrices do split.
constexpr long kMinParallelWork = 4L << 20;
// The threshold in force (hg_set_threading may lower it: with the pool's spinning workers on a quiet
// machine a split pays from far fewer multiply-adds)
std::atomic<long> g_min_parallel_work{kMinParallelWork};

// Threads: OpenMP (libgomp, shared with torch: one static share per thread) by default, or the pool
// (pool.h: dynamic chunks, spinning workers). On this busy 2-core box OpenMP won (docs/benchmarks.md):
// a static share makes both threads run, where the pool's caller took most chunks itself.
std::atomic<int> g_use_openmp{1};

// f(c) for c in [0, n_chunks) on `threads` threads (the caller one of them).
template <class F>
void parallel_chunks(int n_chunks, int threads, F&& f) {
  if (threads <= 1 || n_chunks <= 1) {
    for (int c = 0; c < n_chunks; ++c) f(c);
  } else if (g_use_openmp.load(std::memory_order_relaxed)) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int c = 0; c < n_chunks; ++c) f(c);
  } else {
    hg::parallel_for(n_chunks, threads, f);
  }
}

}  // namespace
