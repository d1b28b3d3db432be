// DICOM series read (sort by position, rescale to HU, resample tilt/spacing) and header-only
// folder scans. Folders come from benchmarks/run.py through environment variables, so the
// Python peer (pydicom + numpy) reads the very same files in the same run:
//   ICHKIT_BENCH_DICOM_SERIES  colon-separated series folders (name=path)
//   ICHKIT_BENCH_DICOM_SCAN    a folder of many files for the header-only scan
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <sstream>
#include <string>

#include "ichkit/io/dicom.h"

namespace {

void BM_ReadDicomSeries(benchmark::State& state, std::string dir) {
  ichkit::io::DicomReadOptions o;
  o.tilt = ichkit::io::TiltMode::Keep;  // the peer does not resample either: sort + rescale + stack
  for (auto _ : state) {
    auto dv = ichkit::io::read_dicom(dir, o);
    benchmark::DoNotOptimize(dv.volume.data());
  }
}

void BM_ScanFolder(benchmark::State& state, std::string dir) {
  for (auto _ : state) {
    auto s = ichkit::io::list_series(dir);
    benchmark::DoNotOptimize(s.data());
  }
}

int register_all() {
  if (const char* series = std::getenv("ICHKIT_BENCH_DICOM_SERIES")) {
    std::stringstream ss(series);
    std::string item;
    while (std::getline(ss, item, ':')) {
      const auto eq = item.find('=');
      if (eq == std::string::npos) continue;
      benchmark::RegisterBenchmark(("BM_ReadDicomSeries/" + item.substr(0, eq)).c_str(), BM_ReadDicomSeries, item.substr(eq + 1))
          ->Unit(benchmark::kMillisecond)->UseRealTime();
    }
  }
  if (const char* scan = std::getenv("ICHKIT_BENCH_DICOM_SCAN"))
    benchmark::RegisterBenchmark("BM_ScanFolder/files", BM_ScanFolder, std::string(scan))->Unit(benchmark::kMillisecond)->UseRealTime();
  return 0;
}
const int registered = register_all();

}  // namespace
