// Model: deterministic initialisation, the model file (round trip, corrupt variants),
// prediction on a scan with the stored pipeline, results back on the scan's grid.
#include <dlfcn.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "ichkit/core/error.h"
#include "ichkit/explain/gradcam.h"
#include "ichkit/io/nifti.h"
#include "ichkit/model/detail/impl.h"
#include "ichkit/model/metrics.h"
#include "ichkit/model/model.h"
#include "ichkit/phantom/phantom.h"
#include "test_common.h"

using namespace ichkit;
using namespace ichkit::model;
using nlohmann::json;

namespace {

ModelConfig small_config() {
  ModelConfig c;
  c.encoder.depth = 10;
  c.encoder.width = 4;
  c.encoder.in_channels = 3;
  c.heads = {{"volume", "regression", "volume_ml", 1.0, json{{"transform", "log1p"}, {"mean", 2.5}, {"sd", 1.2}}},
             {"prognosis", "classification", "outcome", 1.0, json{{"classes", {"good", "poor"}}}},
             {"seg", "segmentation", "mask", 1.0, json{{"channels", 4}}}};
  preprocess::Pipeline p;
  p.reorient("RAS").resample_to_spacing({4.0, 4.0, 5.0}).center_crop_or_pad({48, 48, 16}).window();
  c.pipeline = json::parse(p.to_json());
  return c;
}

const Volume<float>& scan() {
  static Volume<float> v = [] {
    phantom::CaseOptions o;
    o.seed = 3;
    o.shape = {128, 128, 16};
    o.spacing = {1.8, 1.8, 10.0};
    o.supersample = 1;
    return phantom::make_case(o).image;
  }();
  return v;
}

/// How far a device's normalized Grad-CAM map is from the CPU's: the largest difference, the
/// Pearson r (only where every voxel is finite) and the non-finite voxels.
struct MapDiff {
  double worst = 0, r = 0;
  std::size_t not_finite = 0;
};
/// Each head's map on the device against the CPU's, after checking that both explanations hold
/// the same maps on the same grid.
std::vector<MapDiff> map_diffs(const explain::Explanation& device, const explain::Explanation& cpu) {
  REQUIRE(device.maps.size() == cpu.maps.size());
  std::vector<MapDiff> out;
  for (std::size_t t = 0; t < device.maps.size(); ++t) {
    const Volume<float>& a = device.maps[t].normalized;
    const Volume<float>& b = cpu.maps[t].normalized;
    REQUIRE(a.shape() == b.shape());
    CHECK(a.geometry().affine().isApprox(b.geometry().affine()));
    MapDiff d;
    for (std::size_t i = 0; i < a.size(); ++i) {
      d.not_finite += !std::isfinite(a.data()[i]);
      d.worst = std::max(d.worst, double(std::abs(a.data()[i] - b.data()[i])));
    }
    if (d.not_finite == 0)
      d.r = metrics::pearson_r(std::vector<double>(b.data(), b.data() + b.size()), std::vector<double>(a.data(), a.data() + a.size()));
    out.push_back(d);
  }
  return out;
}

bool same_state(const Model& a, const Model& b) {
  auto sa = a.state(), sb = b.state();
  if (sa.size() != sb.size()) return false;
  for (std::size_t i = 0; i < sa.size(); ++i)
    if (sa[i].name != sb[i].name || sa[i].shape != sb[i].shape || sa[i].f32 != sb[i].f32 || sa[i].i64 != sb[i].i64) return false;
  return true;
}

}  // namespace

TEST_CASE("model: initialisation is deterministic by seed") {
  Model a(small_config(), 7), b(small_config(), 7), c(small_config(), 8);
  CHECK(same_state(a, b));
  CHECK_FALSE(same_state(a, c));
  CHECK(a.parameter_count() > 1000);
}

