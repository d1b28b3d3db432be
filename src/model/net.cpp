/// \file net.cpp
/// 3D ResNet encoder, the multi-task network and its loss.
#include "ichkit/model/net.h"

#include <cmath>

#include "ichkit/core/error.h"

namespace ichkit::model {
namespace {

namespace nn = torch::nn;

nn::AnyModule make_norm(const std::string& kind, int64_t channels) {
  if (kind == "batch") return nn::AnyModule(nn::BatchNorm3d(nn::BatchNorm3dOptions(channels)));
  if (kind == "instance") return nn::AnyModule(nn::InstanceNorm3d(nn::InstanceNorm3dOptions(channels).affine(true)));
  if (kind == "group") return nn::AnyModule(nn::GroupNorm(nn::GroupNormOptions(std::min<int64_t>(8, channels), channels)));
  throw InvalidArgument("encoder: unknown norm '" + kind + "' (batch, instance, group)");
}

nn::Conv3d conv(int64_t in, int64_t out, std::vector<int64_t> k, std::vector<int64_t> stride) {
  std::vector<int64_t> pad(3);
  for (int a = 0; a < 3; ++a) pad[a] = k[a] / 2;
  return nn::Conv3d(nn::Conv3dOptions(in, out, k).stride(stride).padding(pad).bias(false));
}

/// Basic residual block: conv3-norm-relu-conv3-norm + shortcut (1x1x1 conv + norm when the
/// shape changes), relu.
class BasicBlockImpl : public nn::Module {
public:
  BasicBlockImpl(int64_t in, int64_t out, int64_t stride, const std::string& norm) {
    conv1 = register_module("conv1", conv(in, out, {3, 3, 3}, {stride, stride, stride}));
    n1 = make_norm(norm, out);
    register_module("bn1", n1.ptr());
    conv2 = register_module("conv2", conv(out, out, {3, 3, 3}, {1, 1, 1}));
    n2 = make_norm(norm, out);
    register_module("bn2", n2.ptr());
    if (stride != 1 || in != out) {
      down = register_module("downsample", nn::Sequential(conv(in, out, {1, 1, 1}, {stride, stride, stride}),
                                                          make_norm(norm, out)));
    }
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor y = torch::relu(n1.forward(conv1->forward(x)));
    y = n2.forward(conv2->forward(y));
    y = y + (down ? down->forward(x) : x);
    return torch::relu(y);
  }

private:
  nn::Conv3d conv1{nullptr}, conv2{nullptr};
  nn::AnyModule n1, n2;
  nn::Sequential down{nullptr};
};
TORCH_MODULE(BasicBlock);

std::vector<int> blocks_per_stage(int depth) {
  switch (depth) {
    case 10: return {1, 1, 1, 1};
    case 18: return {2, 2, 2, 2};
    case 34: return {3, 4, 6, 3};
    default: throw InvalidArgument("encoder: depth must be 10, 18 or 34, got " + std::to_string(depth));
  }
}

}  // namespace

ResNet3dImpl::ResNet3dImpl(const EncoderConfig& c) : config_(c) {
  const std::vector<int> blocks = blocks_per_stage(c.depth);
  const std::vector<int> ch = c.stage_channels();
  stem_ = register_module(
      "stem", nn::Sequential(conv(c.in_channels, c.width, {c.stem_kernel[0], c.stem_kernel[1], c.stem_kernel[2]},
                                  {c.stem_stride[0], c.stem_stride[1], c.stem_stride[2]}),
                             make_norm(c.norm, c.width), nn::ReLU(nn::ReLUOptions(true))));
  if (c.stem_pool) pool_ = nn::MaxPool3d(nn::MaxPool3dOptions({3, 3, 3}).stride({1, 2, 2}).padding({1, 1, 1}));
  int64_t in = c.width;
  for (int s = 0; s < 4; ++s) {
    nn::Sequential layer;
    const int64_t out = ch[s + 1];
    for (int b = 0; b < blocks[s]; ++b) {
      const int64_t stride = (s > 0 && b == 0) ? 2 : 1;
      layer->push_back(BasicBlock(b == 0 ? in : out, out, stride, c.norm));
    }
    in = out;
    layers_.push_back(register_module("layer" + std::to_string(s + 1), layer));
  }
}

Stages ResNet3dImpl::forward(const torch::Tensor& x) {
  if (x.dim() != 5 || x.size(1) != config_.in_channels)
    throw InvalidArgument("encoder: expected input (N, " + std::to_string(config_.in_channels) + ", D, H, W), got " +
                          std::to_string(x.dim()) + " dimensions" + (x.dim() >= 2 ? " with " + std::to_string(x.size(1)) + " channels" : ""));
  Stages s;
  s.maps.reserve(5);
  torch::Tensor y = stem_->forward(x);
  s.maps.push_back(y);
  if (pool_) y = pool_->forward(y);
  for (auto& layer : layers_) {
    y = layer->forward(y);
    s.maps.push_back(y);
  }
  return s;
}

Stages ResNet3dImpl::forward_from(int stage, const torch::Tensor& map) {
  const int n = static_cast<int>(layers_.size()) + 1;
  if (stage < 0 || stage >= n) throw InvalidArgument("encoder: stage index " + std::to_string(stage) + " out of range");
  Stages s;
  s.maps.resize(static_cast<std::size_t>(n));
  s.maps[static_cast<std::size_t>(stage)] = map;
  torch::Tensor y = map;
  if (stage == 0 && pool_) y = pool_->forward(y);
  for (int k = stage + 1; k < n; ++k) {
    y = layers_[static_cast<std::size_t>(k - 1)]->forward(y);
    s.maps[static_cast<std::size_t>(k)] = y;
  }
  return s;
}

// ---------------------------------------------------------------------------------------

MultiTaskNetImpl::MultiTaskNetImpl(const ModelConfig& config) : config_(config) {
  config_.validate();
  encoder_ = register_module("encoder", ResNet3d(config_.encoder));
  // a ModuleDict, so parameters are named "heads.<name>.<...>" as in a PyTorch nn.ModuleDict
  std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> items;
  for (const HeadConfig& h : config_.heads) {
    std::shared_ptr<Head> head = HeadRegistry::instance().create(h, config_.encoder);
    items.emplace_back(h.name, head);
    heads_.push_back(head);
  }
  torch::nn::ModuleDict dict(items);
  register_module("heads", dict);
  if (config_.weighting == "uncertainty")
    log_vars_ = register_parameter("log_vars", torch::zeros({static_cast<int64_t>(heads_.size())}));
}

MultiTaskNetImpl::Output MultiTaskNetImpl::forward(const torch::Tensor& x, const std::vector<std::string>& only) {
  return forward_heads(encoder_->forward(x), x, only);
}

MultiTaskNetImpl::Output MultiTaskNetImpl::forward_heads(Stages stages, const torch::Tensor& x, const std::vector<std::string>& only) {
  Output o;
  o.stages = std::move(stages);
  for (auto& h : heads_) {
    const std::string& name = h->config().name;
    if (!only.empty() && std::find(only.begin(), only.end(), name) == only.end()) continue;
    o.heads[name] = h->forward(o.stages, x);
  }
  return o;
}

torch::Tensor MultiTaskNetImpl::loss(const Output& out, const std::map<std::string, Target>& targets,
                                     std::map<std::string, double>* per_head) {
  torch::Tensor total;
  for (std::size_t i = 0; i < heads_.size(); ++i) {
    Head& h = *heads_[i];
    const std::string& name = h.config().name;
    auto t = targets.find(name);
    auto o = out.heads.find(name);
    if (t == targets.end() || o == out.heads.end()) continue;
    HeadLoss hl = h.loss(o->second, t->second);
    if (hl.count == 0) continue;
    if (per_head) (*per_head)[name] = hl.loss.item<double>();
    torch::Tensor term;
    if (log_vars_.defined())
      term = torch::exp(-log_vars_[static_cast<int64_t>(i)]) * hl.loss + log_vars_[static_cast<int64_t>(i)];
    else
      term = hl.loss * h.config().weight;
    total = total.defined() ? total + term : term;
  }
  if (!total.defined()) {
    // no labelled row for any head: a zero that keeps the graph (so backward() is harmless)
    total = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat32));
    for (const auto& [name, t] : out.heads) total = total + 0 * t.sum();
  }
  return total;
}

