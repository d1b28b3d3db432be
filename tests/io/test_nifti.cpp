#include "ichkit/io/nifti.h"

#include <cmath>
#include <limits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "ichkit/core/threading.h"
#include "ichkit/io/read.h"
#include "test_common.h"

using namespace ichkit;
using ichkit::test::TempDir;

namespace {
Geometry oblique_geometry() {
  Eigen::Matrix4d a = Eigen::Matrix4d::Identity();
  const double t = 0.3;
  a.topLeftCorner<3, 3>() << -0.45 * std::cos(t), 0.45 * std::sin(t), 0, 0.45 * std::sin(t), 0.45 * std::cos(t), 0, 0, 0, 5;
  a.topRightCorner<3, 1>() << 110.5, -98.25, -40;
  return Geometry(a);
}

template <class T>
Volume<T> ramp(const Shape3& s, const Geometry& g) {
  Volume<T> v(s, g);
  std::mt19937 rng(7);
  for (std::size_t n = 0; n < v.size(); ++n) {
    if constexpr (std::is_floating_point<T>::value) v.data()[n] = static_cast<T>(std::uniform_real_distribution<double>(-1024, 3071)(rng));
    else v.data()[n] = static_cast<T>(rng() % 251);
  }
  return v;
}

std::vector<char> slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(f), {});
}
}  // namespace

TEST_CASE_TEMPLATE("nifti: write/read round trip is exact for every datatype", T, std::uint8_t, std::int8_t, std::int16_t,
                   std::uint16_t, std::int32_t, std::uint32_t, std::int64_t, std::uint64_t, float, double) {
  TempDir dir;
  const Geometry g = oblique_geometry();
  Volume<T> v = ramp<T>({7, 6, 5}, g);
  for (int version : {1, 2})
    for (std::string ext : {".nii", ".nii.gz"}) {
      const std::string p = dir / ("v" + std::to_string(version) + ext);
      io::WriteOptions o;
      o.version = version;
      io::write_nifti(v, p, o);
      io::NiftiHeader h;
      AnyVolume any = io::read_nifti_raw(p, &h);
      REQUIRE(datatype(any) == datatype_of<T>::value);
      Volume<T> r = std::get<Volume<T>>(any);
      CHECK(h.version == version);
      CHECK(h.compressed == (ext == ".nii.gz"));
      CHECK(r.shape() == v.shape());
      CHECK(std::memcmp(r.data(), v.data(), v.size() * sizeof(T)) == 0);
      // The header stores float32 (NIfTI-1) or float64 (NIfTI-2) affines.
      CHECK(r.geometry().approx_equal(g, version == 1 ? 1e-4 : 1e-12));
      CHECK(io::read_nifti<T>(p).geometry() == r.geometry());
    }
}

TEST_CASE("nifti: no temporary files are left and the output appears only when complete") {
  TempDir dir;
  Volume<float> v({16, 16, 4}, Geometry(), 1.5f);
  io::write_nifti(v, dir / "a.nii.gz");
  int files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) {
    (void)e;
    ++files;
  }
  CHECK(files == 1);
  // A failing write (bad extension) leaves nothing behind.
  CHECK_THROWS_AS(io::write_nifti(v, dir / "a.png"), InvalidArgument);
  CHECK_THROWS_AS(io::write_nifti(v, (dir.path() / "missing-folder" / "x.nii").string()), IoError);
  files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) {
    (void)e;
    ++files;
  }
  CHECK(files == 1);
}

TEST_CASE("nifti: scl_slope/scl_inter are applied on read and kept raw on request") {
  TempDir dir;
  Volume<std::int16_t> raw({4, 4, 4}, Geometry(), 0);
  for (std::size_t n = 0; n < raw.size(); ++n) raw.data()[n] = static_cast<std::int16_t>(n * 10);
  io::WriteOptions o;
  o.scl_slope = 0.5;
  o.scl_inter = -1024;
  io::write_nifti(raw, dir / "s.nii", o);
  Volume<double> d = io::read_nifti<double>(dir / "s.nii");
  Volume<float> f = io::read_nifti<float>(dir / "s.nii");
  for (std::size_t n = 0; n < raw.size(); ++n) {
    CHECK(d.data()[n] == double(raw.data()[n]) * 0.5 - 1024);
    CHECK(f.data()[n] == static_cast<float>(double(raw.data()[n]) * 0.5 - 1024));
  }
  io::NiftiHeader h;
  AnyVolume r = io::read_nifti_raw(dir / "s.nii", &h);
  CHECK(h.has_scaling);
  CHECK(std::get<Volume<std::int16_t>>(r)(3, 0, 0) == 30);
  // Asking for an integer type of a scaled file is refused rather than silently unscaled.
  CHECK_THROWS_AS(io::read_nifti<std::int16_t>(dir / "s.nii"), FormatError);
}

