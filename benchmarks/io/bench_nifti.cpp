// NIfTI read/write of a 512 x 512 x 32 int16 head CT (.nii and .nii.gz).
// The files come from benchmarks/run.py (ICHKIT_BENCH_DIR), which times nibabel on the very
// same files in the same run; without it a phantom is generated here.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "ichkit/core/runtime.h"
#include "ichkit/core/threading.h"
#include "ichkit/io/nifti.h"
#include "ichkit/phantom/phantom.h"

namespace {

// What the ichkit command and the Python module do on start (heap retention, threads), so
// this program times the library as its users run it - and as the peer runs beside it:
// benchmarks/run.py times nibabel and pydicom in a process that imported ichkit.
struct Init {
  Init() { ichkit::init_runtime(); }
} init;

std::string bench_dir() {
  static std::string dir = [] {
    if (const char* d = std::getenv("ICHKIT_BENCH_DIR")) return std::string(d);
    std::string d = (std::filesystem::temp_directory_path() / "ichkit-bench-io").string();
    std::filesystem::create_directories(d);
    ichkit::phantom::CaseOptions o;
    o.seed = 1;
    auto c = ichkit::phantom::make_case(o);
    ichkit::Volume<std::int16_t> v = ichkit::Volume<std::int16_t>::uninitialized(c.image.shape(), c.image.geometry());
    for (std::size_t n = 0; n < v.size(); ++n) v.data()[n] = static_cast<std::int16_t>(std::lround(c.image.data()[n]));
    ichkit::io::write_nifti(v, d + "/ct.nii");
    ichkit::io::write_nifti(v, d + "/ct.nii.gz");
    return d;
  }();
  return dir;
}

void BM_ReadNifti(benchmark::State& state, const char* name) {
  const std::string p = bench_dir() + "/" + name;
  for (auto _ : state) {
    auto v = ichkit::io::read_nifti<float>(p);
    benchmark::DoNotOptimize(v.data());
  }
}

void BM_WriteNifti(benchmark::State& state, const char* name) {
  const std::string src = bench_dir() + "/ct.nii";
  auto v = ichkit::io::read_nifti<std::int16_t>(src);
  const std::string out = (std::filesystem::temp_directory_path() / (std::string("ichkit-bench-out-") + name)).string();
  for (auto _ : state) ichkit::io::write_nifti(v, out);
  std::filesystem::remove(out);
}

BENCHMARK_CAPTURE(BM_ReadNifti, nii, "ct.nii")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_ReadNifti, nii_gz, "ct.nii.gz")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_WriteNifti, nii, "ct.nii")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_WriteNifti, nii_gz, "ct.nii.gz")->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
