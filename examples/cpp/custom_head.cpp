// Add a head type in C++: a "max_pool_regression" head (regression on the globally max-pooled
// last stage instead of the average), registered by name, then used from a JSON model config
// like the built-in ones - training, model files and Grad-CAM all work with it.
//   custom_head            (prints the head's prediction for a phantom scan)
#include <ichkit/explain/gradcam.h>
#include <ichkit/model/net.h>  // Head, HeadRegistry (includes torch: only here)
#include <ichkit/phantom/phantom.h>

#include <iostream>

namespace {
using namespace ichkit::model;

class MaxPoolRegression : public Head {
public:
  MaxPoolRegression(const HeadConfig& c, const EncoderConfig& e) : Head(c) {
    fc_ = register_module("fc", torch::nn::Linear(e.stage_channels().back(), 1));
  }
  torch::Tensor forward(const Stages& s, const torch::Tensor&) override {
    return fc_->forward(s.last().amax({2, 3, 4})).squeeze(1);
  }
  HeadLoss loss(const torch::Tensor& out, const Target& t) override {
    torch::Tensor ok = torch::isfinite(t.values);
    const int64_t n = ok.sum().item<int64_t>();
    if (n == 0) return {0 * out.sum(), 0};
    return {torch::nn::functional::mse_loss(out.index({ok}), t.values.index({ok}).to(torch::kFloat32)), n};
  }
  torch::Tensor to_user(const torch::Tensor& out) const override { return out; }
  std::string label_kind() const override { return "scalar"; }
  bool reads_all_stages() const override { return false; }

private:
  torch::nn::Linear fc_{nullptr};
};

}  // namespace

int main() {
  HeadRegistry::instance().add("max_pool_regression", [](const HeadConfig& c, const EncoderConfig& e) {
    return std::make_shared<MaxPoolRegression>(c, e);
  });
  ModelConfig config = ModelConfig::from_json_text(R"({
    "encoder": {"depth": 10, "width": 8, "in_channels": 3},
    "heads": [{"name": "volume", "type": "max_pool_regression", "target": "volume_ml"}],
    "pipeline": {"version": 1, "steps": [{"op": "reorient", "code": "RAS"},
      {"op": "resample_to_shape", "shape": [64, 64, 16], "interp": "linear"}, {"op": "window"}]}})");
  Model model(config, /*seed*/ 1);
  const auto scan = ichkit::phantom::make_case({{128, 128, 16}, {1.8, 1.8, 10.0}}).image;
  const Prediction p = model.predict(scan);
  const auto e = ichkit::explain::explain(model, scan, {{"volume"}});
  std::cout << "head type " << p["volume"].type << ": untrained output " << p["volume"].value << ", Grad-CAM peak at voxel ("
            << e.maps[0].peak[0] << ", " << e.maps[0].peak[1] << ", " << e.maps[0].peak[2] << ")\n";
  return 0;
}
