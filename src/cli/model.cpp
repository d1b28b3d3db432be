// `ichkit train`, `ichkit evaluate`, `ichkit predict`: the model from the shell.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli.h"
#include "ichkit/core/error.h"
#include "ichkit/io/atomic_file.h"
#include "ichkit/io/nifti.h"
#include "ichkit/io/read.h"
#include "ichkit/explain/gradcam.h"
#include "ichkit/model/train.h"

namespace ichkit::cli {

namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw IoError("cannot open '" + path + "'");
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

std::string csv_escape(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string o = "\"";
  for (char c : s) o += c == '"' ? std::string("\"\"") : std::string(1, c);
  return o + "\"";
}

/// Rows (JSON objects) as CSV with the union of their keys as columns (first-seen order).
std::string rows_csv(const std::vector<json>& rows) {
  std::vector<std::string> cols;
  for (const char* first : {"id", "scan"})
    if (!rows.empty() && rows[0].contains(first)) cols.push_back(first);
  for (const json& r : rows)
    for (auto it = r.begin(); it != r.end(); ++it)
      if (std::find(cols.begin(), cols.end(), it.key()) == cols.end()) cols.push_back(it.key());
  std::ostringstream o;
  for (std::size_t c = 0; c < cols.size(); ++c) o << (c ? "," : "") << csv_escape(cols[c]);
  o << "\n";
  for (const json& r : rows) {
    for (std::size_t c = 0; c < cols.size(); ++c) {
      if (c) o << ",";
      if (!r.contains(cols[c]) || r.at(cols[c]).is_null()) continue;
      const json& v = r.at(cols[c]);
      o << csv_escape(v.is_string() ? v.get<std::string>() : v.dump());
    }
    o << "\n";
  }
  return o.str();
}

struct TrainArgs {
  std::string config, manifest, validation, out, mode = "joint", task, checkpoint, cache;
  int epochs = 30, head_epochs = 15, batch_size = 4, folds = 0, patience = 10;
  double lr = 1e-3, val_fraction = 0.2;
  std::uint64_t seed = 0;
  bool no_augment = false, json = false;
  int rank = 0, world_size = 1, master_port = 29500;
  std::string master_addr = "127.0.0.1";
};

struct EvalArgs {
  std::string model, manifest, out;
  bool json = false;
};

struct PredictArgs {
  std::string model, out, method = "gradcam", layer;
  std::vector<std::string> scans;
  bool json = false, explain = false;
  int batch_size = 4;
};

/// Validation split of a manifest by patient: every k-th patient fold (deterministic by seed).
std::pair<model::Manifest, model::Manifest> split(const model::Manifest& m, double fraction, std::uint64_t seed) {
  const int k = std::max(2, static_cast<int>(std::lround(1.0 / std::max(0.05, std::min(0.5, fraction)))));
  auto folds = model::patient_folds(m, k, seed);
  std::vector<std::size_t> tr;
  for (int f = 1; f < k; ++f) tr.insert(tr.end(), folds[f].begin(), folds[f].end());
  std::sort(tr.begin(), tr.end());
  return {m.subset(tr), m.subset(folds[0])};
}

void print_metrics(const json& metrics) {
  for (auto it = metrics.begin(); it != metrics.end(); ++it) {
    const json& m = it.value();
    std::cout << "  " << it.key() << ":";
    for (const char* k : {"n", "mae", "rmse", "r2", "pearson_r", "icc2_1", "auc", "accuracy", "f1", "brier", "dice_mean"})
      if (m.contains(k) && m.at(k).is_number()) std::cout << " " << k << "=" << fixed(m.at(k).get<double>(), k == std::string("n") ? 0 : 3);
    std::cout << "\n";
  }
}

}  // namespace

