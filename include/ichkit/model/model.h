#pragma once
/// \file model.h
/// A trained (or freshly initialised) multi-task model: network + preprocessing pipeline +
/// label names + target normalisation + provenance, in one file. LibTorch-free header: link
/// ichkit::ichkit and predict without compiling against torch.
///
///   auto model = ichkit::model::Model::load("model.ichkit");
///   auto p = model.predict(ichkit::io::read_nifti<float>("scan.nii.gz"));
///   double ml = p["volume"].value;             // regression head, user units
///   double poor = p["prognosis"].probabilities[1];
///
/// Model file (".ichkit", little-endian), format version 1:
///   "ICHKITMF" | u32 version | u32 reserved (0) | u64 header bytes | header (UTF-8 JSON) |
///   u64 data bytes | tensor data (each tensor 64-byte aligned, float32 / int64 raw) |
///   u32 CRC-32 of every preceding byte | "ICHKEND\n"
/// The header holds {"config", "tensors": [{"name", "dtype", "shape", "offset", "bytes"}],
/// "metadata": {versions, creation time, training summary, ...}}. Loading checks sizes against
/// the file, the CRC, the format version and every tensor's name and shape against the
/// architecture before any weight is used; it never executes code from the file.
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ichkit/core/progress.h"
#include "ichkit/core/volume.h"
#include "ichkit/io/read.h"
#include "ichkit/model/config.h"
#include "ichkit/preprocess/pipeline.h"

namespace ichkit::model {

inline constexpr std::uint32_t kModelFormatVersion = 1;

/// One head's prediction for one scan, in user units.
struct HeadPrediction {
  std::string name, type;
  /// regression: the value (e.g. mL); classification/ordinal: index of the most probable
  /// class; segmentation: the mask volume in mL.
  double value = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> probabilities;  ///< classification / ordinal: one per class
  std::vector<std::string> classes;   ///< their names
  Volume<float> probability;          ///< segmentation: foreground probability on the scan grid
  Volume<std::uint8_t> mask;          ///< segmentation: probability >= 0.5 on the scan grid
  double abc2_ml = std::numeric_limits<double>::quiet_NaN();  ///< segmentation: ABC/2 of the mask
};

/// Every head's prediction for one scan, in the config's head order.
struct Prediction {
  std::vector<HeadPrediction> heads;
  /// The head called `name`; throws InvalidArgument when there is none.
  const HeadPrediction& operator[](const std::string& name) const;
};

/// A tensor of the network's state without LibTorch types: name, shape, values.
struct NamedArray {
  std::string name;
  std::vector<std::int64_t> shape;
  std::string dtype;              ///< "float32" or "int64"
  std::vector<float> f32;         ///< values when float32
  std::vector<std::int64_t> i64;  ///< values when int64
};

/// How Model::predict_files schedules reading and preprocessing beside the network.
struct CohortOptions {
  /// Overlap: the readers run beside the network (on a GPU the network does not use the
  /// cores). Alternate: on the CPU, where both share the cores, the readers (one per core, one
  /// thread each) prepare scans only while the network is not running, and the network runs
  /// alone as soon as a batch is ready: a reader that takes a core from a convolution would
  /// hold up all of its threads at the convolution's next barrier. Auto: Alternate on the
  /// CPU, Overlap on a GPU.
  enum class Schedule { Auto, Overlap, Alternate };
  int batch_size = 4;  ///< scans per forward pass (consecutive scans of one input shape)
  int readers = 0;         ///< threads that read and preprocess; 0: 1 per hardware thread when alternating,
                           ///< else on the CPU 1 per 4 hardware threads (1 to 4), on a GPU 1 per hardware
                           ///< thread but one (1 to 32)
  int reader_threads = 0;  ///< kernel threads of each reader (ThreadCap); 0: 1 on a GPU or when alternating,
                           ///< no cap when overlapping on the CPU
  int ahead = 0;           ///< scans prepared ahead of the network; 0: max(2 x batch_size, 2 x readers)
  Schedule schedule = Schedule::Auto;
  io::ReadOptions read;
  ProgressReporter* progress = nullptr;  ///< task "predict", total = the number of paths; advanced on the calling thread
};

/// One scan of a cohort: its prediction, or why there is none.
struct CohortItem {
  std::string path;
  bool ok = false;
  std::string error;  ///< the reader's or the network's message when !ok
  Prediction prediction;
};

struct LoadOptions {
  std::uint64_t max_bytes = std::uint64_t(4) << 30;  ///< refuse larger files (ResourceError)
};

class Model {
public:
  /// A model with freshly initialised weights (deterministic for a seed).
  explicit Model(const ModelConfig& config, std::uint64_t seed = 0);
  /// Read a model file; throws IoError (cannot read), FormatError (not a model file, corrupt,
  /// truncated, unknown version, weights that do not fit the architecture) or ResourceError.
  static Model load(const std::string& path, const LoadOptions& options = {});
  /// Parse a model file held in memory (same checks as load).
  static Model from_bytes(const std::string& bytes, const LoadOptions& options = {});
  /// Write atomically (temporary file + rename).
  void save(const std::string& path) const;
  std::string to_bytes() const;

