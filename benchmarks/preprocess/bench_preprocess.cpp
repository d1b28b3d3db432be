// Preprocessing stages on a 512 x 512 x 32 head CT at 0.45 x 0.45 x 5 mm (the phantom of seed 1,
// or ICHKIT_BENCH_DIR/ct.nii from benchmarks/run.py so the Python peers use the same scan).
#include <benchmark/benchmark.h>

#include <cstdlib>

#include "ichkit/io/nifti.h"
#include "ichkit/phantom/phantom.h"
#include "ichkit/preprocess/pipeline.h"
#include "ichkit/preprocess/resample.h"
#include "ichkit/core/runtime.h"
#include "ichkit/preprocess/skull_strip.h"
#include "ichkit/preprocess/window.h"

namespace {
using namespace ichkit;
using namespace ichkit::preprocess;

const Volume<float>& scan() {
  static Volume<float> v = [] {
    if (const char* d = std::getenv("ICHKIT_BENCH_DIR")) return io::read_nifti<float>(std::string(d) + "/ct.nii");
    phantom::CaseOptions o;
    o.seed = 1;
    return phantom::make_case(o).image;
  }();
  return v;
}

void BM_Window1(benchmark::State& st) {
  for (auto _ : st) benchmark::DoNotOptimize(window(scan(), Window{40, 80}).data());
}
void BM_Window3(benchmark::State& st) {
  for (auto _ : st) benchmark::DoNotOptimize(window_stack(scan()).data.get());
}
void BM_ResampleTo1mm(benchmark::State& st) {
  for (auto _ : st) benchmark::DoNotOptimize(resample_to_spacing(scan(), {1.0, 1.0, 5.0}, Interp::Linear).data());
}
void BM_ResampleToShape(benchmark::State& st) {
  for (auto _ : st) benchmark::DoNotOptimize(resample_to_shape(scan(), {128, 128, 64}, Interp::Linear).data());
}
// Without Gaussian anti-aliasing: the same work as scipy.ndimage.zoom / torch interpolate.
void BM_ResampleTo1mmNoAA(benchmark::State& st) {
  for (auto _ : st) benchmark::DoNotOptimize(resample_to_spacing(scan(), {1.0, 1.0, 5.0}, Interp::Linear, 0.0, false).data());
}
void BM_ResampleToShapeNoAA(benchmark::State& st) {
  for (auto _ : st) benchmark::DoNotOptimize(resample_to_shape(scan(), {128, 128, 64}, Interp::Linear, 0.0, false).data());
}
void BM_SkullStrip(benchmark::State& st) {
  for (auto _ : st) benchmark::DoNotOptimize(skull_strip(scan()).data());
}
void BM_Pipeline(benchmark::State& st) {
  const Pipeline p = Pipeline::default_head_ct();
  for (auto _ : st) benchmark::DoNotOptimize(p.run(scan()).input.data.get());
}
BENCHMARK(BM_Window1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Window3)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ResampleTo1mm)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ResampleToShape)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ResampleTo1mmNoAA)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ResampleToShapeNoAA)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_SkullStrip)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Pipeline)->Unit(benchmark::kMillisecond)->UseRealTime();
}  // namespace

int main(int argc, char** argv) {
  ichkit::init_runtime();  // as the ichkit command and the Python module start (the peers run in a process that imported ichkit)
  scan();  // build the input before timing
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
