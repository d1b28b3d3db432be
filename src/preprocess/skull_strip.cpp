/// \file skull_strip.cpp
/// CT skull stripping (see skull_strip.h for the steps and the reasons behind them).
#include "ichkit/preprocess/skull_strip.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "ichkit/core/error.h"
#include "ichkit/core/kernels.h"
#include "ichkit/core/threading.h"
#include "ichkit/preprocess/crop.h"
#include "ichkit/preprocess/resample.h"
#include "ichkit/quant/components.h"

#ifdef ICHKIT_SKULL_STRIP_TRACE
#include <chrono>
#include <cstdio>
#endif

namespace ichkit::preprocess {
namespace {

using detail::Edge;
using detail::filter_ij;

using ichkit::detail::number_text;

#ifdef ICHKIT_SKULL_STRIP_TRACE
struct Trace {
  std::chrono::steady_clock::time_point t = std::chrono::steady_clock::now();
  void operator()(const char* what) {
    const auto now = std::chrono::steady_clock::now();
    std::fprintf(stderr, "  skull_strip %-22s %7.1f ms\n", what, std::chrono::duration<double, std::milli>(now - t).count());
    t = now;
  }
};
#else
struct Trace {
  void operator()(const char*) {}
};
#endif

/// Normalised Gaussian kernel of `sigma` voxels, radius ceil(3 sigma).
std::vector<float> gaussian_kernel(double sigma) {
  const int r = std::max(1, static_cast<int>(std::ceil(3 * sigma)));
  std::vector<float> w(2 * r + 1);
  double sum = 0;
  for (int t = -r; t <= r; ++t) sum += std::exp(-0.5 * t * t / (sigma * sigma));
  for (int t = -r; t <= r; ++t) w[t + r] = static_cast<float>(std::exp(-0.5 * t * t / (sigma * sigma)) / sum);
  return w;
}

/// out[x] = lo <= s[x] <= hi (and m[x] != 0 when m is given); NaN is outside.
ICHKIT_AVX2_CLONE void band_mask(const float* __restrict s, const std::uint8_t* __restrict m, float lo, float hi,
                                 std::uint8_t* __restrict out, std::size_t n) {
  if (m)
    for (std::size_t x = 0; x < n; ++x) out[x] = static_cast<std::uint8_t>((s[x] >= lo) & (s[x] <= hi) & (m[x] != 0));
  else
    for (std::size_t x = 0; x < n; ++x) out[x] = static_cast<std::uint8_t>((s[x] >= lo) & (s[x] <= hi));
}

/// Separable Gaussian smoothing with sigma_mm along each axis (edges: nearest voxel). Axes
/// whose sigma is below 0.25 voxel are not smoothed.
Volume<float> gaussian_smooth(const Volume<float>& in, double sigma_mm) {
  const Eigen::Vector3d sp = in.spacing();
  const std::size_t ni = in.ni(), nj = in.nj(), nk = in.nk(), nij = ni * nj;
  const bool si = sigma_mm / sp[0] >= 0.25, sj = sigma_mm / sp[1] >= 0.25, sk = sigma_mm / sp[2] >= 0.25;
  const std::vector<float> wi = si ? gaussian_kernel(sigma_mm / sp[0]) : std::vector<float>{1.0f};
  const std::vector<float> wj = sj ? gaussian_kernel(sigma_mm / sp[1]) : std::vector<float>{1.0f};
  const std::vector<float> wk = sk ? gaussian_kernel(sigma_mm / sp[2]) : std::vector<float>{1.0f};
  const int rk = static_cast<int>(wk.size() / 2);
  Volume<float> out = Volume<float>::uninitialized(in.shape(), in.geometry());
  float* dst = out.data();
  filter_ij(in.data(), dst, in.shape(), wi, wj, Edge::Nearest);  // i and j within each slice
  if (rk == 0) return out;
  Volume<float> out2 = Volume<float>::uninitialized(in.shape(), in.geometry());
  float* d2 = out2.data();
  parallel_for(static_cast<std::int64_t>(nk), [&](std::int64_t b, std::int64_t e) {
    std::vector<const float*> rows_k(2 * rk + 1);
    for (std::int64_t k = b; k < e; ++k) {
      for (int q = -rk; q <= rk; ++q) {
        const std::int64_t kk = std::clamp<std::int64_t>(k + q, 0, static_cast<std::int64_t>(nk) - 1);
        rows_k[q + rk] = dst + kk * nij;
      }
      ichkit::detail::weighted_sum(d2 + k * nij, rows_k.data(), wk.data(), 2 * rk + 1, nij);
    }
  });
  return out2;
}

/// out[x] = b[x] && h[x] < bone && s[x] >= floor (NaN: 0), without branches.
ICHKIT_AVX2_CLONE void restore_mask(const std::uint8_t* __restrict b, const float* __restrict h, const float* __restrict s,
                                    float bone, float floor, std::uint8_t* __restrict out, std::size_t n) {
  for (std::size_t x = 0; x < n; ++x) out[x] = static_cast<std::uint8_t>((b[x] != 0) & (h[x] < bone) & (s[x] >= floor));
}

/// cand[i] = 1 where row m is 0 and a 6-neighbour is set (rows up/down/below/above may be
/// null at the volume's edge).
ICHKIT_AVX2_CLONE void candidates(const std::uint8_t* m, const std::uint8_t* up, const std::uint8_t* down,
                                  const std::uint8_t* below, const std::uint8_t* above, std::uint8_t* cand, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) cand[i] = 0;
  auto join = [&](const std::uint8_t* r) {
    if (r)
      for (std::size_t i = 0; i < n; ++i) cand[i] |= r[i];
  };
  join(up);
  join(down);
  join(below);
  join(above);
  for (std::size_t i = 1; i < n; ++i) cand[i] |= m[i - 1];
  for (std::size_t i = 0; i + 1 < n; ++i) cand[i] |= m[i + 1];
  for (std::size_t i = 0; i < n; ++i) cand[i] = cand[i] && !m[i];
}

/// fn(first voxel, voxel count) over slabs of whole k-slices, in parallel.
template <class Fn>
void over_slabs(std::size_t nk, std::size_t nij, Fn&& fn) {
  parallel_for(static_cast<std::int64_t>(nk), [&](std::int64_t b, std::int64_t e) {
    fn(static_cast<std::size_t>(b) * nij, static_cast<std::size_t>(e - b) * nij);
  });
}

bool any_set(const Volume<std::uint8_t>& m) {
  return std::any_of(m.data(), m.data() + m.size(), [](std::uint8_t v) { return v != 0; });
}

void check_options(const Volume<float>& hu, const SkullStripOptions& o) {
  if (hu.empty()) throw InvalidArgument("skull_strip: empty volume");
  auto finite = [](double v) { return std::isfinite(v); };
  if (!finite(o.brain_min_hu) || !finite(o.brain_max_hu) || !(o.brain_min_hu < o.brain_max_hu))
    throw InvalidArgument("skull_strip: need finite brain_min_hu < brain_max_hu (got " + std::to_string(o.brain_min_hu) +
                          ", " + std::to_string(o.brain_max_hu) + ")");
  if (!finite(o.bone_hu) || o.bone_hu <= o.brain_min_hu)
    throw InvalidArgument("skull_strip: bone_hu must be finite and above brain_min_hu");
  // the smoothing's cost grows with its width (1e6 mm would run for hours); 50 mm is far past use
  if (!finite(o.smooth_sigma_mm) || o.smooth_sigma_mm < 0 || o.smooth_sigma_mm > 50)
    throw InvalidArgument("skull_strip: smooth_sigma_mm must be within [0, 50] mm (got " + number_text(o.smooth_sigma_mm) + ")");
  // a head is under 250 mm across: an erosion of 500 mm leaves nothing of any head
  if (!finite(o.opening_mm) || o.opening_mm < 0 || o.opening_mm > 500)
    throw InvalidArgument("skull_strip: opening_mm must be within [0, 500] mm (got " + number_text(o.opening_mm) + ")");
  if (std::isnan(o.rim_max_hu)) throw InvalidArgument("skull_strip: rim_max_hu must not be NaN");
  if (!finite(o.blood_min_hu) || o.blood_min_hu >= o.brain_max_hu)
    throw InvalidArgument("skull_strip: blood_min_hu must be finite and below brain_max_hu");
  if (!finite(o.blood_core_mm) || o.blood_core_mm < 0 || o.blood_core_mm > 500)
    throw InvalidArgument("skull_strip: blood_core_mm must be within [0, 500] mm (got " + number_text(o.blood_core_mm) + ")");
  if (!finite(o.blood_core_min_ml) || o.blood_core_min_ml < 0)
    throw InvalidArgument("skull_strip: blood_core_min_ml must be finite and >= 0");
  if (!finite(o.blood_rim_fraction) || o.blood_rim_fraction <= 0 || o.blood_rim_fraction > 0.5)
    throw InvalidArgument("skull_strip: blood_rim_fraction must be within (0, 0.5]");
}

}  // namespace

