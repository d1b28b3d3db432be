// Concurrency: 8 threads share one model and call predict and explain (every head type,
// several scans, in interleaved order) while others read NIfTI files and run pipelines; every
// result equals the serial one bit for bit. scripts/test also runs this suite in a
// ThreadSanitizer build (ICHKIT_SANITIZE=thread), where any data race fails it.
#include <atomic>
#include <cstring>
#include <fstream>
#include <thread>

#include "ichkit/core/error.h"
#include "ichkit/explain/gradcam.h"
#include "ichkit/io/nifti.h"
#include "ichkit/model/model.h"
#include "ichkit/phantom/phantom.h"
#include "test_common.h"

using namespace ichkit;
using nlohmann::json;

namespace {

constexpr int kThreads = 8;

#if defined(__SANITIZE_THREAD__)
#define ICHKIT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define ICHKIT_TSAN 1
#endif
#endif

/// Under ThreadSanitizer LibTorch's own pool must stay off: its OpenMP workers (libgomp, not
/// instrumented) synchronise in ways TSan cannot see, which it reports as races in LibTorch.
/// The 8 caller threads below are the concurrency under test.
void tsan_single_intra_op_thread() {
#ifdef ICHKIT_TSAN
  ichkit::set_num_threads(1);
#endif
}

model::ModelConfig config() {
  model::ModelConfig c;
  c.encoder.depth = 10;
  c.encoder.width = 4;
  c.heads = {{"volume", "regression", "volume_ml", 1.0, json{{"transform", "log1p"}, {"mean", 2.5}, {"sd", 1.2}}},
             {"prognosis", "classification", "outcome", 1.0, json{{"classes", {"good", "poor"}}}},
             {"mrs", "ordinal", "mrs", 1.0, json{{"num_classes", 7}}},
             {"seg", "segmentation", "mask", 1.0, json{{"channels", 4}}}};
  preprocess::Pipeline p;
  p.reorient("RAS").resample_to_shape({32, 32, 8}).window();
  c.pipeline = json::parse(p.to_json());
  return c;
}

std::vector<Volume<float>> scans() {
  std::vector<Volume<float>> v;
  for (std::uint64_t s = 0; s < 3; ++s) {
    phantom::CaseOptions o;
    o.seed = 11 + s;
    o.shape = {64, 64, 10};
    o.spacing = {3.2, 3.2, 10.0};
    o.supersample = 1;
    v.push_back(phantom::make_case(o).image);
  }
  return v;
}

template <class T>
bool same(const Volume<T>& a, const Volume<T>& b) {
  return a.shape() == b.shape() && a.geometry().affine().isApprox(b.geometry().affine(), 0) &&
         std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

bool same(const model::Prediction& a, const model::Prediction& b) {
  if (a.heads.size() != b.heads.size()) return false;
  for (std::size_t h = 0; h < a.heads.size(); ++h) {
    const auto &x = a.heads[h], &y = b.heads[h];
    if (std::memcmp(&x.value, &y.value, sizeof(double)) != 0 || x.probabilities != y.probabilities) return false;
    if (x.type == "segmentation" && !(same(x.probability, y.probability) && same(x.mask, y.mask))) return false;
  }
  return true;
}

bool same(const explain::Explanation& a, const explain::Explanation& b) {
  if (!same(a.prediction, b.prediction) || a.maps.size() != b.maps.size()) return false;
  for (std::size_t k = 0; k < a.maps.size(); ++k)
    if (!(same(a.maps[k].raw, b.maps[k].raw) && same(a.maps[k].normalized, b.maps[k].normalized)) ||
        a.maps[k].feature != b.maps[k].feature)
      return false;
  return true;
}

}  // namespace

TEST_CASE("8 threads calling predict and explain on one shared model get exactly the serial results") {
  tsan_single_intra_op_thread();
  const model::Model m(config(), 17);
  const std::vector<Volume<float>> in = scans();
  const std::vector<explain::Target> targets = {{"volume"}, {"prognosis", 1}, {"mrs"}, {"seg"}};
  std::vector<model::Prediction> want_p;
  std::vector<explain::Explanation> want_e;
  for (const auto& s : in) {
    want_p.push_back(m.predict(s));
    want_e.push_back(explain::explain(m, s, targets));
  }
  // the batched path too (one forward pass for two scans of one shape)
  const std::vector<model::Prediction> want_batch = m.predict(in, 2);

  std::atomic<int> mismatches{0}, errors{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < kThreads; ++t)
    pool.emplace_back([&, t] {
      try {
        for (int round = 0; round < 2; ++round) {
          const std::size_t s = static_cast<std::size_t>(t + round) % in.size();
          if ((t + round) % 2 == 0) {
            if (!same(m.predict(in[s]), want_p[s])) ++mismatches;
            if (!same(explain::explain(m, in[s], targets), want_e[s])) ++mismatches;
          } else {
            if (!same(explain::explain(m, in[s], targets), want_e[s])) ++mismatches;
            const std::vector<model::Prediction> b = m.predict(in, 2);
            for (std::size_t i = 0; i < in.size(); ++i)
              if (!same(b[i], want_batch[i])) ++mismatches;
          }
        }
      } catch (const std::exception& e) {
        MESSAGE(e.what());
        ++errors;
      }
    });
  for (auto& th : pool) th.join();
  CHECK(errors.load() == 0);
  CHECK(mismatches.load() == 0);
}

TEST_CASE("8 threads reading one NIfTI file and running one pipeline get the serial result") {
  tsan_single_intra_op_thread();
  const std::string path = test::data_path("nifti/blast-ct-lesions/scan_0_segmentation.nii.gz").string();
  const Volume<float> want = io::read_nifti<float>(path);
  preprocess::Pipeline p;
  p.reorient("RAS").resample_to_spacing({2.0, 2.0, 4.0}).crop_to_foreground(0.5, 4).window({{40, 80}, {600, 2800}});
  const preprocess::PipelineResult ref = p.run(want);
  std::atomic<int> mismatches{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < kThreads; ++t)
    pool.emplace_back([&] {
      const Volume<float> v = io::read_nifti<float>(path);
      if (!same(v, want)) ++mismatches;
      const preprocess::PipelineResult r = p.run(v);
      if (!same(r.volume, ref.volume) || r.input.shape != ref.input.shape || r.input.count != ref.input.count ||
          std::memcmp(r.input.data.get(), ref.input.data.get(), r.input.count * r.volume.size() * sizeof(float)) != 0)
        ++mismatches;
    });
  for (auto& th : pool) th.join();
  CHECK(mismatches.load() == 0);
}

TEST_CASE("predict_files, its readers beside the network or alternating with it, gets the serial results") {
  tsan_single_intra_op_thread();
  const model::Model m(config(), 17);
  const std::vector<Volume<float>> in = scans();
  test::TempDir tmp;
  std::vector<std::string> paths;
  std::vector<Volume<float>> back;  // the files as read (the affine is stored in float32)
  for (std::size_t s = 0; s < in.size(); ++s) {
    paths.push_back((tmp.path() / ("scan" + std::to_string(s) + ".nii")).string());
    io::write_nifti(in[s], paths.back());
    back.push_back(io::read_nifti<float>(paths.back()));
  }
  const std::vector<model::Prediction> want = m.predict(back, 2);  // batches {0, 1}, {2}, as below
  const std::string bad = (tmp.path() / "bad.nii").string();
  std::ofstream(bad) << "not an image";
  paths.insert(paths.begin() + 1, bad);  // a failed scan between two of one batch
  for (auto schedule : {model::CohortOptions::Schedule::Overlap, model::CohortOptions::Schedule::Alternate}) {
    CAPTURE(static_cast<int>(schedule));
    model::CohortOptions o;
    o.batch_size = 2;
    o.readers = 3;
    o.reader_threads = 1;
    o.schedule = schedule;
    for (int round = 0; round < 3; ++round) {
      const std::vector<model::CohortItem> got = m.predict_files(paths, o);
      REQUIRE(got.size() == 4);
      CHECK_FALSE(got[1].ok);
      std::size_t s = 0;
      for (std::size_t i = 0; i < got.size(); ++i) {
        if (i == 1) continue;
        REQUIRE(got[i].ok);
        CHECK(same(got[i].prediction, want[s++]));
      }
    }
  }
}
