#pragma once
/// \file impl.h
/// The LibTorch side of ichkit::model::Model, for the trainer and the explainer (includes
/// <torch/torch.h>; not needed to load and predict).
#include <functional>
#include <map>
#include <mutex>
#include <vector>

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

  /// Memory layout of the network's activations and convolution weights on CUDA.
  /// Auto: for each input shape, the first batch times both and keeps the faster (cuDNN's
  /// kernels for NCDHW and NDHWC differ by card, precision and shape: channels-last is not
  /// always the faster for 3D convolutions). The others force one (benchmarks compare them).
  enum class CudaLayout { Auto, Contiguous, ChannelsLast };
  CudaLayout cuda_layout = CudaLayout::Auto;

  /// Whether a batch shaped like `x` runs channels-last: false on the CPU; on CUDA what
  /// cuda_layout says, for Auto decided (by timing) on the first batch of its shape.
  bool channels_last(const torch::Tensor& x) const;
  /// The network inference runs: `net` itself on the CPU, else a copy of its current weights on
  /// `device` in `dtype`, its convolution weights channels-last or not (made on first use; `net`
  /// stays the float32 CPU master for training, state() and save()).
  MultiTaskNet run_net(bool channels_last = false) const;
  /// A network input moved where run_net() lives (pinned host memory, asynchronous copy,
  /// channels-last on request); the input itself on the CPU.
  torch::Tensor to_device(const torch::Tensor& x, bool channels_last = false) const;
  /// Same-shape (1, C, D, H, W) inputs as one (N, C, D, H, W) batch (pinned for a GPU).
  torch::Tensor stack(const std::vector<torch::Tensor>& xs) const;
  /// Head outputs as float32 CPU tensors (what decode reads).
  static void outputs_to_host(MultiTaskNetImpl::Output& out);

  /// The FastEncoder snapshot of the current weights (built on first use), or nullptr when
  /// fast inference is off or unsupported.
  std::shared_ptr<const FastEncoder> fast_encoder() const;
  /// Forget the snapshot, the device copies and the layouts chosen (call after the weights or
  /// the device change).
  void weights_changed();
  /// Eval-mode forward of a batch through the fastest available path.
  MultiTaskNetImpl::Output infer(const torch::Tensor& x) const;

private:
  mutable std::mutex fast_mutex_;
  mutable std::shared_ptr<const FastEncoder> fast_;
  mutable MultiTaskNet device_net_[2] = {MultiTaskNet(nullptr), MultiTaskNet(nullptr)};  ///< [channels_last]
  mutable std::mutex layout_mutex_;
  mutable std::map<std::vector<int64_t>, bool> layout_;  ///< input shape -> channels-last (Auto)
public:

  /// Network input for one scan: (1, C, D, H, W) float32 and the pipeline result (for the
  /// way back to the scan grid). `stats`: the scan's ValueStats when the reader gathered them
  /// (io::read), so that the HU check does not pass over the voxels again.
  std::pair<torch::Tensor, preprocess::PipelineResult> prepare(const Volume<float>& scan, const ValueStats* stats = nullptr) const;
  /// prepare() of the scan at `path`: read with its ValueStats, the way predict_files' readers do.
  std::pair<torch::Tensor, preprocess::PipelineResult> prepare_file(const std::string& path, const io::ReadOptions& options = {}) const;
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
