#pragma once
/// \file kernels.h
/// Small vector kernels shared by the filters (internal; namespace ichkit::detail), and the
/// function multi-versioning they use. Debian builds for baseline x86-64 (SSE2); a function
/// marked ICHKIT_AVX2_CLONE is compiled twice, for AVX2 and for the baseline, and the loader
/// picks the one the CPU runs. Both clones do the same operations in the same order (AVX2
/// without FMA contraction), so their results are bit-identical. GCC only: other compilers
/// get the baseline code.
#include <cstddef>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define ICHKIT_AVX2_CLONE __attribute__((target_clones("avx2", "default")))
#else
#define ICHKIT_AVX2_CLONE
#endif

namespace ichkit::detail {

/// out[x] = sum over q of w[q] * rows[q][x], accumulated from 0 in q order - bit for bit what
/// a sequence of `out += w[q] * rows[q]` passes over a zeroed buffer gives - in blocks of 16
/// voxels held in registers. A 1D convolution is rows[q] = line + q. `out` must not overlap
/// the rows.
ICHKIT_AVX2_CLONE inline void weighted_sum(float* __restrict out, const float* const* rows, const float* w, int taps,
                                           std::size_t n) {
  constexpr std::size_t B = 16;
  std::size_t x0 = 0;
  for (; x0 + B <= n; x0 += B) {
    float acc[B] = {};
    for (int q = 0; q < taps; ++q) {
      const float* r = rows[q] + x0;
      const float wq = w[q];
      for (std::size_t t = 0; t < B; ++t) acc[t] += wq * r[t];
    }
    for (std::size_t t = 0; t < B; ++t) out[x0 + t] = acc[t];
  }
  for (std::size_t x = x0; x < n; ++x) {
    float acc = 0;
    for (int q = 0; q < taps; ++q) acc += w[q] * rows[q][x];
    out[x] = acc;
  }
}

}  // namespace ichkit::detail
