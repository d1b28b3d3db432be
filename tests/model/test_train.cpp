// Training: manifest, patient folds, determinism, exact resume from a checkpoint, the
// two-stage and single-task modes, evaluation.
#include <fstream>

#include "ichkit/core/error.h"
#include "ichkit/model/detail/impl.h"
#include "ichkit/model/train.h"
#include "ichkit/phantom/phantom.h"
#include "test_common.h"

using namespace ichkit;
using namespace ichkit::model;
using nlohmann::json;

namespace {

/// A small cohort on disk (12 cases, 64 x 64 x 8 at 3.6 x 3.6 x 20 mm), made once.
const std::string& cohort_dir() {
  static test::TempDir dir;
  static bool made = [] {
    phantom::CohortOptions o;
    o.n = 12;
    o.seed = 5;
    o.compress = false;
    o.case_options.shape = {64, 64, 8};
    o.case_options.spacing = {3.6, 3.6, 20.0};
    o.case_options.supersample = 1;
    phantom::make_cohort(dir.path().string(), o);
    return true;
  }();
  (void)made;
  static std::string p = dir.path().string();
  return p;
}

ModelConfig config(bool seg = true) {
  ModelConfig c;
  c.encoder.depth = 10;
  c.encoder.width = 4;
  c.heads = {{"volume", "regression", "volume_ml", 1.0, json{{"transform", "log1p"}}},
             {"prognosis", "classification", "outcome", 1.0, json{{"classes", {"good", "poor"}}}}};
  if (seg) c.heads.push_back({"seg", "segmentation", "mask", 0.5, json{{"channels", 4}}});
  preprocess::Pipeline p;
  p.reorient("RAS").resample_to_spacing({6.0, 6.0, 20.0}).center_crop_or_pad({32, 32, 8}).window();
  c.pipeline = json::parse(p.to_json());
  return c;
}

TrainOptions options() {
  TrainOptions o;
  o.epochs = 3;
  o.batch_size = 4;
  o.lr = 2e-3;
  o.seed = 11;
  o.prefetch = 2;
  return o;
}

double max_diff(const Model& a, const Model& b) {
  auto sa = a.state(), sb = b.state();
  REQUIRE(sa.size() == sb.size());
  double d = 0;
  for (std::size_t i = 0; i < sa.size(); ++i) {
    REQUIRE(sa[i].name == sb[i].name);
    for (std::size_t k = 0; k < sa[i].f32.size(); ++k) d = std::max(d, double(std::abs(sa[i].f32[k] - sb[i].f32[k])));
    for (std::size_t k = 0; k < sa[i].i64.size(); ++k) d = std::max(d, double(std::abs(sa[i].i64[k] - sb[i].i64[k])));
  }
  return d;
}

}  // namespace

TEST_CASE("train: manifest columns, relative paths, missing labels, bad files") {
  Manifest m = Manifest::read(cohort_dir() + "/manifest.csv");
  REQUIRE(m.cases.size() == 12);
  CHECK(std::filesystem::exists(m.cases[0].image));
  CHECK(std::filesystem::exists(m.cases[0].mask));
  CHECK(m.cases[0].labels.count("volume_ml"));
  CHECK(m.cases[0].text.count("location"));  // a non-numeric column
  CHECK(m.cases[0].patient == m.cases[0].id);
  test::TempDir d;
  {
    std::ofstream f(d / "m.csv");
    f << "id,patient,image,volume_ml,outcome\n"
      << "a,p1,x.nii,3.5,1\n"
      << "b,p1,/abs/y.nii,,0\n"
      << "\"c,1\",p2,z.nii,2,\n";
  }
  Manifest n = Manifest::read(d / "m.csv");
  REQUIRE(n.cases.size() == 3);
  CHECK(n.cases[0].image == (d.path() / "x.nii").string());
  CHECK(n.cases[1].image == "/abs/y.nii");
  CHECK(std::isnan(n.cases[1].labels.at("volume_ml")));
  CHECK(n.cases[2].id == "c,1");
  CHECK(std::isnan(n.cases[2].labels.at("outcome")));
  {
    std::ofstream f(d / "bad.csv");
    f << "id,image\na,x.nii,extra\n";
  }
  CHECK_THROWS_WITH_AS(Manifest::read(d / "bad.csv"), doctest::Contains("row 2"), FormatError);
  {
    std::ofstream f(d / "noimage.csv");
    f << "id,volume\na,1\n";
  }
  CHECK_THROWS_WITH_AS(Manifest::read(d / "noimage.csv"), doctest::Contains("no 'image' column"), FormatError);
  CHECK_THROWS_AS(Manifest::read(d / "missing.csv"), IoError);
}

