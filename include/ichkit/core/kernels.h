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
/// a sequence of `out += w[q] * rows[q]` passes over a zeroed buffer gives - in blocks of 64
/// voxels held in eight 8-float registers (GNU vector extension: one AVX register each in the
/// AVX2 clone, two SSE registers in the baseline). Eight independent sums hide the latency of
/// the additions, which with two 8-float sums per block (16 voxels) waited on each other. What
/// is left after the blocks goes 8 voxels at a time, then one at a time: every voxel's sum is the
/// same products added in the same order, so the result does not depend on which path took it.
/// A 1D convolution is rows[q] = line + q. `out` must not overlap the rows.
ICHKIT_AVX2_CLONE inline void weighted_sum(float* __restrict out, const float* const* rows, const float* w, int taps,
                                           std::size_t n) {
  typedef float v8 __attribute__((vector_size(32)));
  constexpr std::size_t V = 8, B = 8 * V;
  std::size_t x0 = 0;
  for (; x0 + B <= n; x0 += B) {
    v8 acc[V];
    for (std::size_t v = 0; v < V; ++v) acc[v] = v8{};
    for (int q = 0; q < taps; ++q) {
      const float* r = rows[q] + x0;
      const v8 wq = v8{} + w[q];
      for (std::size_t v = 0; v < V; ++v) {
        v8 t;
        __builtin_memcpy(&t, r + 8 * v, sizeof t);  // unaligned load
        acc[v] += wq * t;
      }
    }
    __builtin_memcpy(out + x0, acc, sizeof acc);
  }
  // the rest in single 8-float sums (a 162-voxel row leaves 34 after its two blocks), then one by one
  for (; x0 + V <= n; x0 += V) {
    v8 acc = v8{};
    for (int q = 0; q < taps; ++q) {
      v8 t;
      __builtin_memcpy(&t, rows[q] + x0, sizeof t);
      acc += (v8{} + w[q]) * t;
    }
    __builtin_memcpy(out + x0, &acc, sizeof acc);
  }
  for (std::size_t x = x0; x < n; ++x) {
    float acc = 0;
    for (int q = 0; q < taps; ++q) acc += w[q] * rows[q][x];
    out[x] = acc;
  }
}

}  // namespace ichkit::detail