  /// Run the stored pipeline and the network on a scan in HU (inference mode). Safe to call
  /// from several threads at once.
  Prediction predict(const Volume<float>& scan) const;
  /// Several scans; scans whose pipeline output has the same shape share one forward pass.
  std::vector<Prediction> predict(const std::vector<Volume<float>>& scans, int batch_size = 4) const;

  /// Predict a cohort of image files (anything io::read takes): reader threads read and
  /// preprocess the next scans while the network runs on the current batch, so on a GPU (or
  /// with spare cores) the preprocessing hides behind inference. Results come in input order;
  /// a file that cannot be read or run gets ok = false and its error, and the others go on.
  std::vector<CohortItem> predict_files(const std::vector<std::string>& paths, const CohortOptions& options = {}) const;

  /// Run predict() and explain() on `device` ("cpu", "cuda", "cuda:N") in `precision`
  /// ("float32"; on CUDA also "bfloat16" or "float16"). The float32 CPU weights stay the
  /// master copy (training, state(), save()); the device gets a converted copy on first use.
  /// On CUDA the first batch of each input shape times the network in both memory layouts
  /// (NCDHW, NDHWC) and keeps the faster, and cuDNN's algorithm search is switched on for the
  /// process (as torch.backends.cudnn.benchmark = True: the pipeline fixes the input shape).
  /// InvalidArgument when the device is not available. Not to be called while another thread
  /// predicts with this model.
  void set_device(const std::string& device, const std::string& precision = "float32");
  std::string device() const;     ///< "cpu", "cuda:0", ...
  std::string precision() const;  ///< "float32", "bfloat16" or "float16"

  /// The config with fitted head parameters (target normalisation etc.).
  ModelConfig config() const;
  preprocess::Pipeline pipeline() const;
  /// Free-form provenance: versions, creation time, training summary (JSON object).
  const nlohmann::json& metadata() const;
  void set_metadata(const nlohmann::json& metadata);

  /// The weights, by name ("encoder.layer1.0.conv1.weight", "heads.volume.fc.bias", ...).
  std::vector<NamedArray> state() const;
  /// Replace weights; names and shapes must match (FormatError otherwise).
  void set_state(const std::vector<NamedArray>& state);
  /// Number of trainable parameters.
  std::int64_t parameter_count() const;

  struct Impl;
  /// The LibTorch side (declared in ichkit/model/detail/impl.h, which includes torch).
  const std::shared_ptr<Impl>& impl() const { return impl_; }

private:
  Model() = default;
  std::shared_ptr<Impl> impl_;
};

}  // namespace ichkit::model
