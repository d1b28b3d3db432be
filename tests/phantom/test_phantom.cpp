// Tests of ichkit/phantom/phantom.h: synthetic head CTs with a known hematoma.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "ichkit/core/error.h"
#include "ichkit/core/threading.h"
#include "ichkit/io/nifti.h"
#include "ichkit/phantom/phantom.h"
#include "test_common.h"

namespace ph = ichkit::phantom;
using ichkit::Volume;

namespace {

/// A 256 x 256 grid of 0.9 mm pixels over 160 mm in z (the FOV of the default options).
ph::CaseOptions small_options(std::uint64_t seed, double slice_mm = 5.0) {
  ph::CaseOptions o;
  o.shape = {256, 256, static_cast<std::size_t>(std::lround(160.0 / slice_mm))};
  o.spacing = Eigen::Vector3d(0.9, 0.9, slice_mm);
  o.seed = seed;
  return o;
}

std::size_t count_nonzero(const Volume<std::uint8_t>& v) {
  return static_cast<std::size_t>(std::count_if(v.data(), v.data() + v.size(), [](std::uint8_t x) { return x != 0; }));
}

struct Stats {
  double sum = 0;
  std::size_t n = 0;
  double mean() const { return n ? sum / double(n) : std::numeric_limits<double>::quiet_NaN(); }
};

/// HU statistics of the voxels labelled `label`; with `interior`, only voxels whose six
/// neighbours carry the same label (no partial volume).
Stats label_stats(const ph::Case& c, std::uint8_t label, bool interior) {
  Stats s;
  const auto& L = c.labels;
  const std::size_t ni = L.ni(), nj = L.nj(), nk = L.nk();
  for (std::size_t k = 0; k < nk; ++k)
    for (std::size_t j = 0; j < nj; ++j)
      for (std::size_t i = 0; i < ni; ++i) {
        if (L(i, j, k) != label) continue;
        if (interior) {
          if (i == 0 || j == 0 || k == 0 || i + 1 == ni || j + 1 == nj || k + 1 == nk) continue;
          if (L(i - 1, j, k) != label || L(i + 1, j, k) != label || L(i, j - 1, k) != label ||
              L(i, j + 1, k) != label || L(i, j, k - 1) != label || L(i, j, k + 1) != label)
            continue;
        }
        s.sum += c.image(i, j, k);
        ++s.n;
      }
  return s;
}

double relative_error(const ph::Case& c) { return (c.volume_ml - c.analytic_volume_ml) / c.analytic_volume_ml; }

/// Records the calls a progress reporter receives.
class CountingProgress final : public ichkit::ProgressReporter {
public:
  void begin(const std::string& task, std::int64_t total) override {
    ++begins;
    this->task = task;
    this->total = total;
  }
  void advance(std::int64_t steps, const std::string&) override { advanced += steps; }
  void end() override { ++ends; }
  int begins = 0, ends = 0;
  std::atomic<std::int64_t> advanced{0};
  std::int64_t total = -1;
  std::string task;
};

/// Restores the thread count when a test ends.
struct ThreadGuard {
  int saved = ichkit::num_threads();
  ~ThreadGuard() { ichkit::set_num_threads(saved); }
};

}  // namespace

TEST_CASE("phantom: location names round-trip and unknown names are rejected") {
  for (ph::Location l : {ph::Location::BasalGanglia, ph::Location::Thalamus, ph::Location::Lobar,
                         ph::Location::Cerebellum, ph::Location::Brainstem})
    CHECK(ph::location_from_string(ph::to_string(l)) == l);
  CHECK(ph::to_string(ph::Location::BasalGanglia) == "basal_ganglia");
  CHECK(ph::to_string(ph::Location::Brainstem) == "brainstem");
  CHECK(ph::location_from_string("Basal-Ganglia") == ph::Location::BasalGanglia);
  CHECK_THROWS_AS(ph::location_from_string("pons"), ichkit::InvalidArgument);
  CHECK_THROWS_AS(ph::location_from_string(""), ichkit::InvalidArgument);
  CHECK(ph::is_infratentorial(ph::Location::Cerebellum));
  CHECK(ph::is_infratentorial(ph::Location::Brainstem));
  CHECK_FALSE(ph::is_infratentorial(ph::Location::Lobar));
  CHECK_FALSE(ph::is_infratentorial(ph::Location::Thalamus));
  CHECK_FALSE(ph::is_infratentorial(ph::Location::BasalGanglia));
}

