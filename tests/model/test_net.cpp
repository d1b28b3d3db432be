// The multi-task network: encoder stages, heads, registry, losses with missing labels.
#include <cmath>

#include "ichkit/core/error.h"
#include "ichkit/model/net.h"
#include "test_common.h"

using namespace ichkit;
using namespace ichkit::model;
using nlohmann::json;

namespace {

ModelConfig tiny(int depth = 10, const std::string& norm = "batch") {
  ModelConfig c;
  c.encoder.depth = depth;
  c.encoder.width = 4;
  c.encoder.in_channels = 2;
  c.encoder.norm = norm;
  c.heads = {{"volume", "regression", "volume_ml", 1.0, json{{"transform", "log1p"}}},
             {"prognosis", "classification", "outcome", 1.0, json{{"classes", {"good", "poor"}}}},
             {"mrs", "ordinal", "mrs", 0.5, json{{"num_classes", 7}}},
             {"seg", "segmentation", "mask", 1.0, json{{"channels", 4}}}};
  return c;
}

std::int64_t count_blocks(MultiTaskNet& net, const std::string& layer) {
  std::int64_t n = 0;
  for (const auto& p : net->named_parameters(true))
    if (p.key().find("encoder." + layer + ".") == 0 && p.key().find(".conv1.weight") != std::string::npos) ++n;
  return n;
}

}  // namespace

TEST_CASE("net: stage shapes and block counts of ResNet-10/18/34") {
  torch::manual_seed(0);
  for (int depth : {10, 18, 34}) {
    MultiTaskNet net(tiny(depth));
    const std::vector<int64_t> want = depth == 10 ? std::vector<int64_t>{1, 1, 1, 1}
                                      : depth == 18 ? std::vector<int64_t>{2, 2, 2, 2}
                                                    : std::vector<int64_t>{3, 4, 6, 3};
    for (int s = 0; s < 4; ++s) CHECK(count_blocks(net, "layer" + std::to_string(s + 1)) == want[s]);
    // the size check model files make before building: exactly the encoder's conv weights
    std::uint64_t convs = 0;
    for (const auto& p : net->encoder()->named_parameters(true))
      if (p.value().dim() == 5) convs += static_cast<std::uint64_t>(p.value().numel());
    CHECK(tiny(depth).encoder.conv_weight_count() == convs);
    net->eval();
    torch::NoGradGuard ng;
    auto out = net->forward(torch::randn({2, 2, 8, 32, 32}));
    REQUIRE(out.stages.maps.size() == 5);
    // stem (1,2,2) -> pool (1,2,2) -> layers 2..4 halve every axis
    CHECK(out.stages.maps[0].sizes() == torch::IntArrayRef{2, 4, 8, 16, 16});
    CHECK(out.stages.maps[1].sizes() == torch::IntArrayRef{2, 4, 8, 8, 8});
    CHECK(out.stages.maps[2].sizes() == torch::IntArrayRef{2, 8, 4, 4, 4});
    CHECK(out.stages.maps[3].sizes() == torch::IntArrayRef{2, 16, 2, 2, 2});
    CHECK(out.stages.maps[4].sizes() == torch::IntArrayRef{2, 32, 1, 1, 1});
    CHECK(out.heads.at("volume").sizes() == torch::IntArrayRef{2});
    CHECK(out.heads.at("prognosis").sizes() == torch::IntArrayRef{2, 2});
    CHECK(out.heads.at("mrs").sizes() == torch::IntArrayRef{2, 6});
    CHECK(out.heads.at("seg").sizes() == torch::IntArrayRef{2, 8, 32, 32});
  }
}

TEST_CASE("net: parameter names follow PyTorch's (encoder.*, heads.<name>.*)") {
  MultiTaskNet net(tiny());
  std::set<std::string> names;
  for (const auto& p : net->named_parameters(true)) names.insert(p.key());
  CHECK(names.count("encoder.stem.0.weight"));
  CHECK(names.count("encoder.layer1.0.conv1.weight"));
  CHECK(names.count("encoder.layer2.0.downsample.0.weight"));
  CHECK(names.count("heads.volume.fc.weight"));
  CHECK(names.count("heads.prognosis.fc.bias"));
  CHECK(names.count("heads.mrs.thresholds"));
  CHECK(names.count("heads.seg.lateral4.weight"));
}