Head& MultiTaskNetImpl::head(const std::string& name) {
  for (auto& h : heads_)
    if (h->config().name == name) return *h;
  std::string known;
  for (auto& h : heads_) known += (known.empty() ? "" : ", ") + h->config().name;
  throw InvalidArgument("no head called '" + name + "' (heads: " + known + ")");
}

ModelConfig MultiTaskNetImpl::current_config() const {
  ModelConfig c = config_;
  for (std::size_t i = 0; i < heads_.size(); ++i) c.heads[i] = heads_[i]->config();
  return c;
}

std::vector<torch::Tensor> MultiTaskNetImpl::head_parameters() {
  std::vector<torch::Tensor> p;
  for (auto& h : heads_)
    for (auto& t : h->parameters()) p.push_back(t);
  if (log_vars_.defined()) p.push_back(log_vars_);
  return p;
}

std::vector<std::pair<std::string, torch::Tensor>> named_state(MultiTaskNet& net) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : net->named_parameters(true)) out.emplace_back(p.key(), p.value());
  for (const auto& b : net->named_buffers(true)) out.emplace_back(b.key(), b.value());
  return out;
}

void load_state(MultiTaskNet& net, const std::vector<std::pair<std::string, torch::Tensor>>& state) {
  std::map<std::string, torch::Tensor> want;
  for (const auto& p : net->named_parameters(true)) want[p.key()] = p.value();
  for (const auto& b : net->named_buffers(true)) want[b.key()] = b.value();
  std::map<std::string, bool> seen;
  torch::NoGradGuard no_grad;
  for (const auto& [name, t] : state) {
    auto it = want.find(name);
    if (it == want.end()) throw FormatError("model weights: unexpected tensor '" + name + "' for this architecture");
    if (it->second.sizes() != t.sizes())
      throw FormatError("model weights: tensor '" + name + "' has shape " + c10::str(t.sizes()) + ", the network needs " +
                        c10::str(it->second.sizes()));
    if (it->second.scalar_type() != t.scalar_type())
      throw FormatError("model weights: tensor '" + name + "' has type " + std::string(c10::toString(t.scalar_type())) +
                        ", the network needs " + c10::toString(it->second.scalar_type()));
    if (seen[name]) throw FormatError("model weights: tensor '" + name + "' appears twice");
    seen[name] = true;
    it->second.copy_(t);
  }
  for (const auto& [name, t] : want)
    if (!seen.count(name)) throw FormatError("model weights: tensor '" + name + "' is missing");
}

}  // namespace ichkit::model

