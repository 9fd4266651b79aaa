// Splits [0, count) into `threads` contiguous blocks run on std::threads (no OpenMP: it
// would be a second runtime next to torch's). Returns 0, or 1 if any block threw or the
// blocks' bookkeeping could not be allocated. Nothing escapes: an exception leaving an
// extern "C" entry point would terminate the process.
#pragma once
#include <algorithm>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace lip_mmdet {

template <typename Body>
int parallel_blocks(int64_t count, int threads, Body body) {
  threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, count)));
  try {
    std::vector<std::exception_ptr> errors(threads);
    auto run = [&](int t) {
      try {
        body(count * t / threads, count * (t + 1) / threads);
      } catch (...) {
        errors[t] = std::current_exception();
      }
    };
    std::vector<std::thread> pool;
    pool.reserve(threads - 1);  // no reallocation below: a joinable thread is never moved
    for (int t = 1; t < threads; ++t) {
      try {
        pool.emplace_back(run, t);
      } catch (...) {
        run(t);  // no thread to spare (resource limit): this block runs here
      }
    }
    run(0);
    for (auto& th : pool) th.join();
    for (auto& e : errors)
      if (e) return 1;
    return 0;
  } catch (...) {
    return 1;
  }
}

}  // namespace lip_mmdet