TEST_CASE("phantom: outcome_logit follows the documented formula") {
  using L = ph::Location;
  // -2.2 + 0.035 * 10
  CHECK(ph::outcome_logit(10, false, L::BasalGanglia, 60, 15) == doctest::Approx(-1.85));
  // volume >= 30 (1.6) + 0.035 * 30
  CHECK(ph::outcome_logit(30, false, L::Lobar, 79, 13) == doctest::Approx(-2.2 + 1.6 + 1.05));
  CHECK(ph::outcome_logit(29.99, false, L::Lobar, 79, 13) == doctest::Approx(-2.2 + 0.035 * 29.99));
  // IVH, infratentorial, age >= 80, GCS 3-4, volume capped at 80 in the linear term
  CHECK(ph::outcome_logit(120, true, L::Cerebellum, 80, 4) ==
        doctest::Approx(-2.2 + 1.6 + 1.0 + 0.9 + 0.9 + 0.035 * 80 + 1.5));
  CHECK(ph::outcome_logit(45, true, L::Brainstem, 82, 3) == doctest::Approx(5.275));
  // GCS 5-12 adds 0.8; 13-15 nothing
  CHECK(ph::outcome_logit(0, false, L::Thalamus, 50, 5) == doctest::Approx(-1.4));
  CHECK(ph::outcome_logit(0, false, L::Thalamus, 50, 12) == doctest::Approx(-1.4));
  CHECK(ph::outcome_logit(0, false, L::Thalamus, 50, 13) == doctest::Approx(-2.2));
  CHECK(ph::outcome_logit(0, false, L::Thalamus, 50, 4) == doctest::Approx(-0.7));
}

TEST_CASE("phantom: invalid options throw InvalidArgument") {
  auto bad = [](auto modify) {
    ph::CaseOptions o = small_options(1);
    modify(o);
    return o;
  };
  CHECK_THROWS_AS(ph::make_case(bad([](ph::CaseOptions& o) { o.shape = {0, 256, 32}; })), ichkit::InvalidArgument);
  CHECK_THROWS_AS(ph::make_case(bad([](ph::CaseOptions& o) { o.shape = {256, 256, 0}; })), ichkit::InvalidArgument);
  CHECK_THROWS_AS(ph::make_case(bad([](ph::CaseOptions& o) { o.spacing = Eigen::Vector3d(0.9, 0, 5); })), ichkit::InvalidArgument);
  CHECK_THROWS_AS(ph::make_case(bad([](ph::CaseOptions& o) { o.spacing = Eigen::Vector3d(-0.9, 0.9, 5); })), ichkit::InvalidArgument);
  CHECK_THROWS_AS(ph::make_case(bad([](ph::CaseOptions& o) { o.spacing = Eigen::Vector3d(0.9, 0.9, std::nan("")); })),
                  ichkit::InvalidArgument);
  CHECK_THROWS_AS(ph::make_case(bad([](ph::CaseOptions& o) { o.noise_sd = -1; })), ichkit::InvalidArgument);
  CHECK_THROWS_AS(ph::make_case(bad([](ph::CaseOptions& o) { o.noise_sd = 1e300; })), ichkit::InvalidArgument);  // voxels of +-inf
  CHECK_THROWS_AS(ph::make_case(bad([](ph::CaseOptions& o) { o.target_volume_ml = 0.0; })), ichkit::InvalidArgument);
  CHECK_THROWS_AS(ph::make_case(bad([](ph::CaseOptions& o) { o.target_volume_ml = -5.0; })), ichkit::InvalidArgument);
  CHECK_THROWS_AS(ph::make_case(bad([](ph::CaseOptions& o) { o.target_volume_ml = 300.5; })), ichkit::InvalidArgument);
  CHECK_THROWS_AS(ph::make_case(bad([](ph::CaseOptions& o) { o.supersample = 0; })), ichkit::InvalidArgument);
  CHECK_THROWS_AS(ph::make_case(bad([](ph::CaseOptions& o) { o.tilt_deg = 80; })), ichkit::InvalidArgument);
  // refused before any allocation
  CHECK_THROWS_AS(ph::make_case(bad([](ph::CaseOptions& o) { o.shape = {4096, 4096, 512}; })), ichkit::ResourceError);

  ph::CohortOptions co;
  co.n = 0;
  CHECK_THROWS_AS(ph::make_cohort((std::filesystem::temp_directory_path() / "ichkit_phantom_never").string(), co),
                  ichkit::InvalidArgument);
  co.n = -3;
  CHECK_THROWS_AS(ph::make_cohort((std::filesystem::temp_directory_path() / "ichkit_phantom_never").string(), co),
                  ichkit::InvalidArgument);
  CHECK_FALSE(std::filesystem::exists(std::filesystem::temp_directory_path() / "ichkit_phantom_never"));
}

