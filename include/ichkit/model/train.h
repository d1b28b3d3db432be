#pragma once
/// \file train.h
/// Training and evaluation of multi-task models on a manifest CSV (the one `ichkit phantom`
/// writes, or your own), LibTorch-free API.
///
/// Manifest: a header row, then one case per row. Columns `image` (path relative to the CSV's
/// folder or absolute) and optionally `id`, `patient` (for patient-level splits; default: id),
/// `mask` (hematoma mask for segmentation heads and ABC/2); every other column is a label a
/// head can name as its `target` (empty cell = missing label).
///
/// Modes (Gong et al. 2023 and its baselines):
///  - "joint": every head and the encoder trained together on the weighted multi-task loss;
///  - "two-stage": joint training ("upstream"), then the encoder frozen and the heads
///    re-initialised and trained on its features ("downstream"), as in the paper;
///  - "single-task": only the head `TrainOptions::task` (the others are dropped).
///
/// Reproducibility: weights are initialised from `seed`; the order of cases, the augmentation
/// of every case and dropout follow from (seed, epoch, case), so a run gives the same weights
/// for the same thread count, and a run resumed from its checkpoint after epoch k ends with
/// the same weights as one that was never interrupted.
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ichkit/core/progress.h"
#include "ichkit/model/model.h"

namespace ichkit::model {

/// One case of a manifest.
struct Case {
  std::string id, patient, image, mask;  ///< image/mask as absolute paths (mask may be empty)
  std::map<std::string, double> labels;  ///< column -> value; NaN = missing or not a number
  std::map<std::string, std::string> text;  ///< non-numeric cells (e.g. a class given by name)
};

struct Manifest {
  std::vector<Case> cases;
  std::vector<std::string> columns;  ///< label columns in file order
  /// Parse a manifest CSV; throws IoError / FormatError naming the row and column.
  static Manifest read(const std::string& csv_path);
  /// Cases i in `index`.
  Manifest subset(const std::vector<std::size_t>& index) const;
};

/// K folds with no patient in two folds (cases of one patient stay together), balanced by
/// size, shuffled by seed. Returns the case indices of each fold.
std::vector<std::vector<std::size_t>> patient_folds(const Manifest& m, int k, std::uint64_t seed);

struct Augmentation {
  bool flip_lr = true;            ///< mirror left-right with probability 1/2
  double rotate_deg = 8.0;        ///< in-plane rotation, uniform in +-rotate_deg
  double scale = 0.05;            ///< isotropic scaling, uniform in 1 +- scale
  double intensity = 0.05;        ///< per-channel gain 1 +- intensity and offset +- intensity
  double noise = 0.02;            ///< Gaussian noise sd (in window units)
  bool enabled = true;
};

/// Multi-process data-parallel training over PyTorch's c10d (Gloo on CPU). Every process calls
/// train() with the same config, manifests and options except `rank`; rank 0 hosts the
/// rendezvous at master_addr:master_port. Each process takes batch_size / world_size cases of
/// every global batch, gradients are averaged with one all-reduce per step, so all ranks keep
/// identical weights; only rank 0 writes the checkpoint. BatchNorm statistics stay per process
/// (as PyTorch DDP without SyncBatchNorm): with "group"/"instance" norm the result equals one
/// process with the global batch up to floating-point summation order.
struct Distributed {
  int rank = 0;
  int world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  double timeout_s = 300;
};

struct TrainOptions {
  std::string mode = "joint";      ///< joint | two-stage | single-task
  std::string task;                ///< single-task: the head to keep
  int epochs = 30;
  int head_epochs = 15;            ///< two-stage: epochs of the downstream stage
  int batch_size = 4;
  double lr = 1e-3;
  double head_lr = 1e-3;           ///< two-stage downstream learning rate
  double weight_decay = 1e-4;      ///< AdamW
  double warmup_epochs = 1.0;      ///< linear warm-up, then cosine decay to 0
  double grad_clip = 5.0;          ///< max global gradient norm (0 = off)
  /// early stopping: epochs without a better validation loss. The rate decays to 0 over the
  /// epochs (cosine), so the best weights tend to come late: a patience much shorter than the
  /// schedule can stop in the noisy high-rate epochs (set it to `epochs` to keep them all).
  int patience = 10;
  std::uint64_t seed = 0;
  Augmentation augment;
  std::string cache_dir;           ///< on-disk cache of preprocessed inputs ("" = memory only)
  std::string checkpoint;          ///< checkpoint file, rewritten atomically every epoch; resumed from if present
  int prefetch = 2;                ///< batches prepared ahead by loader threads
  Distributed distributed;         ///< world_size > 1: data-parallel over c10d
  ProgressReporter* progress = nullptr;
  /// Called after every epoch with its record (for logs and tests); may throw to stop.
  std::function<void(const nlohmann::json& epoch)> on_epoch;
};

struct TrainResult {
  Model model;                 ///< the best epoch's weights (lowest validation loss)
  nlohmann::json summary;      ///< options, history (per epoch: losses, lr, seconds), best epoch, stop reason
};

/// Train a model of `config` on `train` and select the epoch by `validation` (which may be
/// empty: then the last epoch is kept). Regression heads fit their target normalisation on
/// the training labels first.
TrainResult train(const ModelConfig& config, const Manifest& train, const Manifest& validation, const TrainOptions& options);

/// Per-case predictions and metrics of a model on a labelled manifest: for each regression
/// head MAE, RMSE, R2, Pearson r, ICC(2,1), ICC(3,1), Bland-Altman; for each binary
/// classification head AUC (bootstrap 95 % CI), accuracy, sensitivity, specificity, F1,
/// Brier, calibration; for segmentation heads Dice; and ABC/2 of the true mask against the
/// volume target when masks are present. `rows` has one entry per case.
struct Evaluation {
  nlohmann::json metrics;
  std::vector<nlohmann::json> rows;
};
Evaluation evaluate(const Model& model, const Manifest& manifest, ProgressReporter* progress = nullptr);

}  // namespace ichkit::model
