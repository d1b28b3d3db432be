#include "ichkit/core/kernels.h"
#include "ichkit/core/value_stats.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <cstring>
#include <random>
#include <vector>

#include "test_common.h"

namespace {

// What weighted_sum promises to equal bit for bit: `out += w[q] * rows[q]` passes over a zeroed
// buffer, one tap after the other. The product goes through a volatile so that no compiler
// fuses it with the addition (weighted_sum's clones never do).
std::vector<float> passes(const std::vector<const float*>& rows, const std::vector<float>& w, std::size_t n) {
  std::vector<float> out(n, 0.0f);
  for (std::size_t q = 0; q < w.size(); ++q)
    for (std::size_t x = 0; x < n; ++x) {
      volatile float p = w[q] * rows[q][x];
      out[x] += p;
    }
  return out;
}

}  // namespace

TEST_CASE("kernels: weighted_sum equals tap-by-tap passes bit for bit, across block boundaries") {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> value(-1000.0f, 1000.0f), weight(-0.5f, 1.5f);
  // 64-voxel blocks, then 8-voxel sums, then a scalar tail: sizes around all three (162: two
  // blocks, four 8-sums and 2 voxels, a row of the 1 x 1 x 5 mm grid the skull strip smooths)
  for (std::size_t n : {0u, 1u, 7u, 8u, 9u, 63u, 64u, 65u, 71u, 72u, 79u, 130u, 162u, 511u}) {
    for (int taps : {1, 3, 15, 31}) {
      CAPTURE(n);
      CAPTURE(taps);
      std::vector<float> w(static_cast<std::size_t>(taps));
      for (float& x : w) x = weight(rng);
      // separate rows (a j pass) and shifted views of one padded line (an i pass)
      std::vector<std::vector<float>> own(w.size(), std::vector<float>(n + 1));
      std::vector<float> line(n + w.size());
      for (auto& r : own)
        for (float& x : r) x = value(rng);
      for (float& x : line) x = value(rng);
      std::vector<const float*> rows_own, rows_line;
      for (std::size_t q = 0; q < w.size(); ++q) {
        rows_own.push_back(own[q].data());
        rows_line.push_back(line.data() + q);
      }
      for (const auto* rows : {&rows_own, &rows_line}) {
        const std::vector<float> want = passes(*rows, w, n);
        std::vector<float> got(n + 1, -7.0f);  // one guard voxel past the end
        ichkit::detail::weighted_sum(got.data(), rows->data(), w.data(), taps, n);
        // bit for bit (memcmp would be handed want's null data() when n is 0)
        bool same = true;
        for (std::size_t x = 0; x < n; ++x) {
          std::uint32_t a = 0, b = 0;
          std::memcpy(&a, &got[x], sizeof a);
          std::memcpy(&b, &want[x], sizeof b);
          same = same && a == b;
        }
        CHECK(same);
        CHECK(got[n] == -7.0f);
      }
    }
  }
}

TEST_CASE("value_stats: NaN count, min and max over several chunks and a ragged tail, as a plain loop gives") {
  std::mt19937 rng(5);
  std::normal_distribution<float> d(0.0f, 300.0f);
  for (const std::size_t n : {std::size_t(0), std::size_t(7), std::size_t(1000003)}) {
    std::vector<float> x(n);
    for (float& v : x) v = d(rng);
    for (std::size_t i = 3; i < n; i += 9973) x[i] = std::numeric_limits<float>::quiet_NaN();
    if (n > 600000) x[600001] = -std::numeric_limits<float>::infinity();
    const ichkit::ValueStats want = ichkit::test::plain_value_stats(x.data(), n);
    const ichkit::ValueStats st = ichkit::value_stats(x.data(), n);
    CAPTURE(n);
    CHECK(st.nan == want.nan);
    CHECK(st.lo == want.lo);
    CHECK(st.hi == want.hi);
  }
}

TEST_CASE("value_stats_serial: every lane and the tail, NaN and infinities in each position, as a plain loop gives") {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (std::size_t n = 1; n <= 19; ++n)
    for (std::size_t at = 0; at < n; ++at)
      for (const float special : {nan, inf, -inf, -5000.0f, 5000.0f}) {
        std::vector<float> x(n);
        for (std::size_t i = 0; i < n; ++i) x[i] = static_cast<float>((i * 37) % 11) - 5.0f;
        x[at] = special;
        if (n > 3) x[(at + 3) % n] = nan;  // a second NaN elsewhere
        const ichkit::ValueStats want = ichkit::test::plain_value_stats(x.data(), n);
        const ichkit::ValueStats st = ichkit::value_stats_serial(x.data(), n);
        CAPTURE(n);
        CAPTURE(at);
        CAPTURE(special);
        CHECK(st.nan == want.nan);
        CHECK(st.lo == want.lo);
        CHECK(st.hi == want.hi);
      }
  // all NaN: lo and hi stay at +inf and -inf
  const std::vector<float> all(13, nan);
  const ichkit::ValueStats st = ichkit::value_stats_serial(all.data(), all.size());
  CHECK(st.nan == 13);
  CHECK(st.lo == inf);
  CHECK(st.hi == -inf);
}
