// bench_device: ichkit's side of the end-to-end benchmark, on the CPU or a CUDA device.
//
//   bench_device [--device cpu|cuda] [--precision float32|bfloat16|float16] [--repeats 7]
//                [--cohort 50] [--cohort-format nii.gz,nii] [--batch 4] [--work DIR] [--out result.json]
//
// One 512 x 512 x 32 head CT phantom (0.45 x 0.45 x 5 mm, int16 .nii.gz) goes through every
// stage alone and then end to end: read .nii.gz, 3 windows, resampling to 1 x 1 x 5 mm, skull
// strip (of the scan, and of the scan on the 1 x 1 x 5 mm grid cropped to the head, as the
// pipeline runs it), the model's whole preprocessing (skull strip included), the forward pass (batch 1 and
// `--batch`), Grad-CAM of both heads (volume, prognosis) back on the scan grid, and writing a
// heatmap .nii.gz. Then a cohort of `--cohort` files through Model::predict_files (reading and
// preprocessing overlapped with inference) against the model-only bound (the same batches of the
// same scans, already prepared, timed just before and just after), from .nii.gz files and,
// with `--cohort-format nii.gz,nii`, from the same files uncompressed, and, on the CPU, the
// machine's ceilings: every convolution of the forward alone in oneDNN, and memory bandwidth.
// benchmarks/run.py --suite e2e (CPU) and scripts/gpu-bench (CUDA) run it beside
// benchmarks/device_peers.py; benchmarks/device_report.py writes the table.
#include <execinfo.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <iostream>
#include <thread>

#include <nlohmann/json.hpp>

#include "ichkit/core/runtime.h"
#include "ichkit/core/threading.h"
#include "ichkit/explain/gradcam.h"
#include "ichkit/io/nifti.h"
#include "ichkit/io/read.h"
#include "ichkit/model/detail/impl.h"
#include "ichkit/model/metrics.h"
#include "../conv_ceiling.h"
#include "ichkit/model/model.h"
#include "ichkit/phantom/phantom.h"
#include "ichkit/preprocess/crop.h"
#include "ichkit/preprocess/pipeline.h"
#include "ichkit/preprocess/reorient.h"
#include "ichkit/preprocess/resample.h"
#include "ichkit/preprocess/skull_strip.h"
#include "ichkit/preprocess/window.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {
using namespace ichkit;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

bool g_cuda = false;

void device_sync() {
  if (g_cuda) torch::cuda::synchronize();
}

/// One run of `fn`, the device's queue drained, in seconds.
double seconds(const std::function<void()>& fn) {
  const auto t0 = Clock::now();
  fn();
  device_sync();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

json timeit(const std::function<void()>& fn, int repeats) {
  seconds(fn);  // warm-up: page cache, allocator, oneDNN/cuDNN primitive choice
  std::vector<double> ts;
  for (int r = 0; r < repeats; ++r) ts.push_back(1e3 * seconds(fn));
  return json{{"median_ms", median_of(ts)},
              {"min_ms", *std::min_element(ts.begin(), ts.end())},
              {"max_ms", *std::max_element(ts.begin(), ts.end())},
              {"n", repeats}};
}

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

/// The CPU this run had (/proc/cpuinfo's model name, family / model / stepping, AVX-512 or not, the per-core L2 and the L3
/// from sysfs): this VM's host changes between runs, and so do the ratios.
json cpu_info() {
  json c = json::object();
  std::ifstream info("/proc/cpuinfo");
  for (std::string line; std::getline(info, line);) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    key.erase(key.find_last_not_of(" \t") + 1);
    const std::string value = colon + 2 <= line.size() ? line.substr(colon + 2) : "";
    // the first CPU's; a VM may show a generic model name: family / model / stepping still tell the core apart
    static const std::map<std::string, std::string> fields{
        {"model name", "name"}, {"cpu family", "family"}, {"model", "model"}, {"stepping", "stepping"}};
    if (const auto f = fields.find(key); f != fields.end() && !c.contains(f->second)) c[f->second] = value;
    if (key == "flags" && !c.contains("avx512f")) c["avx512f"] = (" " + value + " ").find(" avx512f ") != std::string::npos;
  }
  for (int index = 0; index < 8; ++index) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/";
    std::ifstream level(dir + "level"), type(dir + "type"), size(dir + "size");
    std::string l, t, z;
    if (!(level >> l) || !(type >> t) || !(size >> z)) break;
    if (t != "Instruction" && (l == "2" || l == "3")) c["l" + l] = z;
  }
  return c;
}

