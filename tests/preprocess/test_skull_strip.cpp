// Tests of ichkit/preprocess/skull_strip.h on phantoms (known intracranial mask and hematoma)
// and on the real GE head CT with gantry tilt.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "ichkit/core/error.h"
#include "ichkit/core/threading.h"
#include "ichkit/io/dicom.h"
#include "ichkit/phantom/phantom.h"
#include "ichkit/preprocess/skull_strip.h"
#include "ichkit/quant/components.h"
#include "test_common.h"

namespace ph = ichkit::phantom;
namespace pp = ichkit::preprocess;
using ichkit::Geometry;
using ichkit::Volume;

namespace {

struct Score {
  double dice = 0;
  double hematoma_kept = 1;        // fraction of hematoma-mask voxels inside the brain mask
  double hematoma_kept_soft = 1;   // the same among hematoma voxels of at most 300 HU
  std::size_t components = 0;
  float max_hu = -std::numeric_limits<float>::infinity();
};

Score score(const ph::Case& c, const Volume<std::uint8_t>& m) {
  Score s;
  std::size_t inter = 0, a = 0, b = 0, hn = 0, hk = 0, sn = 0, sk = 0;
  for (std::size_t x = 0; x < m.size(); ++x) {
    const bool p = m.data()[x] != 0, g = c.brain.data()[x] != 0;
    inter += p && g;
    a += p;
    b += g;
    if (p) s.max_hu = std::max(s.max_hu, c.image.data()[x]);
    if (c.mask.data()[x]) {
      ++hn;
      hk += p;
      if (c.image.data()[x] <= 300) {
        ++sn;
        sk += p;
      }
    }
  }
  s.dice = 2.0 * double(inter) / double(a + b);
  if (hn) s.hematoma_kept = double(hk) / double(hn);
  if (sn) s.hematoma_kept_soft = double(sk) / double(sn);
  s.components = ichkit::quant::connected_components(m, 26).count();
  return s;
}

ph::Case make(std::uint64_t seed, ph::Location loc, double tilt, bool ivh, double noise = 6.0) {
  ph::CaseOptions o;
  o.seed = seed;
  o.location = loc;
  o.tilt_deg = tilt;
  o.ivh = ivh;
  o.noise_sd = noise;
  return ph::make_case(o);
}

}  // namespace

TEST_CASE("skull_strip on phantoms: Dice >= 0.97, blood kept, one component, no bone" * doctest::test_suite("slow")) {
  // Clinical-like 512 x 512 x 32 scans at 0.45 x 0.45 x 5 mm. The phantom's brain mask
  // includes the spinal canal below the skull base; the stripper keeps it too (it is
  // continuous with the posterior fossa through the foramen magnum), so Dice is taken
  // over the whole volume.
  struct C {
    std::uint64_t seed;
    ph::Location loc;
    double tilt;
    bool ivh;
    double noise;
  };
  // deep and infratentorial bleeds with and without IVH, gantry tilts of 0..20 degrees,
  // image noise 4..10 HU (cases 11, 12, 19 and 18 of the 20-phantom evaluation)
  for (const C& c : {C{111, ph::Location::BasalGanglia, 20, false, 10}, C{112, ph::Location::Thalamus, 0, true, 4},
                     C{119, ph::Location::Brainstem, 18, false, 10},
                     C{118, ph::Location::Cerebellum, 0, true, 8}}) {
    const ph::Case cs = make(c.seed, c.loc, c.tilt, c.ivh, c.noise);
    const Volume<std::uint8_t> m = pp::skull_strip(cs.image);
    const Score s = score(cs, m);
    CAPTURE(c.seed);
    CAPTURE(ph::to_string(c.loc));
    CAPTURE(s.dice);
    CAPTURE(s.hematoma_kept);
    CHECK(m.same_grid(cs.image));
    CHECK(s.dice >= 0.97);
    CHECK(s.hematoma_kept >= 0.995);
    CHECK(s.hematoma_kept_soft == 1.0);
    CHECK(s.components == 1);
    CHECK(s.max_hu <= 300.0f);
  }
}

TEST_CASE("skull_strip: a lobar hematoma pressed against the inner table" * doctest::test_suite("slow")) {
  // Seed 105 (tilt 20 degrees): 18 mL lobar bleed against the skull over five 5 mm slices.
  // Every hematoma voxel that looks like blood (<= 300 HU) stays in the mask; the voxels
  // the bleed shares with the inner table (the phantom's mask counts them as blood when
  // about half of the voxel is blood; their HU is 350..720) are outside the default mask,
  // which keeps bone-like voxels (> rim_max_hu = 300 HU) out: ~3.7 % of this bleed. The
  // majority rule without the cap (rim_max_hu = inf) keeps all but ~1.3 %.
  const ph::Case cs = make(105, ph::Location::Lobar, 20, false);
  const Score d = score(cs, pp::skull_strip(cs.image));
  CAPTURE(d.dice);
  CAPTURE(d.hematoma_kept);
  CHECK(d.dice >= 0.97);
  CHECK(d.hematoma_kept_soft == 1.0);
  CHECK(d.hematoma_kept >= 0.95);
  CHECK(d.max_hu <= 300.0f);

  pp::SkullStripOptions o;
  o.rim_max_hu = std::numeric_limits<float>::infinity();
  const Score u = score(cs, pp::skull_strip(cs.image, o));
  CAPTURE(u.dice);
  CAPTURE(u.hematoma_kept);
  CHECK(u.dice >= 0.98);
  CHECK(u.dice > d.dice);
  CHECK(u.hematoma_kept >= 0.985);
  CHECK(u.hematoma_kept > d.hematoma_kept);
  CHECK(u.components == 1);
}

