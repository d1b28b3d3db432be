#include "ichkit/preprocess/crop.h"

#include "test_common.h"

using namespace ichkit;
using namespace ichkit::preprocess;

TEST_CASE("crop/pad: the affine follows the voxels") {
  Geometry g = Geometry::from_spacing({0.5, 0.5, 5}, {-10, -20, -30});
  Volume<float> v({10, 10, 4}, g, 1.0f);
  v(2, 3, 1) = 9;
  Volume<float> c = crop_or_pad(v, {2, -1, 1}, {8, 6, 5}, -1024.0f);
  CHECK(c.shape() == Shape3{6, 7, 4});
  CHECK(c(0, 4, 0) == 9.0f);
  CHECK(c(0, 0, 0) == -1024.0f);  // j = -1 is padding
  CHECK(c(0, 0, 3) == -1024.0f);
  CHECK((c.geometry().index_to_world({0, 4, 0}) - v.geometry().index_to_world({2, 3, 1})).norm() < 1e-12);
  Volume<float> p = pad(v, {1, 1, 1}, {1, 1, 1}, 0.0f);
  CHECK(p.shape() == Shape3{12, 12, 6});
  CHECK(p(3, 4, 2) == 9.0f);
  Volume<float> f = crop_to_foreground(v, 5.0, 0.0);
  CHECK(f.shape() == Shape3{1, 1, 1});
  CHECK(f(0, 0, 0) == 9.0f);
  // a margin of 1 mm is 2 voxels in-plane and 1 slice; one past the volume is clipped to it
  CHECK(crop_to_foreground(v, 5.0, 1.0).shape() == Shape3{5, 5, 3});
  CHECK(crop_to_foreground(v, 5.0, 1e300).shape() == v.shape());  // no overflow: the whole volume
  CHECK_THROWS_AS(crop_to_foreground(v, 5.0, std::numeric_limits<double>::infinity()), InvalidArgument);
  CHECK_THROWS_AS(crop_to_foreground(v, 5.0, std::nan("")), InvalidArgument);
  CHECK_THROWS_AS(crop_to_foreground(v, 5.0, -1.0), InvalidArgument);
  Volume<float> cc = center_crop_or_pad(v, {6, 14, 4}, 0.0f);
  CHECK(cc.shape() == Shape3{6, 14, 4});
  CHECK_THROWS_AS(crop_or_pad(v, {3, 0, 0}, {3, 1, 1}), InvalidArgument);
}