TEST_CASE("phantom: geometry is RAS, centred on the head, with the requested spacing") {
  ph::CaseOptions o = small_options(3);
  o.shape = {200, 220, 30};
  o.spacing = Eigen::Vector3d(1.1, 0.9, 5.5);
  o.hematoma = false;
  const ph::Case c = ph::make_case(o);
  const ichkit::Geometry& g = c.image.geometry();
  CHECK(c.image.shape() == o.shape);
  CHECK(g.is_orthogonal());
  CHECK(g.orientation_code() == "RAS");
  CHECK((g.spacing() - o.spacing).norm() < 1e-12);
  const Eigen::Vector3d centre = g.index_to_world(Eigen::Vector3d(99.5, 109.5, 14.5));
  CHECK(centre.norm() < 1e-9);
  CHECK(c.mask.geometry() == g);
  CHECK(c.labels.geometry() == g);
  CHECK(c.brain.geometry() == g);
  // a normal head: no blood, no edema, empty mask
  CHECK(count_nonzero(c.mask) == 0);
  CHECK(c.volume_ml == 0);
  CHECK(c.analytic_volume_ml == 0);
  CHECK_FALSE(c.ivh);
  for (std::size_t n = 0; n < c.labels.size(); ++n) {
    const std::uint8_t l = c.labels.data()[n];
    if (l == ph::kHematoma || l == ph::kEdema || l == ph::kIvh) {
      FAIL("normal head has a blood or edema label at voxel " << n);
      break;
    }
  }
  // the head lies inside the field of view: the grid's outer faces in x and y are air
  std::size_t edge_tissue = 0;
  for (std::size_t k = 0; k < c.labels.nk(); ++k)
    for (std::size_t j = 0; j < c.labels.nj(); ++j)
      edge_tissue += (c.labels(0, j, k) != ph::kAir) + (c.labels(c.labels.ni() - 1, j, k) != ph::kAir);
  CHECK(edge_tissue == 0);
}

TEST_CASE("phantom: mask, labels and brain mask agree; volume is the voxel count times the voxel volume") {
  for (std::uint64_t seed : {5u, 6u}) {
    ph::CaseOptions o = small_options(seed);
    o.ivh = true;
    o.target_volume_ml = 25.0;
    o.location = seed == 5 ? ph::Location::Thalamus : ph::Location::BasalGanglia;
    const ph::Case c = ph::make_case(o);
    const std::size_t n = count_nonzero(c.mask);
    REQUIRE(n > 0);
    const double voxel_mm3 = std::abs(c.mask.affine().topLeftCorner<3, 3>().determinant());
    CHECK(c.volume_ml == doctest::Approx(double(n) * voxel_mm3 / 1000.0).epsilon(1e-14));
    std::size_t mismatch = 0, brain_mismatch = 0, ivh_voxels = 0, bad_values = 0;
    for (std::size_t v = 0; v < c.mask.size(); ++v) {
      const std::uint8_t l = c.labels.data()[v];
      const bool blood = l == ph::kHematoma || l == ph::kIvh;
      mismatch += blood != (c.mask.data()[v] == 1);
      const bool intracranial = !(l == ph::kAir || l == ph::kScalp || l == ph::kSkull);
      brain_mismatch += intracranial != (c.brain.data()[v] == 1);
      ivh_voxels += l == ph::kIvh;
      bad_values += c.mask.data()[v] > 1 || l > ph::kIvh;
    }
    CHECK(bad_values == 0);
    CHECK(mismatch == 0);
    CHECK(brain_mismatch == 0);
    CHECK(ivh_voxels > 0);
    CHECK(c.ivh);
    // the brain mask is a plausible intracranial volume (1.1 .. 1.8 L)
    const double brain_ml = double(count_nonzero(c.brain)) * voxel_mm3 / 1000.0;
    CHECK(brain_ml > 1100);
    CHECK(brain_ml < 1800);
  }
}

