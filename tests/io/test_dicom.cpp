// DICOM reader: real scanner data (gantry tilt, two slice spacings), every transfer syntax of
// one slice, and the malformed corpus (this suite also runs under ASan + UBSan).
#include "ichkit/io/dicom.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "ichkit/io/read.h"
#include "test_common.h"

using namespace ichkit;
namespace fs = std::filesystem;

namespace {
std::string data(const std::string& rel) { return ichkit::test::data_path(rel).string(); }

float max_abs_diff(const Volume<float>& a, const Volume<float>& b) {
  REQUIRE(a.shape() == b.shape());
  float m = 0;
  for (std::size_t n = 0; n < a.size(); ++n) m = std::max(m, std::abs(a.data()[n] - b.data()[n]));
  return m;
}
}  // namespace

TEST_CASE("dicom: the GE head CT with 18.5 degree tilt and two slice spacings") {
  const std::string dir = data("dicom/ge-head-tilt");
  auto series = io::list_series(dir);
  REQUIRE(series.size() == 1);
  CHECK(series[0].images == 28);
  CHECK(series[0].kind == io::SeriesKind::AxialCT);
  io::DicomVolume dv = io::read_dicom(dir);
  const auto& r = dv.report;
  CHECK(r.tilt_deg == doctest::Approx(18.5).epsilon(0.005));
  CHECK_FALSE(r.uniform_spacing);
  CHECK(r.resampled);
  CHECK(r.orthogonal);
  CHECK(dv.volume.geometry().is_orthogonal(1e-9));
  CHECK(dv.volume.geometry().orientation_code() == "LPS");
  // Both spacings of the series appear among the steps along the normal.
  CHECK(r.spacing_max_mm > 6.9);
  CHECK(r.spacing_median_mm > 3.9);
  // tilt=keep keeps the shear; spacing=refuse refuses the varying spacing.
  io::DicomReadOptions keep;
  keep.tilt = io::TiltMode::Keep;
  io::DicomVolume k = io::read_dicom(dir, keep);
  CHECK_FALSE(k.volume.geometry().is_orthogonal(1e-3));
  CHECK(k.volume.shape()[0] == 512);
  CHECK(k.volume.shape()[1] == 512);
  io::DicomReadOptions refuse;
  refuse.spacing = io::SpacingMode::Refuse;
  CHECK_THROWS_AS(io::read_dicom(dir, refuse), GeometryError);
}

TEST_CASE("dicom: every transfer syntax decodes; lossless copies are identical, lossy close") {
  const std::string dir = data("dicom/transfer-syntaxes");
  const Volume<float> ref = io::read(dir + "/CTImage.dcm");
  CHECK(ref.shape() == Shape3{512, 512, 1});
  int lossless = 0, lossy = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name == "LICENSE" || name.rfind("CT0012", 0) == 0 || name == "CT1_J2KR") continue;
    CAPTURE(name);
    REQUIRE(io::is_dicom(e.path().string()));
    Volume<float> v = io::read(e.path().string());
    const bool is_lossy = name.find(".4.50.") != std::string::npos || name.find(".4.51.") != std::string::npos ||
                          name.find(".4.53.") != std::string::npos || name.find(".4.55.") != std::string::npos ||
                          name.find(".4.81.") != std::string::npos || name.find(".4.91.") != std::string::npos;
    const float d = max_abs_diff(v, ref);
    if (is_lossy) {
      CHECK(d < 100.0f);
      ++lossy;
    } else {
      CHECK(d == 0.0f);
      ++lossless;
    }
  }
  CHECK(lossless >= 8);
  CHECK(lossy >= 6);
  // Multi-frame enhanced CT (fragmented JPEG) and the NEMA J2K file.
  Volume<float> mf = io::read(dir + "/CT0012.fragmented_no_bot_jpeg_baseline.51.dcm");
  CHECK(mf.nk() == 2);
  Volume<float> j2k = io::read(dir + "/CT1_J2KR");
  CHECK(j2k.ni() == 512);
}

TEST_CASE("dicom: signed 13-bit JPEG 2000 stream is sign-extended from BitsStored") {
  Volume<float> v = io::read(data("dicom/single-slices/J2K_pixelrep_mismatch.dcm"));
  float lo = 1e9f, hi = -1e9f;
  for (std::size_t n = 0; n < v.size(); ++n) {
    lo = std::min(lo, v.data()[n]);
    hi = std::max(hi, v.data()[n]);
  }
  CHECK(lo == -2000.0f);
  CHECK(hi == 1896.0f);
}