Runner add_train(CLI::App& app, Globals& g) {
  auto a = std::make_shared<TrainArgs>();
  auto* cmd = app.add_subcommand("train", "Train a multi-task model on a manifest CSV (e.g. from 'ichkit phantom')");
  cmd->add_option("--config", a->config, "Model config JSON (encoder, heads, pipeline); default: ResNet-18, volume + prognosis");
  cmd->add_option("--manifest", a->manifest, "Training manifest CSV (image, mask, label columns)")->required()->check(CLI::ExistingFile);
  cmd->add_option("--validation", a->validation, "Validation manifest (default: a patient-level split of --manifest)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--val-fraction", a->val_fraction, "Share of patients held out for validation when --validation is absent")
      ->check(CLI::Range(0.05, 0.5));
  cmd->add_option("--out", a->out, "Model file to write (or a folder with --folds)")->required();
  cmd->add_option("--mode", a->mode, "joint, two-stage (Gong et al.) or single-task")
      ->check(CLI::IsMember({"joint", "two-stage", "single-task"}));
  cmd->add_option("--task", a->task, "single-task: the head to train");
  cmd->add_option("--epochs", a->epochs, "Epochs (two-stage: of the joint upstream stage)")->check(CLI::Range(1, 100000));
  cmd->add_option("--head-epochs", a->head_epochs, "two-stage: epochs of the downstream (frozen encoder) stage")->check(CLI::Range(1, 100000));
  cmd->add_option("--batch-size", a->batch_size, "Batch size")->check(CLI::Range(1, 4096));
  cmd->add_option("--lr", a->lr, "Peak learning rate (AdamW, warm-up + cosine)")->check(CLI::PositiveNumber);
  cmd->add_option("--patience", a->patience, "Early stopping patience (epochs)")->check(CLI::Range(1, 100000));
  cmd->add_option("--seed", a->seed, "Seed (weights, order, augmentation)");
  cmd->add_option("--folds", a->folds, "k-fold cross-validation with patient-level splits (writes one model per fold)")
      ->check(CLI::Range(2, 100));
  cmd->add_option("--checkpoint", a->checkpoint, "Checkpoint file, rewritten every epoch; an interrupted run resumes from it");
  cmd->add_option("--cache", a->cache, "Folder for preprocessed inputs (reused across runs)");
  cmd->add_flag("--no-augment", a->no_augment, "Train without augmentation");
  cmd->add_option("--rank", a->rank, "Data-parallel training: this process's rank (0 hosts the rendezvous)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--world-size", a->world_size, "Data-parallel training: number of processes (Gloo over TCP)")->check(CLI::Range(1, 4096));
  cmd->add_option("--master-addr", a->master_addr, "Data-parallel training: address of rank 0");
  cmd->add_option("--master-port", a->master_port, "Data-parallel training: port of rank 0")->check(CLI::Range(1, 65535));
  cmd->add_flag("--json", a->json, "Print the training summary as JSON");
  cmd->footer("Examples:\n  ichkit phantom --n 100 --out cohort --shape 256 256 32 --spacing 0.9 0.9 5\n"
              "  ichkit train --manifest cohort/manifest.csv --out model.ichkit --epochs 20\n"
              "  ichkit train --config cfg.json --manifest cohort/manifest.csv --mode two-stage --out m.ichkit\n"
              "  ichkit train --manifest cohort/manifest.csv --folds 5 --out cv/\n"
              "  ichkit train --manifest m.csv --out m.ichkit --world-size 2 --rank 0 &   # and --rank 1 elsewhere");
  return [a, &g]() {
    model::ModelConfig cfg = a->config.empty() ? model::ModelConfig::default_multitask()
                                               : model::ModelConfig::from_json_text(read_text(a->config));
    model::TrainOptions o;
    o.mode = a->mode;
    o.task = a->task;
    o.epochs = a->epochs;
    o.head_epochs = a->head_epochs;
    o.batch_size = a->batch_size;
    o.lr = a->lr;
    o.head_lr = a->lr;
    o.patience = a->patience;
    o.seed = a->seed;
    o.cache_dir = a->cache;
    o.checkpoint = a->checkpoint;
    o.augment.enabled = !a->no_augment;
    o.distributed.rank = a->rank;
    o.distributed.world_size = a->world_size;
    o.distributed.master_addr = a->master_addr;
    o.distributed.master_port = a->master_port;
    if (a->world_size > 1 && a->folds > 0) throw InvalidArgument("--folds and --world-size cannot be combined");
    TerminalProgress bar(!g.quiet && !a->json && a->rank == 0);
    o.progress = &bar;
    const model::Manifest all = model::Manifest::read(a->manifest);
    if (a->folds > 0) {
      if (!a->validation.empty()) throw InvalidArgument("--folds and --validation cannot be combined");
      fs::create_directories(a->out);
      auto folds = model::patient_folds(all, a->folds, a->seed);
      json summary{{"folds", json::array()}};
      for (int f = 0; f < a->folds; ++f) {
        std::vector<std::size_t> tr;
        for (int q = 0; q < a->folds; ++q)
          if (q != f) tr.insert(tr.end(), folds[q].begin(), folds[q].end());
        std::sort(tr.begin(), tr.end());
        model::Manifest train_m = all.subset(tr), test_m = all.subset(folds[f]);
        auto [t2, v2] = split(train_m, a->val_fraction, a->seed + 1 + f);
        model::TrainOptions of = o;
        if (!o.checkpoint.empty()) of.checkpoint = o.checkpoint + ".fold" + std::to_string(f);
        model::TrainResult r = model::train(cfg, t2, v2, of);
        const std::string path = (fs::path(a->out) / ("fold" + std::to_string(f) + ".ichkit")).string();
        r.model.save(path);
        model::Evaluation ev = model::evaluate(r.model, test_m);
        summary["folds"].push_back({{"fold", f}, {"model", path}, {"n_test", test_m.cases.size()}, {"metrics", ev.metrics}});
        if (!g.quiet && !a->json) {
          std::cout << "fold " << f << " (" << test_m.cases.size() << " test cases):\n";
          print_metrics(ev.metrics);
        }
      }
      io::write_file_atomic((fs::path(a->out) / "cv.json").string(), summary.dump(2) + "\n");
      if (a->json) std::cout << summary.dump(2) << "\n";
      return 0;
    }
    model::Manifest train_m = all, val_m;
    if (!a->validation.empty()) val_m = model::Manifest::read(a->validation);
    else std::tie(train_m, val_m) = split(all, a->val_fraction, a->seed);
    model::TrainResult r = model::train(cfg, train_m, val_m, o);
    if (a->rank != 0) return 0;  // every rank holds the same weights; rank 0 writes them
    r.model.save(a->out);
    if (a->json) {
      std::cout << r.summary.dump(2) << "\n";
    } else if (!g.quiet) {
      std::cout << "trained " << train_m.cases.size() << " cases (" << val_m.cases.size() << " for validation), best epoch "
                << r.summary["best_epoch"] << ", " << r.summary["stop"].get<std::string>() << "; wrote " << a->out << "\n";
    }
    return 0;
  };
}