json g_rss_after = json::object();  // the process's peak RSS after each stage (MB)
std::set<std::string> g_only;      // --only: the stages to time (empty: all)

bool wanted(const std::string& name) { return g_only.empty() || g_only.count(name) > 0; }

/// Time a stage (when --only allows it) and note the peak RSS reached by then.
void stage(json& st, const std::string& name, const std::function<void()>& fn, int repeats) {
  if (!wanted(name)) return;
  st[name] = timeit(fn, repeats);
  g_rss_after[name] = peak_rss_mb();
}

/// Copy bandwidth (bytes read + written per second) over 256 MB buffers, all threads: one copy
/// per call of `copy()`, which returns its rate in GB/s.
struct CopyBandwidth {
  std::vector<float> a, b;
  CopyBandwidth() : a(std::size_t(64) << 20, 1.0f), b(a.size(), 0.0f) {}  // floats: 256 MB each
  double copy() {
    const std::ptrdiff_t n = static_cast<std::ptrdiff_t>(a.size());
    const auto t0 = Clock::now();
#pragma omp parallel for schedule(static)
    for (std::ptrdiff_t i = 0; i < n; ++i) b[i] = a[i] * 1.0001f;
    const double t = std::chrono::duration<double>(Clock::now() - t0).count();
    volatile float sink = b[static_cast<std::size_t>(n / 2)];  // the copies are used
    (void)sink;
    return 2.0 * static_cast<double>(n) * sizeof(float) / t / 1e9;
  }
};

/// Best of 5 copies (after one untimed), GB/s.
double memory_bandwidth_gbs(CopyBandwidth& bw) {
  bw.copy();
  double best = 0;
  for (int r = 0; r < 5; ++r) best = std::max(best, bw.copy());
  return best;
}

/// `work` (a timed run of what ichkit does) and `ceiling` (a timed run of the ceiling's
/// reference), alternately, `rounds` times after one untimed run of each: this VM's speed moves
/// within seconds, so each round's two timings share a moment and their ratio is the round's
/// fraction of the ceiling. Both return seconds. The median, min and max round.
json paired_fraction(const std::function<double()>& work, const std::function<double()>& ceiling, int rounds) {
  work();
  ceiling();
  std::vector<double> fr, ws, cs;
  for (int r = 0; r < rounds; ++r) {
    ws.push_back(work());
    cs.push_back(ceiling());
    fr.push_back(cs.back() / ws.back());
  }
  return json{{"fraction", median_of(fr)},
              {"fraction_min", *std::min_element(fr.begin(), fr.end())},
              {"fraction_max", *std::max_element(fr.begin(), fr.end())},
              {"rounds", rounds},
              {"work_ms", 1e3 * median_of(ws)},
              {"ceiling_ms", 1e3 * median_of(cs)}};
}

/// The oneDNN ceiling: each convolution of the forward of `x` alone, best of 3, summed; and,
/// paired with the forward itself round by round (paired_fraction), the forward's fraction of it
/// (each round: one forward, then each convolution's best of 3 runs - a ceiling, not a peer).
json conv_ceiling(const model::Model& m, const torch::Tensor& x, int rounds) {
  auto fast = m.impl()->fast_encoder();
  if (!fast) return nullptr;
  const bench::ForwardConvolutions fc(*fast, x.sizes().vec());
  const double total = fc.seconds(/*warmup=*/1, /*timed=*/3);
  json out{{"ms", total * 1e3}, {"gflop", fc.flops / 1e9}, {"gflops", fc.flops / total / 1e9}};
  out["paired"] = paired_fraction([&] { return seconds([&] { m.impl()->infer(x); }); }, [&] { return fc.seconds(0, 3); }, rounds);
  return out;
}

