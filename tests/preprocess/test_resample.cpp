#include "ichkit/preprocess/resample.h"

#include <cmath>

#include "test_common.h"

using namespace ichkit;
using namespace ichkit::preprocess;

namespace {
// A linear function of world position: trilinear and cubic B-spline interpolation reproduce it
// exactly inside the grid, whatever the output grid.
Volume<float> linear_field(const Geometry& g, const Shape3& s) {
  Volume<float> v(s, g);
  for (std::size_t k = 0; k < s[2]; ++k)
    for (std::size_t j = 0; j < s[1]; ++j)
      for (std::size_t i = 0; i < s[0]; ++i) {
        Eigen::Vector3d w = g.index_to_world(Eigen::Vector3d(double(i), double(j), double(k)));
        v(i, j, k) = static_cast<float>(2 * w[0] - 3 * w[1] + 0.5 * w[2] + 7);
      }
  return v;
}
}  // namespace

TEST_CASE("resample: linear fields are reproduced on an oblique grid") {
  Eigen::Matrix4d a = Eigen::Matrix4d::Identity();
  a.topLeftCorner<3, 3>() = Eigen::Vector3d(0.9, 0.9, 5.0).asDiagonal();
  a(1, 2) = 1.5;  // gantry-tilt shear
  a.topRightCorner<3, 1>() << -40, -40, -30;
  Geometry g(a);
  Volume<float> v = linear_field(g, {90, 90, 13});
  Eigen::Matrix4d b = Eigen::Matrix4d::Identity();
  const double t = 0.2;
  b.topLeftCorner<3, 3>() << std::cos(t), -std::sin(t), 0, std::sin(t), std::cos(t), 0, 0, 0, 1;
  b.topLeftCorner<3, 3>() *= 1.3;
  b.topRightCorner<3, 1>() << -20, -25, -10;
  for (Interp it : {Interp::Linear, Interp::Cubic}) {
    Volume<float> r = resample(v, Geometry(b), {30, 30, 20}, it, -1e6, false);
    int inside = 0;
    for (std::size_t k = 0; k < 20; ++k)
      for (std::size_t j = 0; j < 30; ++j)
        for (std::size_t i = 0; i < 30; ++i) {
          if (r(i, j, k) == -1e6f) continue;
          ++inside;
          Eigen::Vector3d w = Geometry(b).index_to_world(Eigen::Vector3d(double(i), double(j), double(k)));
          const double expect = 2 * w[0] - 3 * w[1] + 0.5 * w[2] + 7;
          // cubic B-splines reproduce linear functions too, except near mirrored borders
          if (it == Interp::Linear) REQUIRE(r(i, j, k) == doctest::Approx(expect).epsilon(1e-5));
        }
    CHECK(inside > 1000);
  }
}

TEST_CASE("resample: own grid is the identity; spacing change keeps the centre") {
  Geometry g = Geometry::from_spacing({0.45, 0.45, 5.0}, {-100, -110, -70});
  Volume<float> v = linear_field(g, {64, 64, 8});
  Volume<float> same = resample_like(v, v, Interp::Linear);
  for (std::size_t n = 0; n < v.size(); ++n) REQUIRE(same.data()[n] == v.data()[n]);
  Volume<float> r = resample_to_spacing(v, {1.0, 1.0, 5.0});
  const Eigen::Vector3d c0 = v.geometry().index_to_world(Eigen::Vector3d(31.5, 31.5, 3.5));
  const Eigen::Vector3d c1 = r.geometry().index_to_world(
      Eigen::Vector3d((r.ni() - 1) / 2.0, (r.nj() - 1) / 2.0, (r.nk() - 1) / 2.0));
  CHECK((c0 - c1).norm() < 1e-9);
  CHECK(r.ni() == 29);  // round(64 * 0.45 / 1)
  CHECK_THROWS_AS(resample_to_spacing(v, {0, 1, 1}), InvalidArgument);
}

TEST_CASE("resample: nearest keeps labels") {
  Volume<std::uint8_t> m({10, 10, 4}, Geometry(), 0);
  m(3, 4, 1) = 7;
  Volume<std::uint8_t> up = resample_to_spacing(m, {0.5, 0.5, 0.5}, Interp::Nearest);
  std::size_t sevens = 0;
  for (std::size_t n = 0; n < up.size(); ++n) {
    REQUIRE((up.data()[n] == 0 || up.data()[n] == 7));
    sevens += up.data()[n] == 7;
  }
  CHECK(sevens == 8);
}

TEST_CASE("resample: a spacing far beyond the scan's extent averages the axis at once (no hang)") {
  // a pipeline from a hostile model file asked for 244444 mm along j (found by fuzz_pipeline:
  // millions of anti-aliasing taps per output voxel, each reflected in a loop)
  Eigen::Matrix4d a = Eigen::Matrix4d::Identity();
  Volume<float> v({16, 12, 10}, Geometry(a));
  double mean = 0;
  for (std::size_t k = 0; k < 10; ++k)
    for (std::size_t j = 0; j < 12; ++j)
      for (std::size_t i = 0; i < 16; ++i) v(i, j, k) = static_cast<float>(j * j);  // 0 .. 121 along j only
  for (std::size_t j = 0; j < 12; ++j) mean += double(j * j) / 12.0;
  for (const double far : {244444.0, 1e6}) {
    CAPTURE(far);
    const Volume<float> r = resample_to_spacing(v, {1.0, far, 5.0}, Interp::Linear);
    REQUIRE(r.shape()[1] == 1);
    for (std::size_t k = 0; k < r.nk(); ++k)
      for (std::size_t i = 0; i < r.ni(); ++i) CHECK(std::abs(r(i, 0, k) - mean) < 0.01 * 121);  // the mean along j
  }
  // the general (oblique) path filters the whole input with the same, capped, Gaussian
  Eigen::Matrix4d b = Eigen::Matrix4d::Identity();
  const double t = 0.1;
  b.topLeftCorner<3, 3>() << std::cos(t), -std::sin(t), 0, std::sin(t), std::cos(t), 0, 0, 0, 1;
  b.col(1).head<3>() *= 244444.0;
  const Volume<float> r = resample(v, Geometry(b), {16, 1, 10}, Interp::Linear, -1.0, true);
  for (std::size_t x = 0; x < r.size(); ++x) {
    const float y = r.data()[x];
    CHECK((y == -1.0f || (y >= 0.0f && y <= 121.0f)));
  }
}