// ---- FastEncoder -------------------------------------------------------------------------

namespace ichkit::model {

bool FastEncoder::supported(const EncoderConfig& c) { return c.norm == "batch" && at::hasMKLDNN(); }

FastEncoder::FastEncoder(ResNet3d& encoder) {
  const EncoderConfig& c = encoder->config();
  if (!supported(c)) throw InvalidArgument("FastEncoder: needs a batch-norm encoder and LibTorch with oneDNN");
  std::map<std::string, torch::Tensor> p;
  for (const auto& t : encoder->named_parameters(true)) p[t.key()] = t.value().detach();
  for (const auto& t : encoder->named_buffers(true)) p[t.key()] = t.value().detach();
  auto at = [&](const std::string& k) -> torch::Tensor {
    auto it = p.find(k);
    if (it == p.end()) throw InvalidArgument("FastEncoder: no tensor '" + k + "'");
    return it->second;
  };
  // conv (no bias) followed by eval BatchNorm = conv with weight w * g / sqrt(v + eps) and
  // bias beta - mean * g / sqrt(v + eps)
  auto fold = [&](const std::string& conv, const std::string& bn, std::vector<int64_t> stride) {
    torch::NoGradGuard ng;
    torch::Tensor w = at(conv + ".weight").to(torch::kFloat32);
    torch::Tensor scale = at(bn + ".weight") / torch::sqrt(at(bn + ".running_var") + 1e-5);
    Conv out;
    torch::Tensor wf = (w * scale.view({-1, 1, 1, 1, 1})).contiguous();
    out.bias = (at(bn + ".bias") - at(bn + ".running_mean") * scale).contiguous();
    out.stride = std::move(stride);
    out.padding = {wf.size(2) / 2, wf.size(3) / 2, wf.size(4) / 2};
    out.weight = at::mkldnn_reorder_conv3d_weight(wf.to_mkldnn(), out.padding, out.stride, {1, 1, 1}, 1);
    return out;
  };
  stem_ = fold("stem.0", "stem.1", {c.stem_stride[0], c.stem_stride[1], c.stem_stride[2]});
  pool_ = c.stem_pool;
  const std::vector<int> blocks = blocks_per_stage(c.depth);
  for (int s = 0; s < 4; ++s) {
    std::vector<Block> layer;
    for (int b = 0; b < blocks[s]; ++b) {
      const std::string pre = "layer" + std::to_string(s + 1) + "." + std::to_string(b) + ".";
      const int64_t st = (s > 0 && b == 0) ? 2 : 1;
      Block blk;
      blk.conv1 = fold(pre + "conv1", pre + "bn1", {st, st, st});
      blk.conv2 = fold(pre + "conv2", pre + "bn2", {1, 1, 1});
      blk.has_down = p.count(pre + "downsample.0.weight") > 0;
      if (blk.has_down) blk.down = fold(pre + "downsample.0", pre + "downsample.1", {st, st, st});
      layer.push_back(std::move(blk));
    }
    layers_.push_back(std::move(layer));
  }
}

std::vector<FastEncoder::ConvCall> FastEncoder::convolutions(const std::vector<int64_t>& input) const {
  if (input.size() != 5) throw InvalidArgument("FastEncoder::convolutions: input shape is (N, C, D, H, W)");
  std::vector<ConvCall> out;
  auto add = [&](const Conv& c, const std::vector<int64_t>& in) {
    ConvCall k;
    k.weight = c.weight;
    k.bias = c.bias;
    k.stride = c.stride;
    k.padding = c.padding;
    k.in_shape = in;
    const int64_t cout = c.bias.size(0);
    std::vector<int64_t> o{in[0], cout, 0, 0, 0};
    // kernel size from the padding (odd kernels, padding = k / 2)
    double macs_per_out = static_cast<double>(in[1]);
    for (int a = 0; a < 3; ++a) {
      const int64_t kk = 2 * c.padding[a] + 1;
      o[2 + a] = (in[2 + a] + 2 * c.padding[a] - kk) / c.stride[a] + 1;
      macs_per_out *= static_cast<double>(kk);
    }
    k.out_shape = o;
    k.flops = 2.0 * macs_per_out * static_cast<double>(o[0] * o[1] * o[2] * o[3] * o[4]);
    out.push_back(k);
    return o;
  };
  std::vector<int64_t> y = add(stem_, input);
  if (pool_) {
    for (int a = 0; a < 3; ++a) {
      const int64_t st = a == 0 ? 1 : 2;
      y[2 + a] = (y[2 + a] + 2 - 3) / st + 1;
    }
  }
  for (const auto& layer : layers_)
    for (const Block& b : layer) {
      std::vector<int64_t> h = add(b.conv1, y);
      h = add(b.conv2, h);
      if (b.has_down) add(b.down, y);
      y = h;
    }
  return out;
}

Stages FastEncoder::forward(const torch::Tensor& x, bool all_stages) const {
  auto conv = [](const torch::Tensor& in, const Conv& cv) {
    return at::mkldnn_convolution(in, cv.weight, cv.bias, cv.padding, cv.stride, {1, 1, 1}, 1);
  };
  Stages s;
  auto keep = [&](const torch::Tensor& t, bool last) { s.maps.push_back(all_stages || last ? t.to_dense() : torch::Tensor()); };
  // Every activation is updated in place (relu_, add_): a fresh oneDNN buffer per element-wise
  // step costs a pass over memory and first-touch page faults, which took ~40 % of the forward.
  torch::Tensor y = conv(x.contiguous().to_mkldnn(), stem_).relu_();
  keep(y, false);
  if (pool_) y = at::mkldnn_max_pool3d(y, {3, 3, 3}, {1, 2, 2}, {1, 1, 1});
  for (const auto& layer : layers_) {
    for (const Block& b : layer) {
      torch::Tensor h = conv(y, b.conv1).relu_();
      h = conv(h, b.conv2);
      h.add_(b.has_down ? conv(y, b.down) : y).relu_();
      y = h;
    }
    keep(y, &layer == &layers_.back());
  }
  return s;
}

}  // namespace ichkit::model