/// The paper's model (ResNet-18 width 32, volume + prognosis) with skull stripping in its pipeline.
model::ModelConfig paper_config() {
  model::ModelConfig cfg = model::ModelConfig::default_multitask();
  preprocess::Pipeline pipe;
  // the skull strip runs on the network's 1 x 1 x 5 mm grid, cropped to the head: a 5th of the
  // native voxels, as accurate there as the native strip (docs/results/skull-strip-phantoms.md)
  pipe.reorient("RAS").resample_to_spacing({1.0, 1.0, 5.0}).crop_to_foreground(-500, 5).skull_strip()
      .crop_to_foreground(-500, 5).center_crop_or_pad({192, 192, 32}).window();
  cfg.pipeline = json::parse(pipe.to_json());
  return cfg;
}

const std::vector<explain::Target>& both_heads() {
  static const std::vector<explain::Target> t{explain::Target("volume"), explain::Target("prognosis", 1)};
  return t;
}

/// One scan end to end: the file in; the prediction and both heatmaps (on the scan grid) out.
explain::Explanation end_to_end(const model::Model& m, const std::string& scan_path, const std::string& work) {
  Volume<float> v = io::read(scan_path);
  explain::Explanation e = explain::explain(m, v, both_heads(), explain::Options{});
  io::write_nifti(e.maps[0].raw, work + "/heat_volume.nii.gz");
  io::write_nifti(e.maps[1].raw, work + "/heat_prognosis.nii.gz");
  return e;
}

/// On a fatal signal, print the stack to stderr before dying: the GPU machines this runs on have no
/// debugger, and a crash there is seen once. Frames in this binary print as bench_device(+0xOFFSET);
/// `addr2line -Cfpie bench_device 0xOFFSET` names them.
void print_backtrace_and_die(int sig) {
  void* a[128];
  const int n = backtrace(a, 128);
  const char m[] = "bench_device: fatal signal; backtrace:\n";
  (void)!write(2, m, sizeof m - 1);
  backtrace_symbols_fd(a, n, 2);
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

}  // namespace