TEST_CASE("model: file round trip keeps weights, config, pipeline and metadata") {
  test::TempDir dir;
  Model a(small_config(), 11);
  json meta = a.metadata();
  meta["training"] = {{"epochs", 3}, {"best_val_loss", 0.25}};
  a.set_metadata(meta);
  a.save(dir / "m.ichkit");
  Model b = Model::load(dir / "m.ichkit");
  CHECK(same_state(a, b));
  CHECK(b.config().to_json() == a.config().to_json());
  CHECK(b.pipeline().to_json() == a.pipeline().to_json());
  CHECK(b.metadata()["training"]["epochs"] == 3);
  CHECK(b.metadata()["ichkit_version"] == a.metadata()["ichkit_version"]);
  // and the predictions are bit-identical
  Prediction pa = a.predict(scan()), pb = b.predict(scan());
  CHECK(pa["volume"].value == pb["volume"].value);
  CHECK(pa["prognosis"].probabilities == pb["prognosis"].probabilities);
  // and a save of the loaded model loads back to the same weights again
  CHECK(same_state(Model::from_bytes(b.to_bytes()), a));
  // no temporary file is left behind
  int files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) files += e.is_regular_file();
  CHECK(files == 1);
}

TEST_CASE("model: corrupt, truncated and foreign files are refused with clear errors") {
  Model a(small_config(), 1);
  const std::string good = a.to_bytes();
  auto expect = [&](const std::string& bytes, const char* needle) {
    try {
      (void)Model::from_bytes(bytes);
      FAIL("accepted: " << needle);
    } catch (const FormatError& e) {
      CHECK_MESSAGE(std::string(e.what()).find(needle) != std::string::npos, e.what());
    }
  };
  expect("", "bad magic");
  expect("GIF89a..........", "bad magic");
  expect(good.substr(0, 10), "truncated");
  expect(good.substr(0, good.size() / 2), "truncated");
  expect(good.substr(0, good.size() - 3), "truncated");
  std::string v = good;
  v[8] = 9;  // format version 9
  expect(v, "version 9 is not supported");
  std::string flip = good;
  flip[good.size() / 2] ^= 0x10;  // a bit in the weights
  expect(flip, "checksum");
  std::string tail = good + "x";
  expect(tail, "unexpected bytes");
  // header length pointing past the end
  std::string hl = good;
  const std::uint64_t huge = ~std::uint64_t(0) >> 1;
  std::memcpy(hl.data() + 16, &huge, 8);
  expect(hl, "truncated");
  // weights that do not fit the architecture (the check from_bytes runs after the CRC)
  {
    ModelConfig other = small_config();
    other.encoder.width = 8;
    Model o(other, 1);
    CHECK_THROWS_WITH_AS(a.set_state(o.state()), doctest::Contains("has shape"), FormatError);
    auto st = a.state();
    st.pop_back();
    CHECK_THROWS_WITH_AS(a.set_state(st), doctest::Contains("is missing"), FormatError);
    st = a.state();
    st[0].name = "encoder.bogus";
    CHECK_THROWS_WITH_AS(a.set_state(st), doctest::Contains("unexpected tensor"), FormatError);
  }
  CHECK_THROWS_AS(Model::load("/nonexistent/model.ichkit"), IoError);
  LoadOptions tiny;
  tiny.max_bytes = 100;
  CHECK_THROWS_AS(Model::from_bytes(good, tiny), ResourceError);
}

TEST_CASE("model: predict gives user units, and the segmentation on the scan's grid") {
  Model m(small_config(), 5);
  Prediction p = m.predict(scan());
  REQUIRE(p.heads.size() == 3);
  CHECK(std::isfinite(p["volume"].value));
  CHECK(p["volume"].value >= 0);  // log1p model: expm1 >= 0 after clamping
  CHECK(p["prognosis"].probabilities.size() == 2);
  CHECK(p["prognosis"].probabilities[0] + p["prognosis"].probabilities[1] == doctest::Approx(1.0));
  CHECK(p["prognosis"].classes == std::vector<std::string>{"good", "poor"});
  const HeadPrediction& s = p["seg"];
  CHECK(s.probability.shape() == scan().shape());
  CHECK(s.probability.geometry().affine().isApprox(scan().geometry().affine(), 1e-12));
  CHECK(s.mask.shape() == scan().shape());
  CHECK_THROWS_AS(p["nope"], InvalidArgument);
  // batches give the same numbers as one scan at a time (eval-mode BatchNorm)
  std::vector<Prediction> many = m.predict({scan(), scan(), scan()}, 2);
  REQUIRE(many.size() == 3);
  for (const Prediction& q : many) {
    CHECK(q["volume"].value == doctest::Approx(p["volume"].value).epsilon(1e-5));
    CHECK(q["prognosis"].probabilities[1] == doctest::Approx(p["prognosis"].probabilities[1]).epsilon(1e-5));
  }
}

