// Explain: Grad-CAM identities that hold analytically, the localisation scores on cases worked
// by hand, overlays (PNG signature, radiological orientation), errors. The comparison with a
// hook-based PyTorch reference is tests/python/test_explain.py.
#include <cmath>
#include <thread>

#include "ichkit/core/error.h"
#include "ichkit/explain/gradcam.h"
#include "ichkit/explain/overlay.h"
#include "ichkit/explain/scores.h"
#include "ichkit/model/model.h"
#include "ichkit/phantom/phantom.h"
#include "test_common.h"

using namespace ichkit;
using namespace ichkit::explain;
using nlohmann::json;

namespace {

model::ModelConfig config() {
  model::ModelConfig c;
  c.encoder.depth = 10;
  c.encoder.width = 4;
  c.encoder.in_channels = 3;
  c.heads = {{"volume", "regression", "volume_ml", 1.0, json{{"transform", "log1p"}, {"mean", 2.5}, {"sd", 1.2}}},
             {"prognosis", "classification", "outcome", 1.0, json{{"classes", {"good", "poor"}}}}};
  preprocess::Pipeline p;
  p.reorient("RAS").resample_to_shape({48, 48, 16}).window();
  c.pipeline = json::parse(p.to_json());
  return c;
}

const Volume<float>& scan() {
  static Volume<float> v = [] {
    phantom::CaseOptions o;
    o.seed = 5;
    o.shape = {96, 96, 16};
    o.spacing = {2.4, 2.4, 5.0};
    o.supersample = 1;
    o.tilt_deg = 5;
    return phantom::make_case(o).image;
  }();
  return v;
}

const model::NamedArray& named(const std::vector<model::NamedArray>& s, const std::string& name) {
  for (const auto& a : s)
    if (a.name == name) return a;
  throw std::runtime_error("no " + name);
}

}  // namespace

TEST_CASE("Grad-CAM of a pooled linear head is CAM: the map sums to y - bias, HiResCAM agrees, sign flips it") {
  const model::Model m(config(), 3);
  const Explanation g = explain::explain(m, scan(), {{"volume"}, {"prognosis", 1}});
  const Explanation hr = explain::explain(m, scan(), {{"volume"}, {"prognosis", 1}}, Options{Method::HiResCam, "", false});
  const Explanation neg = explain::explain(m, scan(), {{"volume", -1, -1}});
  const auto state = m.state();
  const double bias_v = named(state, "heads.volume.fc.bias").f32[0];
  const auto& bias_p = named(state, "heads.prognosis.fc.bias").f32;
  for (std::size_t t = 0; t < 2; ++t) {
    const Heatmap& h = g.maps[t];
    REQUIRE(h.feature_shape.size() == 3);
    CHECK(h.feature.size() == std::size_t(h.feature_shape[0] * h.feature_shape[1] * h.feature_shape[2]));
    double sum = 0;
    for (float v : h.feature) sum += v;
    // y = w . mean(A) + b and dy/dA_k = w_k / N everywhere: sum_x sum_k (w_k / N) A_k(x) = y - b
    const double b = t == 0 ? bias_v : double(bias_p[1]);
    CHECK(sum == doctest::Approx(h.score - b).epsilon(1e-4));
    // the gradient is uniform in space, so HiResCAM's voxel-wise product is Grad-CAM's map
    for (std::size_t x = 0; x < h.feature.size(); ++x)
      CHECK(hr.maps[t].feature[x] == doctest::Approx(h.feature[x]).epsilon(1e-4).scale(1e-6));
  }
  CHECK(neg.maps[0].score == doctest::Approx(-g.maps[0].score));
  for (std::size_t x = 0; x < g.maps[0].feature.size(); ++x) CHECK(neg.maps[0].feature[x] == doctest::Approx(-g.maps[0].feature[x]));
  // the regression target is the standardised output: its prediction in mL is expm1(y sd + mean)
  CHECK(g.prediction["volume"].value == doctest::Approx(std::max(0.0, std::expm1(g.maps[0].score * 1.2 + 2.5))).epsilon(1e-5));
  // on the scan grid: the scan's shape and affine, normalised to [0, 1] with max 1
  const Heatmap& h = g.maps[1];
  CHECK(h.raw.same_grid(scan(), 1e-9));
  CHECK(h.normalized.same_grid(scan(), 1e-9));
  CHECK(hr.maps[1].raw.same_grid(hr.maps[1].network, 1e-9));  // to_scan = false: the network grid
  float mx = 0, mn = 1;
  for (std::size_t x = 0; x < h.normalized.size(); ++x) mx = std::max(mx, h.normalized.data()[x]), mn = std::min(mn, h.normalized.data()[x]);
  CHECK(mn == 0.0f);
  CHECK(mx == doctest::Approx(1.0));
  CHECK(h.normalized.data()[h.peak[0] + h.normalized.ni() * (h.peak[1] + h.normalized.nj() * h.peak[2])] == doctest::Approx(1.0));
}

