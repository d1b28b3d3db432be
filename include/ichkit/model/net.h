#pragma once
/// \file net.h
/// The multi-task network in LibTorch: a 3D ResNet encoder whose forward returns every stage's
/// feature map (LibTorch modules have no hooks, so Grad-CAM differentiates a stage directly),
/// heads looked up by type in a registry, and the multi-task loss.
///
/// This header includes <torch/torch.h> (~20 s to compile): include it only where you work
/// with the network itself - to register a head type, say (examples/cpp/custom_head.cpp).
/// `ichkit/model/model.h` is the LibTorch-free API for loading, predicting and saving.
///
/// Tensor layout: input (N, C, D, H, W) = (N, C, nk, nj, ni) of the pipeline's output grid.
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "ichkit/model/config.h"

namespace ichkit::model {

/// Feature maps of the encoder's stages, shallow to deep (names as EncoderConfig::stage_names).
struct Stages {
  std::vector<torch::Tensor> maps;
  const torch::Tensor& last() const { return maps.back(); }
};

/// 3x3x3 max pooling with padding 1 and the given strides, differentiable: the same values,
/// argmax (ties: the first maximum in (d, h, w) order; NaN wins) and gradients as
/// torch::max_pool3d, computed separably (W, then H, then D) for float32 CPU tensors; other
/// tensors go to torch::max_pool3d.
torch::Tensor max_pool3d_3x3x3(const torch::Tensor& x, std::vector<int64_t> stride);

/// A 3D ResNet with basic blocks.
class ResNet3dImpl : public torch::nn::Module {
public:
  explicit ResNet3dImpl(const EncoderConfig& config);
  /// Every stage's output for x of shape (N, C, D, H, W).
  Stages forward(const torch::Tensor& x);
  /// The stages after `stage` (0 = stem ... 4 = layer4) recomputed from that stage's map: the
  /// result holds `map` at index `stage`, the deeper maps after it and undefined tensors before
  /// it. Grad-CAM differentiates the heads with respect to `map` this way.
  Stages forward_from(int stage, const torch::Tensor& map);
  const EncoderConfig& config() const { return config_; }

private:
  EncoderConfig config_;
  torch::nn::Sequential stem_{nullptr};
  std::vector<torch::nn::Sequential> layers_;
  bool pool_ = false;  ///< stem max pool (3x3x3, stride (1, 2, 2)), max_pool3d_3x3x3
};
TORCH_MODULE(ResNet3d);

/// Labels of one head for a batch, as the head's loss expects them.
///  regression: float (N), NaN = no label; classification / ordinal: int64 (N), -1 = no label;
///  segmentation: float (N, D, H, W) in {0, 1} plus `present` bool (N).
struct Target {
  torch::Tensor values;
  torch::Tensor present;  ///< bool (N); undefined = derived from values
};

/// A head's loss over the labelled rows of a batch: `loss` is their mean (a zero that still
/// carries the graph when no row is labelled) and `count` the number of labelled rows.
struct HeadLoss {
  torch::Tensor loss;
  std::int64_t count = 0;
};

/// Base of every head. A head reads any encoder stages it wants (classic heads: the last one,
/// global-average-pooled; the segmentation head: all of them) and returns raw outputs.
class Head : public torch::nn::Module {
public:
  explicit Head(HeadConfig config) : config_(std::move(config)) {}
  ~Head() override = default;
  /// Raw outputs (logits, normalised regression values, mask logits).
  virtual torch::Tensor forward(const Stages& stages, const torch::Tensor& input) = 0;
  virtual HeadLoss loss(const torch::Tensor& output, const Target& target) = 0;
  /// Output in user units (regression: mL etc.; classification: probabilities;
  /// segmentation: foreground probability (N, D, H, W)).
  virtual torch::Tensor to_user(const torch::Tensor& output) const = 0;
  /// Learn what the head needs from the training labels before training (e.g. a regression
  /// target's mean and sd); the result goes into config().params and so into the model file.
  virtual void fit_targets(const std::vector<double>& /*values*/) {}
  const HeadConfig& config() const { return config_; }
  HeadConfig& mutable_config() { return config_; }
  /// The kind of label this head learns: "scalar" (regression), "class" or "mask".
  virtual std::string label_kind() const = 0;
  /// Class names (classification / ordinal); empty otherwise.
  virtual std::vector<std::string> classes() const { return {}; }
  /// Whether forward() reads stages other than the last (a FastEncoder then returns them all
  /// as dense tensors; otherwise only the last one). Safe default for user heads: true.
  virtual bool reads_all_stages() const { return true; }

protected:
  HeadConfig config_;
};

/// What a head factory is given: the head's config and the encoder's stage channels.
using HeadFactory = std::function<std::shared_ptr<Head>(const HeadConfig& config, const EncoderConfig& encoder)>;

/// Head types by name. Built-ins: "regression", "classification", "ordinal", "segmentation".
/// Add your own before building a network: `HeadRegistry::instance().add("my_head", factory)`.
class HeadRegistry {
public:
  static HeadRegistry& instance();
  /// Register `type`; throws InvalidArgument if it is already registered.
  void add(const std::string& type, HeadFactory factory);
  bool contains(const std::string& type) const;
  std::vector<std::string> types() const;
  /// Build a head; throws InvalidArgument naming the known types for an unknown one.
  std::shared_ptr<Head> create(const HeadConfig& config, const EncoderConfig& encoder) const;

private:
  HeadRegistry();
  std::map<std::string, HeadFactory> factories_;
};

/// Encoder + heads + (optionally) learned uncertainty weights.
class MultiTaskNetImpl : public torch::nn::Module {
public:
  explicit MultiTaskNetImpl(const ModelConfig& config);

