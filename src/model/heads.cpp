/// \file heads.cpp
/// Built-in heads (regression, classification, ordinal, segmentation) and the head registry.
#include <cmath>
#include <mutex>
#include <numeric>

#include "ichkit/core/error.h"
#include "ichkit/model/net.h"

namespace ichkit::model {
namespace {

namespace nn = torch::nn;
namespace F = torch::nn::functional;
using nlohmann::json;

template <class T>
T param(const HeadConfig& c, const char* key, T fallback) {
  if (!c.params.contains(key) || c.params.at(key).is_null()) return fallback;
  try {
    return c.params.at(key).get<T>();
  } catch (const json::exception& e) {
    throw InvalidArgument("head '" + c.name + "': parameter '" + key + "' has the wrong type (" + e.what() + ")");
  }
}

/// Global average pool of the last stage: (N, C).
torch::Tensor pooled(const Stages& s) { return s.last().mean({2, 3, 4}); }

/// A small MLP on pooled features: [Linear(C, hidden) + ReLU + Dropout] + Linear(., out).
class PooledMlp {
public:
  void build(nn::Module& owner, int64_t in, int64_t out, const HeadConfig& c) {
    const int64_t hidden = param<int64_t>(c, "hidden", 0);
    const double dropout = param<double>(c, "dropout", 0.0);
    if (hidden < 0 || hidden > 4096) throw InvalidArgument("head '" + c.name + "': hidden must be in [0, 4096]");
    if (!(dropout >= 0 && dropout < 1)) throw InvalidArgument("head '" + c.name + "': dropout must be in [0, 1)");
    if (hidden > 0) {
      fc1_ = owner.register_module("fc1", nn::Linear(in, hidden));
      in = hidden;
    }
    if (dropout > 0) drop_ = owner.register_module("dropout", nn::Dropout(dropout));
    fc_ = owner.register_module("fc", nn::Linear(in, out));
  }
  torch::Tensor forward(torch::Tensor x) {
    if (fc1_) x = torch::relu(fc1_->forward(x));
    if (drop_) x = drop_->forward(x);
    return fc_->forward(x);
  }

private:
  nn::Linear fc1_{nullptr}, fc_{nullptr};
  nn::Dropout drop_{nullptr};
};

// ---- regression --------------------------------------------------------------------------
/// A scalar in user units (e.g. mL). The network predicts the standardised, optionally
/// transformed target z = (t(y) - mean) / sd, t = identity, log1p or sqrt; mean and sd are
/// fitted on the training labels. Loss: smooth L1 (default) or MSE on z.
class RegressionHead : public Head {
public:
  RegressionHead(const HeadConfig& c, const EncoderConfig& e) : Head(c) {
    transform_ = param<std::string>(c, "transform", "none");
    if (transform_ != "none" && transform_ != "log1p" && transform_ != "sqrt")
      throw InvalidArgument("head '" + c.name + "': transform must be none, log1p or sqrt, got '" + transform_ + "'");
    loss_ = param<std::string>(c, "loss", "smooth_l1");
    if (loss_ != "smooth_l1" && loss_ != "mse")
      throw InvalidArgument("head '" + c.name + "': loss must be smooth_l1 or mse, got '" + loss_ + "'");
    mean_ = param<double>(c, "mean", 0.0);
    sd_ = param<double>(c, "sd", 1.0);
    if (!std::isfinite(mean_) || !(sd_ > 0) || !std::isfinite(sd_))
      throw InvalidArgument("head '" + c.name + "': need a finite mean and a positive sd");
    mlp_.build(*this, e.stage_channels().back(), 1, c);
  }
  torch::Tensor forward(const Stages& s, const torch::Tensor&) override { return mlp_.forward(pooled(s)).squeeze(1); }
  HeadLoss loss(const torch::Tensor& out, const Target& t) override {
    torch::Tensor y = t.values.to(torch::kFloat32);
    torch::Tensor ok = torch::isfinite(y);
    const int64_t n = ok.sum().item<int64_t>();
    if (n == 0) return {0 * out.sum(), 0};
    torch::Tensor yv = y.index({ok});
    if (transform_ == "log1p" && (yv <= -1).any().item<bool>())
      throw InvalidArgument("head '" + config_.name + "': log1p transform needs labels > -1");
    if (transform_ == "sqrt" && (yv < 0).any().item<bool>())
      throw InvalidArgument("head '" + config_.name + "': sqrt transform needs labels >= 0");
    torch::Tensor z = (forward_transform(yv) - mean_) / sd_;
    torch::Tensor p = out.index({ok});
    return {loss_ == "mse" ? F::mse_loss(p, z) : F::smooth_l1_loss(p, z), n};
  }
  torch::Tensor to_user(const torch::Tensor& out) const override {
    torch::Tensor v = out * sd_ + mean_;
    if (transform_ == "log1p") return torch::expm1(v).clamp_min(0);
    if (transform_ == "sqrt") return v.clamp_min(0).square();
    return v;
  }
  void fit_targets(const std::vector<double>& values) override {
    std::vector<double> t;
    for (double v : values)
      if (std::isfinite(v)) t.push_back(transform_scalar(v));
    if (t.size() < 2) return;
    const double m = std::accumulate(t.begin(), t.end(), 0.0) / t.size();
    double ss = 0;
    for (double v : t) ss += (v - m) * (v - m);
    const double sd = std::sqrt(ss / (t.size() - 1));
    mean_ = m;
    sd_ = sd > 1e-12 ? sd : 1.0;
    config_.params["mean"] = mean_;
    config_.params["sd"] = sd_;
  }
  std::string label_kind() const override { return "scalar"; }
  bool reads_all_stages() const override { return false; }

private:
  double transform_scalar(double v) const {
    if (transform_ == "log1p") {
      if (v <= -1) throw InvalidArgument("head '" + config_.name + "': log1p transform needs labels > -1, got " + std::to_string(v));
      return std::log1p(v);
    }
    if (transform_ == "sqrt") {
      if (v < 0) throw InvalidArgument("head '" + config_.name + "': sqrt transform needs labels >= 0, got " + std::to_string(v));
      return std::sqrt(v);
    }
    return v;
  }
  torch::Tensor forward_transform(const torch::Tensor& y) const {
    if (transform_ == "log1p") return torch::log1p(y);
    if (transform_ == "sqrt") return torch::sqrt(y.clamp_min(0));
    return y;
  }
  std::string transform_, loss_;
  double mean_ = 0, sd_ = 1;
  PooledMlp mlp_;
};

std::vector<std::string> class_names(const HeadConfig& c, int64_t fallback_count) {
  std::vector<std::string> names = param<std::vector<std::string>>(c, "classes", {});
  if (names.empty()) {
    const int64_t k = param<int64_t>(c, "num_classes", fallback_count);
    if (k < 2 || k > 1000) throw InvalidArgument("head '" + c.name + "': num_classes must be in [2, 1000]");
    for (int64_t i = 0; i < k; ++i) names.push_back(std::to_string(i));
  }
  if (names.size() < 2) throw InvalidArgument("head '" + c.name + "': needs at least two classes");
  return names;
}

HeadLoss no_rows(const torch::Tensor& out) { return {0 * out.sum(), 0}; }

// ---- classification ----------------------------------------------------------------------
/// K classes (binary = 2), softmax probabilities; cross-entropy with optional class weights.
class ClassificationHead : public Head {
public:
  ClassificationHead(const HeadConfig& c, const EncoderConfig& e) : Head(c), classes_(class_names(c, 2)) {
    const auto w = param<std::vector<double>>(c, "class_weights", {});
    if (!w.empty()) {
      if (w.size() != classes_.size()) throw InvalidArgument("head '" + c.name + "': class_weights needs one weight per class");
      weights_ = torch::tensor(std::vector<float>(w.begin(), w.end()));
    }
    mlp_.build(*this, e.stage_channels().back(), static_cast<int64_t>(classes_.size()), c);
  }
  torch::Tensor forward(const Stages& s, const torch::Tensor&) override { return mlp_.forward(pooled(s)); }
  HeadLoss loss(const torch::Tensor& out, const Target& t) override {
    torch::Tensor y = t.values.to(torch::kLong);
    torch::Tensor ok = y >= 0;
    const int64_t n = ok.sum().item<int64_t>();
    if (n == 0) return no_rows(out);
    if ((y.index({ok}) >= static_cast<int64_t>(classes_.size())).any().item<bool>())
      throw InvalidArgument("head '" + config_.name + "': a label is >= the number of classes (" +
                            std::to_string(classes_.size()) + ")");
    auto opts = F::CrossEntropyFuncOptions();
    if (weights_.defined()) opts.weight(weights_.to(out.device()));
    return {F::cross_entropy(out.index({ok}), y.index({ok}), opts), n};
  }
  torch::Tensor to_user(const torch::Tensor& out) const override { return torch::softmax(out, 1); }
  std::string label_kind() const override { return "class"; }
  std::vector<std::string> classes() const override { return classes_; }
  bool reads_all_stages() const override { return false; }

private:
  std::vector<std::string> classes_;
  torch::Tensor weights_;
  PooledMlp mlp_;
};

// ---- ordinal -----------------------------------------------------------------------------
/// Ordered classes 0..K-1 (e.g. mRS 0-6) by CORAL (Cao et al. 2020): one shared score g and
/// K-1 ordered thresholds, P(y > k) = sigmoid(g + b_k); loss = binary cross-entropy of the K-1
/// "y > k" tasks. to_user gives the K class probabilities (differences of the cumulative ones).
class OrdinalHead : public Head {
public:
  OrdinalHead(const HeadConfig& c, const EncoderConfig& e) : Head(c), classes_(class_names(c, 7)) {
    mlp_.build(*this, e.stage_channels().back(), 1, c);
    const int64_t k = static_cast<int64_t>(classes_.size());
    bias_ = register_parameter("thresholds", torch::linspace(1.0, -1.0, k - 1));
  }
  torch::Tensor forward(const Stages& s, const torch::Tensor&) override { return mlp_.forward(pooled(s)) + bias_; }
  HeadLoss loss(const torch::Tensor& out, const Target& t) override {
    torch::Tensor y = t.values.to(torch::kLong);
    torch::Tensor ok = y >= 0;
    const int64_t n = ok.sum().item<int64_t>();
    if (n == 0) return no_rows(out);
    const int64_t k = static_cast<int64_t>(classes_.size());
    if ((y.index({ok}) >= k).any().item<bool>())
      throw InvalidArgument("head '" + config_.name + "': a label is >= the number of levels (" + std::to_string(k) + ")");
    torch::Tensor levels = torch::arange(k - 1, torch::kLong).unsqueeze(0);
    torch::Tensor cum = (y.index({ok}).unsqueeze(1) > levels).to(torch::kFloat32);
    return {F::binary_cross_entropy_with_logits(out.index({ok}), cum), n};
  }
  torch::Tensor to_user(const torch::Tensor& out) const override {
    torch::Tensor gt = torch::sigmoid(out);  // P(y > k), k = 0..K-2
    const int64_t n = out.size(0);
    torch::Tensor one = torch::ones({n, 1}, out.options()), zero = torch::zeros({n, 1}, out.options());
    torch::Tensor upper = torch::cat({one, gt}, 1), lower = torch::cat({gt, zero}, 1);
    torch::Tensor p = (upper - lower).clamp_min(0);
    return p / p.sum(1, true);
  }
  std::string label_kind() const override { return "class"; }
  std::vector<std::string> classes() const override { return classes_; }
  bool reads_all_stages() const override { return false; }

private:
  std::vector<std::string> classes_;
  torch::Tensor bias_;
  PooledMlp mlp_;
};

// ---- segmentation ------------------------------------------------------------------------
/// A light top-down decoder over all encoder stages (FPN-like): a 1x1x1 lateral projection of
/// every stage to `channels`, upsampled and summed from deep to shallow, one 3x3x3
/// conv + norm + ReLU, a 1x1x1 conv to one logit, trilinear upsampling to the input grid.
/// Loss: binary cross-entropy + soft Dice on the rows that have a mask.
class SegmentationHead : public Head {
public:
  SegmentationHead(const HeadConfig& c, const EncoderConfig& e) : Head(c) {
    const int64_t ch = param<int64_t>(c, "channels", 16);
    dice_weight_ = param<double>(c, "dice_weight", 1.0);
    if (ch < 1 || ch > 1024) throw InvalidArgument("head '" + c.name + "': channels must be in [1, 1024]");
    if (ch >= 8 && ch % 8 != 0) throw InvalidArgument("head '" + c.name + "': channels must be below 8 or a multiple of 8 (GroupNorm)");
    const std::vector<int> in = e.stage_channels();
    for (std::size_t s = 0; s < in.size(); ++s)
      lateral_.push_back(register_module("lateral" + std::to_string(s),
                                         nn::Conv3d(nn::Conv3dOptions(in[s], ch, 1).bias(true))));
    smooth_ = register_module("smooth", nn::Conv3d(nn::Conv3dOptions(ch, ch, 3).padding(1).bias(false)));
    norm_ = register_module("norm", nn::GroupNorm(nn::GroupNormOptions(std::min<int64_t>(8, ch), ch)));
    out_ = register_module("out", nn::Conv3d(nn::Conv3dOptions(ch, 1, 1).bias(true)));
  }
  torch::Tensor forward(const Stages& s, const torch::Tensor& input) override {
    const std::size_t n = s.maps.size();
    torch::Tensor p = lateral_[n - 1]->forward(s.maps[n - 1]);
    for (std::size_t q = n - 1; q-- > 0;) {
      const auto& m = s.maps[q];
      p = F::interpolate(p, F::InterpolateFuncOptions()
                                .size(std::vector<int64_t>{m.size(2), m.size(3), m.size(4)})
                                .mode(torch::kTrilinear)
                                .align_corners(false)) +
          lateral_[q]->forward(m);
    }
    p = torch::relu(norm_->forward(smooth_->forward(p)));
    p = out_->forward(p);
    p = F::interpolate(p, F::InterpolateFuncOptions()
                              .size(std::vector<int64_t>{input.size(2), input.size(3), input.size(4)})
                              .mode(torch::kTrilinear)
                              .align_corners(false));
    return p.squeeze(1);  // (N, D, H, W) logits
  }
  HeadLoss loss(const torch::Tensor& out, const Target& t) override {
    if (!t.values.defined()) return no_rows(out);
    torch::Tensor ok = t.present.defined() ? t.present.to(torch::kBool) : torch::ones({out.size(0)}, torch::kBool);
    const int64_t n = ok.sum().item<int64_t>();
    if (n == 0) return no_rows(out);
    torch::Tensor logits = out.index({ok}), y = t.values.index({ok}).to(torch::kFloat32);
    if (logits.sizes() != y.sizes())
      throw InvalidArgument("head '" + config_.name + "': mask shape " + c10::str(y.sizes()) + " differs from the output " +
                            c10::str(logits.sizes()));
    torch::Tensor bce = F::binary_cross_entropy_with_logits(logits, y);
    torch::Tensor p = torch::sigmoid(logits).flatten(1), yf = y.flatten(1);
    torch::Tensor dice = 1 - (2 * (p * yf).sum(1) + 1) / (p.sum(1) + yf.sum(1) + 1);
    return {bce + dice_weight_ * dice.mean(), n};
  }
  torch::Tensor to_user(const torch::Tensor& out) const override { return torch::sigmoid(out); }
  std::string label_kind() const override { return "mask"; }

private:
  std::vector<nn::Conv3d> lateral_;
  nn::Conv3d smooth_{nullptr}, out_{nullptr};
  nn::GroupNorm norm_{nullptr};
  double dice_weight_ = 1.0;
};

template <class H>
HeadFactory factory() {
  return [](const HeadConfig& c, const EncoderConfig& e) -> std::shared_ptr<Head> { return std::make_shared<H>(c, e); };
}

std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}

}  // namespace