TEST_CASE("net: user outputs are in user units") {
  MultiTaskNet net(tiny());
  net->eval();
  torch::NoGradGuard ng;
  auto out = net->forward(torch::randn({3, 2, 8, 32, 32}));
  auto& cls = net->head("prognosis");
  torch::Tensor p = cls.to_user(out.heads.at("prognosis"));
  CHECK(torch::allclose(p.sum(1), torch::ones({3}), 1e-6, 1e-6));
  torch::Tensor o = net->head("mrs").to_user(out.heads.at("mrs"));
  CHECK(o.sizes() == torch::IntArrayRef{3, 7});
  CHECK(torch::allclose(o.sum(1), torch::ones({3}), 1e-5, 1e-5));
  CHECK((o >= 0).all().item<bool>());
  // regression: log1p + standardisation inverted exactly
  auto& reg = net->head("volume");
  reg.fit_targets({1, 4, 9, 16, 25});
  const double m = reg.config().params["mean"].get<double>(), sd = reg.config().params["sd"].get<double>();
  torch::Tensor z = torch::tensor({0.0f, 1.0f, -0.5f});
  torch::Tensor u = reg.to_user(z);
  for (int r = 0; r < 3; ++r) CHECK(u[r].item<double>() == doctest::Approx(std::expm1(z[r].item<double>() * sd + m)).epsilon(1e-5));
}

TEST_CASE("net: regression target normalisation is fitted from labels (mean/sd of log1p)") {
  MultiTaskNet net(tiny());
  std::vector<double> y = {2, 10, 30, 80, std::nan("")};
  net->head("volume").fit_targets(y);
  const double m = (std::log1p(2.0) + std::log1p(10.0) + std::log1p(30.0) + std::log1p(80.0)) / 4;
  double ss = 0;
  for (double v : {2.0, 10.0, 30.0, 80.0}) ss += (std::log1p(v) - m) * (std::log1p(v) - m);
  CHECK(net->head("volume").config().params["mean"].get<double>() == doctest::Approx(m));
  CHECK(net->head("volume").config().params["sd"].get<double>() == doctest::Approx(std::sqrt(ss / 3)));
  CHECK(net->current_config().heads[0].params["mean"].get<double>() == doctest::Approx(m));
}

TEST_CASE("net: a head without labels in the batch contributes no loss and no gradient") {
  torch::manual_seed(1);
  MultiTaskNet net(tiny());
  net->train();
  torch::Tensor x = torch::randn({2, 2, 8, 32, 32});
  auto out = net->forward(x);
  std::map<std::string, Target> t;
  t["volume"] = {torch::tensor({10.0f, std::nanf("")}), {}};
  t["prognosis"] = {torch::tensor({int64_t(-1), int64_t(-1)}), {}};  // no outcome at all
  t["seg"] = {torch::zeros({2, 8, 32, 32}), torch::tensor({false, false})};
  std::map<std::string, double> per;
  torch::Tensor loss = net->loss(out, t, &per);
  CHECK(per.count("volume") == 1);
  CHECK(per.count("prognosis") == 0);
  CHECK(per.count("seg") == 0);
  loss.backward();
  for (const auto& p : net->named_parameters(true)) {
    if (p.key().rfind("heads.prognosis.", 0) == 0 || p.key().rfind("heads.seg.", 0) == 0) {
      const bool zero = !p.value().grad().defined() || p.value().grad().abs().sum().item<double>() == 0;
      CHECK_MESSAGE(zero, p.key());
    }
  }
  CHECK(net->head("volume").parameters()[0].grad().abs().sum().item<double>() > 0);
}

