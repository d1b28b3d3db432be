#include "ichkit/core/geometry.h"

#include <cmath>

#include "test_common.h"

using namespace ichkit;

TEST_CASE("geometry: spacing, origin, direction and world <-> index") {
  Eigen::Matrix3d dir;
  dir << -1, 0, 0, 0, -1, 0, 0, 0, 1;  // LPS-like voxel axes
  Geometry g = Geometry::from_spacing({0.5, 0.6, 5.0}, {10, 20, -30}, dir);
  CHECK(g.spacing().isApprox(Eigen::Vector3d(0.5, 0.6, 5.0)));
  CHECK(g.origin() == Eigen::Vector3d(10, 20, -30));
  CHECK(g.orientation_code() == "LPS");
  Eigen::Vector3d w = g.index_to_world({2, 3, 4});
  CHECK(w.isApprox(Eigen::Vector3d(10 - 1.0, 20 - 1.8, -30 + 20)));
  CHECK(g.world_to_index(w).isApprox(Eigen::Vector3d(2, 3, 4)));
  CHECK(g.is_orthogonal());
}

TEST_CASE("geometry: orientation codes of permuted axes and gantry-tilt shear") {
  Eigen::Matrix4d a = Eigen::Matrix4d::Zero();
  a(1, 0) = 1;   // i -> A
  a(2, 1) = -2;  // j -> I
  a(0, 2) = 3;   // k -> R
  a(3, 3) = 1;
  CHECK(Geometry(a).orientation_code() == "AIR");
  // 18.5 degree tilt: k axis leans in y; still closest to S, and not orthogonal.
  const double t = 18.5 * M_PI / 180;
  Eigen::Matrix4d s = Eigen::Matrix4d::Identity();
  s(1, 2) = 5 * std::sin(t);
  s(2, 2) = 5 * std::cos(t);
  Geometry tilt(s);
  CHECK(tilt.orientation_code() == "RAS");
  CHECK_FALSE(tilt.is_orthogonal());
}

TEST_CASE("geometry: invalid affines are refused") {
  Eigen::Matrix4d a = Eigen::Matrix4d::Identity();
  a(2, 2) = 0;
  CHECK_THROWS_AS(Geometry{a}, GeometryError);
  a = Eigen::Matrix4d::Identity();
  a(0, 3) = std::nan("");
  CHECK_THROWS_AS(Geometry{a}, GeometryError);
  a = Eigen::Matrix4d::Identity();
  a(3, 0) = 1;
  CHECK_THROWS_AS(Geometry{a}, GeometryError);
  CHECK_THROWS_AS(Geometry::from_spacing({1, 0, 1}), GeometryError);
  CHECK_THROWS_AS(Geometry::from_spacing({1, -1, 1}), GeometryError);
}