TEST_CASE("model: concurrent predict calls on one model give the serial result") {
  Model m(small_config(), 9);
  const double want = m.predict(scan())["volume"].value;
  std::vector<double> got(4, 0);
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) ts.emplace_back([&, t] { got[t] = m.predict(scan())["volume"].value; });
  for (auto& t : ts) t.join();
  for (double g : got) CHECK(g == want);
}

TEST_CASE("model: the oneDNN fast path (BatchNorm folded) equals the plain module") {
  Model m(small_config(), 21);
  // non-trivial BatchNorm statistics, so folding is really exercised
  {
    torch::NoGradGuard ng;
    torch::manual_seed(4);
    for (const auto& b : m.impl()->net->named_buffers(true)) {
      if (b.key().find("running_mean") != std::string::npos) b.value().normal_(0, 0.2);
      if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 2.0);
    }
    for (const auto& p : m.impl()->net->named_parameters(true))
      if (p.key().find(".bn") != std::string::npos || p.key().find("stem.1") != std::string::npos) p.value().uniform_(0.5, 1.5);
    m.impl()->weights_changed();
  }
  REQUIRE(FastEncoder::supported(m.config().encoder));
  m.impl()->fast_inference = true;
  Prediction fast = m.predict(scan());
  m.impl()->fast_inference = false;
  Prediction plain = m.predict(scan());
  CHECK(fast["volume"].value == doctest::Approx(plain["volume"].value).epsilon(1e-4));
  CHECK(fast["prognosis"].probabilities[1] == doctest::Approx(plain["prognosis"].probabilities[1]).epsilon(1e-4));
  float worst = 0;
  for (std::size_t x = 0; x < fast["seg"].probability.size(); ++x)
    worst = std::max(worst, std::abs(fast["seg"].probability.data()[x] - plain["seg"].probability.data()[x]));
  CHECK(worst < 1e-4f);
  // and the stage maps themselves
  torch::Tensor x = torch::randn({2, 3, 16, 48, 48});
  c10::InferenceMode guard;
  m.impl()->net->eval();
  Stages a = m.impl()->net->encoder()->forward(x);
  Stages b = FastEncoder(m.impl()->net->encoder()).forward(x);
  // pooled heads only: just the last stage comes back, the same values
  Stages last = FastEncoder(m.impl()->net->encoder()).forward(x, false);
  REQUIRE(last.maps.size() == b.maps.size());
  CHECK(torch::equal(last.last(), b.last()));
  for (std::size_t s = 0; s + 1 < last.maps.size(); ++s) CHECK_FALSE(last.maps[s].defined());
  for (std::size_t s = 0; s < a.maps.size(); ++s) {
    const double scale = a.maps[s].abs().max().item<double>();
    CHECK((a.maps[s] - b.maps[s]).abs().max().item<double>() < 1e-4 * std::max(1.0, scale));
  }
}

TEST_CASE("model: set_device refuses what this build cannot run, and 'cpu' changes nothing") {
  Model m(small_config(), 13);
  const Prediction before = m.predict(scan());
  CHECK(m.device() == "cpu");
  CHECK(m.precision() == "float32");
  CHECK_THROWS_AS(m.set_device("tpu"), InvalidArgument);
  CHECK_THROWS_AS(m.set_device("cpu", "float8"), InvalidArgument);
  CHECK_THROWS_AS(m.set_device("cpu", "bfloat16"), InvalidArgument);  // reduced precision is for CUDA
  if (!torch::cuda::is_available()) {
    CHECK_THROWS_WITH_AS(m.set_device("cuda"), doctest::Contains("no CUDA device"), InvalidArgument);
  }
  CHECK(m.device() == "cpu");  // a refused call leaves the model as it was
  m.set_device("cpu");
  m.impl()->cuda_layout = Model::Impl::CudaLayout::ChannelsLast;  // a CUDA setting: the CPU ignores it
  CHECK_FALSE(m.impl()->channels_last(m.impl()->prepare(scan()).first));
  const Prediction after = m.predict(scan());
  CHECK(after["volume"].value == before["volume"].value);
  CHECK(after["prognosis"].probabilities == before["prognosis"].probabilities);
}

