// check_hu and check_coverage: the model's gates in front of its pipeline (every prediction, explanation and
// training sample). Real scans and phantoms in HU pass; what cannot be a CT in HU is refused
// with an error that says what was found.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "ichkit/core/error.h"
#include "ichkit/core/value_stats.h"
#include "ichkit/io/read.h"
#include "ichkit/phantom/phantom.h"
#include "ichkit/preprocess/crop.h"
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

/// The InvalidArgument message of `check(v)`, or "" when it passes.
std::string refusal(const Volume<float>& v, void (*check)(const Volume<float>&) = check_hu) {
  try {
    check(v);
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

TEST_CASE("check_hu: stored values without bone are refused; a skull-stripped scan in HU passes") {
  const phantom::Case c = small_case();
  // skull-stripped, background 0: air, fat and bone set to 0, brain and blood kept
  Volume<float> hu = c.image.deep_copy();
  for (std::size_t i = 0; i < hu.size(); ++i)
    if (hu.data()[i] < 0.0f || hu.data()[i] > 100.0f) hu.data()[i] = 0.0f;
  CHECK(refusal(hu).empty());
  // ... with a few calcifications above 500 HU, which reach the bulk test: still HU
  Volume<float> calcified = hu.deep_copy();
  for (std::size_t k = 0; k < 4; ++k) calcified(32, 32, k + 4) = 1200.0f;
  CHECK(refusal(calcified).empty());
  // the stripped scan stored as HU + 1024 (background 0): nothing below 0, no bone, bulk ~1050
  Volume<float> stored = hu.deep_copy();
  for (std::size_t i = 0; i < stored.size(); ++i)
    if (stored.data()[i] != 0.0f) stored.data()[i] += 1024.0f;
  const std::string why = refusal(stored);
  CHECK(why.find("stored CT values, not HU") != std::string::npos);
  CHECK(why.find("% of its positive voxels are above 500") != std::string::npos);
  // the reader's stats give the same verdict
  ValueStats st = value_stats(stored.data(), stored.size());
  CHECK_THROWS_WITH_AS(check_hu(stored, st), doctest::Contains("stored CT values"), InvalidArgument);
}

TEST_CASE("check_coverage: one image or a thin slab is refused, a head CT passes") {
  using preprocess::check_coverage;
  const phantom::Case c = small_case();  // 64 x 64 x 12 voxels of 3 x 3 x 10 mm
  CHECK_NOTHROW(check_coverage(c.image));
  CHECK_NOTHROW(check_coverage(io::read(test::data_path("dicom/ge-head-tilt").string())));
  auto refused = [](const Volume<float>& v) { return refusal(v, [](const Volume<float>& x) { check_coverage(x); }); };
  // one slice of the phantom, and two (20 mm: under 30)
  const Volume<float> one = preprocess::crop_or_pad(c.image, {0, 0, 5}, {64, 64, 6});
  CHECK(refused(one).find("1 voxel(s) along k") != std::string::npos);
  CHECK(refused(one).find("a single image") != std::string::npos);
  const Volume<float> two = preprocess::crop_or_pad(c.image, {0, 0, 5}, {64, 64, 7});
  CHECK(refused(two).find("a thin slab") != std::string::npos);
  CHECK(refused(preprocess::crop_or_pad(c.image, {0, 0, 4}, {64, 64, 7})).empty());  // 3 slices, 30 mm
  // 9 voxels of 3 mm along j: 27 mm
  CHECK(refused(preprocess::crop_or_pad(c.image, {0, 0, 0}, {64, 9, 12})).find("along j, 27 mm") != std::string::npos);
  // a real single DICOM image: in HU (check_hu passes it), but not a head volume
  const Volume<float> dcm = io::read(test::data_path("dicom/single-slices/CT_small.dcm").string());
  CHECK_NOTHROW(check_hu(dcm));
  CHECK(refused(dcm).find("give its folder") != std::string::npos);
  // the thresholds are the caller's
  CHECK_NOTHROW(check_coverage(one, 1, 1.0));
  CHECK_THROWS_AS(check_coverage(c.image, 13), InvalidArgument);
}