TEST_CASE("skull_strip: thin slices, results independent of the thread count") {
  ph::CaseOptions o;
  o.shape = {192, 192, 96};
  o.spacing = Eigen::Vector3d(1.2, 1.2, 1.6);
  o.seed = 3;
  o.location = ph::Location::Lobar;
  o.tilt_deg = 15;
  const ph::Case cs = ph::make_case(o);
  ichkit::set_num_threads(1);
  const Volume<std::uint8_t> m1 = pp::skull_strip(cs.image);
  ichkit::set_num_threads(3);
  const Volume<std::uint8_t> m3 = pp::skull_strip(cs.image);
  ichkit::set_num_threads(0);
  CHECK(std::equal(m1.data(), m1.data() + m1.size(), m3.data()));
  const Score s = score(cs, m1);
  CAPTURE(s.dice);
  CHECK(s.dice >= 0.97);
  CHECK(s.components == 1);
}

TEST_CASE("skull_strip on the real GE head CT with gantry tilt") {
  const auto dv = ichkit::io::read_dicom(ichkit::test::data_path("dicom/ge-head-tilt").string());
  const Volume<float>& hu = dv.volume;
  const Volume<std::uint8_t> m = pp::skull_strip(hu);
  REQUIRE(m.same_grid(hu));
  std::size_t n = 0;
  float max_hu = -std::numeric_limits<float>::infinity();
  for (std::size_t x = 0; x < m.size(); ++x)
    if (m.data()[x]) {
      ++n;
      max_hu = std::max(max_hu, hu.data()[x]);
    }
  const double ml = double(n) * hu.spacing().prod() / 1000.0;
  CAPTURE(ml);
  CAPTURE(max_hu);
  CHECK(ichkit::quant::connected_components(m, 6).count() == 1);
  CHECK(ichkit::quant::connected_components(m, 26).count() == 1);
  CHECK(ml >= 1000);
  CHECK(ml <= 1700);
  CHECK(max_hu <= 300.0f);
  // the top of the brain and the posterior fossa are in; the neck's soft tissue and the air are out
  std::size_t top = 0, bottom_corner = 0;
  for (std::size_t j = 0; j < m.nj(); ++j)
    for (std::size_t i = 0; i < m.ni(); ++i) {
      top += m(i, j, m.nk() - 4);
      bottom_corner += (i < 64 || j < 64) && m(i, j, 0);
    }
  CHECK(top > 0);
  CHECK(bottom_corner == 0);
}

TEST_CASE("skull_strip: a synthetic skull, options and errors") {
  // a sphere of brain (30 HU) inside 6 mm of bone (1200 HU) inside 5 mm of scalp (40 HU), in air
  const std::size_t n = 96;
  Volume<float> v({n, n, 48}, Geometry::from_spacing({1.0, 1.0, 2.0}), -1000.0f);
  std::size_t inside = 0;
  for (std::size_t k = 0; k < 48; ++k)
    for (std::size_t j = 0; j < n; ++j)
      for (std::size_t i = 0; i < n; ++i) {
        const double r = std::sqrt(std::pow(i - 47.5, 2) + std::pow(j - 47.5, 2) + std::pow(2.0 * k - 47.0, 2));
        v(i, j, k) = r < 30 ? 30.0f : r < 36 ? 1200.0f : r < 41 ? 40.0f : -1000.0f;
        inside += r < 30;
      }
  const Volume<std::uint8_t> m = pp::skull_strip(v);
  std::size_t got = 0, wrong = 0;
  for (std::size_t x = 0; x < m.size(); ++x) {
    got += m.data()[x];
    wrong += m.data()[x] && v.data()[x] != 30.0f;
  }
  CHECK(wrong == 0);
  CHECK(got == inside);

  // a calcification (400 HU) and a clot (70 HU) inside stay in the mask (hole filling)
  v(47, 47, 24) = 400.0f;
  v(40, 47, 24) = 70.0f;
  const Volume<std::uint8_t> m2 = pp::skull_strip(v);
  CHECK(m2(47, 47, 24) == 1);
  CHECK(m2(40, 47, 24) == 1);

  // nothing brain-like: a clear error, not an empty mask
  Volume<float> air({32, 32, 8}, Geometry(), -1000.0f);
  CHECK_THROWS_AS(pp::skull_strip(air), ichkit::InvalidArgument);
  pp::SkullStripOptions bad;
  bad.brain_min_hu = 100;
  bad.brain_max_hu = 0;
  CHECK_THROWS_AS(pp::skull_strip(v, bad), ichkit::InvalidArgument);
  bad = {};
  bad.opening_mm = -1;
  CHECK_THROWS_AS(pp::skull_strip(v, bad), ichkit::InvalidArgument);
  bad = {};
  bad.smooth_sigma_mm = std::nan("");
  CHECK_THROWS_AS(pp::skull_strip(v, bad), ichkit::InvalidArgument);
  CHECK_THROWS_AS(pp::skull_strip(Volume<float>()), ichkit::InvalidArgument);
}