Runner add_evaluate(CLI::App& app, Globals& g) {
  auto a = std::make_shared<EvalArgs>();
  auto* cmd = app.add_subcommand("evaluate", "Evaluate a model on a labelled manifest: metrics JSON and per-case CSV");
  cmd->add_option("--model", a->model, "Model file")->required()->check(CLI::ExistingFile);
  cmd->add_option("--manifest", a->manifest, "Manifest CSV with labels")->required()->check(CLI::ExistingFile);
  cmd->add_option("--out", a->out, "Output folder (metrics.json, predictions.csv)")->required();
  cmd->add_flag("--json", a->json, "Print the metrics as JSON");
  cmd->footer("Example:\n  ichkit evaluate --model model.ichkit --manifest test/manifest.csv --out eval/");
  return [a, &g]() {
    const model::Model m = model::Model::load(a->model);
    TerminalProgress bar(!g.quiet && !a->json);
    const model::Evaluation ev = model::evaluate(m, model::Manifest::read(a->manifest), &bar);
    fs::create_directories(a->out);
    io::write_file_atomic((fs::path(a->out) / "metrics.json").string(), ev.metrics.dump(2) + "\n");
    io::write_file_atomic((fs::path(a->out) / "predictions.csv").string(), rows_csv(ev.rows));
    if (a->json) std::cout << ev.metrics.dump(2) << "\n";
    else if (!g.quiet) {
      std::cout << ev.rows.size() << " cases; wrote " << a->out << "/metrics.json and predictions.csv\n";
      print_metrics(ev.metrics);
    }
    return 0;
  };
}