Volume<std::uint8_t> skull_strip(const Volume<float>& hu, const SkullStripOptions& o) {
  check_options(hu, o);
  Trace trace;
  const std::size_t ni = hu.ni(), nj = hu.nj(), nk = hu.nk(), nij = ni * nj;
  const float* H = hu.data();
  const float lo = o.brain_min_hu, hi = o.brain_max_hu, bone = o.bone_hu;
  const float fat_air = lo - 30.0f;  // below this (smoothed) a voxel is fat or air, not CSF

  // 1-2. smooth, soft tissue
  const Volume<float> smooth = o.smooth_sigma_mm > 0 ? gaussian_smooth(hu, o.smooth_sigma_mm) : hu;
  const float* S = smooth.data();
  trace("smooth");
  Volume<std::uint8_t> soft = Volume<std::uint8_t>::uninitialized(hu.shape(), hu.geometry());
  over_slabs(nk, nij, [&](std::size_t x, std::size_t n) { band_mask(S + x, nullptr, lo, hi, soft.data() + x, n); });
  trace("threshold");

  // 3. erosion + largest component: the brain's core, cut from scalp, face and neck
  const Volume<std::uint8_t> core = quant::largest_component(quant::binary_erode(soft, o.opening_mm), 6);
  trace("erode + largest");
  if (!any_set(core))
    throw InvalidArgument("skull_strip: no intracranial soft tissue found (is the volume a head CT in HU? is opening_mm = " +
                          number_text(o.opening_mm) + " mm too large for it?)");

  // 4. restore the outline on the unsmoothed scan, within reach of the core
  const double reach = o.opening_mm + 2 * o.smooth_sigma_mm;
  const Volume<std::uint8_t> band = quant::binary_dilate(core, reach);
  trace("dilate");
  const std::uint8_t* B = band.data();
  Volume<std::uint8_t> outline = Volume<std::uint8_t>::uninitialized(hu.shape(), hu.geometry());
  over_slabs(nk, nij, [&](std::size_t x, std::size_t n) { restore_mask(B + x, H + x, S + x, bone, fat_air, outline.data() + x, n); });
  Volume<std::uint8_t> brain = quant::largest_component(outline, 6);
  trace("restore + largest");

  // 5. enclosed holes: ventricles, calcifications, blood
  brain = quant::fill_holes(brain, 6);
  trace("fill holes");

  // 6. partial-volume rim: 6-neighbours of the mask that are less than half bone by their HU,
  // v < (mean HU of their neighbours in the mask + brightest HU of their 3x3x3) / 2, up to
  // rim_max_hu. 7. Next to a bleed (a neighbour in the mask within reach of a hyperdense core)
  // the cap is lifted and a voxel joins when at least blood_rim_fraction of it is blood.
  if (!(o.rim_max_hu > bone)) return brain;
  const std::uint8_t* M = brain.data();
  Volume<std::uint8_t> zone;
  if (o.blood_core_mm > 0) {
    const float blo = o.blood_min_hu;
    Volume<std::uint8_t> dense = Volume<std::uint8_t>::uninitialized(hu.shape(), hu.geometry());
    std::uint8_t* D = dense.data();
    over_slabs(nk, nij, [&](std::size_t x, std::size_t n) { band_mask(S + x, M + x, blo, hi, D + x, n); });
    // A core voxel is hyperdense in the slices above and below too: brain that shares thick
    // slices with bone at the vertex or the skull base (a few per cent bone lifts it to
    // 50..100 HU) has bone above or below it; a bleed against the side of the skull has blood
    // there. Cores lie inside the components of these voxels, so components smaller than a
    // core may be are dropped first, and the erosion runs only around the rest: the same cores
    // for a fraction of the cost.
    const Eigen::Vector3d sp = hu.spacing();
    const double voxel_ml = sp[0] * sp[1] * sp[2] / 1000.0;
    const auto min_voxels = static_cast<std::size_t>(std::ceil(o.blood_core_min_ml / voxel_ml));
    Volume<std::uint8_t> stacked3 = Volume<std::uint8_t>::uninitialized(hu.shape(), hu.geometry());
    parallel_for(static_cast<std::int64_t>(nk), [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t k = b; k < e; ++k) {
        std::uint8_t* out = stacked3.data() + k * nij;
        if (k == 0 || k + 1 == static_cast<std::int64_t>(nk)) {
          std::fill(out, out + nij, std::uint8_t{0});
          continue;
        }
        const std::uint8_t *below = D + (k - 1) * nij, *here = D + k * nij, *above = D + (k + 1) * nij;
        for (std::size_t x = 0; x < nij; ++x) out[x] = below[x] & here[x] & above[x];
      }
    });
    const Volume<std::uint8_t> stacked = quant::remove_small_components(stacked3, min_voxels, 26);
    if (any_set(stacked)) {
      // One box holds all of it: the erosion's neighbourhood of every possible core voxel and
      // the zone around the cores - within `reach` of a core in its slice, and one slice above
      // or below that. A bleed is small next to the head.
      const double reach = o.blood_core_mm + 2 * o.smooth_sigma_mm + 1.0;  // > blood_core_mm
      auto [lo, hi_box] = bounding_box(stacked, [](std::uint8_t v) { return v != 0; });
      for (int a = 0; a < 3; ++a) {
        const auto margin = static_cast<std::int64_t>(std::ceil(reach / sp[a])) + (a == 2 ? 1 : 0);
        lo[a] = std::max<std::int64_t>(0, lo[a] - margin);
        hi_box[a] = std::min<std::int64_t>(static_cast<std::int64_t>(hu.shape()[a]), hi_box[a] + margin);
      }
      const Volume<std::uint8_t> stacked_box = crop_or_pad(stacked, lo, hi_box);
      Volume<std::uint8_t> core = quant::binary_erode(crop_or_pad(dense, lo, hi_box), o.blood_core_mm);
      for (std::size_t x = 0; x < core.size(); ++x) core.data()[x] &= stacked_box.data()[x];
      core = quant::remove_small_components(core, min_voxels, 26);
      if (any_set(core)) {
        const Volume<std::uint8_t> flat = quant::binary_dilate(core, reach);
        zone = Volume<std::uint8_t>(hu.shape(), hu.geometry(), std::uint8_t{0});
        const std::size_t bi = flat.ni(), bj = flat.nj(), bk = flat.nk();
        for (std::size_t k = 0; k < bk; ++k)
          for (std::size_t j = 0; j < bj; ++j)
            for (std::size_t i = 0; i < bi; ++i)
              if (flat(i, j, k) || (k > 0 && flat(i, j, k - 1)) || (k + 1 < bk && flat(i, j, k + 1)))
                zone(std::size_t(lo[0]) + i, std::size_t(lo[1]) + j, std::size_t(lo[2]) + k) = 1;
      }
    }
    trace("blood cores");
  }
  const std::uint8_t* Z = zone.empty() ? nullptr : zone.data();
  Volume<std::uint8_t> out = brain.deep_copy();
  std::uint8_t* O = out.data();
  const float rim_max = o.rim_max_hu;
  const float bone_share_blood = 1.0f - o.blood_rim_fraction;
  // Only 6-neighbours of the mask can join: each row's candidates are found with byte-wise
  // ors of the mask's neighbouring rows (vectorised), then visited one by one.
  parallel_for(static_cast<std::int64_t>(nk), [&](std::int64_t b, std::int64_t e) {
    std::vector<std::uint8_t> cand(ni);
    for (std::int64_t k = b; k < e; ++k)
      for (std::size_t j = 0; j < nj; ++j) {
        const std::size_t row0 = j * ni + static_cast<std::size_t>(k) * nij;
        const std::uint8_t* m = M + row0;
        const std::uint8_t* up = j > 0 ? m - ni : nullptr;
        const std::uint8_t* down = j + 1 < nj ? m + ni : nullptr;
        const std::uint8_t* below = k > 0 ? m - nij : nullptr;
        const std::uint8_t* above = static_cast<std::size_t>(k) + 1 < nk ? m + nij : nullptr;
        candidates(m, up, down, below, above, cand.data(), ni);
        for (std::size_t i = quant::detail::next_voxel(cand.data(), 0, ni, true); i < ni;
             i = quant::detail::next_voxel(cand.data(), i + 1, ni, true)) {
          const std::size_t x = row0 + i;
          const float v = H[x];
          if (std::isnan(v) || S[x] < fat_air) continue;  // candidates: outside the mask, a neighbour inside
          float sum = 0;
          int n = 0;
          bool by_blood = false;
          auto look = [&](bool ok, std::size_t y) {
            if (ok && M[y]) {
              sum += H[y];
              ++n;
              by_blood = by_blood || (Z && Z[y]);
            }
          };
          look(i > 0, x - 1);
          look(i + 1 < ni, x + 1);
          look(j > 0, x - ni);
          look(j + 1 < nj, x + ni);
          look(k > 0, x - nij);
          look(static_cast<std::size_t>(k) + 1 < nk, x + nij);
          by_blood = by_blood && Z[x];  // the voxel itself within reach too: no creeping a slice further
          if (!by_blood && !(v <= rim_max)) continue;
          float peak = v;
          for (std::int64_t kk = std::max<std::int64_t>(k - 1, 0); kk <= std::min<std::int64_t>(k + 1, nk - 1); ++kk)
            for (std::size_t jj = j > 0 ? j - 1 : 0; jj <= std::min(j + 1, nj - 1); ++jj) {
              const float* row = H + jj * ni + static_cast<std::size_t>(kk) * nij;
              for (std::size_t ii = i > 0 ? i - 1 : 0; ii <= std::min(i + 1, ni - 1); ++ii) peak = std::max(peak, row[ii]);
            }
          // linear unmixing: the voxel's bone share is (v - inside) / (peak - inside)
          const float inside = sum / n;
          if (v < inside + 0.5f * (peak - inside) || (by_blood && v < inside + bone_share_blood * (peak - inside))) O[x] = 1;
        }
      }
  });
  trace("rim");
  return out;
}

}  // namespace ichkit::preprocess