TEST_CASE("train: patient folds never split a patient and are balanced") {
  Manifest m;
  for (int i = 0; i < 23; ++i) {
    Case c;
    c.id = "c" + std::to_string(i);
    c.patient = "p" + std::to_string(i / 2);  // two scans per patient (the last one alone)
    m.cases.push_back(c);
  }
  auto folds = patient_folds(m, 5, 3);
  REQUIRE(folds.size() == 5);
  std::map<std::string, int> fold_of;
  std::size_t total = 0;
  for (int k = 0; k < 5; ++k) {
    total += folds[k].size();
    CHECK(folds[k].size() >= 3);
    CHECK(folds[k].size() <= 6);
    for (std::size_t i : folds[k]) {
      const std::string& p = m.cases[i].patient;
      if (fold_of.count(p)) CHECK(fold_of[p] == k);
      fold_of[p] = k;
    }
  }
  CHECK(total == 23);
  CHECK(patient_folds(m, 5, 3) == folds);  // same seed, same folds
  CHECK_THROWS_AS(patient_folds(m, 1, 0), InvalidArgument);
}

TEST_CASE("train: runs, records history, and is deterministic for a seed") {
  Manifest all = Manifest::read(cohort_dir() + "/manifest.csv");
  Manifest tr = all.subset({0, 1, 2, 3, 4, 5, 6, 7}), va = all.subset({8, 9, 10, 11});
  TrainResult a = train(config(), tr, va, options());
  TrainResult b = train(config(), tr, va, options());
  REQUIRE(a.summary["history"].size() == 3);
  for (const auto& e : a.summary["history"]) {
    CHECK(e["train_loss"].get<double>() > 0);
    CHECK(e["val_loss"].is_number());
    CHECK(e["train_heads"].contains("volume"));
    CHECK(e["train_heads"].contains("seg"));
  }
  CHECK(a.summary["best_epoch"].get<int>() >= 1);
  CHECK(max_diff(a.model, b.model) == 0.0);
  CHECK(a.model.metadata()["training"]["n_train"] == 8);
  // the volume head learned its target scale from the training labels
  const json p = a.model.config().heads[0].params;
  CHECK(p.contains("mean"));
  CHECK(p["sd"].get<double>() > 0);
}

TEST_CASE("train: killed after epoch k and resumed ends with the uninterrupted run's weights") {
  Manifest all = Manifest::read(cohort_dir() + "/manifest.csv");
  Manifest tr = all.subset({0, 1, 2, 3, 4, 5, 6, 7, 8}), va = all.subset({9, 10, 11});
  for (const std::string mode : {"joint", "two-stage"}) {
    CAPTURE(mode);
    TrainOptions o = options();
    o.mode = mode;
    o.head_epochs = 2;
    TrainResult full = train(config(false), tr, va, o);
    test::TempDir d;
    o.checkpoint = d / "ck.ichkit";
    for (int stop_after : {1, 4}) {  // inside the first stage; (two-stage) inside the second
      if (mode == "joint" && stop_after > 3) continue;
      std::filesystem::remove(o.checkpoint);
      int seen = 0;
      TrainOptions killed = o;
      killed.on_epoch = [&](const json&) {
        if (++seen == stop_after) throw std::runtime_error("simulated kill");
      };
      CHECK_THROWS_WITH(train(config(false), tr, va, killed), "simulated kill");
      REQUIRE(std::filesystem::exists(o.checkpoint));
      TrainResult resumed = train(config(false), tr, va, o);
      CHECK(max_diff(full.model, resumed.model) <= 1e-6);
      CHECK(resumed.summary["history"].size() == full.summary["history"].size());
    }
    // a checkpoint of other options is refused, not silently mixed
    TrainOptions other = o;
    other.lr = 1e-4;
    CHECK_THROWS_WITH_AS(train(config(false), tr, va, other), doctest::Contains("other options"), InvalidArgument);
  }
}

