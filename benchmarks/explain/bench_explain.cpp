// Grad-CAM on the CPU: ichkit's maps for both heads of the paper's model (ResNet-18 width 32,
// volume + prognosis) on a 32 x 256 x 256 scan - one shared forward pass, gradients to layer4
// only, maps carried back onto the scan grid - against one forward + backward of the same
// network (eval mode, the gradient of both heads' outputs into every weight: what a hook-based
// Grad-CAM pays at least once) and the inference forward alone.
// benchmarks/run.py --suite explain runs it beside the hook-based Python references.
#include <benchmark/benchmark.h>

#include "ichkit/core/runtime.h"
#include "ichkit/explain/gradcam.h"
#include "ichkit/model/detail/impl.h"
#include "ichkit/phantom/phantom.h"

namespace {
using namespace ichkit;
using namespace ichkit::model;

/// The paper's model with a pipeline that only windows: the scan grid is the network grid.
Model& model() {
  static Model m = [] {
    ModelConfig c = ModelConfig::default_multitask();
    preprocess::Pipeline p;
    p.window();
    c.pipeline = nlohmann::json::parse(p.to_json());
    return Model(c, 0);
  }();
  return m;
}

const Volume<float>& scan() {
  static Volume<float> v = [] {
    phantom::CaseOptions o;
    o.seed = 1;
    o.shape = {256, 256, 32};
    o.spacing = {0.9, 0.9, 5.0};
    o.supersample = 1;
    return phantom::make_case(o).image;
  }();
  return v;
}

void BM_GradCamBothHeads(benchmark::State& st) {
  const std::vector<std::string> layers = {"layer4", "layer3"};
  const explain::Options o{explain::Method::GradCam, layers[static_cast<std::size_t>(st.range(0))], true};
  for (auto _ : st) benchmark::DoNotOptimize(explain::explain(model(), scan(), {{"volume"}, {"prognosis"}}, o).maps.size());
}

void BM_Forward(benchmark::State& st) {
  torch::Tensor x = model().impl()->prepare(scan()).first;
  for (auto _ : st) benchmark::DoNotOptimize(model().impl()->infer(x).heads.size());
}

void BM_ForwardBackward(benchmark::State& st) {
  torch::Tensor x = model().impl()->prepare(scan()).first;
  MultiTaskNet net = model().impl()->net;
  for (auto _ : st) {
    net->zero_grad();
    auto out = net->forward(x);
    torch::Tensor y = out.heads.at("volume").sum() + out.heads.at("prognosis").select(1, 1).sum();
    y.backward();
    benchmark::DoNotOptimize(y.item<float>());
  }
}

struct Init {
  Init() { init_runtime(); }
} init;

}  // namespace

BENCHMARK(BM_GradCamBothHeads)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Forward)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ForwardBackward)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_MAIN();
