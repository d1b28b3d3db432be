#pragma once
/// \file reorient.h
/// Reorientation by axis permutation and flips only (no interpolation), affine updated.
/// `reorient(v, "RAS")` equals nibabel's `as_closest_canonical` (data and affine).
#include <array>
#include <cctype>
#include <cstring>
#include <string>

#include "ichkit/core/error.h"
#include "ichkit/core/threading.h"
#include "ichkit/core/volume.h"

namespace ichkit::preprocess {

/// The world axis (0 = R/L, 1 = A/P, 2 = S/I) and sign (+1 toward R, A, S) each letter of an
/// orientation code names; throws InvalidArgument for anything but one of R/L, A/P, S/I each.
struct OrientationCode {
  std::array<int, 3> axis{}, sign{};
};
inline OrientationCode parse_orientation_code(const std::string& code) {
  if (code.size() != 3) throw InvalidArgument("orientation code must have 3 letters, got '" + code + "'");
  OrientationCode o;
  bool used[3] = {false, false, false};
  for (int w = 0; w < 3; ++w) {
    const char ch = static_cast<char>(std::toupper(static_cast<unsigned char>(code[w])));
    int axis = -1, sign = 1;
    switch (ch) {
      case 'R': axis = 0; break;
      case 'L': axis = 0; sign = -1; break;
      case 'A': axis = 1; break;
      case 'P': axis = 1; sign = -1; break;
      case 'S': axis = 2; break;
      case 'I': axis = 2; sign = -1; break;
      default: throw InvalidArgument("orientation code '" + code + "' has an unknown letter '" + std::string(1, code[w]) + "'");
    }
    if (used[axis]) throw InvalidArgument("orientation code '" + code + "' names a world axis twice");
    used[axis] = true;
    o.axis[w] = axis;
    o.sign[w] = sign;
  }
  return o;
}

/// What reorient does to a grid: output axis w is input axis src[w], reversed when flip[w];
/// the output's geometry and shape.
struct Reorientation {
  std::array<int, 3> src{}, flip{};
  Geometry geometry;
  Shape3 shape{0, 0, 0};
  /// true when no axis moves (flips only, or nothing): a resampling can read the input as it is
  bool keeps_axes() const { return src[0] == 0 && src[1] == 1 && src[2] == 2; }
};

inline Reorientation reorientation(const Geometry& g, const Shape3& in, const std::string& code = "RAS") {
  const OrientationCode oc = parse_orientation_code(code);
  const std::array<int, 3>& want_axis = oc.axis;
  const std::array<int, 3>& want_sign = oc.sign;
  std::array<int, 3> axis{}, sign{};
  g.orientation(axis, sign);
  // For output axis w: the input axis c pointing along world axis want_axis[w]; flip when the
  // directions disagree.
  Reorientation r;
  for (int w = 0; w < 3; ++w)
    for (int c = 0; c < 3; ++c)
      if (axis[c] == want_axis[w]) {
        r.src[w] = c;
        r.flip[w] = sign[c] != want_sign[w];
      }
  r.shape = Shape3{in[r.src[0]], in[r.src[1]], in[r.src[2]]};
  const Eigen::Matrix4d& a = g.affine();
  Eigen::Matrix4d b = Eigen::Matrix4d::Identity();
  Eigen::Vector3d origin = a.topRightCorner<3, 1>();
  for (int w = 0; w < 3; ++w) {
    const int c = r.src[w];
    b.block<3, 1>(0, w) = a.block<3, 1>(0, c) * (r.flip[w] ? -1.0 : 1.0);
    if (r.flip[w]) origin += a.block<3, 1>(0, c) * double(in[c] - 1);
  }
  b.topRightCorner<3, 1>() = origin;
  r.geometry = Geometry(b);
  return r;
}

/// Carry out `ro`, the reorientation(v.geometry(), v.shape(), code) of some code, on `v`.
template <class T>
Volume<T> reorient(const Volume<T>& v, const Reorientation& ro) {
  const std::array<int, 3>& src = ro.src;
  const std::array<int, 3>& flip = ro.flip;
  const Shape3 in = v.shape();
  const Shape3 out_shape = ro.shape;
  Volume<T> out = Volume<T>::uninitialized(out_shape, ro.geometry);
  out.metadata() = v.metadata();
  // strides of the input along each output axis
  const std::int64_t istride[3] = {1, std::int64_t(in[0]), std::int64_t(in[0] * in[1])};
  std::int64_t step[3], start = 0;
  for (int w = 0; w < 3; ++w) {
    step[w] = flip[w] ? -istride[src[w]] : istride[src[w]];
    if (flip[w]) start += istride[src[w]] * std::int64_t(in[src[w]] - 1);
  }
  const T* s = v.data();
  T* d = out.data();
  parallel_for(static_cast<std::int64_t>(out_shape[1] * out_shape[2]), [&](std::int64_t rb, std::int64_t re) {
    for (std::int64_t r = rb; r < re; ++r) {
      const std::int64_t j = r % std::int64_t(out_shape[1]), k = r / std::int64_t(out_shape[1]);
      const T* p = s + start + j * step[1] + k * step[2];
      T* line = d + std::size_t(r) * out_shape[0];
      if (step[0] == 1) {
        std::memcpy(line, p, out_shape[0] * sizeof(T));
      } else {
        for (std::size_t i = 0; i < out_shape[0]; ++i, p += step[0]) line[i] = *p;
      }
    }
  });
  return out;
}

/// Reorder and flip the voxel axes so that they run along `code` (three letters, one of R/L,
/// A/P, S/I each, e.g. "RAS" or "LPS"). Each output axis takes the input axis closest to it
/// (nibabel's io_orientation); oblique grids keep their obliquity.
template <class T>
Volume<T> reorient(const Volume<T>& v, const std::string& code = "RAS") {
  return reorient(v, reorientation(v.geometry(), v.shape(), code));
}

}  // namespace ichkit::preprocess