Runner add_predict(CLI::App& app, Globals& g) {
  auto a = std::make_shared<PredictArgs>();
  auto* cmd = app.add_subcommand("predict", "Predict hematoma volume and outcome for scans (NIfTI files or DICOM folders)");
  cmd->add_option("--model", a->model, "Model file (default: the phantom-trained model shipped with ichkit)")->check(CLI::ExistingFile);
  cmd->add_option("scans", a->scans, "NIfTI files and/or DICOM folders")->required();
  cmd->add_option("--out", a->out, "Folder for predictions.json, predictions.csv, segmentation masks and heatmaps");
  cmd->add_flag("--explain", a->explain, "Also write heatmaps of every non-segmentation head into --out (NIfTI + PNG)");
  cmd->add_option("--method", a->method, "With --explain: gradcam, gradcam++ or hirescam")->capture_default_str();
  cmd->add_option("--layer", a->layer, "With --explain: encoder stage (default: the last)");
  cmd->add_option("--batch-size", a->batch_size, "Scans per forward pass (reading and preprocessing overlap with it; not with --explain)")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  cmd->add_flag("--json", a->json, "Print the predictions as JSON");
  cmd->footer("Examples:\n  ichkit predict scan.nii.gz\n"
              "  ichkit predict --model model.ichkit dicom_folder/ --out results/ --json\n"
              "  ichkit predict scan.nii.gz --explain --out results/\n"
              "Without --model the default model is used: trained on synthetic phantoms, not for clinical use.");
  return [a, &g]() {
    if (a->explain && a->out.empty()) throw InvalidArgument("--explain needs --out (the folder for the heatmaps)");
    const std::string model_path = a->model.empty() ? default_model_path() : a->model;
    const model::Model m = model::Model::load(model_path);
    std::vector<explain::Target> targets;
    for (const auto& h : m.config().heads)
      if (h.type != "segmentation") targets.emplace_back(h.name);
    const explain::Options eo{explain::method_from_string(a->method), a->layer, true};
    std::vector<json> rows;
    TerminalProgress bar(!g.quiet && !a->json);
    std::size_t failed = 0;
    auto fail = [&](const std::string& path, const std::string& why) {  // reported and skipped; the others go on
      ++failed;
      bar.scan_failed(path, why);
      rows.push_back({{"scan", path}, {"error", why}});
    };
    // the prediction's columns (and segmentation masks) added to `row`
    auto add = [&](json row, const std::string& path, const model::Prediction& p) {
      const std::string stem = stem_of(path);
      for (const model::HeadPrediction& h : p.heads) {
        if (h.type == "segmentation") {
          row[h.name + "_ml"] = h.value;
          row[h.name + "_abc2_ml"] = h.abc2_ml;
          if (!a->out.empty()) {
            fs::create_directories(a->out);
            const std::string mpath = (fs::path(a->out) / (stem + "_" + h.name + ".nii.gz")).string();
            io::write_nifti<std::uint8_t>(h.mask, mpath);
            row[h.name + "_mask"] = mpath;
          }
        } else if (!h.probabilities.empty()) {
          for (std::size_t k = 0; k < h.classes.size(); ++k) row[h.name + "_p_" + h.classes[k]] = h.probabilities[k];
          row[h.name] = h.classes.at(static_cast<std::size_t>(h.value));
        } else {
          row[h.name] = h.value;
        }
      }
      rows.push_back(std::move(row));
    };
    if (!a->explain) {
      // a cohort: reading and preprocessing overlapped with batched inference (predict_files)
      model::CohortOptions co;
      co.batch_size = a->batch_size;
      co.progress = &bar;
      for (const model::CohortItem& it : m.predict_files(a->scans, co)) {
        if (!it.ok) {
          fail(it.path, it.error);
          continue;
        }
        try {
          add(json{{"scan", it.path}}, it.path, it.prediction);
        } catch (const Error& e) {
          fail(it.path, e.what());
        }
      }
    } else {
      ProgressScope scope(&bar, "predict", static_cast<std::int64_t>(a->scans.size()));
      for (const std::string& path : a->scans) {
        try {
          const Volume<float> scan = io::read(path);
          const explain::Explanation ex = explain::explain(m, scan, targets, eo);  // the prediction comes with the maps
          json row{{"scan", path}};
          for (const explain::Heatmap& h : ex.maps) {
            fs::create_directories(a->out);
            row[h.head + "_heatmap"] = write_heatmap((fs::path(a->out) / (stem_of(path) + "_" + h.head)).string(), scan, h, {}, true).at(0);
          }
          add(std::move(row), path, ex.prediction);
        } catch (const Error& e) {
          fail(path, e.what());
        }
        scope.advance(1, path);
      }
    }
    const int rc = failed ? 1 : 0;  // some scan could not be predicted (each named above)
    if (!a->out.empty()) {
      fs::create_directories(a->out);
      io::write_file_atomic((fs::path(a->out) / "predictions.json").string(), json(rows).dump(2) + "\n");
      io::write_file_atomic((fs::path(a->out) / "predictions.csv").string(), rows_csv(rows));
    }
    if (a->json) {
      std::cout << json(rows).dump(2) << "\n";
      return rc;
    }
    for (const json& r : rows) {
      if (r.contains("error")) continue;  // on stderr already
      std::cout << r["scan"].get<std::string>() << ":";
      for (auto it = r.begin(); it != r.end(); ++it) {
        if (it.key() == "scan" || it.key().find("_mask") != std::string::npos || it.key().find("_heatmap") != std::string::npos) continue;
        std::cout << "  " << it.key() << " " << (it->is_number() ? fixed(it->get<double>(), 3) : it->is_string() ? it->get<std::string>() : it->dump());
      }
      std::cout << "\n";
    }
    return rc;
  };
}

}  // namespace ichkit::cli
