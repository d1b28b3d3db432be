#pragma once
/// \file impl.h
/// The LibTorch side of ichkit::model::Model, for the trainer and the explainer (includes
/// <torch/torch.h>; not needed to load and predict).
#include <functional>
#include <mutex>

#include "ichkit/model/model.h"
#include "ichkit/model/net.h"

namespace ichkit::model {

struct Model::Impl {
  MultiTaskNet net{nullptr};
  preprocess::Pipeline pipeline;
  nlohmann::json metadata = nlohmann::json::object();
  bool fast_inference = true;  ///< predict through a FastEncoder when the encoder allows it
  torch::Device device{torch::kCPU};         ///< where predict/explain run (Model::set_device)
  torch::ScalarType dtype = torch::kFloat32;  ///< their precision there

  /// The network inference runs: `net` itself on the CPU, else a copy of its current weights on
  /// `device` in `dtype` (made on first use; `net` stays the float32 CPU master for training,
  /// state() and save()).
  MultiTaskNet run_net() const;
  /// A network input moved where run_net() lives (pinned host memory, asynchronous copy,
  /// channels-last on CUDA); the input itself on the CPU.
  torch::Tensor to_device(const torch::Tensor& x) const;
  /// Same-shape (1, C, D, H, W) inputs as one (N, C, D, H, W) batch (pinned for a GPU).
  torch::Tensor stack(const std::vector<torch::Tensor>& xs) const;
  /// Head outputs as float32 CPU tensors (what decode reads).
  static void outputs_to_host(MultiTaskNetImpl::Output& out);

  /// The FastEncoder snapshot of the current weights (built on first use), or nullptr when
  /// fast inference is off or unsupported.
  std::shared_ptr<const FastEncoder> fast_encoder() const;
  /// Forget the snapshot (call after the weights change).
  void weights_changed();
  /// Eval-mode forward of a batch through the fastest available path.
  MultiTaskNetImpl::Output infer(const torch::Tensor& x) const;

private:
  mutable std::mutex fast_mutex_;
  mutable std::shared_ptr<const FastEncoder> fast_;
  mutable MultiTaskNet device_net_{nullptr};
public:

  /// Network input for one scan: (1, C, D, H, W) float32 and the pipeline result (for the
  /// way back to the scan grid).
  std::pair<torch::Tensor, preprocess::PipelineResult> prepare(const Volume<float>& scan) const;
  /// Preprocess `scans` once each, in order, and call `run` with each batch: consecutive scans
  /// whose network input has one shape, up to batch_size of them, as one (N, C, D, H, W) tensor
  /// with their pipeline results and their indices in `scans`.
  using BatchFn = std::function<void(const torch::Tensor& x, const std::vector<preprocess::PipelineResult>& prs,
                                     const std::vector<std::size_t>& idx)>;
  void for_each_batch(const std::vector<Volume<float>>& scans, int batch_size, const BatchFn& run) const;
  /// Turn raw head outputs of a batch into predictions (row `row`, pipeline result `pr`).
  Prediction decode(const MultiTaskNetImpl::Output& out, std::int64_t row, const preprocess::PipelineResult& pr) const;
};

/// A zero-copy (C, D, H, W) float tensor view of pipeline channels (keeps the buffer alive).
torch::Tensor channels_tensor(const preprocess::Channels& c);

}  // namespace ichkit::model
