#pragma once
/// \file crop.h
/// Crop and pad with the affine updated: voxel (i, j, k) of the result is the same place in the
/// world as before.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <functional>

#include "ichkit/core/error.h"
#include "ichkit/core/threading.h"
#include "ichkit/core/volume.h"

namespace ichkit::preprocess {

using Index3 = std::array<std::int64_t, 3>;

/// The sub-volume [lo, hi) per axis; indices may reach outside the volume, where `fill` is
/// used (so one call crops and pads).
template <class T>
Volume<T> crop_or_pad(const Volume<T>& v, const Index3& lo, const Index3& hi, T fill = T{}) {
  Shape3 shape{};
  for (int a = 0; a < 3; ++a) {
    if (hi[a] <= lo[a]) throw InvalidArgument("crop: empty range along axis " + std::to_string(a));
    shape[a] = static_cast<std::size_t>(hi[a] - lo[a]);
  }
  Eigen::Matrix4d aff = v.affine();
  aff.topRightCorner<3, 1>() = v.geometry().index_to_world(Eigen::Vector3d(double(lo[0]), double(lo[1]), double(lo[2])));
  Volume<T> out = Volume<T>::uninitialized(shape, Geometry(aff));
  out.metadata() = v.metadata();
  const Shape3 in = v.shape();
  parallel_for(static_cast<std::int64_t>(shape[1] * shape[2]), [&](std::int64_t rb, std::int64_t re) {
    for (std::int64_t r = rb; r < re; ++r) {
      const std::int64_t j = lo[1] + r % std::int64_t(shape[1]), k = lo[2] + r / std::int64_t(shape[1]);
      T* line = out.data() + std::size_t(r) * shape[0];
      if (j < 0 || k < 0 || j >= std::int64_t(in[1]) || k >= std::int64_t(in[2])) {
        std::fill(line, line + shape[0], fill);
        continue;
      }
      const std::int64_t i0 = std::max<std::int64_t>(lo[0], 0), i1 = std::min<std::int64_t>(hi[0], std::int64_t(in[0]));
      std::fill(line, line + std::max<std::int64_t>(0, std::min(i0, hi[0]) - lo[0]), fill);
      if (i1 > i0) std::memcpy(line + (i0 - lo[0]), &v(std::size_t(i0), std::size_t(j), std::size_t(k)), std::size_t(i1 - i0) * sizeof(T));
      const std::int64_t tail = std::max<std::int64_t>(i0, i1);
      if (tail < hi[0]) std::fill(line + (tail - lo[0]), line + shape[0], fill);
    }
  });
  return out;
}

/// Pad `before`/`after` voxels on each axis with `fill`.
template <class T>
Volume<T> pad(const Volume<T>& v, const Index3& before, const Index3& after, T fill = T{}) {
  return crop_or_pad(v, {-before[0], -before[1], -before[2]},
                     {std::int64_t(v.ni()) + after[0], std::int64_t(v.nj()) + after[1], std::int64_t(v.nk()) + after[2]}, fill);
}

/// Bounding box [lo, hi) of the voxels where `inside(value)` holds; throws if there are none.
template <class T, class Pred>
std::pair<Index3, Index3> bounding_box(const Volume<T>& v, Pred inside) {
  Index3 lo{std::int64_t(v.ni()), std::int64_t(v.nj()), std::int64_t(v.nk())}, hi{0, 0, 0};
  bool any = false;
  const std::size_t ni = v.ni();
  const T* p = v.data();
  // Row by row: the first voxel inside from the left and the last from the right; the voxels
  // between them are never visited.
  for (std::size_t k = 0; k < v.nk(); ++k)
    for (std::size_t j = 0; j < v.nj(); ++j, p += ni) {
      std::size_t first = 0;
      while (first < ni && !inside(p[first])) ++first;
      if (first == ni) continue;
      std::size_t last = ni;
      while (!inside(p[last - 1])) --last;
      any = true;
      lo = {std::min(lo[0], std::int64_t(first)), std::min(lo[1], std::int64_t(j)), std::min(lo[2], std::int64_t(k))};
      hi = {std::max(hi[0], std::int64_t(last)), std::max(hi[1], std::int64_t(j) + 1), std::max(hi[2], std::int64_t(k) + 1)};
    }
  if (!any) throw InvalidArgument("bounding box of an empty foreground");
  return {lo, hi};
}

/// Crop to the bounding box of voxels above `threshold` (e.g. -500 HU: the head) or of a mask,
/// enlarged by `margin_mm` on every side (and clipped to the volume).
namespace detail {
/// Crop `v` to [lo, hi) enlarged by `margin_mm` on every side, clipped to the volume.
template <class T>
Volume<T> crop_with_margin(const Volume<T>& v, Index3 lo, Index3 hi, double margin_mm) {
  if (!(margin_mm >= 0) || !std::isfinite(margin_mm))
    throw InvalidArgument("crop: the margin must be finite and >= 0 mm, got " + ichkit::detail::number_text(margin_mm));
  const Eigen::Vector3d s = v.spacing();
  for (int a = 0; a < 3; ++a) {
    // at most the volume's extent (the crop is clipped to it anyway): no overflow at 1e300 mm
    const double extent = static_cast<double>(v.shape()[a]);
    const auto m = static_cast<std::int64_t>(std::min(std::ceil(margin_mm / s[a] - 1e-9), extent));
    lo[a] = std::max<std::int64_t>(0, lo[a] - m);
    hi[a] = std::min<std::int64_t>(std::int64_t(v.shape()[a]), hi[a] + m);
  }
  return crop_or_pad(v, lo, hi);
}
}  // namespace detail

template <class T>
Volume<T> crop_to_foreground(const Volume<T>& v, double threshold, double margin_mm = 0) {
  auto [lo, hi] = bounding_box(v, [&](T x) { return double(x) > threshold; });
  return detail::crop_with_margin(v, lo, hi, margin_mm);
}

/// Crop to the bounding box of a mask on the same grid (e.g. the skull-strip brain mask).
template <class T, class M>
Volume<T> crop_to_mask(const Volume<T>& v, const Volume<M>& mask, double margin_mm = 0) {
  if (!v.same_grid(mask)) throw GeometryError("crop_to_mask: the mask is on another grid");
  auto [lo, hi] = bounding_box(mask, [](M x) { return x != M{}; });
  return detail::crop_with_margin(v, lo, hi, margin_mm);
}

/// Centre crop and/or pad to `shape` (pad value `fill`).
template <class T>
Volume<T> center_crop_or_pad(const Volume<T>& v, const Shape3& shape, T fill = T{}) {
  Index3 lo{}, hi{};
  for (int a = 0; a < 3; ++a) {
    const std::int64_t n = std::int64_t(v.shape()[a]), t = std::int64_t(shape[a]);
    lo[a] = (n - t) / 2;  // negative when padding
    if (n < t) lo[a] = -((t - n) / 2);
    hi[a] = lo[a] + t;
  }
  return crop_or_pad(v, lo, hi, fill);
}

}  // namespace ichkit::preprocess
