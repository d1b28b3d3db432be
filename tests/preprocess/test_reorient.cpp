#include "ichkit/preprocess/reorient.h"

#include "test_common.h"

using namespace ichkit;

TEST_CASE("reorient: LPS -> RAS flips i and j, affine follows, voxels keep their world position") {
  Eigen::Matrix3d dir = Eigen::Vector3d(-1, -1, 1).asDiagonal();
  Geometry g = Geometry::from_spacing({0.5, 0.6, 5}, {100, 120, -50}, dir);
  Volume<std::int16_t> v({4, 5, 3}, g);
  for (std::size_t n = 0; n < v.size(); ++n) v.data()[n] = static_cast<std::int16_t>(n);
  Volume<std::int16_t> r = preprocess::reorient(v, "RAS");
  CHECK(r.geometry().orientation_code() == "RAS");
  for (std::size_t k = 0; k < 3; ++k)
    for (std::size_t j = 0; j < 5; ++j)
      for (std::size_t i = 0; i < 4; ++i) {
        const Eigen::Vector3d w = v.geometry().index_to_world(Eigen::Vector3d(double(i), double(j), double(k)));
        const Eigen::Vector3d q = r.geometry().world_to_index(w);
        const auto ri = std::size_t(std::lround(q[0])), rj = std::size_t(std::lround(q[1])), rk = std::size_t(std::lround(q[2]));
        REQUIRE(r(ri, rj, rk) == v(i, j, k));
      }
  CHECK_THROWS_AS(preprocess::reorient(v, "RAX"), InvalidArgument);
  CHECK_THROWS_AS(preprocess::reorient(v, "RR"), InvalidArgument);
}
