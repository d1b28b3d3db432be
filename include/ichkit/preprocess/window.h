#pragma once
/// \file window.h
/// HU windowing to [0, 1] (or any range), clipped; multi-window channel stacks laid out
/// (C, D, H, W) for the network. Names follow MONAI's ScaleIntensityRange.
#include <cmath>
#include <initializer_list>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "ichkit/core/error.h"
#include "ichkit/core/threading.h"
#include "ichkit/core/volume.h"

namespace ichkit::preprocess {

/// A window by level/width (HU).
struct Window {
  double level = 40, width = 80;
  double lo() const { return level - width / 2; }
  double hi() const { return level + width / 2; }
};

/// Brain 40/80, subdural 80/200, bone 600/2800.
inline std::vector<Window> default_windows() { return {{40, 80}, {80, 200}, {600, 2800}}; }

namespace detail {
/// The float32 coefficients of a linear intensity map, refused unless every bound is finite
/// and both coefficients are finite in float32: an infinite window would map every voxel to
/// one value, and one narrower than float32 can tell apart to infinities and NaN.
inline std::pair<float, float> checked_map(double scale, double off, std::initializer_list<double> bounds,
                                           const std::string& what) {
  for (double b : bounds)
    if (!std::isfinite(b)) throw InvalidArgument(what + ": the range's bounds must be finite");
  const auto s = static_cast<float>(scale), o = static_cast<float>(off);
  if (!std::isfinite(s) || !std::isfinite(o))
    throw InvalidArgument(what + ": the input range is too narrow for float32 (or the output range too wide)");
  return {s, o};
}
}  // namespace detail

/// MONAI's ScaleIntensityRange: map [a_min, a_max] linearly to [b_min, b_max], clipping if asked.
/// Every bound finite, a_max > a_min.
template <class T>
Volume<float> scale_intensity_range(const Volume<T>& v, double a_min, double a_max, double b_min = 0, double b_max = 1,
                                    bool clip = true) {
  if (!(a_max > a_min)) throw InvalidArgument("scale_intensity_range: a_max must be > a_min");
  // (not a structured binding: clang 14 cannot capture one in the lambda below)
  const std::pair<float, float> map = detail::checked_map((b_max - b_min) / (a_max - a_min),
                                                          b_min - a_min * (b_max - b_min) / (a_max - a_min),
                                                          {a_min, a_max, b_min, b_max}, "scale_intensity_range");
  const float scale = map.first, off = map.second;
  Volume<float> out = Volume<float>::uninitialized(v.shape(), v.geometry());
  out.metadata() = v.metadata();
  const float lo = static_cast<float>(std::min(b_min, b_max)), hi = static_cast<float>(std::max(b_min, b_max));
  const T* s = v.data();
  float* d = out.data();
  parallel_for(static_cast<std::int64_t>(v.size()), [&](std::int64_t b, std::int64_t e) {
    if (clip)
      for (std::int64_t n = b; n < e; ++n) d[n] = std::min(hi, std::max(lo, static_cast<float>(s[n]) * scale + off));
    else
      for (std::int64_t n = b; n < e; ++n) d[n] = static_cast<float>(s[n]) * scale + off;
  }, 1 << 16);
  return out;
}

namespace detail {
inline void check_window(const Window& w) {
  if (!std::isfinite(w.level) || !std::isfinite(w.width) || !(w.width > 0))
    throw InvalidArgument("window: level and width must be finite and the width positive (got " +
                          ichkit::detail::number_text(w.level) + " / " + ichkit::detail::number_text(w.width) + ")");
  if (!(w.hi() > w.lo()))
    throw InvalidArgument("window: a width of " + ichkit::detail::number_text(w.width) +
                          " HU is too narrow to tell apart at level " + ichkit::detail::number_text(w.level));
}
/// A checked window's float32 scale and offset onto [out_min, out_max].
inline std::pair<float, float> window_map(const Window& w, double out_min, double out_max, const std::string& what) {
  check_window(w);
  return checked_map((out_max - out_min) / w.width, out_min - w.lo() * (out_max - out_min) / w.width, {out_min, out_max},
                     what);
}
}  // namespace detail

/// One window (level/width, HU) to [out_min, out_max], clipped.
template <class T>
Volume<float> window(const Volume<T>& v, const Window& w, double out_min = 0, double out_max = 1) {
  detail::check_window(w);
  return scale_intensity_range(v, w.lo(), w.hi(), out_min, out_max, true);
}

/// Channels of one grid, stored (C, nk, nj, ni) - a contiguous (C, D, H, W) tensor.
struct Channels {
  Shape3 shape{0, 0, 0};
  Geometry geometry;
  std::size_t count = 0;
  std::shared_ptr<float> data;
  float* channel(std::size_t c) { return data.get() + c * shape[0] * shape[1] * shape[2]; }
  const float* channel(std::size_t c) const { return data.get() + c * shape[0] * shape[1] * shape[2]; }
  /// Channel c as a Volume sharing the buffer.
  Volume<float> volume(std::size_t c) const {
    if (c >= count) throw InvalidArgument("channel index out of range");
    return Volume<float>::adopt(std::shared_ptr<float>(data, data.get() + c * shape[0] * shape[1] * shape[2]), shape, geometry);
  }
};

/// Several windows of one volume in one pass, as channels (default: brain, subdural, bone).
template <class T>
Channels window_stack(const Volume<T>& v, const std::vector<Window>& windows = default_windows(), double out_min = 0,
                      double out_max = 1) {
  if (windows.empty()) throw InvalidArgument("window_stack: no windows");
  std::vector<float> scale(windows.size()), off(windows.size());
  for (std::size_t w = 0; w < windows.size(); ++w) std::tie(scale[w], off[w]) = detail::window_map(windows[w], out_min, out_max, "window_stack");
  Channels c;
  c.shape = v.shape();
  c.geometry = v.geometry();
  c.count = windows.size();
  const std::size_t n = v.size();
  c.data = ichkit::detail::allocate_voxels<float>(n * windows.size());
  const float lo = static_cast<float>(std::min(out_min, out_max)), hi = static_cast<float>(std::max(out_min, out_max));
  const T* s = v.data();
  float* d = c.data.get();
  const std::size_t nw = windows.size();
  parallel_for(static_cast<std::int64_t>(n), [&](std::int64_t b, std::int64_t e) {
    for (std::size_t w = 0; w < nw; ++w) {
      float* dw = d + w * n;
      const float sc = scale[w], of = off[w];
      for (std::int64_t q = b; q < e; ++q) dw[q] = std::min(hi, std::max(lo, static_cast<float>(s[q]) * sc + of));
    }
  }, 1 << 16);
  return c;
}

}  // namespace ichkit::preprocess