TEST_CASE("explain: the GradCam classes, every stage, and clear errors") {
  const model::Model m(config(), 4);
  for (const std::string layer : {"stem", "layer1", "layer2", "layer3", "layer4"}) {
    const GradCamPlusPlus cam(m, layer);
    const Explanation e = cam.explain(scan(), {{"prognosis"}});
    CHECK(e.maps[0].layer == layer);
    CHECK(e.maps[0].method == "gradcam++");
  }
  CHECK_THROWS_WITH_AS(GradCam(m, "layer5"), doctest::Contains("no encoder stage called 'layer5'"), InvalidArgument);
  CHECK_THROWS_WITH_AS(explain::explain(m, scan(), {{"mrs"}}), doctest::Contains("no head called 'mrs'"), InvalidArgument);
  CHECK_THROWS_WITH_AS(explain::explain(m, scan(), {{"prognosis", 5}}), doctest::Contains("out of range"), InvalidArgument);
  CHECK_THROWS_WITH_AS(explain::explain(m, scan(), {}), doctest::Contains("no target"), InvalidArgument);
  CHECK_THROWS_AS(method_from_string("lime"), InvalidArgument);
  CHECK(method_from_string("Grad-CAM++") == Method::GradCamPlusPlus);
}

TEST_CASE("explain: concurrent callers on one model get the serial result") {
  const model::Model m(config(), 6);
  const Explanation serial = explain::explain(m, scan(), {{"volume"}, {"prognosis"}});
  std::vector<Explanation> got(4);
  std::vector<std::thread> ts;
  for (std::size_t t = 0; t < got.size(); ++t)
    ts.emplace_back([&, t] { got[t] = explain::explain(m, scan(), {{"volume"}, {"prognosis"}}); });
  for (auto& t : ts) t.join();
  for (const auto& e : got)
    for (std::size_t k = 0; k < 2; ++k) CHECK(e.maps[k].feature == serial.maps[k].feature);
}