// The pip (CUDA) LibTorch exports its own std::filesystem (pytorch/pytorch#133437); a program
// whose calls bind to it mixes those internals with these headers' (fs::remove_all crashed on an
// H200). ichkit's link names libstdc++ ahead of LibTorch, so the calls go to libstdc++.so (Debian)
// or to the program's own copy where the toolchain links libstdc++ statically (that H200's).
// Meaningful where this links against such a LibTorch (scripts/gpu-bench runs it there).
static void in_this_program() {}

TEST_CASE("model: std::filesystem binds to libstdc++, not to copies LibTorch exports") {
  namespace fs = std::filesystem;
  auto object_of = [](const void* address) {
    Dl_info info{};
    return address && dladdr(address, &info) != 0 && info.dli_fname ? std::string(info.dli_fname) : std::string("(none)");
  };
  const std::string program = object_of(reinterpret_cast<const void*>(&in_this_program));
  // where the dynamic linker's global lookup finds two symbols that bound to libtorch.so there
  // (LD_DEBUG=bindings): fs::remove_all(const path&) and fs::status(const path&)
#if _GLIBCXX_USE_CXX11_ABI
  const char* names[] = {"_ZNSt10filesystem10remove_allERKNS_7__cxx114pathE", "_ZNSt10filesystem6statusERKNS_7__cxx114pathE"};
#else
  const char* names[] = {"_ZNSt10filesystem10remove_allERKNS_4pathE", "_ZNSt10filesystem6statusERKNS_4pathE"};
#endif
  for (const std::string name : names) {
    const std::string lib = object_of(dlsym(RTLD_DEFAULT, name.c_str()));
    CAPTURE(name);
    CAPTURE(lib);
    CAPTURE(program);
    REQUIRE((lib.find("libstdc++") != std::string::npos || lib == program));
  }
  const fs::path d = fs::temp_directory_path() / ("ichkit-fs-" + std::to_string(::getpid()));
  fs::create_directories(d / "a" / "b");
  std::ofstream(d / "a" / "b" / "f.txt") << "x";
  CHECK(fs::remove_all(d) == 4);
  CHECK_FALSE(fs::exists(d));
}

TEST_CASE("model: on CUDA, float32 predictions and Grad-CAM maps equal the CPU's in either memory layout; bfloat16 and "
          "float16 stay close" *
          doctest::skip(!torch::cuda::is_available())) {
  Model m(small_config(), 17);
  const Prediction cpu = m.predict(scan());
  const std::vector<explain::Target> targets{explain::Target("volume"), explain::Target("prognosis", 1)};
  const explain::Explanation ecpu = explain::explain(m, scan(), targets);
  using Layout = Model::Impl::CudaLayout;
  for (Layout layout : {Layout::Contiguous, Layout::ChannelsLast, Layout::Auto}) {
    CAPTURE(static_cast<int>(layout));
    m.impl()->cuda_layout = layout;
    m.set_device("cuda");  // a fresh device copy in that layout
    const Prediction gpu = m.predict(scan());
    // cuDNN runs float32 convolutions in TF32 by default (as PyTorch does): ~1e-3 relative
    CHECK(gpu["volume"].value == doctest::Approx(cpu["volume"].value).epsilon(5e-3));
    CHECK(std::abs(gpu["prognosis"].probabilities[1] - cpu["prognosis"].probabilities[1]) < 2e-3);
    for (const MapDiff& d : map_diffs(explain::explain(m, scan(), targets), ecpu)) CHECK(d.worst < 0.02);  // maps in [0, 1]
    // a forced layout is the one used
    if (layout != Layout::Auto) CHECK(m.impl()->channels_last(m.impl()->prepare(scan()).first) == (layout == Layout::ChannelsLast));
  }
  // Reduced precision, the tolerance the README states: volume within 5 %, P(poor) within 0.02,
  // normalized Grad-CAM maps within 0.1 of the CPU's and correlated at r > 0.99. float16 runs
  // Grad-CAM's backward in float16 too: a gradient that underflowed would flatten the maps.
  for (const char* precision : {"bfloat16", "float16"}) {
    CAPTURE(precision);
    m.set_device("cuda", precision);
    CHECK(m.precision() == precision);
    const Prediction r = m.predict(scan());
    CHECK(r["volume"].value == doctest::Approx(cpu["volume"].value).epsilon(0.05));
    CHECK(std::abs(r["prognosis"].probabilities[1] - cpu["prognosis"].probabilities[1]) < 0.02);
    for (const MapDiff& d : map_diffs(explain::explain(m, scan(), targets), ecpu)) {
      CHECK(d.not_finite == 0);
      CHECK(d.worst < 0.1);
      CHECK(d.r > 0.99);
    }
  }
  // the master weights stay float32 on the CPU
  CHECK(same_state(m, Model(small_config(), 17)));
}

