#pragma once
/// \file value_stats.h
/// One pass over a float buffer: how many NaN, and the smallest and largest other value
/// (infinities included). Shared by the model's HU check (preprocess::check_hu), the NIfTI
/// reader (which gathers them while it converts, io::read with a ValueStats) and `ichkit info`.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "ichkit/core/threading.h"

namespace ichkit {

struct ValueStats {
  std::size_t nan = 0;
  float lo = std::numeric_limits<float>::infinity();   ///< +inf when every value is NaN (or n == 0)
  float hi = -std::numeric_limits<float>::infinity();  ///< -inf likewise

  /// Fold in the stats of other values (of the same buffer: a chunk's).
  ValueStats& merge(const ValueStats& o) {
    nan += o.nan;
    lo = std::min(lo, o.lo);
    hi = std::max(hi, o.hi);
    return *this;
  }
};

/// The stats of x[0..n) on the calling thread: eight independent lanes, so the compiler keeps
/// the minima, maxima and counts in vector registers (NaN compares false: it never becomes lo
/// or hi). Called on a block that is still in cache, it costs next to nothing.
inline ValueStats value_stats_serial(const float* x, std::size_t n) {
  constexpr int L = 8;
  float lo[L], hi[L];
  std::uint32_t nan[L];
  for (int l = 0; l < L; ++l) lo[l] = ValueStats{}.lo, hi[l] = ValueStats{}.hi, nan[l] = 0;
  // the per-lane counts are 32-bit: fold them into the result every 2^30 groups
  ValueStats p;
  std::size_t i = 0;
  while (i + L <= n) {
    const std::size_t stop = i + std::min<std::size_t>((n - i) / L, std::size_t(1) << 30) * L;
    for (; i < stop; i += L)
      for (int l = 0; l < L; ++l) {
        const float v = x[i + static_cast<std::size_t>(l)];
        lo[l] = v < lo[l] ? v : lo[l];
        hi[l] = v > hi[l] ? v : hi[l];
        nan[l] += v != v;
      }
    for (int l = 0; l < L; ++l) p.nan += nan[l], nan[l] = 0;
  }
  for (; i < n; ++i) {
    p.nan += x[i] != x[i];
    p.lo = x[i] < p.lo ? x[i] : p.lo;
    p.hi = x[i] > p.hi ? x[i] : p.hi;
  }
  for (int l = 0; l < L; ++l) {
    p.lo = std::min(p.lo, lo[l]);
    p.hi = std::max(p.hi, hi[l]);
  }
  return p;
}

/// The stats of x[0..n), in chunks on the kernel threads.
inline ValueStats value_stats(const float* x, std::size_t n) {
  constexpr std::size_t chunk = std::size_t(1) << 18;
  const std::size_t chunks = (n + chunk - 1) / chunk;
  std::vector<ValueStats> parts(chunks);
  parallel_for(static_cast<std::int64_t>(chunks), [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t c = b; c < e; ++c) {
      const std::size_t first = static_cast<std::size_t>(c) * chunk, last = std::min(n, first + chunk);
      parts[static_cast<std::size_t>(c)] = value_stats_serial(x + first, last - first);
    }
  });
  ValueStats all;
  for (const ValueStats& p : parts) all.merge(p);
  return all;
}

}  // namespace ichkit