TEST_CASE("phantom: the voxelised hematoma volume matches the continuous shape's volume" * doctest::test_suite("slow")) {
  struct Spec {
    ph::Location loc;
    double ml;
    std::uint64_t seed;
  };
  const Spec specs[] = {{ph::Location::BasalGanglia, 6, 21},  {ph::Location::BasalGanglia, 45, 22},
                        {ph::Location::Thalamus, 12, 23},      {ph::Location::Lobar, 9, 24},
                        {ph::Location::Lobar, 30, 25},         {ph::Location::Cerebellum, 14, 26},
                        {ph::Location::Brainstem, 5, 27},      {ph::Location::BasalGanglia, 80, 28}};
  double sum_abs_thick = 0;
  for (const Spec& s : specs) {
    CAPTURE(ph::to_string(s.loc));
    CAPTURE(s.ml);
    CAPTURE(s.seed);
    // thin slices (2.5 mm)
    ph::CaseOptions o = small_options(s.seed, 2.5);
    o.location = s.loc;
    o.target_volume_ml = s.ml;
    o.ivh = false;
    const ph::Case thin = ph::make_case(o);
    CHECK(thin.location == s.loc);
    REQUIRE(thin.analytic_volume_ml >= 4.5);
    CHECK(std::abs(relative_error(thin)) < 0.02);
    // the analytic volume is the target unless the inner table cut the shape
    CHECK(thin.analytic_volume_ml <= s.ml * (1 + 1e-6));
    if (s.loc != ph::Location::Lobar) CHECK(thin.analytic_volume_ml == doctest::Approx(s.ml).epsilon(0.02));
    // clinical 5 mm slices: the volume-preserving mask keeps the same accuracy
    o = small_options(s.seed, 5.0);
    o.location = s.loc;
    o.target_volume_ml = s.ml;
    o.ivh = false;
    const ph::Case thick = ph::make_case(o);
    CHECK(thick.analytic_volume_ml == doctest::Approx(thin.analytic_volume_ml).epsilon(1e-9));
    CHECK(std::abs(relative_error(thick)) < 0.02);
    sum_abs_thick += std::abs(relative_error(thick));
  }
  CHECK(sum_abs_thick / std::size(specs) < 0.01);
}

TEST_CASE("phantom: intraventricular blood is in the mask, in the dependent ventricle and counted analytically" * doctest::test_suite("slow")) {
  ph::CaseOptions o = small_options(31, 2.5);
  o.location = ph::Location::Thalamus;
  o.target_volume_ml = 10.0;
  o.ivh = true;
  const ph::Case c = ph::make_case(o);
  CHECK(c.ivh);
  CHECK(c.analytic_volume_ml > 10.0);  // the parenchymal 10 mL plus the ventricular blood
  CHECK(std::abs(relative_error(c)) < 0.04);
  Eigen::Vector3d sum(0, 0, 0), sum_vent(0, 0, 0);
  std::size_t n = 0, n_vent = 0, ivh_outside_mask = 0;
  for (std::size_t k = 0; k < c.labels.nk(); ++k)
    for (std::size_t j = 0; j < c.labels.nj(); ++j)
      for (std::size_t i = 0; i < c.labels.ni(); ++i) {
        const Eigen::Vector3d w = c.labels.geometry().index_to_world(Eigen::Vector3d(double(i), double(j), double(k)));
        if (c.labels(i, j, k) == ph::kIvh) {
          ivh_outside_mask += c.mask(i, j, k) != 1;
          sum += w;
          ++n;
        } else if (c.labels(i, j, k) == ph::kVentricle) {
          sum_vent += w;
          ++n_vent;
        }
      }
  CHECK(ivh_outside_mask == 0);
  REQUIRE(n > 50);
  REQUIRE(n_vent > 50);
  // supine patient: the blood layers in the posterior (dependent) part of the ventricles
  CHECK(sum.y() / double(n) < sum_vent.y() / double(n_vent) - 10);
  CHECK(label_stats(c, ph::kIvh, false).mean() > 45);
  CHECK(label_stats(c, ph::kIvh, false).mean() < 80);

  o.ivh = false;
  const ph::Case no_ivh = ph::make_case(o);
  CHECK_FALSE(no_ivh.ivh);
  CHECK(no_ivh.analytic_volume_ml < c.analytic_volume_ml);
  CHECK(no_ivh.volume_ml < c.volume_ml);
  CHECK(label_stats(no_ivh, ph::kIvh, false).n == 0);
}