TEST_CASE("net: losses equal their textbook formulas") {
  torch::manual_seed(2);
  MultiTaskNet net(tiny());
  // classification: cross-entropy
  torch::Tensor logits = torch::randn({4, 2});
  torch::Tensor y = torch::tensor({int64_t(0), int64_t(1), int64_t(-1), int64_t(1)});
  HeadLoss l = net->head("prognosis").loss(logits, {y, {}});
  CHECK(l.count == 3);
  double ce = 0;
  for (int r : {0, 1, 3}) {
    const double a = logits[r][0].item<double>(), b = logits[r][1].item<double>();
    const double lse = std::log(std::exp(a) + std::exp(b));
    ce += lse - logits[r][y[r].item<int64_t>()].item<double>();
  }
  CHECK(l.loss.item<double>() == doctest::Approx(ce / 3).epsilon(1e-5));
  // ordinal: BCE over "y > k"
  torch::Tensor g = torch::randn({2, 6});
  torch::Tensor yo = torch::tensor({int64_t(0), int64_t(4)});
  HeadLoss lo = net->head("mrs").loss(g, {yo, {}});
  double bce = 0;
  for (int r = 0; r < 2; ++r)
    for (int k = 0; k < 6; ++k) {
      const double z = g[r][k].item<double>(), t = yo[r].item<int64_t>() > k ? 1 : 0;
      bce += -(t * std::log(1 / (1 + std::exp(-z))) + (1 - t) * std::log(1 - 1 / (1 + std::exp(-z))));
    }
  CHECK(lo.loss.item<double>() == doctest::Approx(bce / 12).epsilon(1e-5));
  // uncertainty weighting: exp(-s) L + s with s = 0 at start equals the plain sum
  ModelConfig uc = tiny();
  uc.weighting = "uncertainty";
  uc.heads.resize(2);
  MultiTaskNet un(uc);
  un->eval();
  auto out = un->forward(torch::randn({2, 2, 8, 32, 32}));
  std::map<std::string, Target> t;
  t["volume"] = {torch::tensor({3.0f, 5.0f}), {}};
  t["prognosis"] = {torch::tensor({int64_t(0), int64_t(1)}), {}};
  std::map<std::string, double> per;
  const double total = un->loss(out, t, &per).item<double>();
  CHECK(total == doctest::Approx(per["volume"] + per["prognosis"]).epsilon(1e-6));
}

TEST_CASE("net: head registry - user types, unknown types, duplicates") {
  struct MeanHead : Head {
    MeanHead(const HeadConfig& c, const EncoderConfig&) : Head(c) {}
    torch::Tensor forward(const Stages& s, const torch::Tensor&) override { return s.last().mean({1, 2, 3, 4}); }
    HeadLoss loss(const torch::Tensor& o, const Target& t) override { return {(o - t.values).square().mean(), o.size(0)}; }
    torch::Tensor to_user(const torch::Tensor& o) const override { return o; }
    std::string label_kind() const override { return "scalar"; }
  };
  auto& r = HeadRegistry::instance();
  if (!r.contains("test_mean"))
    r.add("test_mean", [](const HeadConfig& c, const EncoderConfig& e) { return std::make_shared<MeanHead>(c, e); });
  CHECK_THROWS_AS(r.add("test_mean", [](const HeadConfig& c, const EncoderConfig& e) { return std::make_shared<MeanHead>(c, e); }),
                  InvalidArgument);
  CHECK_THROWS_AS(r.add("regression", nullptr), InvalidArgument);
  ModelConfig c = tiny();
  c.heads = {{"m", "test_mean", "x", 1.0, json::object()}};
  MultiTaskNet net(c);
  net->eval();
  auto out = net->forward(torch::randn({1, 2, 8, 16, 16}));
  CHECK(out.heads.at("m").sizes() == torch::IntArrayRef{1});
  c.heads = {{"m", "no_such_type", "x", 1.0, json::object()}};
  try {
    MultiTaskNet bad(c);
    FAIL("unknown head type accepted");
  } catch (const InvalidArgument& e) {
    CHECK(std::string(e.what()).find("registered: ") != std::string::npos);
  }
}