TEST_CASE("model: predict_files, overlapping or alternating, with 1 to 3 readers and batches of 1 to 3, equals predict() "
          "scan by scan; bad files are reported") {
  Model m(small_config(), 23);
  test::TempDir tmp;
  const std::string dir = tmp.path().string();
  std::vector<std::string> paths;
  std::vector<Volume<float>> scans;
  for (int s = 0; s < 5; ++s) {
    phantom::CaseOptions o;
    o.seed = 40 + static_cast<std::uint64_t>(s);
    o.shape = {96, 96, 12};
    o.spacing = {2.4, 2.4, 10.0};
    o.supersample = 1;
    scans.push_back(phantom::make_case(o).image);
    paths.push_back(dir + "/scan" + std::to_string(s) + ".nii.gz");
    io::write_nifti(scans.back(), paths.back());
  }
  // a missing file and a corrupt one in the middle: reported, and the others go on
  paths.insert(paths.begin() + 2, dir + "/missing.nii.gz");
  {
    std::ofstream(dir + "/corrupt.nii.gz") << "not an image";
  }
  paths.insert(paths.begin() + 4, dir + "/corrupt.nii.gz");
  struct Run {
    CohortOptions::Schedule schedule;
    int readers, reader_threads, batch;
  };
  using S = CohortOptions::Schedule;
  // alternating, a failed scan lets the readers take one more (else the batch never fills)
  for (const Run& run : {Run{S::Overlap, 1, 0, 2}, Run{S::Overlap, 3, 1, 2}, Run{S::Alternate, 1, 0, 2},
                         Run{S::Alternate, 3, 1, 2}, Run{S::Alternate, 2, 1, 1}, Run{S::Alternate, 2, 1, 3},
                         Run{S::Auto, 0, 0, 4}}) {
    CAPTURE(static_cast<int>(run.schedule));
    CAPTURE(run.readers);
    CAPTURE(run.batch);
    CohortOptions o;
    o.batch_size = run.batch;
    o.readers = run.readers;
    o.reader_threads = run.reader_threads;
    o.schedule = run.schedule;
    std::vector<CohortItem> got = m.predict_files(paths, o);
    REQUIRE(got.size() == paths.size());
    std::size_t s = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
      CHECK(got[i].path == paths[i]);
      if (i == 2 || i == 4) {
        CHECK_FALSE(got[i].ok);
        CHECK(got[i].error.find(i == 2 ? "missing" : "corrupt") != std::string::npos);
        continue;
      }
      REQUIRE(got[i].ok);
      // the scan went through the file (float32 NIfTI round trip is exact) and the same network
      const Prediction want = m.predict(io::read_nifti<float>(paths[i]));
      CHECK(got[i].prediction["volume"].value == doctest::Approx(want["volume"].value).epsilon(1e-5));
      CHECK(got[i].prediction["prognosis"].probabilities[1] == doctest::Approx(want["prognosis"].probabilities[1]).epsilon(1e-5));
      CHECK(got[i].prediction["seg"].mask.shape() == scans[s].shape());
      ++s;
    }
  }
  CHECK(m.predict_files({}).empty());
  CohortOptions bad;
  bad.batch_size = 0;
  CHECK_THROWS_AS(m.predict_files(paths, bad), InvalidArgument);
  bad.batch_size = 1;
  bad.reader_threads = -1;
  CHECK_THROWS_AS(m.predict_files(paths, bad), InvalidArgument);
}
