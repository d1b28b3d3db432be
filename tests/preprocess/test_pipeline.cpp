// check_hu: the model's gate in front of its pipeline (every prediction, explanation and
// training sample). Real scans and phantoms in HU pass; what cannot be a CT in HU is refused
// with an error that says what was found.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "ichkit/core/error.h"
#include "ichkit/io/read.h"
#include "ichkit/phantom/phantom.h"
#include "ichkit/preprocess/pipeline.h"
#include "ichkit/preprocess/window.h"
#include "test_common.h"

using namespace ichkit;
using preprocess::check_hu;

namespace {

phantom::Case small_case() {
  phantom::CaseOptions o;
  o.shape = {64, 64, 12};
  o.spacing = {3.0, 3.0, 10.0};
  o.seed = 3;
  return phantom::make_case(o);
}

std::string refusal(const Volume<float>& v) {
  try {
    check_hu(v);
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("check_hu: real head CTs and phantoms in HU pass") {
  const phantom::Case c = small_case();
  CHECK_NOTHROW(check_hu(c.image));
  CHECK_NOTHROW(check_hu(io::read(test::data_path("dicom/ge-head-tilt").string())));  // GE, padding -1500
  CHECK_NOTHROW(check_hu(io::read(test::data_path("dicom/single-slices/CT_small.dcm").string())));
}

TEST_CASE("check_hu: NaN or infinite voxels are refused, the first one located") {
  const phantom::Case c = small_case();
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity()}) {
    Volume<float> v = c.image.deep_copy();
    v(5, 7, 2) = bad;
    v(60, 1, 9) = bad;
    const std::string why = refusal(v);
    CAPTURE(bad);
    CHECK(why.find("2 NaN or infinite voxel(s)") != std::string::npos);
    CHECK(why.find("(5, 7, 2)") != std::string::npos);
  }
}

TEST_CASE("check_hu: air only, a constant or a normalised scan, stored values are refused") {
  const phantom::Case c = small_case();
  SUBCASE("air and padding only: no head") {
    Volume<float> v = c.image.deep_copy();
    for (std::size_t i = 0; i < v.size(); ++i) v.data()[i] = -1024.0f + static_cast<float>(i % 41) - 20.0f;
    CHECK(refusal(v).find("above -500 HU") != std::string::npos);
  }
  SUBCASE("the phantom scaled by 100: beyond any CT scale") {
    Volume<float> v = c.image.deep_copy();
    for (std::size_t i = 0; i < v.size(); ++i) v.data()[i] *= 100.0f;
    CHECK(refusal(v).find("above any CT scale") != std::string::npos);
  }
  SUBCASE("the phantom windowed to [0, 1]: already normalised") {
    const preprocess::Channels w = preprocess::window_stack(c.image, {{40, 80}}, 0, 1);
    CHECK(refusal(w.volume(0)).find("span only") != std::string::npos);
  }
  SUBCASE("the phantom as stored values (HU + 1024, no intercept)") {
    Volume<float> v = c.image.deep_copy();
    for (std::size_t i = 0; i < v.size(); ++i) v.data()[i] = std::max(0.0f, v.data()[i] + 1024.0f);
    CHECK(refusal(v).find("stored CT values, not HU") != std::string::npos);
  }
  SUBCASE("a real CT that is not calibrated (3D Slicer's headsq: values 0..3926)") {
    const std::string why = refusal(io::read(test::data_path("dicom/slicer-ctheadaxial").string()));
    CHECK(why.find("stored CT values, not HU") != std::string::npos);
    CHECK(why.find("3926") != std::string::npos);
  }
}

TEST_CASE("check_hu with the reader's stats gives the verdict and the message of its own pass") {
  const phantom::Case c = small_case();
  test::TempDir dir;
  Volume<float> nan = c.image.deep_copy();
  nan(5, 7, 2) = std::numeric_limits<float>::quiet_NaN();
  Volume<float> stored = c.image.deep_copy();
  for (std::size_t i = 0; i < stored.size(); ++i) stored.data()[i] = std::max(0.0f, stored.data()[i] + 1024.0f);
  io::write_nifti(c.image.cast<std::int16_t>(), dir / "ok.nii.gz");
  io::write_nifti(nan, dir / "nan.nii");
  io::write_nifti(stored.cast<std::int16_t>(), dir / "stored.nii.gz");
  const std::vector<std::string> paths{dir / "ok.nii.gz", dir / "nan.nii", dir / "stored.nii.gz",
                                       test::data_path("dicom/slicer-ctheadaxial").string()};
  const std::vector<std::string> expect{"", "(5, 7, 2)", "stored CT values", "3926"};
  for (std::size_t f = 0; f < paths.size(); ++f) {
    CAPTURE(paths[f]);
    ValueStats st;
    const Volume<float> v = io::read(paths[f], {}, st);
    std::string with_stats;
    try {
      check_hu(v, st);
    } catch (const InvalidArgument& e) {
      with_stats = e.what();
    }
    CHECK(with_stats == refusal(v));
    if (expect[f].empty()) CHECK(with_stats.empty());
    else CHECK(with_stats.find(expect[f]) != std::string::npos);
  }
}