TEST_CASE("localisation scores on cases worked by hand") {
  const Geometry g = Geometry::from_spacing(Eigen::Vector3d(2, 2, 5), Eigen::Vector3d(-10, 4, 0));
  Volume<float> h({6, 5, 4}, g, 0.0f);
  Volume<std::uint8_t> mask({6, 5, 4}, g, 0);
  mask(1, 1, 1) = 1;
  mask(2, 1, 1) = 1;
  h(4, 1, 1) = 1.0f;  // peak two voxels (4 mm) from the nearest lesion voxel in i
  PointingGame p = pointing_game(h, mask, 3.9);
  CHECK_FALSE(p.hit);
  CHECK(p.distance_mm == doctest::Approx(4.0));
  CHECK(p.peak == Shape3{4, 1, 1});
  CHECK(pointing_game(h, mask, 4.0).hit);
  h(4, 1, 2) = 2.0f;  // now one slice up: sqrt(4^2 + 5^2)
  CHECK(pointing_game(h, mask, 0).distance_mm == doctest::Approx(std::sqrt(41.0)));
  h(1, 1, 1) = 2.0f;  // a tie with an earlier voxel in memory order: that one is the peak, inside
  CHECK(pointing_game(h, mask, 0).hit);
  // energy: 2 inside of 1 + 2 + 2 (negative values do not count)
  h(0, 0, 0) = -5.0f;
  CHECK(energy_inside(h, mask) == doctest::Approx(2.0 / 5.0));
  // AUC, lesion voxels {2, 0} against 118 others {2, 1, -5, 115 zeros}: the 2 beats 117 and
  // ties 1 (117.5); the 0 beats the -5 and ties 115 zeros (58.5)
  CHECK(heatmap_auc(h, mask) == doctest::Approx((117.5 + 58.5) / (2.0 * 118.0)));
  Volume<std::uint8_t> other({6, 5, 4}, Geometry(), 0);
  CHECK_THROWS_AS(pointing_game(h, other, 1), GeometryError);
  CHECK(std::isinf(pointing_game(h, Volume<std::uint8_t>({6, 5, 4}, g, 0), 1).distance_mm));
  // a NaN voxel (a broken model's map) is refused by every score, not skipped; an infinite one
  // by the energy share (inf / inf)
  Volume<float> broken = h.deep_copy();
  broken(5, 4, 3) = std::nanf("");
  CHECK_THROWS_AS(pointing_game(broken, mask, 1), InvalidArgument);
  CHECK_THROWS_AS(energy_inside(broken, mask), InvalidArgument);
  CHECK_THROWS_AS(heatmap_auc(broken, mask), InvalidArgument);
  broken(5, 4, 3) = std::numeric_limits<float>::infinity();
  CHECK_THROWS_AS(energy_inside(broken, mask), InvalidArgument);
  CHECK(pointing_game(broken, mask, 0).peak == Shape3{5, 4, 3});
  CHECK(heatmap_auc(broken, mask) < heatmap_auc(h, mask));  // the top voxel is now outside the lesion
}

TEST_CASE("overlays: PNG bytes and the radiological orientation") {
  // stored LPS-like: i runs to the patient's left, j to posterior (x = 40 - 2i, y = 40 - 2j)
  Eigen::Matrix4d a = Eigen::Matrix4d::Identity();
  a(0, 0) = -2, a(1, 1) = -2, a(2, 2) = 5, a(0, 3) = 40, a(1, 3) = 40;
  const Geometry g(a);
  Volume<float> s({40, 40, 10}, g, 30.0f), h({40, 40, 10}, g, 0.0f);
  for (std::size_t k = 3; k < 7; ++k)
    for (std::size_t j = 2; j < 8; ++j)
      for (std::size_t i = 2; i < 8; ++i) h(i, j, k) = 1.0f;  // the patient's right, anterior
  OverlayOptions o;
  o.slices = 1;
  const Image img = render_montage(s, h, {}, o);
  REQUIRE(img.width == 40);
  REQUIRE(img.height == 40);
  int max_c = -1, max_r = -1, n = 0;
  for (int r = 0; r < img.height; ++r)
    for (int c = 0; c < img.width; ++c) {
      const std::uint8_t* px = &img.rgb[(std::size_t(r) * img.width + c) * 3];
      if (px[0] != px[1] || px[1] != px[2]) max_c = std::max(max_c, c), max_r = std::max(max_r, r), ++n;
    }
  CHECK(n > 0);
  CHECK(max_c < 20);  // the patient's right on the image's left
  CHECK(max_r < 20);  // anterior at the top
  const std::string png = encode_png(img);
  CHECK(png.substr(0, 8) == std::string("\x89PNG\r\n\x1a\n", 8));
  const Image ortho = render_orthogonal(s, h, {}, {});
  CHECK(ortho.width == 3 * 40 + 8);
  CHECK(ortho.height == 40);
  CHECK_THROWS_AS(render_montage(s, Volume<float>({40, 40, 10}, Geometry(), 0.0f)), GeometryError);
  Image bad = img;
  bad.rgb.pop_back();
  CHECK_THROWS_AS(encode_png(bad), InvalidArgument);
}