TEST_CASE("train: resuming after an early stop does not train on; two-stage goes on downstream") {
  Manifest all = Manifest::read(cohort_dir() + "/manifest.csv");
  Manifest tr = all.subset({0, 1, 2, 3, 4, 5, 6, 7}), va = all.subset({8, 9, 10, 11});
  for (const std::string mode : {"joint", "two-stage"}) {
    CAPTURE(mode);
    TrainOptions o = options();
    o.mode = mode;
    o.epochs = 5;
    o.head_epochs = 2;
    o.patience = 1;  // stops at the first epoch that does not improve
    o.lr = 0.05;     // large enough that the validation loss does not improve every epoch
    TrainResult full = train(config(false), tr, va, o);
    const std::size_t epochs_run = full.summary["history"].size();
    CHECK(epochs_run < static_cast<std::size_t>(o.epochs + (mode == "two-stage" ? o.head_epochs : 0)));  // it did stop early
    test::TempDir d;
    o.checkpoint = d / "ck.ichkit";
    for (std::size_t stop_after = 1; stop_after <= epochs_run; ++stop_after) {
      std::filesystem::remove(o.checkpoint);
      std::size_t seen = 0;
      TrainOptions killed = o;
      killed.on_epoch = [&](const json&) {
        if (++seen == stop_after) throw std::runtime_error("simulated kill");
      };
      CHECK_THROWS(train(config(false), tr, va, killed));
      TrainResult resumed = train(config(false), tr, va, o);
      CAPTURE(stop_after);
      CHECK(resumed.summary["history"].size() == epochs_run);
      CHECK(max_diff(full.model, resumed.model) <= 1e-6);
      CHECK(resumed.summary["stop"] == full.summary["stop"]);
    }
  }
}

TEST_CASE("train: two-stage keeps the upstream encoder frozen; single-task keeps one head") {
  Manifest all = Manifest::read(cohort_dir() + "/manifest.csv");
  Manifest tr = all.subset({0, 1, 2, 3, 4, 5, 6, 7}), va = all.subset({8, 9, 10, 11});
  TrainOptions o = options();
  o.mode = "two-stage";
  o.epochs = 2;
  o.head_epochs = 2;
  TrainResult r = train(config(false), tr, va, o);
  const json& h = r.summary["history"];
  REQUIRE(h.size() == 4);
  CHECK(h[0]["stage"] == "upstream");
  CHECK(h[3]["stage"] == "downstream");
  // the encoder of the result equals the upstream run's best encoder: train upstream alone
  TrainOptions up = options();
  up.epochs = 2;
  TrainResult joint = train(config(false), tr, va, up);
  auto a = r.model.state(), b = joint.model.state();
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].name.rfind("encoder.", 0) == 0 && a[i].name.find("num_batches") == std::string::npos) {
      CAPTURE(a[i].name);
      CHECK(a[i].f32 == b[i].f32);
    }
  TrainOptions st = options();
  st.mode = "single-task";
  st.task = "prognosis";
  st.epochs = 1;
  TrainResult s = train(config(false), tr, va, st);
  REQUIRE(s.model.config().heads.size() == 1);
  CHECK(s.model.config().heads[0].name == "prognosis");
  st.task = "nope";
  CHECK_THROWS_AS(train(config(false), tr, va, st), InvalidArgument);
}

TEST_CASE("train: evaluate reports metrics per head and the ABC/2 baseline") {
  Manifest all = Manifest::read(cohort_dir() + "/manifest.csv");
  TrainOptions o = options();
  o.epochs = 1;
  TrainResult r = train(config(), all.subset({0, 1, 2, 3, 4, 5}), Manifest{}, o);
  Evaluation ev = evaluate(r.model, all.subset({6, 7, 8, 9, 10, 11}));
  REQUIRE(ev.rows.size() == 6);
  CHECK(ev.metrics["volume"]["n"] == 6);
  CHECK(ev.metrics["volume"].contains("icc2_1"));
  CHECK(ev.metrics["seg"]["n"] == 6);
  CHECK(ev.metrics["abc2_true_mask"]["n"] == 6);
  // ABC/2 of the true mask is a rough but real estimate of the true volume (20 mm slices here)
  for (const auto& row : ev.rows) {
    REQUIRE(row.contains("abc2_true_mask_ml"));
    const double abc = row["abc2_true_mask_ml"].get<double>(), truth = row["volume_ml"].get<double>();
    CHECK(abc > 0);
    CHECK(abc < 3 * truth + 5);
    CHECK(row.contains("volume"));
    CHECK(row.contains("prognosis_p_poor"));
  }
}
