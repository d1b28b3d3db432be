// The network on the CPU: ichkit's forward (oneDNN fast path, batch 2), the plain module's
// forward, a training step (forward + loss + backward + AdamW-free update of nothing: the
// gradient computation only, batch 2), and the oneDNN ceiling - every convolution of the
// same forward timed alone in oneDNN's blocked layout. Shapes: 64x128x128 and 32x256x256
// (D, H, W), the paper's model (ResNet-18 width 32, 3 windows, volume + prognosis heads).
// benchmarks/run.py --suite model runs it beside the same network in Python torch.
#include <benchmark/benchmark.h>

#include <set>
#include <string>

#include "ichkit/core/runtime.h"
#include "ichkit/model/detail/impl.h"
#include "ichkit/model/model.h"
#include "../conv_ceiling.h"

namespace {
using namespace ichkit;
using namespace ichkit::model;

const std::vector<std::vector<int64_t>> kShapes = {{2, 3, 64, 128, 128}, {2, 3, 32, 256, 256}};

Model& model() {
  static Model m = [] {
    ModelConfig c = ModelConfig::default_multitask();
    return Model(c, 0);
  }();
  return m;
}

torch::Tensor input(int s) {
  torch::manual_seed(1);
  return torch::rand(kShapes[static_cast<std::size_t>(s)]);
}

double forward_flops(int s) {
  double f = 0;
  for (const auto& c : model().impl()->fast_encoder()->convolutions(kShapes[static_cast<std::size_t>(s)])) f += c.flops;
  return f;
}

/// Runs `fn` twice the first time a (benchmark, shape) pair is seen: oneDNN creates its
/// primitives and the heap grows to the forward's working set on the first calls, which then
/// took 2-3x as long and, with few repetitions, decided the median. The Python peers get a
/// warm-up call too (benchmarks/timing.py timeit).
template <class Fn>
void warm_once(const std::string& key, Fn&& fn) {
  static std::set<std::string> warmed;
  if (!warmed.insert(key).second) return;
  fn();
  fn();
}

void set_flops(benchmark::State& st, double flops_per_iter) {
  st.counters["GFLOP"] = flops_per_iter / 1e9;
  st.counters["GFLOPs"] = benchmark::Counter(flops_per_iter, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

void BM_Forward(benchmark::State& st) {
  const int s = static_cast<int>(st.range(0));
  torch::Tensor x = input(s);
  auto& impl = *model().impl();
  warm_once("forward" + std::to_string(s), [&] { impl.infer(x); });
  for (auto _ : st) benchmark::DoNotOptimize(impl.infer(x).heads.size());
  set_flops(st, forward_flops(s));
}

void BM_ForwardModule(benchmark::State& st) {
  const int s = static_cast<int>(st.range(0));
  torch::Tensor x = input(s);
  MultiTaskNet net = model().impl()->net;
  net->eval();
  warm_once("module" + std::to_string(s), [&] {
    c10::InferenceMode g;
    net->forward(x);
  });
  for (auto _ : st) {
    c10::InferenceMode g;
    benchmark::DoNotOptimize(net->forward(x).heads.size());
  }
  set_flops(st, forward_flops(s));
}

void BM_TrainStep(benchmark::State& st) {
  const int s = static_cast<int>(st.range(0));
  torch::Tensor x = input(s);
  MultiTaskNet net = model().impl()->net;
  net->train();
  std::map<std::string, Target> t;
  t["volume"] = {torch::tensor({10.0f, 30.0f}), {}};
  t["prognosis"] = {torch::tensor({int64_t(0), int64_t(1)}), {}};
  auto step = [&] {
    net->zero_grad();
    auto out = net->forward(x);
    torch::Tensor loss = net->loss(out, t);
    loss.backward();
    return loss.item<float>();
  };
  warm_once("train" + std::to_string(s), step);
  for (auto _ : st) benchmark::DoNotOptimize(step());
  net->eval();
  set_flops(st, 3 * forward_flops(s));  // backward ~ 2x forward
}

/// Sum over the forward's convolutions of each one's best time alone in oneDNN (blocked
/// layout, packed weights): the time a forward would take if nothing but convolutions ran
/// at oneDNN's speed.
void BM_ConvCeiling(benchmark::State& st) {
  const int s = static_cast<int>(st.range(0));
  const bench::ForwardConvolutions fc(*model().impl()->fast_encoder(), kShapes[static_cast<std::size_t>(s)]);
  for (auto _ : st) st.SetIterationTime(fc.seconds(/*warmup=*/0, /*timed=*/3));
  set_flops(st, fc.flops);
}

struct Init {
  Init() { init_runtime(); }
} init;

}  // namespace

BENCHMARK(BM_Forward)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ForwardModule)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_TrainStep)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ConvCeiling)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseManualTime();
BENCHMARK_MAIN();