int main(int argc, char** argv) {
  {
    void* first[1];
    backtrace(first, 1);  // loads the unwinder now: the handler must not be the first to call it
    for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) std::signal(sig, print_backtrace_and_die);
  }
  CLI::App app{"ichkit end-to-end benchmark (the ichkit side; see benchmarks/device_peers.py)"};
  std::string device = "cpu", precision = "float32", out, work;
  int repeats = 7, cohort = 50, batch = 4, readers = 0, reader_threads = 0;
  app.add_option("--device", device, "cpu or cuda");
  app.add_option("--precision", precision, "float32, bfloat16 or float16 (CUDA)");
  app.add_option("--repeats", repeats, "timed runs per stage (after one warm-up)")->check(CLI::Range(1, 1000));
  app.add_option("--cohort", cohort, "scans in the cohort throughput run (0: skip)")->check(CLI::Range(0, 100000));
  int cohort_rounds = 3;
  std::vector<std::string> cohort_formats{"nii.gz"};
  app.add_option("--cohort-format", cohort_formats,
                 "cohort: the files' format, nii.gz (a scanner's int16, gzip level 1; JSON key 'cohort') and/or nii "
                 "(the same files uncompressed; 'cohort_nii'), comma-separated")
      ->delimiter(',')
      ->check(CLI::IsMember({"nii.gz", "nii"}));
  app.add_option("--cohort-rounds", cohort_rounds, "cohort: rounds of (cohort, model-only run), after one model-only run; the median round reported")
      ->check(CLI::Range(1, 100));
  app.add_option("--readers", readers, "cohort: reader threads (0: predict_files' default)")->check(CLI::Range(0, 256));
  app.add_option("--reader-threads", reader_threads, "cohort: kernel threads per reader (0: predict_files' default)")
      ->check(CLI::Range(0, 256));
  std::string schedule = "auto";
  app.add_option("--schedule", schedule, "cohort: auto, overlap or alternate (CohortOptions::Schedule)")
      ->check(CLI::IsMember({"auto", "overlap", "alternate"}));
  app.add_option("--batch", batch, "batch size of the batched forward and the cohort")->check(CLI::Range(1, 256));
  app.add_option("--work", work, "folder for the scan files (default: a fresh temporary folder)");
  app.add_option("--out", out, "write the results as JSON here");
  std::string only;
  app.add_option("--only", only, "comma-separated stages (and 'cohort', 'ceilings') to run; default all. "
                                 "Run one stage alone to see its own peak RSS");
  bool prepare_only = false;
  app.add_flag("--prepare-only", prepare_only, "only write the scan files into --work");
  CLI11_PARSE(app, argc, argv);

  try {
    {
      std::stringstream ss(only);
      for (std::string w; std::getline(ss, w, ',');)
        if (!w.empty()) g_only.insert(w);
      // what the cohort bound and the ceilings' fractions are computed from
      if (g_only.count("cohort")) g_only.insert("forward_b" + std::to_string(batch));
      if (g_only.count("ceilings")) g_only.insert({"window3", "forward_b1", "forward_b" + std::to_string(batch)});
    }
    init_runtime();
    g_cuda = device.rfind("cuda", 0) == 0;
    namespace fs = std::filesystem;
    const bool own_work = work.empty();
    if (own_work) work = (fs::temp_directory_path() / ("ichkit-bench-" + std::to_string(::getpid()))).string();
    fs::create_directories(work);

    json r;
    const RuntimeInfo info = runtime_info();
    r["side"] = "ichkit";
    r["device"] = device;
    r["precision"] = precision;
    r["threads"] = info.threads;
    r["torch"] = info.torch_version;
    r["ichkit"] = info.ichkit_version;
    r["heap_retention"] = info.heap_retention;
    r["cpu"] = cpu_info();
    if (g_cuda) {
      if (!torch::cuda::is_available()) throw InvalidArgument("--device cuda: no CUDA device visible to LibTorch");
    }
    std::cerr << "bench_device: " << device << " " << precision << ", " << info.threads << " threads, torch " << info.torch_version
              << "\n";

    // ---- the scan (int16 on disk, like a scanner's output) and 8 distinct scans for the cohort,
    // made by a child process, so that the phantom generator's memory is not in this process's
    // peak RSS (the Python peers read the same files)
    const std::string scan_path = work + "/scan.nii.gz";
    if (prepare_only) {
      for (int s = -1; s < 8; ++s) {
        phantom::CaseOptions o;
        o.seed = s < 0 ? 1 : 100 + static_cast<std::uint64_t>(s);
        io::write_nifti(phantom::make_case(o).image.cast<std::int16_t>(),
                        s < 0 ? scan_path : work + "/cohort" + std::to_string(s) + ".nii.gz");
      }
      return 0;
    }
    if (!fs::exists(scan_path) || !fs::exists(work + "/cohort7.nii.gz")) {
      const std::string cmd = "'" + fs::read_symlink("/proc/self/exe").string() + "' --prepare-only --work '" + work + "'";
      if (std::system(cmd.c_str()) != 0) throw Error("could not make the scans: " + cmd);
    }

    json& st = r["stages"];
    auto finish = [&] {
      if (own_work) fs::remove_all(work);
      const std::string text = r.dump(2);
      if (!out.empty()) {
        std::ofstream f(out);
        f << text << "\n";
        if (!f) throw IoError("cannot write " + out);
      }
      std::cout << text << "\n";
      return 0;
    };
    if (g_only == std::set<std::string>{"end_to_end"}) {
      // the end-to-end job alone in this process: its own peak RSS, nothing else held
      model::Model m(paper_config(), 0);
      m.set_device(device, precision);
      stage(st, "end_to_end", [&] { end_to_end(m, scan_path, work); }, repeats);
      r["peak_rss_mb"] = peak_rss_mb();
      return finish();
    }
    stage(st, "read_nii_gz", [&] { io::read(scan_path); }, repeats);
    Volume<float> scan = io::read(scan_path);
    stage(st, "window3", [&] { preprocess::window_stack(scan); }, repeats);
    stage(st, "resample_1mm", [&] { preprocess::resample_to_spacing(scan, {1.0, 1.0, 5.0}, preprocess::Interp::Linear); },
                                repeats);
    // the same job as scipy's zoom / torch's interpolate: linear, no anti-aliasing
    stage(st, "resample_1mm_noaa",
          [&] { preprocess::resample_to_spacing(scan, {1.0, 1.0, 5.0}, preprocess::Interp::Linear, 0.0, false); }, repeats);
    stage(st, "skull_strip", [&] { preprocess::skull_strip(scan); }, repeats);
    // the pipeline's strip: the scan on the 1 x 1 x 5 mm grid, cropped to the head
    if (wanted("skull_strip_1mm")) {
      const Volume<float> head = preprocess::crop_to_foreground(
          preprocess::resample_to_spacing(preprocess::reorient(scan, "RAS"), {1.0, 1.0, 5.0}, preprocess::Interp::Linear, -1024.0),
          -500, 5);
      stage(st, "skull_strip_1mm", [&] { preprocess::skull_strip(head); }, repeats);
    }

    // the paper's model with skull stripping in its pipeline
    const model::ModelConfig cfg = paper_config();
    const preprocess::Pipeline pipe = preprocess::Pipeline::from_json(cfg.pipeline.dump());
    model::Model m(cfg, 0);
    m.set_device(device, precision);
    stage(st, "preprocess", [&] { pipe.run(scan); }, repeats);

    auto [x1, pr] = m.impl()->prepare(scan);
    r["network_input"] = x1.sizes().vec();
    torch::Tensor xb = x1.repeat({batch, 1, 1, 1, 1}).contiguous();
    if (g_cuda) {
      x1 = x1.contiguous().pin_memory();
      xb = xb.pin_memory();
    }
    stage(st, "forward_b1", [&] { m.impl()->infer(x1); }, repeats);
    stage(st, "forward_b" + std::to_string(batch), [&] { m.impl()->infer(xb); }, repeats);
    if (g_cuda) {
      // the layout the model chose for each batch shape (Auto: the faster of the two in a short
      // timing on its first batch), and each layout forced, timed like the rows above
      r["cuda_layout"] = {{"b1", m.impl()->channels_last(x1) ? "NDHWC" : "NCDHW"},
                          {"b" + std::to_string(batch), m.impl()->channels_last(xb) ? "NDHWC" : "NCDHW"}};
      using Layout = model::Model::Impl::CudaLayout;
      for (auto [layout, tag] : {std::pair{Layout::Contiguous, "ncdhw"}, std::pair{Layout::ChannelsLast, "ndhwc"}}) {
        model::Model ml(cfg, 0);
        ml.impl()->cuda_layout = layout;
        ml.set_device(device, precision);
        stage(st, std::string("forward_b1_") + tag, [&] { ml.impl()->infer(x1); }, repeats);
        stage(st, "forward_b" + std::to_string(batch) + "_" + tag, [&] { ml.impl()->infer(xb); }, repeats);
      }
    }
    const std::vector<explain::Target>& targets = both_heads();
    // Grad-CAM of both heads from the preprocessed scan (what the peers time: the network input
    // in memory, maps on its grid): a model with the same weights whose pipeline is the windows
    // alone, on the network-grid HU volume - one forward shared by both maps, the gradients to
    // layer4, both maps upsampled (and the prediction)
    explain::Options eo;
    {
      model::ModelConfig wcfg = cfg;
      preprocess::Pipeline wp;
      wp.window();
      wcfg.pipeline = json::parse(wp.to_json());
      model::Model mw(wcfg, 0);
      mw.set_device(device, precision);
      const Volume<float> net_grid = pr.volume;
      stage(st, "gradcam_both", [&] { explain::explain(mw, net_grid, targets, eo); }, repeats);
    }
    // the same from the scan in memory: the whole preprocessing (skull strip included), and both
    // maps carried back onto the 512 x 512 x 32 scan grid
    stage(st, "gradcam_both_from_scan", [&] { explain::explain(m, scan, targets, eo); }, repeats);
    explain::Explanation ex = explain::explain(m, scan, targets, eo);
    const std::string heat_path = work + "/heat.nii.gz";
    stage(st, "write_heatmap", [&] { io::write_nifti(ex.maps[0].raw, heat_path); }, repeats);
    // end to end: file in, both heatmaps and the prediction out
    stage(st, "end_to_end", [&] { end_to_end(m, scan_path, work); }, repeats);
    r["prediction"] = {{"volume_ml", ex.prediction["volume"].value}, {"p_poor", ex.prediction["prognosis"].probabilities.at(1)}};
    if (g_cuda) {
      // the same weights and scan on the CPU: how far the device's prediction and maps are from it
      model::Model mc(cfg, 0);
      const explain::Explanation ec = explain::explain(mc, scan, targets, eo);
      json maps = json::array();
      for (std::size_t t = 0; t < ec.maps.size(); ++t) {
        const Volume<float>& a = ex.maps[t].normalized;
        const Volume<float>& b = ec.maps[t].normalized;
        const std::vector<double> va(a.data(), a.data() + a.size()), vb(b.data(), b.data() + b.size());
        double worst = 0;
        for (std::size_t i = 0; i < va.size(); ++i) worst = std::max(worst, std::abs(va[i] - vb[i]));
        maps.push_back({{"head", ec.maps[t].head}, {"max_abs_diff_normalized", worst},
                        {"pearson", metrics::pearson_r(vb, va)}});
      }
      const double vc = ec.prediction["volume"].value, pc = ec.prediction["prognosis"].probabilities.at(1);
      r["cpu_reference"] = {{"volume_ml", vc}, {"p_poor", pc},
                            {"volume_abs_diff_ml", std::abs(ex.prediction["volume"].value - vc)},
                            {"p_poor_abs_diff", std::abs(ex.prediction["prognosis"].probabilities.at(1) - pc)},
                            {"maps", maps}};
      std::cerr << "bench_device: against the CPU: " << r["cpu_reference"].dump() << "\n";
    }

    r["peak_rss_mb"] = peak_rss_mb();  // the per-scan stages (before the cohort and the ceilings)
    r["peak_rss_mb_after"] = g_rss_after;

    // ---- cohort: predict_files over `cohort` files (8 distinct scans, cycled) vs the model bound
    if (cohort > 0 && wanted("cohort")) {
      for (const std::string& cohort_format : cohort_formats) {
        std::vector<std::string> files;
        for (int s = 0; s < 8; ++s) {
          files.push_back(work + "/cohort" + std::to_string(s) + "." + cohort_format);
          if (!fs::exists(files.back()))  // the uncompressed copy of the .nii.gz (same voxels, same header)
            io::write_nifti(io::read_nifti<std::int16_t>(work + "/cohort" + std::to_string(s) + ".nii.gz"), files.back());
        }
        std::vector<std::string> paths;
        for (int i = 0; i < cohort; ++i) paths.push_back(files[static_cast<std::size_t>(i) % files.size()]);
        model::Model cm(cfg, 0);  // the model's pipeline (skull strip included)
        cm.set_device(device, precision);
        model::CohortOptions co;
        co.batch_size = batch;
        co.readers = readers;
        co.reader_threads = reader_threads;
        co.schedule = schedule == "overlap"     ? model::CohortOptions::Schedule::Overlap
                      : schedule == "alternate" ? model::CohortOptions::Schedule::Alternate
                                                : model::CohortOptions::Schedule::Auto;
        // warm-up: a full batch (on CUDA the layout choice and cuDNN's algorithm search for its shape)
        cm.predict_files(std::vector<std::string>(paths.begin(), paths.begin() + std::min<int>(batch, cohort)), co);
        device_sync();
        // The model-only bound is the cohort with its preprocessing free: the same scans, already
        // prepared, through the same batches (stacked, run, decoded, like predict_files' own
        // network thread), timed in full, not a median batch.
        std::vector<torch::Tensor> prepared_x;
        std::vector<preprocess::PipelineResult> prepared_pr;
        for (const std::string& f : files) {
          auto [x, p] = cm.impl()->prepare_file(f);
          prepared_x.push_back(x);
          prepared_pr.push_back(std::move(p));
        }
        auto model_only_seconds = [&] {
          return seconds([&] {
            for (int b0 = 0; b0 < cohort; b0 += batch) {
              std::vector<torch::Tensor> xs;
              std::vector<std::size_t> rows;
              for (int i = b0; i < std::min(cohort, b0 + batch); ++i) {
                rows.push_back(static_cast<std::size_t>(i) % files.size());
                xs.push_back(prepared_x[rows.back()]);
              }
              const model::MultiTaskNetImpl::Output o = cm.impl()->infer(cm.impl()->stack(xs));
              for (std::size_t r = 0; r < rows.size(); ++r)
                cm.impl()->decode(o, static_cast<std::int64_t>(r), prepared_pr[rows[r]]);
            }
          });
        };
        // This VM's speed wanders by up to 2x within minutes, so the cohort and the bound it is
        // compared with are measured side by side and bracketed: model-only, cohort, model-only,
        // cohort, ..., model-only. A round's bound is the mean of the model-only runs just before
        // and just after its cohort (a drift during the round cancels to first order). Each round
        // also times one scan's reading and preprocessing on one thread (a reader's work: the 8
        // files, per scan). The fraction is each round's own; the report gives the median round.
        const int threads = runtime_info().threads;
        json round_list = json::array();
        model_only_seconds();  // untimed: the cohort's last, smaller batch is a shape of its own (oneDNN / cuDNN set-up)
        double model_before = model_only_seconds();
        for (int round = 0; round < cohort_rounds; ++round) {
          std::vector<model::CohortItem> items;
          const double sec = seconds([&] { items = cm.predict_files(paths, co); });
          const double model_after = model_only_seconds();
          const double model_sec = 0.5 * (model_before + model_after);
          const double fwd_ms = 1e3 * model_sec * batch / cohort;  // per batch of `batch` scans
          int ok = 0;
          for (const auto& it : items) ok += it.ok;
          if (ok != cohort) throw Error("cohort: " + std::to_string(cohort - ok) + " scan(s) failed: " + items[0].error);
          json prep_t;
          {
            ThreadCap one(1);
            prep_t = timeit([&] { for (const std::string& f : files) cm.impl()->prepare_file(f); }, 1);
          }
          const double prep = prep_t["median_ms"].get<double>() / static_cast<double>(files.size());
          const double bound = cohort / model_sec;
          json rd = {{"seconds", sec}, {"scans_per_s", cohort / sec}, {"forward_ms", fwd_ms}, {"model_bound_scans_per_s", bound},
                     {"model_only_seconds", {model_before, model_after}},
                     {"fraction_of_bound", (cohort / sec) / bound}, {"prepare_ms_one_thread", prep}};
          model_before = model_after;
          if (!g_cuda) {
            // the network and the readers share the same cores: per scan, the forward's share of a
            // batch plus the preparation spread over every core, if nothing were lost to switching
            const double shared = 1e3 / (fwd_ms / batch + prep / threads);
            rd["cores_shared_bound_scans_per_s"] = shared;
            rd["fraction_of_cores_shared_bound"] = (cohort / sec) / shared;
          } else {
            // the readers (one per core but one, one thread each) alone: one reader's rate times
            // their number, and the same readers measured side by side without the network
            const auto hw = static_cast<unsigned>(num_threads());  // as predict_files
            const int nr = readers > 0 ? readers : static_cast<int>(hw > 1 ? hw - 1 : 1);
            rd["readers_bound_scans_per_s"] = nr * 1e3 / prep;
            std::atomic<int> next{0};
            const auto r0 = Clock::now();
            std::vector<std::thread> pool;
            for (int t = 0; t < nr; ++t)
              pool.emplace_back([&] {
                ThreadCap one(1);
                for (int i; (i = next++) < cohort;) cm.impl()->prepare_file(files[static_cast<std::size_t>(i) % files.size()]);
              });
            for (auto& t : pool) t.join();
            rd["readers_alone_scans_per_s"] = cohort / std::chrono::duration<double>(Clock::now() - r0).count();
            rd["readers"] = nr;
          }
          std::cerr << "bench_device: cohort round " << round + 1 << ": " << rd.dump() << "\n";
          round_list.push_back(rd);
        }
        std::vector<std::size_t> order(round_list.size());
        for (std::size_t q = 0; q < order.size(); ++q) order[q] = q;
        std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
          return round_list[a]["fraction_of_bound"].get<double>() < round_list[b]["fraction_of_bound"].get<double>();
        });
        json c = round_list[order[order.size() / 2]];  // the median round
        c["scans"] = cohort;
        c["batch"] = batch;
        c["schedule"] = schedule;
        c["format"] = cohort_format;
        if (!c.contains("readers")) c["readers"] = co.readers;
        c["rounds"] = round_list;
        std::vector<double> fr;
        for (const auto& rd : round_list) fr.push_back(rd["fraction_of_bound"].get<double>());
        c["fraction_of_bound_min"] = *std::min_element(fr.begin(), fr.end());
        c["fraction_of_bound_max"] = *std::max_element(fr.begin(), fr.end());
        r[cohort_format == "nii" ? "cohort_nii" : "cohort"] = c;
        r["peak_rss_mb_with_cohort"] = peak_rss_mb();
      }
    }

    // ---- ceilings (CPU)
    // The ceilings are measured at the end of the run, minutes after the stages they are compared
    // with; the stages' fractions of them ("paired") are measured again here, alternating a run
    // of the stage with a run of its ceiling, round after round (paired_fraction).
    if (!g_cuda && wanted("ceilings")) {
      const int rounds = std::max(repeats, 5);
      CopyBandwidth bw;
      const double gbs = memory_bandwidth_gbs(bw);
      const std::size_t voxels = scan.size();
      const double window_bytes = static_cast<double>(voxels) * 4 * (1 + 3);  // read once, write 3 channels
      r["ceilings"]["memory_bandwidth_gbs"] = gbs;
      r["ceilings"]["window3_gbs"] = window_bytes / (st["window3"]["median_ms"].get<double>() / 1e3) / 1e9;
      // a window pass's bandwidth against a copy's, as fractions of time: the copy's seconds for
      // the window's bytes over the window's seconds
      r["ceilings"]["window3_paired"] = paired_fraction(
          [&] { return seconds([&] { preprocess::window_stack(scan); }); },
          [&] { return window_bytes / (bw.copy() * 1e9); }, rounds);
      json c1 = conv_ceiling(m, x1, rounds);
      r["ceilings"]["onednn_conv_b1"] = c1;
      if (!c1.is_null())
        r["ceilings"]["forward_b1_gflops"] = c1["gflop"].get<double>() / (st["forward_b1"]["median_ms"].get<double>() / 1e3);
      json cb = conv_ceiling(m, xb, rounds);
      r["ceilings"]["onednn_conv_b" + std::to_string(batch)] = cb;
      if (!cb.is_null())
        r["ceilings"]["forward_b" + std::to_string(batch) + "_gflops"] =
            cb["gflop"].get<double>() / (st["forward_b" + std::to_string(batch)]["median_ms"].get<double>() / 1e3);
    }
    return finish();
  } catch (const std::exception& e) {
    std::cerr << "bench_device: " << e.what() << "\n";
    return 1;
  }
}
