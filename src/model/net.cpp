/// \file net.cpp
/// 3D ResNet encoder, the multi-task network and its loss.
#include "ichkit/model/net.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "ichkit/core/error.h"
#include "ichkit/core/kernels.h"

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

/// LibTorch's rule for a max-pool candidate v against the running maximum m: strictly
/// greater, or NaN (a NaN always wins, so the last NaN in scan order is kept).
inline bool pool_better(float v, float m) { return v > m || std::isnan(v); }

/// One (D, H, W) plane of MaxPool3 (below): `a`/`ia`, `b`/`ib` and `row` are scratch of
/// D*H*Wo, D*Ho*Wo and W + 2 elements. Every loop runs over contiguous memory so that it
/// vectorises; the AVX2 clone (chosen at run time where the CPU has it) is ~20x the baseline
/// SSE2 code, which cannot vectorise the compare-and-select of value and index.
ICHKIT_AVX2_CLONE void max_pool3_plane(const float* P, int64_t D, int64_t H, int64_t W, int64_t sd, int64_t sh, int64_t sw,
                                       float* O, std::int32_t* I, float* a, std::int32_t* ia, float* b, std::int32_t* ib,
                                       float* row) {
  const int64_t Do = (D - 1) / sd + 1, Ho = (H - 1) / sh + 1, Wo = (W - 1) / sw + 1;
  const float lowest = -std::numeric_limits<float>::infinity();
  // along W. Taps w-1, w, w+1 of an output at w = o*sw read from a copy of the row padded
  // with -inf on both sides; the first tap of o = 0 is padding and never wins (c1 forced)
  for (int64_t r = 0; r < D * H; ++r) {
    const float* in = P + r * W;
    float* am = a + r * Wo;
    std::int32_t* ai = ia + r * Wo;
    if (sw == 1 || sw == 2) {
      row[0] = lowest;
      row[W + 1] = lowest;
      std::copy_n(in, W, row + 1);
      if (sw == 1) {
        for (int64_t o = 0; o < Wo; ++o) {
          const float v0 = row[o], v1 = row[o + 1], v2 = row[o + 2];
          const bool c1 = pool_better(v1, v0) || o == 0;
          const float m1 = c1 ? v1 : v0;
          const bool c2 = pool_better(v2, m1);
          am[o] = c2 ? v2 : m1;
          ai[o] = static_cast<std::int32_t>(o - 1 + (c2 ? 2 : c1 ? 1 : 0));
        }
      } else {
        // de-interleave: ev[o] = tap 2o, ov[o] = tap 2o-1, ov[o+1] = tap 2o+1
        float* ev = b;  // b is free until the H pass; D*Ho*Wo >= Wo + 1 + Wo
        float* ov = b + Wo;
        for (int64_t o = 0; o < Wo; ++o) ev[o] = row[2 * o + 1], ov[o + 1] = row[2 * o + 2];
        ov[0] = lowest;
        for (int64_t o = 0; o < Wo; ++o) {
          const float v0 = ov[o], v1 = ev[o], v2 = ov[o + 1];
          const bool c1 = pool_better(v1, v0) || o == 0;
          const float m1 = c1 ? v1 : v0;
          const bool c2 = pool_better(v2, m1);
          am[o] = c2 ? v2 : m1;
          ai[o] = static_cast<std::int32_t>(2 * o - 1 + (c2 ? 2 : c1 ? 1 : 0));
        }
      }
      continue;
    }
    for (int64_t o = 0; o < Wo; ++o) {
      const int64_t w0 = std::max<int64_t>(o * sw - 1, 0), w1 = std::min<int64_t>(o * sw + 1, W - 1);
      float m = in[w0];
      std::int32_t at = static_cast<std::int32_t>(w0);
      for (int64_t w = w0 + 1; w <= w1; ++w)
        if (pool_better(in[w], m)) m = in[w], at = static_cast<std::int32_t>(w);
      am[o] = m;
      ai[o] = at;
    }
  }
  for (int64_t d = 0; d < D; ++d)  // along H
    for (int64_t o = 0; o < Ho; ++o) {
      const int64_t h0 = std::max<int64_t>(o * sh - 1, 0), h1 = std::min<int64_t>(o * sh + 1, H - 1);
      float* bm = b + (d * Ho + o) * Wo;
      std::int32_t* bi = ib + (d * Ho + o) * Wo;
      const float* am = a + (d * H + h0) * Wo;
      const std::int32_t* ai = ia + (d * H + h0) * Wo;
      const std::int32_t off0 = static_cast<std::int32_t>(h0 * W);
      for (int64_t q = 0; q < Wo; ++q) bm[q] = am[q], bi[q] = off0 + ai[q];
      for (int64_t h = h0 + 1; h <= h1; ++h) {
        am = a + (d * H + h) * Wo;
        ai = ia + (d * H + h) * Wo;
        const std::int32_t off = static_cast<std::int32_t>(h * W);
        for (int64_t q = 0; q < Wo; ++q) {
          const bool c = pool_better(am[q], bm[q]);
          bm[q] = c ? am[q] : bm[q];
          bi[q] = c ? off + ai[q] : bi[q];
        }
      }
    }
  for (int64_t o = 0; o < Do; ++o) {  // along D
    const int64_t d0 = std::max<int64_t>(o * sd - 1, 0), d1 = std::min<int64_t>(o * sd + 1, D - 1);
    float* om = O + o * Ho * Wo;
    std::int32_t* oi = I + o * Ho * Wo;
    const std::int32_t off0 = static_cast<std::int32_t>(d0 * H * W);
    for (int64_t q = 0; q < Ho * Wo; ++q) om[q] = b[d0 * Ho * Wo + q], oi[q] = off0 + ib[d0 * Ho * Wo + q];
    for (int64_t d = d0 + 1; d <= d1; ++d) {
      const float* bm = b + d * Ho * Wo;
      const std::int32_t* bi = ib + d * Ho * Wo;
      const std::int32_t off = static_cast<std::int32_t>(d * H * W);
      for (int64_t q = 0; q < Ho * Wo; ++q) {
        const bool c = pool_better(bm[q], om[q]);
        om[q] = c ? bm[q] : om[q];
        oi[q] = c ? off + bi[q] : oi[q];
      }
    }
  }
}

