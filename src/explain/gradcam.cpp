/// \file gradcam.cpp
/// Grad-CAM, Grad-CAM++ and HiResCAM on the LibTorch network (see ichkit/explain/gradcam.h).
#include "ichkit/explain/gradcam.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>

#include "ichkit/core/error.h"
#include "ichkit/model/detail/impl.h"

namespace ichkit::explain {
namespace {

namespace F = torch::nn::functional;
using model::MultiTaskNet;

int stage_index(const std::string& layer) {
  const std::vector<std::string> names = model::EncoderConfig::stage_names();
  if (layer.empty()) return static_cast<int>(names.size()) - 1;
  for (std::size_t k = 0; k < names.size(); ++k)
    if (names[k] == layer) return static_cast<int>(k);
  std::string known;
  for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
  throw InvalidArgument("explain: no encoder stage called '" + layer + "' (stages: " + known + ")");
}

/// y per row (N) for one target, and the index explained per row.
torch::Tensor target_scores(model::Head& head, const torch::Tensor& out, const Target& t, std::vector<int>& chosen) {
  const std::string& name = head.config().name;
  const int64_t n = out.size(0);
  chosen.assign(static_cast<std::size_t>(n), 0);
  torch::Tensor y;
  if (out.dim() == 1) {  // regression: one scalar per row
    if (t.index > 0) throw InvalidArgument("explain: head '" + name + "' has one output; target index must be 0 or -1");
    y = out;
  } else if (out.dim() == 2) {  // classification logits (N, K) or ordinal cumulative logits (N, K-1)
    const int64_t k = out.size(1);
    if (t.index >= k)
      throw InvalidArgument("explain: head '" + name + "' has " + std::to_string(k) + " outputs; target index " +
                            std::to_string(t.index) + " is out of range");
    const bool classification = static_cast<int64_t>(head.classes().size()) == k;
    torch::Tensor idx;
    if (t.index >= 0)
      idx = torch::full({n}, t.index, torch::kLong);
    else if (classification)
      idx = out.detach().argmax(1);
    else
      idx = torch::zeros({n}, torch::kLong);
    for (int64_t r = 0; r < n; ++r) chosen[static_cast<std::size_t>(r)] = static_cast<int>(idx[r].item<int64_t>());
    y = out.gather(1, idx.unsqueeze(1).to(out.device())).squeeze(1);
  } else {  // dense output (segmentation logits (N, D, H, W) or (N, C, D, H, W))
    torch::Tensor o = out;
    if (out.dim() == 5) {
      const int64_t c = out.size(1);
      const int64_t ch = t.index >= 0 ? t.index : c - 1;
      if (ch >= c) throw InvalidArgument("explain: head '" + name + "' has " + std::to_string(c) + " channels");
      o = out.select(1, ch);
      std::fill(chosen.begin(), chosen.end(), static_cast<int>(ch));
    } else if (t.index > 0) {
      throw InvalidArgument("explain: head '" + name + "' has one output channel; target index must be 0 or -1");
    }
    // the foreground logits summed over the predicted mask (over everything where it is empty)
    torch::Tensor flat = o.reshape({n, -1});
    torch::Tensor fg = (flat.detach() > 0).to(flat.scalar_type());
    torch::Tensor any = fg.sum(1, true) > 0;
    torch::Tensor w = torch::where(any, fg, torch::ones_like(fg));
    y = (flat * w).sum(1);
  }
  return y * static_cast<double>(t.sign);
}

/// The map (N, d, h, w) from activations A and gradients G (N, K, d, h, w).
torch::Tensor combine(Method m, const torch::Tensor& a, const torch::Tensor& g) {
  switch (m) {
    case Method::GradCam:
      return (g.mean({2, 3, 4}, true) * a).sum(1);
    case Method::GradCamPlusPlus: {
      const torch::Tensor g2 = g * g;
      const torch::Tensor g3 = g2 * g;
      const torch::Tensor sum_a = a.sum({2, 3, 4}, true);
      torch::Tensor alpha = g2 / (2 * g2 + sum_a * g3 + 1e-7);
      alpha = torch::where(g != 0, alpha, torch::zeros_like(alpha));
      const torch::Tensor w = (torch::relu(g) * alpha).sum({2, 3, 4}, true);
      return (w * a).sum(1);
    }
    case Method::HiResCam:
      return (g * a).sum(1);
  }
  throw InvalidArgument("explain: unknown method");
}

Volume<float> volume_from(const torch::Tensor& dhw, const Volume<float>& like) {
  torch::Tensor f = dhw.to(torch::kFloat32).contiguous();
  Volume<float> v = Volume<float>::uninitialized(like.shape(), like.geometry());
  if (static_cast<std::size_t>(f.numel()) != v.size()) throw InvalidArgument("explain: map does not match the network grid");
  std::memcpy(v.data(), f.data_ptr<float>(), v.size() * sizeof(float));
  return v;
}

void finish(Heatmap& h) {
  const Volume<float>& r = h.raw;
  h.normalized = Volume<float>(r.shape(), r.geometry(), 0.0f);
  const float* src = r.data();
  float mx = 0;
  std::size_t at = 0;
  float best = -std::numeric_limits<float>::infinity();
  for (std::size_t x = 0; x < r.size(); ++x) {
    if (src[x] > best) {
      best = src[x];
      at = x;
    }
    mx = std::max(mx, src[x]);
  }
  if (mx > 0) {
    float* dst = h.normalized.data();
    const float inv = 1.0f / mx;
    for (std::size_t x = 0; x < r.size(); ++x) dst[x] = src[x] > 0 ? src[x] * inv : 0.0f;
  }
  const std::size_t ni = r.shape()[0], nj = r.shape()[1];
  h.peak = {at % ni, (at / ni) % nj, at / (ni * nj)};
  h.peak_world = r.geometry().index_to_world(Eigen::Vector3d(double(h.peak[0]), double(h.peak[1]), double(h.peak[2])));
}

/// One forward pass for a batch of same-shape inputs; every target's map for every row.
std::vector<Explanation> explain_batch(const model::Model::Impl& impl, const torch::Tensor& x,
                                       const std::vector<preprocess::PipelineResult>& prs,
                                       const std::vector<Target>& targets, const Options& options) {
  const bool channels_last = impl.channels_last(x);  // on CUDA, the layout predict() runs this shape in
  MultiTaskNet net = impl.run_net(channels_last);    // a handle: the CPU master, or its copy on the device
  const torch::Tensor xd = impl.to_device(x, channels_last);
  const int stage = stage_index(options.layer);
  const int last = static_cast<int>(model::EncoderConfig::stage_names().size()) - 1;
  bool reads_all = false;
  for (const auto& h : net->heads()) reads_all = reads_all || h->reads_all_stages();
  for (const Target& t : targets) net->head(t.head);  // unknown head: InvalidArgument naming the heads

  // 1. the encoder up to (and including) the explained stage, without autograd
  model::Stages base;
  {
    c10::InferenceMode guard;
    if (auto fast = impl.fast_encoder())
      base = fast->forward(x, reads_all || stage < last);
    else
      base = net->encoder()->forward(xd);
  }
  // 2. the explained stage as a leaf; the deeper stages and the heads with autograd on it.
  //    (clone: inference tensors cannot enter an autograd graph)
  torch::AutoGradMode grad_on(true);
  torch::Tensor a = base.maps[static_cast<std::size_t>(stage)].clone().requires_grad_(true);
  model::Stages s = net->encoder()->forward_from(stage, a);
  for (int k = 0; k < stage; ++k)
    if (base.maps[static_cast<std::size_t>(k)].defined()) s.maps[static_cast<std::size_t>(k)] = base.maps[static_cast<std::size_t>(k)].clone();
  model::MultiTaskNetImpl::Output out = net->forward_heads(std::move(s), xd);

  const int64_t n = x.size(0);
  std::vector<Explanation> result(static_cast<std::size_t>(n));
  const torch::Tensor a_detached = a.detach();
  const std::vector<std::string> stage_names = model::EncoderConfig::stage_names();
  for (std::size_t ti = 0; ti < targets.size(); ++ti) {
    const Target& t = targets[ti];
    if (t.sign != 1 && t.sign != -1) throw InvalidArgument("explain: sign must be +1 or -1");
    if (t.index < -1)
      throw InvalidArgument("explain: target index " + std::to_string(t.index) + " (head '" + t.head +
                            "'): an index >= 0, or -1 for the predicted class");
    std::vector<int> chosen;
    torch::Tensor y = target_scores(net->head(t.head), out.heads.at(t.head), t, chosen);
    std::vector<torch::Tensor> g = torch::autograd::grad({y.sum()}, {a}, {}, /*retain_graph=*/ti + 1 < targets.size(),
                                                          /*create_graph=*/false, /*allow_unused=*/true);
    torch::NoGradGuard no_grad;
    torch::Tensor grad = g[0].defined() ? g[0] : torch::zeros_like(a_detached);
    torch::Tensor cam = combine(options.method, a_detached.to(torch::kFloat32), grad.to(torch::kFloat32));  // (N, d, h, w)
    torch::Tensor up = F::interpolate(cam.unsqueeze(1), F::InterpolateFuncOptions()
                                                             .size(std::vector<int64_t>{x.size(2), x.size(3), x.size(4)})
                                                             .mode(torch::kTrilinear)
                                                             .align_corners(false))
                           .squeeze(1);
    if (!cam.device().is_cpu()) {  // one copy of each back to the host, after the device is done
      cam = cam.cpu();
      up = up.cpu();
    }
    const torch::Tensor yd = y.detach().to(torch::kCPU, torch::kFloat64);
    for (int64_t r = 0; r < n; ++r) {
      const preprocess::PipelineResult& pr = prs[static_cast<std::size_t>(r)];
      Heatmap h;
      h.head = t.head;
      h.layer = stage_names[static_cast<std::size_t>(stage)];
      h.method = to_string(options.method);
      h.index = chosen[static_cast<std::size_t>(r)];
      h.sign = t.sign;
      h.score = yd[r].item<double>();
      torch::Tensor f = cam[r].contiguous();
      h.feature.assign(f.data_ptr<float>(), f.data_ptr<float>() + f.numel());
      h.feature_shape = f.sizes().vec();
      h.network = volume_from(up[r], pr.volume);
      if (options.smooth_mm > 0) {
        const Eigen::Vector3d sp = h.network.spacing();
        for (int ax = 0; ax < 3; ++ax) preprocess::detail::gaussian_axis(h.network.data(), h.network.shape(), ax, options.smooth_mm / sp[ax]);
      }
      h.raw = options.to_scan ? pr.to_scan(h.network, preprocess::Interp::Linear, 0.0) : h.network;
      finish(h);
      result[static_cast<std::size_t>(r)].maps.push_back(std::move(h));
    }
  }
  // the prediction from the same forward pass
  torch::NoGradGuard no_grad;
  model::MultiTaskNetImpl::Output detached;
  for (auto& [name, t] : out.heads) detached.heads[name] = t.detach();
  model::Model::Impl::outputs_to_host(detached);
  for (int64_t r = 0; r < n; ++r)
    result[static_cast<std::size_t>(r)].prediction = impl.decode(detached, r, prs[static_cast<std::size_t>(r)]);
  return result;
}

}  // namespace

std::string to_string(Method m) {
  switch (m) {
    case Method::GradCam: return "gradcam";
    case Method::GradCamPlusPlus: return "gradcam++";
    case Method::HiResCam: return "hirescam";
  }
  return "?";
}

Method method_from_string(const std::string& name) {
  std::string s;
  for (char c : name)
    if (c != '-' && c != '_' && c != ' ') s += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (s == "gradcam") return Method::GradCam;
  if (s == "gradcam++" || s == "gradcampp" || s == "gradcamplusplus") return Method::GradCamPlusPlus;
  if (s == "hirescam") return Method::HiResCam;
  throw InvalidArgument("explain: unknown method '" + name + "' (gradcam, gradcam++, hirescam)");
}

Explanation explain(const model::Model& model, const Volume<float>& scan, const std::vector<Target>& targets,
                    const Options& options) {
  return explain(model, std::vector<Volume<float>>{scan}, targets, options, 1).at(0);
}

std::vector<Explanation> explain(const model::Model& model, const std::vector<Volume<float>>& scans,
                                 const std::vector<Target>& targets, const Options& options, int batch_size) {
  if (targets.empty()) throw InvalidArgument("explain: no target (give at least one head)");
  if (!(options.smooth_mm >= 0) || !std::isfinite(options.smooth_mm)) throw InvalidArgument("explain: smooth_mm must be >= 0");
  const model::Model::Impl& impl = *model.impl();
  stage_index(options.layer);  // fail early on a bad layer name
  std::vector<Explanation> out(scans.size());
  impl.for_each_batch(scans, batch_size, [&](const torch::Tensor& x, const std::vector<preprocess::PipelineResult>& prs,
                                             const std::vector<std::size_t>& idx) {
    std::vector<Explanation> e = explain_batch(impl, x, prs, targets, options);
    for (std::size_t r = 0; r < idx.size(); ++r) out[idx[r]] = std::move(e[r]);
  });
  return out;
}

GradCam::GradCam(model::Model model, std::string layer, Method method)
    : model_(std::move(model)), layer_(std::move(layer)), method_(method) {
  stage_index(layer_);
}

Explanation GradCam::explain(const Volume<float>& scan, const std::vector<Target>& targets, bool to_scan) const {
  return explain::explain(model_, scan, targets, Options{method_, layer_, to_scan, 0});
}

std::vector<Explanation> GradCam::explain(const std::vector<Volume<float>>& scans, const std::vector<Target>& targets,
                                          bool to_scan, int batch_size) const {
  return explain::explain(model_, scans, targets, Options{method_, layer_, to_scan, 0}, batch_size);
}

}  // namespace ichkit::explain