HeadRegistry::HeadRegistry() {
  factories_["regression"] = factory<RegressionHead>();
  factories_["classification"] = factory<ClassificationHead>();
  factories_["ordinal"] = factory<OrdinalHead>();
  factories_["segmentation"] = factory<SegmentationHead>();
}

HeadRegistry& HeadRegistry::instance() {
  static HeadRegistry r;
  return r;
}

void HeadRegistry::add(const std::string& type, HeadFactory f) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  if (type.empty()) throw InvalidArgument("head type name must not be empty");
  if (!f) throw InvalidArgument("head type '" + type + "': empty factory");
  if (factories_.count(type)) throw InvalidArgument("head type '" + type + "' is already registered");
  factories_[type] = std::move(f);
}

bool HeadRegistry::contains(const std::string& type) const {
  std::lock_guard<std::mutex> lock(registry_mutex());
  return factories_.count(type) > 0;
}

std::vector<std::string> HeadRegistry::types() const {
  std::lock_guard<std::mutex> lock(registry_mutex());
  std::vector<std::string> t;
  for (const auto& [k, v] : factories_) t.push_back(k);
  return t;
}

std::shared_ptr<Head> HeadRegistry::create(const HeadConfig& c, const EncoderConfig& e) const {
  HeadFactory f;
  {
    std::lock_guard<std::mutex> lock(registry_mutex());
    auto it = factories_.find(c.type);
    if (it == factories_.end()) {
      std::string known;
      for (const auto& [k, v] : factories_) known += (known.empty() ? "" : ", ") + k;
      throw InvalidArgument("head '" + c.name + "': unknown type '" + c.type + "' (registered: " + known + ")");
    }
    f = it->second;
  }
  std::shared_ptr<Head> h = f(c, e);
  if (!h) throw InvalidArgument("head '" + c.name + "': the factory of type '" + c.type + "' returned nothing");
  return h;
}

}  // namespace ichkit::model