TEST_CASE("phantom: tissues have realistic HU") {
  ph::CaseOptions o = small_options(41);
  o.location = ph::Location::BasalGanglia;
  o.target_volume_ml = 30.0;
  o.ivh = false;
  const ph::Case c = ph::make_case(o);
  const Stats wm = label_stats(c, ph::kWhiteMatter, true), gm = label_stats(c, ph::kGreyMatter, true),
              vent = label_stats(c, ph::kVentricle, true), csf = label_stats(c, ph::kCsf, true),
              scalp = label_stats(c, ph::kScalp, true), air = label_stats(c, ph::kAir, true),
              hem = label_stats(c, ph::kHematoma, true), edema = label_stats(c, ph::kEdema, true);
  REQUIRE(wm.n > 1000);
  REQUIRE(gm.n > 1000);
  REQUIRE(vent.n > 20);
  REQUIRE(hem.n > 100);
  REQUIRE(edema.n > 10);
  CHECK(wm.mean() > 22);
  CHECK(wm.mean() < 30);
  CHECK(gm.mean() > 35);
  CHECK(gm.mean() < 45);
  CHECK(gm.mean() > wm.mean() + 5);
  CHECK(vent.mean() > 0);
  CHECK(vent.mean() < 15);
  if (csf.n > 20) {
    CHECK(csf.mean() > 0);
    CHECK(csf.mean() < 15);
  }
  CHECK(scalp.mean() > 20);
  CHECK(scalp.mean() < 60);
  CHECK(air.mean() == doctest::Approx(-1000).epsilon(0.005));
  CHECK(hem.mean() > 55);
  CHECK(hem.mean() < 78);
  CHECK(edema.mean() > 14);
  CHECK(edema.mean() < 23);
  // every mask voxel, partial-volume boundary voxels included
  Stats all_blood;
  for (std::size_t v = 0; v < c.mask.size(); ++v)
    if (c.mask.data()[v]) {
      all_blood.sum += c.image.data()[v];
      ++all_blood.n;
    }
  CHECK(all_blood.mean() > 50);
  CHECK(all_blood.mean() < 80);
  // the skull: dense cortical bone and a diploe
  std::size_t cortical = 0, diploe = 0;
  const Stats skull = label_stats(c, ph::kSkull, false);
  for (std::size_t v = 0; v < c.labels.size(); ++v)
    if (c.labels.data()[v] == ph::kSkull) {
      const float h = c.image.data()[v];
      cortical += h > 1000 && h < 1800;
      diploe += h > 300 && h < 700;
    }
  CHECK(cortical > skull.n / 10);
  CHECK(diploe > skull.n / 20);
  CHECK(skull.mean() > 500);
  CHECK(skull.mean() < 1500);
  // noise: the spread of air far from the head is noise_sd
  double ss = 0;
  std::size_t n = 0;
  for (std::size_t k = 0; k < c.labels.nk(); ++k)
    for (std::size_t j = 0; j < 20; ++j)
      for (std::size_t i = 0; i < c.labels.ni(); ++i) {
        REQUIRE(c.labels(i, j, k) == ph::kAir);
        ss += (c.image(i, j, k) + 1000.0) * (c.image(i, j, k) + 1000.0);
        ++n;
      }
  CHECK(std::sqrt(ss / double(n)) == doctest::Approx(o.noise_sd).epsilon(0.02));
}

TEST_CASE("phantom: the skull is 5-8 mm of cortical tables around a diploe") {
  for (std::uint64_t seed : {1u, 2u, 3u}) {
    CAPTURE(seed);
    // one row of 0.45 mm voxels through the head centre, left to right
    ph::CaseOptions o;
    o.seed = seed;
    o.shape = {400, 1, 1};
    o.spacing = Eigen::Vector3d(0.45, 0.45, 0.45);
    o.hematoma = false;
    o.noise_sd = 0;
    const ph::Case c = ph::make_case(o);
    for (int side = 0; side < 2; ++side) {
      CAPTURE(side);
      std::size_t n = 0;
      float max_hu = -1e9f, min_inner = 1e9f;
      for (std::size_t a = 0; a < 200; ++a) {
        const std::size_t i = side == 0 ? a : 399 - a;
        if (c.labels(i, 0, 0) != ph::kSkull) continue;
        ++n;
        max_hu = std::max(max_hu, c.image(i, 0, 0));
        if (c.labels(i - 1, 0, 0) == ph::kSkull && c.labels(i + 1, 0, 0) == ph::kSkull)
          min_inner = std::min(min_inner, c.image(i, 0, 0));
      }
      const double thickness = double(n) * 0.45;
      CHECK(thickness >= 5.0);
      CHECK(thickness <= 8.0);
      CHECK(max_hu >= 1000);
      CHECK(max_hu <= 1800);
      CHECK(min_inner >= 300);
      CHECK(min_inner <= 700);
    }
    // from outside in: air, scalp, skull, then intracranial contents
    std::size_t i = 0;
    while (c.labels(i, 0, 0) == ph::kAir) ++i;
    CHECK(c.labels(i, 0, 0) == ph::kScalp);
    while (c.labels(i, 0, 0) == ph::kScalp) ++i;
    CHECK(c.labels(i, 0, 0) == ph::kSkull);
    while (c.labels(i, 0, 0) == ph::kSkull) ++i;
    CHECK(c.brain(i, 0, 0) == 1);
    CHECK(c.labels(i, 0, 0) == ph::kCsf);
  }
}

