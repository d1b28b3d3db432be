#pragma once
/// \file geometry.h
/// Geometry of a voxel grid: the 4x4 affine that maps a voxel index (i, j, k, 1) to RAS+
/// world coordinates in millimetres, exactly as nibabel's `img.affine`.
#include <Eigen/Dense>

#include <array>
#include <cmath>
#include <cstddef>
#include <limits>
#include <sstream>
#include <string>

#include "ichkit/core/error.h"

namespace ichkit {

/// Shape of a 3D grid: (ni, nj, nk), `i` fastest in memory.
using Shape3 = std::array<std::size_t, 3>;

/// Index -> world (RAS+, mm) mapping of a voxel grid.
///
/// The affine's columns 0..2 are the world displacement of one voxel step along i, j and k
/// (their norms are the spacing in mm); column 3 is the world position of voxel (0, 0, 0).
class Geometry {
public:
  /// Identity geometry: 1 mm isotropic voxels, origin at (0, 0, 0), axes along R, A, S.
  Geometry() : affine_(Eigen::Matrix4d::Identity()) {}

  /// From a 4x4 affine; throws GeometryError if it is not finite, its last row is not
  /// (0, 0, 0, 1) or its 3x3 part is singular.
  explicit Geometry(const Eigen::Matrix4d& affine) : affine_(affine) { validate(); }

  /// From spacing (mm), origin (world position of voxel 0, mm) and direction cosines
  /// (columns: unit world direction of the i, j, k axes).
  static Geometry from_spacing(const Eigen::Vector3d& spacing,
                               const Eigen::Vector3d& origin = Eigen::Vector3d::Zero(),
                               const Eigen::Matrix3d& direction = Eigen::Matrix3d::Identity()) {
    for (int a = 0; a < 3; ++a)
      if (!(spacing[a] > 0) || !std::isfinite(spacing[a]))
        throw GeometryError("spacing must be positive and finite, got " + std::to_string(spacing[a]) +
                            " mm along axis " + std::to_string(a));
    Eigen::Matrix4d m = Eigen::Matrix4d::Identity();
    m.topLeftCorner<3, 3>() = direction * spacing.asDiagonal();
    m.topRightCorner<3, 1>() = origin;
    return Geometry(m);
  }

  const Eigen::Matrix4d& affine() const { return affine_; }

  /// Voxel size along i, j, k in mm (norms of the affine's first three columns).
  Eigen::Vector3d spacing() const { return affine_.topLeftCorner<3, 3>().colwise().norm().transpose(); }

  /// World position (mm) of voxel (0, 0, 0).
  Eigen::Vector3d origin() const { return affine_.topRightCorner<3, 1>(); }

  /// Unit direction vectors of the i, j, k axes in world space (as columns).
  Eigen::Matrix3d direction() const {
    Eigen::Matrix3d d = affine_.topLeftCorner<3, 3>();
    Eigen::Vector3d s = spacing();
    for (int c = 0; c < 3; ++c) d.col(c) /= s[c];
    return d;
  }

  /// World (mm) of a continuous voxel index.
  Eigen::Vector3d index_to_world(const Eigen::Vector3d& ijk) const {
    return affine_.topLeftCorner<3, 3>() * ijk + origin();
  }

  /// Continuous voxel index of a world point (mm).
  Eigen::Vector3d world_to_index(const Eigen::Vector3d& xyz) const {
    return affine_.topLeftCorner<3, 3>().inverse() * (xyz - origin());
  }

  /// The inverse affine (world -> index).
  Eigen::Matrix4d inverse_affine() const { return affine_.inverse(); }

  /// True when the axes are mutually orthogonal (no shear), to `tol` in cosine.
  bool is_orthogonal(double tol = 1e-6) const {
    Eigen::Matrix3d d = direction();
    return std::abs(d.col(0).dot(d.col(1))) < tol && std::abs(d.col(0).dot(d.col(2))) < tol &&
           std::abs(d.col(1).dot(d.col(2))) < tol;
  }

  /// Orientation code of the voxel axes, e.g. "RAS" or "LPS": the letter names the world
  /// direction each of i, j, k increases towards. Same algorithm as nibabel's
  /// `aff2axcodes(affine)` (closest orthogonal matrix, then greedy assignment).
  std::string orientation_code() const {
    std::array<int, 3> axis{}, sign{};
    orientation(axis, sign);
    static const char* pos = "RAS";
    static const char* neg = "LPI";
    std::string code(3, '?');
    for (int c = 0; c < 3; ++c) code[c] = sign[c] > 0 ? pos[axis[c]] : neg[axis[c]];
    return code;
  }

  /// For each voxel axis c: the world axis it is closest to (0 = x/R, 1 = y/A, 2 = z/S) and
  /// whether it runs along (+1) or against (-1) it. nibabel's `io_orientation`.
  void orientation(std::array<int, 3>& axis, std::array<int, 3>& sign) const {
    Eigen::Matrix3d rs = direction();
    Eigen::JacobiSVD<Eigen::Matrix3d> svd(rs, Eigen::ComputeFullU | Eigen::ComputeFullV);
    Eigen::Matrix3d r = svd.matrixU() * svd.matrixV().transpose();
    for (int c = 0; c < 3; ++c) {
      Eigen::Vector3d col = r.col(c);
      int best = 0;
      for (int w = 1; w < 3; ++w)
        if (std::abs(col[w]) > std::abs(col[best])) best = w;
      axis[c] = best;
      sign[c] = col[best] < 0 ? -1 : 1;
      r.row(best).setZero();
    }
  }

  bool operator==(const Geometry& o) const { return affine_ == o.affine_; }
  bool operator!=(const Geometry& o) const { return !(*this == o); }

  /// Same grid to `tol` mm / unit in every affine entry.
  bool approx_equal(const Geometry& o, double tol = 1e-6) const {
    return (affine_ - o.affine_).cwiseAbs().maxCoeff() <= tol;
  }

  std::string to_string() const {
    std::ostringstream os;
    os.precision(6);
    for (int r = 0; r < 4; ++r) {
      os << (r ? " [" : "[[");
      for (int c = 0; c < 4; ++c) os << (c ? ", " : "") << affine_(r, c);
      os << (r == 3 ? "]]" : "],\n");
    }
    return os.str();
  }

private:
  void validate() const {
    if (!affine_.allFinite()) throw GeometryError("affine contains NaN or infinite values");
    if (affine_(3, 0) != 0 || affine_(3, 1) != 0 || affine_(3, 2) != 0 || affine_(3, 3) != 1)
      throw GeometryError("affine's last row must be (0, 0, 0, 1)");
    const Eigen::Matrix3d m = affine_.topLeftCorner<3, 3>();
    const double scale = m.cwiseAbs().maxCoeff();
    if (!(scale > 0) || std::abs(m.determinant()) <= 1e-12 * scale * scale * scale)
      throw GeometryError("affine is singular: the voxel axes do not span 3D space (zero spacing?)");
  }

  Eigen::Matrix4d affine_;
};

}  // namespace ichkit