TEST_CASE("dicom: the value stats gathered while decoding equal a plain loop over the volume") {
  // stacked slices (kept tilt, one slice, an uncalibrated series) and a resampled output
  struct Case {
    std::string path;
    io::TiltMode tilt;
  };
  for (const Case& c : {Case{data("dicom/ge-head-tilt"), io::TiltMode::Keep}, Case{data("dicom/ge-head-tilt"), io::TiltMode::Resample},
                        Case{data("dicom/slicer-ctheadaxial"), io::TiltMode::Keep},
                        Case{data("dicom/single-slices/CT_small.dcm"), io::TiltMode::Keep}}) {
    CAPTURE(c.path);
    CAPTURE(c.tilt == io::TiltMode::Keep);
    io::DicomReadOptions o;
    o.tilt = c.tilt;
    const io::DicomVolume dv = io::read_dicom(c.path, o);
    const ValueStats want = test::plain_value_stats(dv.volume.data(), dv.volume.size());
    CHECK(dv.stats.nan == want.nan);
    CHECK(dv.stats.lo == want.lo);
    CHECK(dv.stats.hi == want.hi);
    CHECK(want.hi > want.lo);
  }
  // io::read with stats passes the default read's (tilt resampled) on
  ValueStats st;
  const Volume<float> v = io::read(data("dicom/ge-head-tilt"), {}, st);
  const ValueStats want = test::plain_value_stats(v.data(), v.size());
  CHECK(st.lo == want.lo);
  CHECK(st.hi == want.hi);
  CHECK(st.nan == 0);
}

TEST_CASE("dicom: uncalibrated CT is flagged as not HU") {
  io::DicomVolume dv = io::read_dicom(data("dicom/slicer-ctheadaxial"));
  CHECK(dv.report.non_hu);
  CHECK_FALSE(dv.report.non_hu_reason.empty());
  CHECK(dv.volume.nk() == 93);
}

TEST_CASE("dicom: every malformed input raises its documented error or is handled as documented") {
  std::ifstream csv(data("malformed/dicom/expected.csv"));
  REQUIRE(csv.good());
  std::string line;
  std::getline(csv, line);
  int n = 0;
  while (std::getline(csv, line)) {
    std::stringstream ss(line);
    std::string name, expected;
    std::getline(ss, name, ',');
    std::getline(ss, expected, ',');
    const std::string path = data("malformed/dicom/" + name);
    CAPTURE(name);
    if (name == "empty_folder") fs::create_directories(path);  // git does not keep empty folders
    std::string got = "no error";
    std::size_t skipped = 0, warnings = 0, parts = 0;
    try {
      std::vector<std::string> w;
      parts = io::list_series(path, {}, &w).size();
      io::DicomVolume dv = io::read_dicom(path);
      skipped = dv.report.files_skipped;
      warnings = dv.report.warnings.size();
    } catch (const std::exception& e) {
      got = test::error_kind(e);
    }
    if (expected == "skipped") {
      CHECK(got == "no error");
      CHECK(skipped >= 1);
    } else if (expected == "split") {
      CHECK(got == "no error");
      CHECK(parts >= 2);
      CHECK(warnings >= 1);
    } else {
      CHECK(got == expected);
    }
    ++n;
  }
  CHECK(n >= 15);
}

TEST_CASE("dicom: folder scans do not follow symlinks out of the folder and are bounded") {
  ichkit::test::TempDir tmp;
  fs::create_directories(tmp.path() / "series");
  fs::copy_file(data("dicom/single-slices/CT_small.dcm"), tmp.path() / "series" / "a.dcm");
  fs::create_directory_symlink(fs::absolute(data("dicom/ge-head-tilt")), tmp.path() / "series" / "outside");
  auto s = io::list_series((tmp.path() / "series").string());
  REQUIRE(s.size() == 1);
  CHECK(s[0].images == 1);
  io::ScanOptions small;
  small.max_files = 5;
  CHECK_THROWS_AS(io::list_series(data("dicom/ge-head-tilt"), small), ResourceError);
  CHECK_THROWS_AS(io::list_series(data("dicom/does-not-exist")), IoError);
}