TEST_CASE("net: bad configs are refused with the field named") {
  ModelConfig c = tiny();
  c.encoder.depth = 50;
  CHECK_THROWS_AS(MultiTaskNet{c}, InvalidArgument);
  c = tiny();
  c.heads[1].name = "volume";
  CHECK_THROWS_WITH_AS(MultiTaskNet{c}, doctest::Contains("two heads"), InvalidArgument);
  c = tiny();
  c.heads[0].params["transform"] = "cube";
  CHECK_THROWS_AS(MultiTaskNet{c}, InvalidArgument);
  CHECK_THROWS_AS(ModelConfig::from_json_text("{\"heads\": [], \"extra\": 1}"), FormatError);
  CHECK_THROWS_AS(ModelConfig::from_json_text("{\"heads\": [{\"name\": \"a\", \"type\": \"regression\"}], \"encoder\": {\"depht\": 18}}"),
                  FormatError);
  CHECK_THROWS_AS(ModelConfig::from_json_text("not json"), FormatError);
  // and JSON round trip keeps everything
  ModelConfig a = tiny(18, "group");
  ModelConfig b = ModelConfig::from_json(a.to_json());
  CHECK(b.to_json() == a.to_json());
  MultiTaskNet net(tiny(10, "instance"));
  net->eval();
  CHECK(net->forward(torch::randn({1, 2, 8, 16, 16})).heads.size() == 4);
}

TEST_CASE("net: max_pool3d_3x3x3 equals torch::max_pool3d - values, ties, NaN and gradients") {
  torch::manual_seed(7);
  for (const std::vector<int64_t>& stride : {std::vector<int64_t>{1, 2, 2}, {1, 1, 1}, {2, 2, 2}, {2, 1, 2}, {1, 3, 3}})
    for (const std::vector<int64_t>& shape : {std::vector<int64_t>{2, 3, 5, 9, 8}, {1, 2, 4, 6, 7}, {1, 1, 1, 1, 1}})
    for (int kind = 0; kind < 3; ++kind) {
      // random values; small integers (many ties); a few NaN
      torch::Tensor x = kind == 1 ? torch::randint(0, 3, shape).to(torch::kFloat32) : torch::randn(shape);
      if (kind == 2)
        for (int64_t at : {int64_t{17}, int64_t{200}, int64_t{201}}) x.view(-1)[at % x.numel()] = std::nanf("");
      CAPTURE(stride);
      CAPTURE(shape);
      CAPTURE(kind);
      torch::Tensor a = x.clone().requires_grad_(true), b = x.clone().requires_grad_(true);
      torch::Tensor ya = ichkit::model::max_pool3d_3x3x3(a, stride);
      torch::Tensor yb = torch::max_pool3d(b, {3, 3, 3}, stride, {1, 1, 1});
      REQUIRE(ya.sizes() == yb.sizes());
      CHECK(torch::equal(torch::isnan(ya), torch::isnan(yb)));
      CHECK(torch::equal(torch::nan_to_num(ya, 0.0), torch::nan_to_num(yb, 0.0)));
      torch::Tensor g = torch::randn(ya.sizes());
      ya.backward(g);
      yb.backward(g);
      // the same argmax everywhere, so the same gradient to the last bit
      CHECK(torch::equal(a.grad(), b.grad()));
    }
  // not float32 on the CPU: LibTorch's own kernel
  torch::Tensor d = torch::randn({1, 2, 4, 4, 4}, torch::kFloat64);
  CHECK(torch::equal(ichkit::model::max_pool3d_3x3x3(d, {1, 2, 2}), torch::max_pool3d(d, {3, 3, 3}, {1, 2, 2}, {1, 1, 1})));
  CHECK_THROWS_AS(ichkit::model::max_pool3d_3x3x3(torch::randn({2, 3, 4}), {1, 2, 2}), ichkit::InvalidArgument);
}