TEST_CASE("phantom: generation is deterministic by seed and independent of the thread count") {
  ThreadGuard guard;
  ph::CaseOptions o = small_options(77);
  o.shape = {192, 192, 24};
  o.spacing = Eigen::Vector3d(1.2, 1.2, 6.5);
  o.tilt_deg = 12;
  ichkit::set_num_threads(1);
  const ph::Case a = ph::make_case(o);
  ichkit::set_num_threads(2);
  const ph::Case b = ph::make_case(o);
  ichkit::set_num_threads(3);
  const ph::Case b3 = ph::make_case(o);
  const ph::Case again = ph::make_case(o);
  for (const ph::Case* x : {&b, &b3, &again}) {
    CHECK(std::memcmp(a.image.data(), x->image.data(), a.image.size() * sizeof(float)) == 0);
    CHECK(std::memcmp(a.mask.data(), x->mask.data(), a.mask.size()) == 0);
    CHECK(std::memcmp(a.labels.data(), x->labels.data(), a.labels.size()) == 0);
    CHECK(std::memcmp(a.brain.data(), x->brain.data(), a.brain.size()) == 0);
    CHECK(a.volume_ml == x->volume_ml);
    CHECK(a.analytic_volume_ml == x->analytic_volume_ml);
    CHECK(a.location == x->location);
    CHECK(a.ivh == x->ivh);
    CHECK(a.age == x->age);
    CHECK(a.gcs == x->gcs);
    CHECK(a.outcome == x->outcome);
    CHECK(a.outcome_probability == x->outcome_probability);
    CHECK(a.centroid_mm == x->centroid_mm);
    CHECK(a.image.geometry() == x->image.geometry());
  }
  CHECK(a.seed == 77);
  o.seed = 78;
  const ph::Case other = ph::make_case(o);
  CHECK(std::memcmp(a.image.data(), other.image.data(), a.image.size() * sizeof(float)) != 0);
}

TEST_CASE("phantom: gantry tilt shears the affine and keeps the anatomy in world space") {
  ph::CaseOptions o = small_options(51);
  o.location = ph::Location::BasalGanglia;
  o.target_volume_ml = 20.0;
  o.ivh = false;
  const ph::Case flat = ph::make_case(o);
  o.tilt_deg = 20;
  const ph::Case tilted = ph::make_case(o);
  const ichkit::Geometry& g = tilted.image.geometry();
  CHECK(flat.image.geometry().is_orthogonal());
  CHECK_FALSE(g.is_orthogonal());
  CHECK((g.spacing() - o.spacing).norm() < 1e-12);
  const double t = 20 * 3.14159265358979323846 / 180;
  const Eigen::Matrix3d m = g.affine().topLeftCorner<3, 3>();
  CHECK((m.col(0) - Eigen::Vector3d(0.9, 0, 0)).norm() < 1e-12);
  CHECK((m.col(1) - 0.9 * Eigen::Vector3d(0, std::cos(t), std::sin(t))).norm() < 1e-12);
  CHECK((m.col(2) - Eigen::Vector3d(0, 0, 5)).norm() < 1e-12);
  CHECK(g.index_to_world(Eigen::Vector3d(127.5, 127.5, 15.5)).norm() < 1e-9);
  // same patient, same hematoma: the centroid and volume barely move
  CHECK(tilted.analytic_volume_ml == doctest::Approx(flat.analytic_volume_ml).epsilon(1e-9));
  CHECK((tilted.centroid_mm - flat.centroid_mm).norm() < 2.0);
  CHECK(tilted.volume_ml == doctest::Approx(flat.volume_ml).epsilon(0.05));
  CHECK(tilted.gcs == flat.gcs);
  CHECK(tilted.outcome == flat.outcome);
  // the centroid lies in a voxel labelled hematoma on both grids
  for (const ph::Case* c : {&flat, &tilted}) {
    const Eigen::Vector3d ijk = c->mask.geometry().world_to_index(c->centroid_mm);
    const std::size_t i = std::size_t(std::lround(ijk.x())), j = std::size_t(std::lround(ijk.y())),
                      k = std::size_t(std::lround(ijk.z()));
    CHECK(c->mask.at(i, j, k) == 1);
  }
}