/// 3x3x3 max pooling, padding 1, strides (sd, sh, sw), on contiguous float32 CPU tensors,
/// with the argmax kept for the backward pass. LibTorch's max_pool3d_with_indices took
/// ~120 ms of a ~900 ms training step at 64x128x128 (27 compares per output); max is
/// separable, so this takes it along W, then H, then D. Ties and NaN go where LibTorch's
/// kernel sends them: the first maximum in (d, h, w) order (strict >), the last NaN - each
/// pass keeps that order, so values, argmax and gradients equal LibTorch's.
struct MaxPool3 : public torch::autograd::Function<MaxPool3> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input, int64_t sd, int64_t sh,
                               int64_t sw) {
    const torch::Tensor x = input.contiguous();
    const int64_t planes = x.size(0) * x.size(1), D = x.size(2), H = x.size(3), W = x.size(4);
    const int64_t Do = (D - 1) / sd + 1, Ho = (H - 1) / sh + 1, Wo = (W - 1) / sw + 1;
    torch::Tensor out = torch::empty({x.size(0), x.size(1), Do, Ho, Wo}, x.options());
    torch::Tensor idx = torch::empty({x.size(0), x.size(1), Do, Ho, Wo}, x.options().dtype(torch::kInt32));
    const float* X = x.data_ptr<float>();
    float* O = out.data_ptr<float>();
    std::int32_t* I = idx.data_ptr<std::int32_t>();
    at::parallel_for(0, planes, 1, [&](int64_t p0, int64_t p1) {
      std::vector<float> a(static_cast<std::size_t>(D * H * Wo)), b(static_cast<std::size_t>(std::max(D * Ho * Wo, 2 * Wo + 1))),
          row(static_cast<std::size_t>(W + 2));
      std::vector<std::int32_t> ia(a.size()), ib(b.size());
      for (int64_t p = p0; p < p1; ++p)
        max_pool3_plane(X + p * D * H * W, D, H, W, sd, sh, sw, O + p * Do * Ho * Wo, I + p * Do * Ho * Wo, a.data(), ia.data(),
                        b.data(), ib.data(), row.data());
    });
    ctx->save_for_backward({idx});
    ctx->saved_data["shape"] = x.sizes().vec();
    return out;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::tensor_list grads) {
    const torch::Tensor idx = ctx->get_saved_variables()[0];
    const std::vector<int64_t> shape = ctx->saved_data["shape"].toIntVector();
    const torch::Tensor g = grads[0].contiguous();
    torch::Tensor gi = torch::zeros(shape, g.options());
    const int64_t planes = shape[0] * shape[1], in_plane = shape[2] * shape[3] * shape[4], out_plane = idx.numel() / planes;
    const float* G = g.data_ptr<float>();
    const std::int32_t* I = idx.data_ptr<std::int32_t>();
    float* R = gi.data_ptr<float>();
    at::parallel_for(0, planes, 1, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        float* r = R + p * in_plane;
        const float* gp = G + p * out_plane;
        const std::int32_t* ip = I + p * out_plane;
        for (int64_t q = 0; q < out_plane; ++q) r[ip[q]] += gp[q];
      }
    });
    return {gi, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor max_pool3d_3x3x3(const torch::Tensor& x, std::vector<int64_t> stride) {
  if (x.dim() != 5 || stride.size() != 3) throw InvalidArgument("max_pool3d_3x3x3: needs (N, C, D, H, W) and 3 strides");
  const bool fast = x.device().is_cpu() && x.scalar_type() == torch::kFloat32 && x.layout() == torch::kStrided &&
                    x.numel() > 0 && x.size(2) * x.size(3) * x.size(4) < (int64_t{1} << 31) &&
                    std::all_of(stride.begin(), stride.end(), [](int64_t s) { return s >= 1; });
  if (!fast) return torch::max_pool3d(x, {3, 3, 3}, stride, {1, 1, 1});
  return MaxPool3::apply(x, stride[0], stride[1], stride[2]);
}

ResNet3dImpl::ResNet3dImpl(const EncoderConfig& c) : config_(c) {
  const std::vector<int> blocks = blocks_per_stage(c.depth);
  const std::vector<int> ch = c.stage_channels();
  stem_ = register_module(
      "stem", nn::Sequential(conv(c.in_channels, c.width, {c.stem_kernel[0], c.stem_kernel[1], c.stem_kernel[2]},
                                  {c.stem_stride[0], c.stem_stride[1], c.stem_stride[2]}),
                             make_norm(c.norm, c.width), nn::ReLU(nn::ReLUOptions(true))));
  pool_ = c.stem_pool;
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
  if (pool_) y = max_pool3d_3x3x3(y, {1, 2, 2});
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
  if (stage == 0 && pool_) y = max_pool3d_3x3x3(y, {1, 2, 2});
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
