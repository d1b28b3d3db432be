#pragma once
/// \file scores.h
/// How well a heatmap points at a known lesion (header-only, no LibTorch): the pointing game
/// with a tolerance in mm, the share of positive heatmap energy inside the lesion, and the
/// heatmap's AUC as a voxel-wise lesion detector. The heatmap and the mask must share one grid
/// (shape and geometry), e.g. a map on the scan grid and the phantom's label volume.
#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "ichkit/core/error.h"
#include "ichkit/core/value_stats.h"
#include "ichkit/core/volume.h"

namespace ichkit::explain {

struct PointingGame {
  bool hit = false;            ///< the peak lies in the lesion or within the tolerance of it
  double distance_mm = 0;      ///< world distance from the peak voxel's centre to the nearest lesion voxel centre (0 inside)
  Shape3 peak{0, 0, 0};        ///< voxel index of the heatmap's maximum (the first one in memory order on ties)
};

struct LocalisationScores {
  PointingGame pointing;
  double energy_inside = 0;  ///< sum of max(h, 0) inside the lesion / sum of max(h, 0) everywhere (NaN when no positive value)
  double auc = 0;            ///< P(h(lesion voxel) > h(other voxel)), ties count half (NaN without both kinds)
  std::size_t lesion_voxels = 0;
};

namespace detail {
/// A heatmap and a mask on one grid, and no NaN in the heatmap (nor an infinity, unless
/// `infinities_ok`): a score of the voxels that are numbers would be silently wrong.
template <class M>
void check_map_and_mask(const Volume<float>& h, const Volume<M>& mask, const char* what, bool infinities_ok = true) {
  if (h.size() == 0) throw InvalidArgument(std::string(what) + ": empty heatmap");
  if (!h.same_grid(mask, 1e-4))
    throw GeometryError(std::string(what) + ": the heatmap and the lesion mask are not on one grid (resample one onto the other)");
  const ValueStats st = value_stats(h.data(), h.size());  // lo and hi include infinities
  if (st.nan > 0) throw InvalidArgument(std::string(what) + ": the heatmap has NaN voxels");
  if (!infinities_ok && (std::isinf(st.lo) || std::isinf(st.hi)))
    throw InvalidArgument(std::string(what) + ": the heatmap has infinite voxels");
}
}  // namespace detail

/// The pointing game: is the heatmap's peak in the lesion, or within `tolerance_mm` of it?
/// A mask without lesion voxels gives hit = false and an infinite distance. NaN voxels are an
/// InvalidArgument.
template <class M>
PointingGame pointing_game(const Volume<float>& heatmap, const Volume<M>& mask, double tolerance_mm = 0) {
  detail::check_map_and_mask(heatmap, mask, "pointing_game");
  if (!(tolerance_mm >= 0)) throw InvalidArgument("pointing_game: tolerance must be >= 0 mm");
  const float* h = heatmap.data();
  std::size_t at = 0;
  float best = -std::numeric_limits<float>::infinity();
  for (std::size_t x = 0; x < heatmap.size(); ++x)
    if (h[x] > best) best = h[x], at = x;
  const std::size_t ni = heatmap.shape()[0], nj = heatmap.shape()[1];
  PointingGame r;
  r.peak = {at % ni, (at / ni) % nj, at / (ni * nj)};
  if (mask.data()[at] != M{}) {
    r.hit = true;
    return r;
  }
  // nearest lesion voxel in world space (linear scan: exact for any affine, cheap next to inference)
  const Eigen::Matrix4d& A = heatmap.geometry().affine();
  const Eigen::Matrix3d L = A.topLeftCorner<3, 3>();
  const Eigen::Vector3d p(double(r.peak[0]), double(r.peak[1]), double(r.peak[2]));
  double best_d2 = std::numeric_limits<double>::infinity();
  const M* m = mask.data();
  for (std::size_t k = 0, x = 0; k < mask.shape()[2]; ++k)
    for (std::size_t j = 0; j < nj; ++j)
      for (std::size_t i = 0; i < ni; ++i, ++x)
        if (m[x] != M{}) best_d2 = std::min(best_d2, (L * (Eigen::Vector3d(double(i), double(j), double(k)) - p)).squaredNorm());
  r.distance_mm = std::sqrt(best_d2);
  r.hit = r.distance_mm <= tolerance_mm;
  return r;
}

/// Share of the positive heatmap energy that falls inside the lesion (NaN when no voxel is
/// positive). NaN or infinite voxels are an InvalidArgument.
template <class M>
double energy_inside(const Volume<float>& heatmap, const Volume<M>& mask) {
  detail::check_map_and_mask(heatmap, mask, "energy_inside", false);
  double in = 0, all = 0;
  const float* h = heatmap.data();
  const M* m = mask.data();
  for (std::size_t x = 0; x < heatmap.size(); ++x) {
    if (!(h[x] > 0)) continue;
    all += h[x];
    if (m[x] != M{}) in += h[x];
  }
  return all > 0 ? in / all : std::numeric_limits<double>::quiet_NaN();
}

/// The heatmap as a voxel-wise lesion detector: the area under the ROC curve (Mann-Whitney
/// statistic with mid-ranks for ties). NaN voxels are an InvalidArgument.
template <class M>
double heatmap_auc(const Volume<float>& heatmap, const Volume<M>& mask) {
  detail::check_map_and_mask(heatmap, mask, "heatmap_auc");
  const std::size_t n = heatmap.size();
  std::vector<std::pair<float, bool>> v(n);
  std::size_t pos = 0;
  for (std::size_t x = 0; x < n; ++x) {
    v[x] = {heatmap.data()[x], mask.data()[x] != M{}};
    pos += v[x].second;
  }
  const std::size_t neg = n - pos;
  if (pos == 0 || neg == 0) return std::numeric_limits<double>::quiet_NaN();
  std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  double rank_sum = 0;  // sum of the lesion voxels' (1-based, mid) ranks
  for (std::size_t a = 0; a < n;) {
    std::size_t b = a;
    std::size_t in_group = 0;
    while (b < n && v[b].first == v[a].first) in_group += v[b++].second;
    rank_sum += double(in_group) * (double(a + 1) + double(b)) / 2.0;
    a = b;
  }
  return (rank_sum - double(pos) * (double(pos) + 1) / 2.0) / (double(pos) * double(neg));
}

/// All three scores.
template <class M>
LocalisationScores localisation(const Volume<float>& heatmap, const Volume<M>& mask, double tolerance_mm = 10) {
  LocalisationScores s;
  s.pointing = pointing_game(heatmap, mask, tolerance_mm);
  s.energy_inside = energy_inside(heatmap, mask);
  s.auc = heatmap_auc(heatmap, mask);
  for (std::size_t x = 0; x < mask.size(); ++x) s.lesion_voxels += mask.data()[x] != M{};
  return s;
}

}  // namespace ichkit::explain