TEST_CASE("phantom: hematomas sit in their anatomical locations" * doctest::test_suite("slow")) {
  for (std::uint64_t seed : {61u, 62u, 63u}) {
    CAPTURE(seed);
    auto make = [&](ph::Location loc) {
      ph::CaseOptions o = small_options(seed);
      o.shape = {128, 128, 32};
      o.spacing = Eigen::Vector3d(1.8, 1.8, 5.0);
      o.noise_sd = 0;
      o.location = loc;
      o.target_volume_ml = loc == ph::Location::Brainstem ? 4.0 : 12.0;
      o.ivh = false;
      return ph::make_case(o);
    };
    const ph::Case bg = make(ph::Location::BasalGanglia), th = make(ph::Location::Thalamus),
                   lob = make(ph::Location::Lobar), cb = make(ph::Location::Cerebellum),
                   bs = make(ph::Location::Brainstem);
    for (const ph::Case* c : {&bg, &th, &lob, &cb, &bs}) REQUIRE(c->volume_ml > 0);
    // infratentorial below supratentorial
    for (const ph::Case* infra : {&cb, &bs})
      for (const ph::Case* supra : {&bg, &th, &lob}) CHECK(infra->centroid_mm.z() < supra->centroid_mm.z());
    // cerebellum posterior and lateral, brainstem near the midline
    CHECK(cb.centroid_mm.y() < -30);
    CHECK(std::abs(cb.centroid_mm.x()) > 5);
    CHECK(std::abs(bs.centroid_mm.x()) < 10);
    // putamen lateral to the thalamus, thalamus next to the midline
    CHECK(std::abs(bg.centroid_mm.x()) > std::abs(th.centroid_mm.x()));
    CHECK(std::abs(th.centroid_mm.x()) < 20);
    CHECK(std::abs(bg.centroid_mm.x()) > 14);
    // lobar bleeds lie peripherally, near the cortex
    CHECK(lob.centroid_mm.norm() > 35);
  }
}

TEST_CASE("phantom: the hematoma is irregular, not an ellipsoid") {
  // compare the mask with the ellipsoid of the same second moments: a star-shaped body with
  // harmonic bumps leaves a clearly non-zero symmetric difference
  ph::CaseOptions o = small_options(71, 2.5);
  o.location = ph::Location::BasalGanglia;
  o.target_volume_ml = 30.0;
  o.ivh = false;
  o.noise_sd = 0;
  const ph::Case c = ph::make_case(o);
  std::vector<Eigen::Vector3d> pts;
  for (std::size_t k = 0; k < c.mask.nk(); ++k)
    for (std::size_t j = 0; j < c.mask.nj(); ++j)
      for (std::size_t i = 0; i < c.mask.ni(); ++i)
        if (c.mask(i, j, k)) pts.push_back(c.mask.geometry().index_to_world(Eigen::Vector3d(double(i), double(j), double(k))));
  REQUIRE(pts.size() > 1000);
  Eigen::Vector3d mean(0, 0, 0);
  for (const auto& p : pts) mean += p;
  mean /= double(pts.size());
  Eigen::Matrix3d cov = Eigen::Matrix3d::Zero();
  for (const auto& p : pts) cov += (p - mean) * (p - mean).transpose();
  cov /= double(pts.size());
  // a solid ellipsoid with semi-axes a has covariance diag(a^2 / 5)
  const Eigen::Matrix3d inv = (5.0 * cov).inverse();
  std::size_t outside = 0;
  for (const auto& p : pts) outside += (p - mean).dot(inv * (p - mean)) > 1.0;
  CHECK(double(outside) / double(pts.size()) > 0.03);
}

TEST_CASE("phantom: covariates follow the documented outcome model" * doctest::test_suite("slow")) {
  double gcs_small = 0, gcs_large = 0, p_small = 0, p_large = 0;
  const int n = 12;
  for (int s = 0; s < n; ++s) {
    for (int large = 0; large < 2; ++large) {
      ph::CaseOptions o;
      o.shape = {24, 24, 8};
      o.spacing = Eigen::Vector3d(10, 10, 20);
      o.seed = 900 + s;
      o.location = ph::Location::BasalGanglia;
      o.target_volume_ml = large ? 70.0 : 4.0;
      o.ivh = large == 1;
      const ph::Case c = ph::make_case(o);
      CHECK(c.age >= 30);
      CHECK(c.age <= 95);
      CHECK(c.gcs >= 3);
      CHECK(c.gcs <= 15);
      CHECK((c.outcome == 0 || c.outcome == 1));
      const double logit = ph::outcome_logit(c.analytic_volume_ml, c.ivh, c.location, c.age, c.gcs);
      CHECK(c.outcome_probability == doctest::Approx(1.0 / (1.0 + std::exp(-logit))).epsilon(1e-12));
      (large ? gcs_large : gcs_small) += c.gcs;
      (large ? p_large : p_small) += c.outcome_probability;
    }
  }
  CHECK(gcs_large / n < gcs_small / n - 3);
  CHECK(p_large / n > p_small / n + 0.3);

  // random draws: locations, volumes and IVH vary across seeds, volumes within 2..120 mL
  std::vector<int> seen(5, 0);
  int with_ivh = 0;
  for (int s = 0; s < 40; ++s) {
    ph::CaseOptions o;
    o.shape = {24, 24, 8};
    o.spacing = Eigen::Vector3d(10, 10, 20);
    o.seed = 5000 + s;
    const ph::Case c = ph::make_case(o);
    ++seen[static_cast<int>(c.location)];
    with_ivh += c.ivh;
    CHECK(c.analytic_volume_ml > 0.5);
    CHECK(c.analytic_volume_ml < 125);
    if (c.location == ph::Location::Brainstem) CHECK(c.analytic_volume_ml <= 15.01);
  }
  CHECK(std::count_if(seen.begin(), seen.end(), [](int v) { return v > 0; }) >= 4);
  CHECK(with_ivh > 0);
  CHECK(with_ivh < 40);
}