  struct Output {
    Stages stages;
    std::map<std::string, torch::Tensor> heads;  ///< raw outputs by head name
  };
  /// Forward through the encoder and the heads named in `only` (all when empty).
  Output forward(const torch::Tensor& x, const std::vector<std::string>& only = {});
  /// The heads on stage maps computed elsewhere (e.g. by a FastEncoder); x gives the input size.
  Output forward_heads(Stages stages, const torch::Tensor& x, const std::vector<std::string>& only = {});

  /// The weighted multi-task loss over the heads that have targets in `targets`. With
  /// "uncertainty" weighting: sum_i exp(-s_i) L_i + s_i with learned s_i (Kendall et al.
  /// 2018); heads without any labelled row in the batch contribute nothing.
  torch::Tensor loss(const Output& out, const std::map<std::string, Target>& targets,
                     std::map<std::string, double>* per_head = nullptr);

  ResNet3d& encoder() { return encoder_; }
  Head& head(const std::string& name);
  const std::vector<std::shared_ptr<Head>>& heads() const { return heads_; }
  const ModelConfig& config() const { return config_; }
  /// The config with every head's fitted parameters (what a model file stores).
  ModelConfig current_config() const;
  /// Parameters of the heads (and uncertainty weights) only; the encoder's are encoder()->parameters().
  std::vector<torch::Tensor> head_parameters();

private:
  ModelConfig config_;
  ResNet3d encoder_{nullptr};
  std::vector<std::shared_ptr<Head>> heads_;
  torch::Tensor log_vars_;  ///< uncertainty weights (one per head), only with "uncertainty"
};
TORCH_MODULE(MultiTaskNet);

/// Inference-only copy of a trained encoder on oneDNN's fast path: every BatchNorm folded into
/// its convolution (eval statistics), weights pre-packed for oneDNN, activations kept in
/// oneDNN's blocked layout from layer to layer - what a traced and frozen TorchScript model
/// does, without TorchScript. Batch-norm encoders only (see supported()); stage maps come back
/// as ordinary dense tensors. A snapshot: rebuild it after the weights change. No autograd
/// (Grad-CAM uses the module itself).
class FastEncoder {
public:
  static bool supported(const EncoderConfig& config);
  explicit FastEncoder(ResNet3d& encoder);
  /// Stage maps for x; with all_stages = false only the last one is converted back to a dense
  /// tensor (the others are left undefined) - what heads on pooled features need.
  Stages forward(const torch::Tensor& x, bool all_stages = true) const;

  /// One convolution of the forward pass for an input of shape `input` (N, C, D, H, W): its
  /// packed weight, bias, strides, padding, and its input / output shapes and FLOPs
  /// (2 x multiply-adds). The benchmark times each alone through oneDNN for the ceiling.
  struct ConvCall {
    torch::Tensor weight, bias;
    std::vector<int64_t> stride, padding, in_shape, out_shape;
    double flops = 0;
  };
  std::vector<ConvCall> convolutions(const std::vector<int64_t>& input) const;

private:
  struct Conv {
    torch::Tensor weight, bias;  ///< packed oneDNN weight, dense bias
    std::vector<int64_t> stride, padding;
  };
  struct Block {
    Conv conv1, conv2, down;
    bool has_down = false;
  };
  Conv stem_;
  bool pool_ = true;
  std::vector<std::vector<Block>> layers_;
};

/// Name -> tensor of every parameter and buffer (the model file's content).
std::vector<std::pair<std::string, torch::Tensor>> named_state(MultiTaskNet& net);
/// Copy `state` into the network; throws FormatError on a missing, unexpected or mis-shaped entry.
void load_state(MultiTaskNet& net, const std::vector<std::pair<std::string, torch::Tensor>>& state);

}  // namespace ichkit::model
