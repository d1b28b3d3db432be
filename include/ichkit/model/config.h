#pragma once
/// \file config.h
/// The model configuration: an encoder, an ordered set of named heads, the multi-task loss
/// weighting and the preprocessing pipeline. Plain data with a JSON form (the one stored in
/// model files and given to `ichkit train --config`); no LibTorch here.
///
/// JSON form:
///   {"encoder": {"depth": 18, "width": 32, "in_channels": 3, "stem_stride": [1, 2, 2],
///                "stem_kernel": [3, 7, 7], "stem_pool": true, "norm": "batch"},
///    "heads": [{"name": "volume", "type": "regression", "target": "volume_ml", "weight": 1,
///               "params": {"transform": "log1p"}},
///              {"name": "prognosis", "type": "classification", "target": "outcome",
///               "params": {"classes": ["good", "poor"]}}],
///    "weighting": "fixed" | "uncertainty",
///    "pipeline": {...}}                              (see preprocess/pipeline.h)
/// Strides and kernels are (D, H, W) = (slice, row, column) order, as the network sees a scan.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ichkit::model {

/// A 3D ResNet encoder (He et al. 2016, 3D as in Hara et al. 2018) with basic blocks.
struct EncoderConfig {
  int depth = 18;                          ///< 10, 18 or 34
  int width = 32;                          ///< channels of the first stage; doubled per stage
  int in_channels = 3;                     ///< e.g. 3 HU windows
  std::array<int, 3> stem_stride{1, 2, 2}; ///< (D, H, W); (1, 2, 2) suits thick slices
  std::array<int, 3> stem_kernel{3, 7, 7};
  bool stem_pool = true;                   ///< 3x3x3 max-pool with stride (1, 2, 2) after the stem
  std::string norm = "batch";              ///< "batch", "instance" or "group" (8 groups)

  /// Stage names, shallow to deep: "stem", "layer1" .. "layer4" (Grad-CAM layers).
  static std::vector<std::string> stage_names() { return {"stem", "layer1", "layer2", "layer3", "layer4"}; }
  /// Channels of each stage.
  std::vector<int> stage_channels() const { return {width, width, 2 * width, 4 * width, 8 * width}; }
  /// Weights of the encoder's convolutions (exact; norms not counted): what a model file must
  /// hold at least, checked before the network is built so a hostile config cannot demand
  /// gigabytes from a small file.
  std::uint64_t conv_weight_count() const;
};

/// One head: its name (unique; the key of its output), registry type, the manifest column it
/// learns (for "segmentation": "mask"), a fixed loss weight and type-specific parameters.
struct HeadConfig {
  std::string name;
  std::string type;
  std::string target;
  double weight = 1.0;
  nlohmann::json params = nlohmann::json::object();
};

struct ModelConfig {
  EncoderConfig encoder;
  std::vector<HeadConfig> heads;
  std::string weighting = "fixed";  ///< "fixed" (HeadConfig::weight) or "uncertainty" (Kendall et al. 2018)
  nlohmann::json pipeline;          ///< preprocessing pipeline JSON; null = preprocess::Pipeline::default_head_ct()

  nlohmann::json to_json() const;
  /// Parse and validate; throws FormatError naming the offending field.
  static ModelConfig from_json(const nlohmann::json& j);
  static ModelConfig from_json_text(const std::string& text);
  /// The paper's network: ResNet-18, a volume regression head (mL) and a binary prognosis head.
  static ModelConfig default_multitask();
  /// Index of the head called `name`; throws InvalidArgument listing the heads when unknown.
  std::size_t head_index(const std::string& name) const;
  /// Validate ranges and names (throws InvalidArgument).
  void validate() const;
};

}  // namespace ichkit::model