TEST_CASE("phantom: make_cohort writes images, masks and an atomic manifest") {
  namespace fs = std::filesystem;
  ichkit::test::TempDir tmp;
  const fs::path dir = tmp.path() / "cohort";  // created by make_cohort
  ph::CohortOptions co;
  co.n = 3;
  co.seed = 4;
  co.case_options.shape = {48, 48, 10};
  co.case_options.spacing = Eigen::Vector3d(4.8, 4.8, 16);
  co.case_options.tilt_deg = 10;
  co.case_options.ivh = false;
  CountingProgress progress;
  const std::vector<ph::ManifestRow> rows = ph::make_cohort(dir.string(), co, &progress);
  REQUIRE(rows.size() == 3);
  CHECK(progress.begins == 1);
  CHECK(progress.ends == 1);
  CHECK(progress.total == 3);
  CHECK(progress.advanced == 3);
  CHECK_FALSE(fs::exists(dir / "manifest.csv.tmp"));
  REQUIRE(fs::exists(dir / "manifest.csv"));
  std::ifstream f(dir / "manifest.csv");
  std::string line;
  std::getline(f, line);
  CHECK(line == "id,image,mask,volume_ml,location,ivh,age,gcs,outcome,outcome_probability");
  for (int c = 0; c < 3; ++c) {
    CAPTURE(c);
    const ph::ManifestRow& r = rows[static_cast<std::size_t>(c)];
    CHECK(r.id == "case_000" + std::to_string(c));
    CHECK(r.image == "images/" + r.id + ".nii.gz");
    CHECK(r.mask == "masks/" + r.id + ".nii.gz");
    CHECK(fs::is_regular_file(dir / r.image));
    CHECK(fs::is_regular_file(dir / r.mask));
    CHECK(fs::file_size(dir / r.image) > 0);
    // the row describes the case made from seed `seed * 1000003 + c`
    ph::CaseOptions o = co.case_options;
    o.seed = co.seed * 1000003u + static_cast<std::uint64_t>(c);
    const ph::Case cs = ph::make_case(o);
    CHECK(r.volume_ml == cs.volume_ml);
    // the files hold the case: float32 HU and a uint8 mask on the (tilted) grid
    const Volume<float> img = ichkit::io::read_nifti<float>((dir / r.image).string());
    const Volume<std::uint8_t> msk = ichkit::io::read_nifti<std::uint8_t>((dir / r.mask).string());
    REQUIRE(img.shape() == cs.image.shape());
    REQUIRE(msk.shape() == cs.mask.shape());
    CHECK(img.geometry().approx_equal(cs.image.geometry(), 1e-4));
    CHECK_FALSE(img.geometry().is_orthogonal());
    CHECK(std::memcmp(img.data(), cs.image.data(), img.size() * sizeof(float)) == 0);
    CHECK(std::memcmp(msk.data(), cs.mask.data(), msk.size()) == 0);
    CHECK(r.location == ph::to_string(cs.location));
    CHECK(r.age == cs.age);
    CHECK(r.gcs == cs.gcs);
    CHECK(r.outcome == cs.outcome);
    CHECK_FALSE(r.ivh);
    REQUIRE(std::getline(f, line));
    char buf[256];
    std::snprintf(buf, sizeof buf, "%.6f", cs.volume_ml);
    std::ostringstream expect;
    expect << r.id << "," << r.image << "," << r.mask << "," << buf << "," << r.location << ",0," << r.age << ","
           << r.gcs << "," << r.outcome << ",";
    CHECK(line.rfind(expect.str(), 0) == 0);
  }
  CHECK_FALSE(std::getline(f, line));
  // uncompressed variant
  co.compress = false;
  co.n = 1;
  const auto plain = ph::make_cohort(dir.string(), co);
  CHECK(plain.at(0).image == "images/case_0000.nii");
  CHECK(fs::is_regular_file(dir / plain.at(0).image));
  CHECK(ichkit::io::read_nifti<float>((dir / plain.at(0).image).string()).shape() == co.case_options.shape);
}