TEST_CASE("nifti: the stats gathered while reading equal a plain loop over the voxels read") {
  // every conversion path: int16 (converted), int16 with scl_slope/inter, float32 as stored
  // (zero-copy), float64 (converted), over the parallel chunk and in-cache block boundaries
  TempDir dir;
  set_num_threads(2);
  const Shape3 shape{131, 97, 13};  // 165191 voxels: many 4096-voxel blocks and a ragged tail
  Volume<std::int16_t> i16 = ramp<std::int16_t>(shape, Geometry());
  i16(130, 96, 12) = -3000;  // the extremes in the last, ragged block and the first one
  i16(0, 0, 0) = 4000;
  Volume<float> f32 = ramp<float>(shape, Geometry());
  f32(5, 7, 3) = std::numeric_limits<float>::quiet_NaN();
  f32(130, 96, 12) = std::numeric_limits<float>::quiet_NaN();
  f32(100, 2, 11) = std::numeric_limits<float>::infinity();
  io::WriteOptions scaled;
  scaled.scl_slope = 0.5;
  scaled.scl_inter = -1024;
  io::write_nifti(i16, dir / "i16.nii.gz");
  io::write_nifti(i16, dir / "scaled.nii", scaled);
  io::write_nifti(f32, dir / "f32.nii");
  io::write_nifti(f32, dir / "f32.nii.gz");
  io::write_nifti(f32.cast<double>(), dir / "f64.nii");
  for (const char* name : {"i16.nii.gz", "scaled.nii", "f32.nii", "f32.nii.gz", "f64.nii"}) {
    CAPTURE(name);
    ValueStats got;
    got.nan = 99;  // overwritten, not added to
    const Volume<float> v = io::read(dir / name, {}, got);
    const ValueStats want = test::plain_value_stats(v.data(), v.size());
    CHECK(std::memcmp(v.data(), io::read(dir / name).data(), v.size() * sizeof(float)) == 0);
    CHECK(got.nan == want.nan);
    CHECK(got.lo == want.lo);
    CHECK(got.hi == want.hi);
  }
  ValueStats st;
  io::read(dir / "i16.nii.gz", {}, st);
  CHECK(st.lo == -3000.0f);
  CHECK(st.hi == 4000.0f);
  io::read(dir / "scaled.nii", {}, st);
  CHECK(st.lo == -3000.0f * 0.5f - 1024.0f);
  CHECK(st.nan == 0);
  io::read(dir / "f32.nii.gz", {}, st);
  CHECK(st.nan == 2);
  CHECK(st.hi == std::numeric_limits<float>::infinity());
  set_num_threads(0);
}

TEST_CASE("nifti: integer reads refuse values that do not fit") {
  TempDir dir;
  Volume<float> v({2, 2, 2}, Geometry(), 300.0f);
  io::write_nifti(v, dir / "f.nii");
  CHECK_THROWS_AS(io::read_nifti<std::uint8_t>(dir / "f.nii"), FormatError);
  CHECK(io::read_nifti<std::int16_t>(dir / "f.nii")(1, 1, 1) == 300);
  v(0, 0, 0) = 1.5f;
  io::write_nifti(v, dir / "g.nii");
  CHECK_THROWS_AS(io::read_nifti<std::int16_t>(dir / "g.nii"), FormatError);
}

TEST_CASE("nifti: multi-member gzip written in parallel is one valid stream") {
  TempDir dir;
  set_num_threads(2);
  Volume<std::int16_t> v = ramp<std::int16_t>({256, 256, 40}, Geometry());  // 5 MB: several members
  io::write_nifti(v, dir / "big.nii.gz");
  Volume<std::int16_t> r = io::read_nifti<std::int16_t>(dir / "big.nii.gz");
  CHECK(std::memcmp(r.data(), v.data(), v.size() * 2) == 0);
  // Same bytes whatever the thread count (deterministic output).
  set_num_threads(1);
  io::write_nifti(v, dir / "big1.nii.gz");
  set_num_threads(0);
  io::write_nifti(v, dir / "big2.nii.gz");
  CHECK(slurp(dir / "big1.nii.gz").size() > 0);
  CHECK(io::read_nifti<std::int16_t>(dir / "big1.nii.gz").size() == v.size());
}

TEST_CASE("nifti: the real blast-ct lesion mask gives the published volumes") {
  const std::string p = ichkit::test::data_path("nifti/blast-ct-lesions/scan_0_segmentation.nii.gz").string();
  REQUIRE(io::is_nifti(p));
  CHECK(io::detect_format(p) == io::Format::Nifti);
  Volume<std::uint8_t> m = io::read_nifti<std::uint8_t>(p);
  CHECK(m.shape() == Shape3{201, 201, 149});
  const double voxel_ml = std::abs(m.affine().topLeftCorner<3, 3>().determinant()) / 1000.0;
  std::array<std::size_t, 5> counts{};
  for (std::size_t n = 0; n < m.size(); ++n)
    if (m.data()[n] < 5) counts[m.data()[n]]++;
  CHECK(counts[1] * voxel_ml == doctest::Approx(46.45).epsilon(0.0002));
  CHECK(counts[2] * voxel_ml == doctest::Approx(22.85).epsilon(0.0005));
  CHECK(counts[3] * voxel_ml == doctest::Approx(75.57).epsilon(0.0002));
  CHECK(counts[4] * voxel_ml == doctest::Approx(0.59).epsilon(0.01));
}

TEST_CASE("nifti: format is chosen by content, not by name") {
  TempDir dir;
  Volume<std::int16_t> v({3, 3, 3}, Geometry(), 5);
  io::write_nifti(v, dir / "x.nii.gz");
  std::filesystem::rename(dir / "x.nii.gz", dir / "scan.dat");
  CHECK(io::detect_format(dir / "scan.dat") == io::Format::Nifti);
  CHECK(io::read(dir / "scan.dat")(2, 2, 2) == 5.0f);
  std::ofstream(dir / "fake.nii") << "not an image";
  CHECK(io::detect_format(dir / "fake.nii") == io::Format::Unknown);
  CHECK_THROWS_AS(io::read(dir / "fake.nii"), FormatError);
  CHECK_THROWS_AS(io::read(dir / "does-not-exist.nii"), IoError);
}
