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

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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

/// The stats of x[0..n) on the calling thread. On x86-64 two SSE2 lanes of four: minps/maxps
/// keep their second operand when the first is NaN, which is exactly `v < lo ? v : lo` (a NaN
/// never becomes lo or hi), and the unordered compare counts the NaN. GCC does not vectorise the
/// scalar form (the NaN count defeats it): it ran at 1.2 ns a value, 10 ms of a 512x512x32 scan's
/// read; this runs at 0.2-0.3 ns. Called on a block that is still in cache.
inline ValueStats value_stats_serial(const float* x, std::size_t n) {
  ValueStats p;
  std::size_t i = 0;
#if defined(__SSE2__)
  while (i + 8 <= n) {
    // the per-lane counts are 32-bit: fold them into the result every 2^30 groups
    const std::size_t stop = i + std::min<std::size_t>((n - i) / 8, std::size_t(1) << 30) * 8;
    __m128 lo0 = _mm_set1_ps(p.lo), lo1 = lo0, hi0 = _mm_set1_ps(p.hi), hi1 = hi0;
    __m128i nan0 = _mm_setzero_si128(), nan1 = nan0;
    for (; i < stop; i += 8) {
      const __m128 a = _mm_loadu_ps(x + i), b = _mm_loadu_ps(x + i + 4);
      lo0 = _mm_min_ps(a, lo0);
      lo1 = _mm_min_ps(b, lo1);
      hi0 = _mm_max_ps(a, hi0);
      hi1 = _mm_max_ps(b, hi1);
      nan0 = _mm_sub_epi32(nan0, _mm_castps_si128(_mm_cmpunord_ps(a, a)));  // all-ones = -1
      nan1 = _mm_sub_epi32(nan1, _mm_castps_si128(_mm_cmpunord_ps(b, b)));
    }
    alignas(16) float lo[8], hi[8];
    alignas(16) std::uint32_t nan[8];
    _mm_store_ps(lo, lo0), _mm_store_ps(lo + 4, lo1), _mm_store_ps(hi, hi0), _mm_store_ps(hi + 4, hi1);
    _mm_store_si128(reinterpret_cast<__m128i*>(nan), nan0);
    _mm_store_si128(reinterpret_cast<__m128i*>(nan + 4), nan1);
    for (int l = 0; l < 8; ++l) {
      p.lo = std::min(p.lo, lo[l]);
      p.hi = std::max(p.hi, hi[l]);
      p.nan += nan[l];
    }
  }
#endif
  for (; i < n; ++i) {
    p.nan += x[i] != x[i];
    p.lo = x[i] < p.lo ? x[i] : p.lo;
    p.hi = x[i] > p.hi ? x[i] : p.hi;
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
