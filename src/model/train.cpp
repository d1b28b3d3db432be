/// \file train.cpp
/// Manifest, folds, the data loader (cache, augmentation, prefetch), the training loop
/// (AdamW, warm-up + cosine, clipping, early stopping, checkpoints with exact resume, the
/// joint / two-stage / single-task modes) and evaluation.
#include "ichkit/model/train.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <sstream>
#include <thread>

#include "../core/fault.h"
#include "bundle.h"
#include "distributed.h"
#include "ichkit/core/error.h"
#include "ichkit/io/atomic_file.h"
#include "ichkit/io/read.h"
#include "ichkit/model/detail/impl.h"
#include "ichkit/model/metrics.h"
#include "ichkit/preprocess/resample.h"

namespace ichkit::model {
namespace {
using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr char kCheckpointMagic[9] = "ICHKITCK";
constexpr char kCacheMagic[9] = "ICHKITPC";
constexpr std::uint32_t kCheckpointVersion = 1;

std::uint64_t mix(std::uint64_t a, std::uint64_t b) {
  std::uint64_t z = a * 0x9E3779B97F4A7C15ULL ^ (b + 0x632BE59BD9B4E019ULL + (a << 6) + (a >> 2));
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

std::uint64_t fnv(const std::string& s) {
  std::uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

// ---- CSV ---------------------------------------------------------------------------------

std::vector<std::string> split_csv(const std::string& line, std::size_t row) {
  std::vector<std::string> out;
  std::string cur;
  bool quoted = false;
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        cur += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        cur += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      out.push_back(cur);
      cur.clear();
    } else if (c != '\r') {
      cur += c;
    }
  }
  if (quoted) throw FormatError("manifest row " + std::to_string(row) + ": unterminated quote");
  out.push_back(cur);
  return out;
}

bool parse_number(const std::string& s, double& v) {
  if (s.empty()) return false;
  if (s == "true" || s == "True") return v = 1, true;
  if (s == "false" || s == "False") return v = 0, true;
  char* end = nullptr;
  v = std::strtod(s.c_str(), &end);
  return end && *end == '\0';
}

}  // namespace

Manifest Manifest::read(const std::string& csv_path) {
  std::ifstream f(csv_path);
  if (!f) throw IoError("cannot open manifest '" + csv_path + "'");
  const fs::path base = fs::absolute(fs::path(csv_path)).parent_path();
  std::string line;
  if (!std::getline(f, line)) throw FormatError("manifest '" + csv_path + "' is empty");
  const std::vector<std::string> header = split_csv(line, 1);
  int c_id = -1, c_patient = -1, c_image = -1, c_mask = -1;
  Manifest m;
  for (std::size_t c = 0; c < header.size(); ++c) {
    const std::string& h = header[c];
    if (h == "id") c_id = static_cast<int>(c);
    else if (h == "patient") c_patient = static_cast<int>(c);
    else if (h == "image") c_image = static_cast<int>(c);
    else if (h == "mask") c_mask = static_cast<int>(c);
    else m.columns.push_back(h);
  }
  if (c_image < 0) throw FormatError("manifest '" + csv_path + "' has no 'image' column");
  std::size_t row = 1;
  while (std::getline(f, line)) {
    ++row;
    if (line.empty() || line == "\r") continue;
    const std::vector<std::string> v = split_csv(line, row);
    if (v.size() != header.size())
      throw FormatError("manifest '" + csv_path + "' row " + std::to_string(row) + ": " + std::to_string(v.size()) +
                        " fields, the header has " + std::to_string(header.size()));
    Case cs;
    cs.id = c_id >= 0 ? v[c_id] : "row" + std::to_string(row);
    cs.patient = c_patient >= 0 && !v[c_patient].empty() ? v[c_patient] : cs.id;
    if (v[c_image].empty()) throw FormatError("manifest '" + csv_path + "' row " + std::to_string(row) + ": empty image path");
    auto resolve = [&](const std::string& p) { return fs::path(p).is_absolute() ? p : (base / p).lexically_normal().string(); };
    cs.image = resolve(v[c_image]);
    if (c_mask >= 0 && !v[c_mask].empty()) cs.mask = resolve(v[c_mask]);
    for (std::size_t c = 0; c < header.size(); ++c) {
      if (static_cast<int>(c) == c_id || static_cast<int>(c) == c_patient || static_cast<int>(c) == c_image ||
          static_cast<int>(c) == c_mask)
        continue;
      double x;
      if (parse_number(v[c], x)) {
        if (!std::isfinite(x))
          throw FormatError("manifest '" + csv_path + "' row " + std::to_string(row) + ": column '" + header[c] + "' is not finite");
        cs.labels[header[c]] = x;
      } else {
        cs.labels[header[c]] = std::nan("");
        if (!v[c].empty()) cs.text[header[c]] = v[c];
      }
    }
    m.cases.push_back(std::move(cs));
  }
  if (m.cases.empty()) throw FormatError("manifest '" + csv_path + "' has no cases");
  return m;
}

Manifest Manifest::subset(const std::vector<std::size_t>& index) const {
  Manifest m;
  m.columns = columns;
  for (std::size_t i : index) {
    if (i >= cases.size()) throw InvalidArgument("manifest subset: index " + std::to_string(i) + " out of range");
    m.cases.push_back(cases[i]);
  }
  return m;
}

std::vector<std::vector<std::size_t>> patient_folds(const Manifest& m, int k, std::uint64_t seed) {
  if (k < 2) throw InvalidArgument("folds: k must be >= 2, got " + std::to_string(k));
  std::map<std::string, std::vector<std::size_t>> by_patient;
  for (std::size_t i = 0; i < m.cases.size(); ++i) by_patient[m.cases[i].patient].push_back(i);
  if (static_cast<int>(by_patient.size()) < k)
    throw InvalidArgument("folds: " + std::to_string(by_patient.size()) + " patients cannot fill " + std::to_string(k) + " folds");
  std::vector<std::vector<std::size_t>> groups;
  for (auto& [p, idx] : by_patient) groups.push_back(idx);
  std::mt19937_64 rng(seed);
  std::shuffle(groups.begin(), groups.end(), rng);
  // largest groups first into the currently smallest fold (stable for equal sizes)
  std::stable_sort(groups.begin(), groups.end(), [](const auto& a, const auto& b) { return a.size() > b.size(); });
  std::vector<std::vector<std::size_t>> folds(k);
  for (const auto& g : groups) {
    auto smallest = std::min_element(folds.begin(), folds.end(), [](const auto& a, const auto& b) { return a.size() < b.size(); });
    smallest->insert(smallest->end(), g.begin(), g.end());
  }
  for (auto& f : folds) std::sort(f.begin(), f.end());
  return folds;
}

namespace {

/// Rethrow `e` as its own kind with `prefix` before the message.
[[noreturn]] void rethrow_with_context(const Error& e, const std::string& prefix) {
  const std::string msg = prefix + e.what();
  if (dynamic_cast<const IoError*>(&e)) throw IoError(msg);
  if (dynamic_cast<const FormatError*>(&e)) throw FormatError(msg);
  if (dynamic_cast<const GeometryError*>(&e)) throw GeometryError(msg);
  if (dynamic_cast<const InvalidArgument*>(&e)) throw InvalidArgument(msg);
  if (dynamic_cast<const ResourceError*>(&e)) throw ResourceError(msg);
  throw Error(msg);
}

// ---- prepared samples ----------------------------------------------------------------------

struct Sample {
  torch::Tensor x;     ///< (C, D, H, W)
  torch::Tensor mask;  ///< (D, H, W) float {0, 1}, undefined without a mask
};

/// Runs the pipeline on every case once (memory cache), optionally backed by files in
/// cache_dir keyed by the pipeline, the paths and the files' sizes and times.
class SampleStore {
public:
  SampleStore(const preprocess::Pipeline& p, std::string cache_dir, bool need_masks)
      : pipeline_(p), pipeline_json_(p.to_json()), cache_dir_(std::move(cache_dir)), need_masks_(need_masks) {}

  const Sample& get(const Case& c) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = memory_.find(c.image);
      if (it != memory_.end()) return it->second;
    }
    Sample s = load(c);
    std::lock_guard<std::mutex> lock(mutex_);
    return memory_.emplace(c.image, std::move(s)).first->second;
  }

private:
  std::string key(const Case& c) const {
    std::ostringstream k;
    k << pipeline_json_ << '|' << c.image << '|' << c.mask << '|' << need_masks_;
    for (const std::string& p : {c.image, c.mask}) {
      std::error_code ec;
      if (p.empty()) continue;
      k << '|' << fs::file_size(p, ec) << '|' << (ec ? 0 : fs::last_write_time(p, ec).time_since_epoch().count());
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(fnv(k.str())));
    return buf;
  }

  Sample load(const Case& c) {
    std::string path;
    if (!cache_dir_.empty()) {
      path = (fs::path(cache_dir_) / (key(c) + ".ichkitcache")).string();
      std::error_code ec;
      if (fs::exists(path, ec)) {
        try {
          detail::Bundle b = detail::read_bundle(detail::read_file(path, std::uint64_t(8) << 30, "cache file"), kCacheMagic, 1, "cache file");
          Sample s;
          for (auto& [name, t] : b.tensors) {
            if (name == "x") s.x = t;
            if (name == "mask") s.mask = t;
          }
          if (s.x.defined() && (!need_masks_ || c.mask.empty() || s.mask.defined())) return s;
        } catch (const Error&) {
          // a damaged cache entry is rebuilt below
        }
      }
    }
    Sample s;
    try {
      ValueStats stats;
      const Volume<float> scan = io::read(c.image, {}, stats);
      preprocess::check_coverage(scan);
      preprocess::check_hu(scan, stats);
      preprocess::PipelineResult pr = pipeline_.run(scan);
      s.x = channels_tensor(pr.input).clone();
      if (need_masks_ && !c.mask.empty()) {
        const Volume<float> m = io::read(c.mask);
        const Volume<float> on_grid = preprocess::resample_like(m, pr.volume, preprocess::Interp::Nearest, 0.0);
        torch::Tensor t = torch::from_blob(const_cast<float*>(on_grid.data()),
                                           {static_cast<int64_t>(on_grid.nk()), static_cast<int64_t>(on_grid.nj()),
                                            static_cast<int64_t>(on_grid.ni())},
                                           torch::kFloat32);
        s.mask = (t > 0.5f).to(torch::kFloat32).clone();
      }
    } catch (const Error& e) {
      rethrow_with_context(e, "case '" + c.id + "' (" + c.image + "): ");
    }
    if (!path.empty()) {
      detail::NamedTensors ts{{"x", s.x}};
      if (s.mask.defined()) ts.emplace_back("mask", s.mask);
      const std::string bytes = detail::write_bundle(kCacheMagic, 1, json{{"image", c.image}}, ts);
      std::error_code ec;
      fs::create_directories(cache_dir_, ec);
      io::AtomicFile f(path);
      f.write(bytes.data(), bytes.size());
      f.commit();
    }
    return s;
  }

  preprocess::Pipeline pipeline_;
  std::string pipeline_json_, cache_dir_;
  bool need_masks_;
  std::mutex mutex_;
  std::map<std::string, Sample> memory_;
};

// ---- augmentation --------------------------------------------------------------------------

/// Augment one sample with an RNG seeded by (seed, epoch, case): the same case in the same
/// epoch is augmented identically whichever thread prepares it.
Sample augment(const Sample& in, const Augmentation& a, std::uint64_t key) {
  if (!a.enabled) return in;
  std::mt19937_64 rng(key);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  Sample s{in.x, in.mask};
  const bool flip = a.flip_lr && (rng() & 1);
  const double angle = a.rotate_deg * u(rng) * M_PI / 180.0;
  const double scale = 1.0 + a.scale * u(rng);
  if (flip) {
    s.x = s.x.flip({3});
    if (s.mask.defined()) s.mask = s.mask.flip({2});
  }
  if (angle != 0.0 || scale != 1.0) {
    // in-plane rotation + scaling about the grid centre (normalised coordinates; the
    // in-plane axes are W = x and H = y of grid_sample)
    const double c = std::cos(angle) / scale, sn = std::sin(angle) / scale;
    const int64_t D = s.x.size(1), H = s.x.size(2), W = s.x.size(3);
    const double ar = static_cast<double>(W) / static_cast<double>(H);  // keep angles in physical pixels
    torch::Tensor theta = torch::tensor({{static_cast<float>(c), static_cast<float>(-sn / ar), 0.f, 0.f},
                                         {static_cast<float>(sn * ar), static_cast<float>(c), 0.f, 0.f},
                                         {0.f, 0.f, 1.f, 0.f}})
                              .unsqueeze(0);
    torch::Tensor grid = torch::nn::functional::affine_grid(theta, {1, 1, D, H, W}, false);
    namespace F = torch::nn::functional;
    s.x = F::grid_sample(s.x.unsqueeze(0), grid,
                         F::GridSampleFuncOptions().mode(torch::kBilinear).padding_mode(torch::kBorder).align_corners(false))
              .squeeze(0);
    if (s.mask.defined())
      s.mask = F::grid_sample(s.mask.unsqueeze(0).unsqueeze(0), grid,
                              F::GridSampleFuncOptions().mode(torch::kNearest).padding_mode(torch::kZeros).align_corners(false))
                   .squeeze(0)
                   .squeeze(0);
  }
  if (a.intensity > 0 || a.noise > 0) {
    const int64_t C = s.x.size(0);
    std::vector<float> gain(C), off(C);
    for (int64_t ch = 0; ch < C; ++ch) {
      gain[ch] = static_cast<float>(1.0 + a.intensity * u(rng));
      off[ch] = static_cast<float>(a.intensity * u(rng));
    }
    s.x = s.x * torch::tensor(gain).view({C, 1, 1, 1}) + torch::tensor(off).view({C, 1, 1, 1});
    if (a.noise > 0) {
      at::Generator g = at::detail::createCPUGenerator(rng());
      s.x = s.x + a.noise * at::randn(s.x.sizes(), g, torch::kFloat32);
    }
  } else if (flip) {
    s.x = s.x.contiguous();
  }
  return s;
}

// ---- batches -------------------------------------------------------------------------------

struct Batch {
  torch::Tensor x;
  std::map<std::string, Target> targets;
  int64_t size = 0;
};

/// The label of `c` for head `h` as a number: a numeric cell, or a class given by name.
double label_of(const Case& c, const Head& h) {
  const std::string& col = h.config().target;
  auto it = c.labels.find(col);
  if (it != c.labels.end() && std::isfinite(it->second)) return it->second;
  auto t = c.text.find(col);
  if (t != c.text.end()) {
    const auto classes = h.classes();
    for (std::size_t k = 0; k < classes.size(); ++k)
      if (classes[k] == t->second) return static_cast<double>(k);
    throw InvalidArgument("case '" + c.id + "': '" + t->second + "' in column '" + col + "' is not a class of head '" + h.config().name + "'");
  }
  return std::nan("");
}

Batch make_batch(MultiTaskNet& net, const std::vector<const Case*>& cases, const std::vector<Sample>& samples) {
  Batch b;
  b.size = static_cast<int64_t>(cases.size());
  std::vector<torch::Tensor> xs;
  for (const Sample& s : samples) xs.push_back(s.x);
  b.x = torch::stack(xs);
  for (const auto& h : net->heads()) {
    const std::string kind = h->label_kind();
    Target t;
    if (kind == "mask") {
      std::vector<torch::Tensor> ms;
      std::vector<uint8_t> present;
      const auto spatial = b.x.sizes().slice(2);
      for (const Sample& s : samples) {
        present.push_back(s.mask.defined() ? 1 : 0);
        ms.push_back(s.mask.defined() ? s.mask : torch::zeros(spatial, torch::kFloat32));
      }
      t.values = torch::stack(ms);
      t.present = torch::tensor(std::vector<int64_t>(present.begin(), present.end())).to(torch::kBool);
    } else if (kind == "class") {
      std::vector<int64_t> y;
      for (const Case* c : cases) {
        const double v = label_of(*c, *h);
        if (std::isfinite(v) && (v != std::floor(v) || v < 0))
          throw InvalidArgument("case '" + c->id + "': label " + std::to_string(v) + " of head '" + h->config().name +
                                "' is not a class index");
        y.push_back(std::isfinite(v) ? static_cast<int64_t>(v) : -1);
      }
      t.values = torch::tensor(y);
    } else {
      std::vector<float> y;
      for (const Case* c : cases) y.push_back(static_cast<float>(label_of(*c, *h)));
      t.values = torch::tensor(y);
    }
    b.targets[h->config().name] = t;
  }
  return b;
}

/// Produces the batches of one epoch on a background thread (`depth` ahead), so loading and
/// augmentation overlap the training step. Errors surface on the consumer's next().
class Prefetcher {
public:
  Prefetcher(std::function<Batch(std::size_t)> make, std::size_t count, int depth)
      : make_(std::move(make)), count_(count), depth_(std::max(1, depth)) {
    worker_ = std::thread([this] { run(); });
  }
  ~Prefetcher() {
    {
      std::lock_guard<std::mutex> lock(m_);
      stop_ = true;
    }
    cv_.notify_all();
    if (worker_.joinable()) worker_.join();
  }
  Batch next() {
    std::unique_lock<std::mutex> lock(m_);
    cv_.wait(lock, [&] { return !queue_.empty() || error_; });
    if (queue_.empty() && error_) std::rethrow_exception(error_);
    Batch b = std::move(queue_.front());
    queue_.pop_front();
    cv_.notify_all();
    return b;
  }

private:
  void run() {
    try {
      for (std::size_t i = 0; i < count_; ++i) {
        {
          std::unique_lock<std::mutex> lock(m_);
          cv_.wait(lock, [&] { return stop_ || static_cast<int>(queue_.size()) < depth_; });
          if (stop_) return;
        }
        Batch b = make_(i);
        std::lock_guard<std::mutex> lock(m_);
        queue_.push_back(std::move(b));
        cv_.notify_all();
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(m_);
      error_ = std::current_exception();
      cv_.notify_all();
    }
  }
  std::function<Batch(std::size_t)> make_;
  std::size_t count_;
  int depth_;
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<Batch> queue_;
  std::exception_ptr error_;
  bool stop_ = false;
  std::thread worker_;
};

// ---- optimiser -----------------------------------------------------------------------------

/// AdamW (Loshchilov & Hutter 2019) as torch.optim.AdamW, with its state in named tensors so a
/// checkpoint restores it exactly.
struct AdamW {
  std::vector<std::pair<std::string, torch::Tensor>> params;
  std::vector<torch::Tensor> m, v;
  int64_t step = 0;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 1e-4;

  explicit AdamW(std::vector<std::pair<std::string, torch::Tensor>> p, double wd) : params(std::move(p)), weight_decay(wd) {
    for (auto& [n, t] : params) {
      m.push_back(torch::zeros_like(t));
      v.push_back(torch::zeros_like(t));
    }
  }
  void zero_grad() {
    for (auto& [n, t] : params)
      if (t.grad().defined()) t.grad().zero_();
  }
  void update(double lr) {
    torch::NoGradGuard ng;
    ++step;
    const double bc1 = 1 - std::pow(beta1, static_cast<double>(step)), bc2 = 1 - std::pow(beta2, static_cast<double>(step));
    for (std::size_t i = 0; i < params.size(); ++i) {
      torch::Tensor& p = params[i].second;
      if (!p.grad().defined()) continue;
      const torch::Tensor& g = p.grad();
      p.mul_(1 - lr * weight_decay);
      m[i].mul_(beta1).add_(g, 1 - beta1);
      v[i].mul_(beta2).addcmul_(g, g, 1 - beta2);
      torch::Tensor denom = (v[i] / bc2).sqrt_().add_(eps);
      p.addcdiv_(m[i], denom, -lr / bc1);
    }
  }
  detail::NamedTensors state() const {
    detail::NamedTensors s;
    for (std::size_t i = 0; i < params.size(); ++i) {
      s.emplace_back("opt.m." + params[i].first, m[i]);
      s.emplace_back("opt.v." + params[i].first, v[i]);
    }
    return s;
  }
  void load(const std::map<std::string, torch::Tensor>& t, int64_t s) {
    torch::NoGradGuard ng;
    for (std::size_t i = 0; i < params.size(); ++i) {
      auto a = t.find("opt.m." + params[i].first), b = t.find("opt.v." + params[i].first);
      if (a == t.end() || b == t.end()) throw FormatError("checkpoint: optimiser state of '" + params[i].first + "' is missing");
      m[i].copy_(a->second);
      v[i].copy_(b->second);
    }
    step = s;
  }
};

double clip_grad_norm(const std::vector<std::pair<std::string, torch::Tensor>>& params, double max_norm) {
  torch::NoGradGuard ng;
  double sq = 0;
  for (const auto& [n, p] : params)
    if (p.grad().defined()) sq += p.grad().pow(2).sum().item<double>();
  const double norm = std::sqrt(sq);
  if (max_norm > 0 && norm > max_norm) {
    const double f = max_norm / (norm + 1e-6);
    for (const auto& [n, p] : params)
      if (p.grad().defined()) p.grad().mul_(f);
  }
  return norm;
}

/// Linear warm-up over `warmup` steps, then cosine decay to 0 at `total`.
double lr_at(double base, int64_t step, int64_t warmup, int64_t total) {
  if (step < warmup) return base * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const double t = total > warmup ? static_cast<double>(step - warmup) / static_cast<double>(total - warmup) : 1.0;
  return base * 0.5 * (1 + std::cos(M_PI * std::min(1.0, t)));
}

std::vector<std::pair<std::string, torch::Tensor>> named_trainable(MultiTaskNet& net, bool encoder) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : net->named_parameters(true)) {
    const bool is_encoder = p.key().rfind("encoder.", 0) == 0;
    if (!encoder && is_encoder) continue;
    out.emplace_back(p.key(), p.value());
  }
  return out;
}

json options_json(const TrainOptions& o) {
  return json{{"mode", o.mode},
              {"task", o.task},
              {"epochs", o.epochs},
              {"head_epochs", o.head_epochs},
              {"batch_size", o.batch_size},
              {"lr", o.lr},
              {"head_lr", o.head_lr},
              {"weight_decay", o.weight_decay},
              {"warmup_epochs", o.warmup_epochs},
              {"grad_clip", o.grad_clip},
              {"patience", o.patience},
              {"seed", o.seed},
              {"augment",
               {{"enabled", o.augment.enabled}, {"flip_lr", o.augment.flip_lr}, {"rotate_deg", o.augment.rotate_deg},
                {"scale", o.augment.scale}, {"intensity", o.augment.intensity}, {"noise", o.augment.noise}}}};
}

void validate(const TrainOptions& o) {
  if (o.mode != "joint" && o.mode != "two-stage" && o.mode != "single-task")
    throw InvalidArgument("train: mode must be joint, two-stage or single-task, got '" + o.mode + "'");
  if (o.epochs < 1) throw InvalidArgument("train: epochs must be >= 1");
  if (o.mode == "two-stage" && o.head_epochs < 1) throw InvalidArgument("train: head_epochs must be >= 1 in two-stage mode");
  if (o.batch_size < 1) throw InvalidArgument("train: batch_size must be >= 1");
  if (!(o.lr > 0) || !(o.head_lr > 0) || !(o.weight_decay >= 0) || !(o.warmup_epochs >= 0) || !(o.grad_clip >= 0))
    throw InvalidArgument("train: lr and head_lr must be > 0; weight_decay, warmup_epochs and grad_clip >= 0");
  if (o.patience < 1) throw InvalidArgument("train: patience must be >= 1");
  if (o.distributed.world_size < 1 || o.distributed.rank < 0 || o.distributed.rank >= o.distributed.world_size)
    throw InvalidArgument("train: need 0 <= rank < world_size");
  if (o.batch_size % o.distributed.world_size != 0)
    throw InvalidArgument("train: batch_size " + std::to_string(o.batch_size) + " is not divisible by world_size " +
                          std::to_string(o.distributed.world_size));
}

}  // namespace

// ---- training ------------------------------------------------------------------------------

TrainResult train(const ModelConfig& config_in, const Manifest& train_set, const Manifest& val_set, const TrainOptions& o) {
  validate(o);
  if (train_set.cases.empty()) throw InvalidArgument("train: no training cases");
  ModelConfig config = config_in;
  if (o.mode == "single-task") {
    const std::size_t k = config.head_index(o.task);
    config.heads = {config.heads[k]};
  }
  Model model(config, o.seed);
  MultiTaskNet net = model.impl()->net;
  // target normalisation from the training labels
  for (const auto& h : net->heads()) {
    if (h->label_kind() != "scalar") continue;
    std::vector<double> y;
    for (const Case& c : train_set.cases) y.push_back(label_of(c, *h));
    h->fit_targets(y);
  }
  bool need_masks = false;
  for (const auto& h : net->heads()) need_masks |= h->label_kind() == "mask";
  SampleStore store(model.pipeline(), o.cache_dir, need_masks);

  const std::size_t n = train_set.cases.size();
  const std::size_t bs = static_cast<std::size_t>(o.batch_size);
  const int world = o.distributed.world_size, rank = o.distributed.rank;
  std::unique_ptr<detail::GradientReducer> reducer;
  if (world > 1)
    reducer = std::make_unique<detail::GradientReducer>(rank, world, o.distributed.master_addr, o.distributed.master_port,
                                                        o.distributed.timeout_s);
  // a last batch of one case is dropped (BatchNorm needs two); data-parallel runs drop an
  // incomplete last global batch, so every rank gets an equal share
  std::size_t batches = (n + bs - 1) / bs;
  if (world > 1) batches = n / bs;
  else if (n % bs == 1 && batches > 1) --batches;
  if (batches == 0) throw InvalidArgument("train: fewer training cases than one global batch");
  const std::size_t per_rank = bs / static_cast<std::size_t>(world);

  struct Stage {
    std::string name;
    int epochs;
    double lr;
    bool encoder;
  };
  std::vector<Stage> stages;
  stages.push_back({o.mode == "two-stage" ? "upstream" : o.mode, o.epochs, o.lr, true});
  if (o.mode == "two-stage") stages.push_back({"downstream", o.head_epochs, o.head_lr, false});

  json history = json::array();
  int start_stage = 0, start_epoch = 0;
  double best_val = std::numeric_limits<double>::infinity();
  int best_epoch = -1, bad_epochs = 0;
  detail::NamedTensors best_state;
  std::map<std::string, torch::Tensor> resume_tensors;
  int64_t resume_step = 0;
  std::string stop_reason_resumed = "completed";
  const int total_epochs = o.epochs + (o.mode == "two-stage" ? o.head_epochs : 0);

  // ---- resume
  // a run killed while writing its checkpoint leaves "<checkpoint>.tmp-XXXXXX" beside the
  // intact previous checkpoint; the run that takes over removes it
  if (!o.checkpoint.empty() && rank == 0) io::remove_stale_temporaries(o.checkpoint);
  if (!o.checkpoint.empty() && fs::exists(o.checkpoint)) {
    detail::Bundle b = detail::read_bundle(detail::read_file(o.checkpoint, std::uint64_t(16) << 30, "checkpoint"), kCheckpointMagic,
                                           kCheckpointVersion, "checkpoint");
    const json& h = b.header;
    if (h.value("options", json()) != options_json(o) || h.value("config", json()) != config_in.to_json())
      throw InvalidArgument("checkpoint '" + o.checkpoint + "' was written by a run with other options or another config; "
                            "delete it or train with the same settings");
    start_stage = h.at("stage").get<int>();
    start_epoch = h.at("next_epoch").get<int>();
    best_val = h.at("best_val").is_null() ? std::numeric_limits<double>::infinity() : h.at("best_val").get<double>();
    best_epoch = h.at("best_epoch").get<int>();
    bad_epochs = h.at("bad_epochs").get<int>();
    history = h.at("history");
    resume_step = h.at("step").get<int64_t>();
    stop_reason_resumed = h.value("stop", std::string("completed"));
    detail::NamedTensors weights;
    for (auto& [name, t] : b.tensors) {
      if (name.rfind("w.", 0) == 0) weights.emplace_back(name.substr(2), t);
      else if (name.rfind("best.", 0) == 0) best_state.emplace_back(name.substr(5), t);
      else resume_tensors[name] = t;
    }
    // (head target normalisation was refitted above from the same training labels)
    load_state(net, weights);
  }

  std::string stop_reason = stop_reason_resumed;
  const auto t_start = std::chrono::steady_clock::now();
  ProgressScope scope(o.progress, "train", static_cast<std::int64_t>(total_epochs) * static_cast<std::int64_t>(batches));
  if (start_stage > 0 || start_epoch > 0) {
    int done = start_epoch;
    for (int s = 0; s < start_stage; ++s) done += stages[s].epochs;
    scope.advance(static_cast<std::int64_t>(done) * static_cast<std::int64_t>(batches), "resumed");
  }

  for (int si = start_stage; si < static_cast<int>(stages.size()); ++si) {
    const Stage& st = stages[si];
    const bool resuming = si == start_stage && (start_epoch > 0 || resume_step > 0);
    if (si == 1 && !resuming) {
      // downstream: best upstream weights, a frozen encoder, heads re-initialised
      if (!best_state.empty()) load_state(net, best_state);
      Model fresh(net->current_config(), mix(o.seed, 7919));
      detail::NamedTensors heads_init;
      for (auto& [name, t] : named_state(fresh.impl()->net))
        if (name.rfind("heads.", 0) == 0 || name == "log_vars") heads_init.emplace_back(name, t);
      std::map<std::string, torch::Tensor> want;
      for (auto& [name, t] : named_state(net)) want[name] = t;
      torch::NoGradGuard ng;
      for (auto& [name, t] : heads_init) want.at(name).copy_(t);
      best_val = std::numeric_limits<double>::infinity();
      best_epoch = -1;
      bad_epochs = 0;
      best_state.clear();
    }
    for (auto& p : net->encoder()->parameters()) p.set_requires_grad(st.encoder);
    AdamW opt(named_trainable(net, st.encoder), o.weight_decay);
    if (resuming && !resume_tensors.empty()) opt.load(resume_tensors, resume_step);
    const int64_t total_steps = static_cast<int64_t>(st.epochs) * static_cast<int64_t>(batches);
    const int64_t warmup = std::max<int64_t>(1, std::llround(o.warmup_epochs * static_cast<double>(batches)));

    for (int epoch = resuming ? start_epoch : 0; epoch < st.epochs; ++epoch) {
      const auto t0 = std::chrono::steady_clock::now();
      const std::uint64_t ekey = mix(mix(o.seed, static_cast<std::uint64_t>(si)), static_cast<std::uint64_t>(epoch));
      torch::manual_seed(ekey);  // dropout
      std::vector<std::size_t> order(n);
      std::iota(order.begin(), order.end(), 0);
      std::mt19937_64 shuffler(ekey);
      std::shuffle(order.begin(), order.end(), shuffler);
      net->train();
      if (!st.encoder) net->encoder()->eval();  // frozen encoder: keep its BatchNorm statistics
      double loss_sum = 0;
      int64_t loss_n = 0;
      std::map<std::string, double> head_sum;
      std::map<std::string, int64_t> head_n;
      {
        Prefetcher pf(
            [&](std::size_t b) {
              std::vector<const Case*> cs;
              std::vector<Sample> ss;
              const std::size_t first = b * bs + static_cast<std::size_t>(rank) * per_rank;
              const std::size_t last = world > 1 ? first + per_rank : std::min(n, (b + 1) * bs);
              for (std::size_t q = first; q < last; ++q) {
                const Case& c = train_set.cases[order[q]];
                cs.push_back(&c);
                ss.push_back(augment(store.get(c), o.augment, mix(ekey, order[q])));
              }
              return make_batch(net, cs, ss);
            },
            batches, o.prefetch);
        for (std::size_t b = 0; b < batches; ++b) {
          Batch batch = pf.next();
          auto out = net->forward(batch.x);
          std::map<std::string, double> per;
          torch::Tensor loss = net->loss(out, batch.targets, &per);
          opt.zero_grad();
          loss.backward();
          if (reducer) {
            std::vector<torch::Tensor> ps;
            for (auto& [name, p] : opt.params) ps.push_back(p);
            reducer->average(ps);
          }
          if (o.grad_clip > 0) clip_grad_norm(opt.params, o.grad_clip);
          opt.update(lr_at(st.lr, opt.step, warmup, total_steps));
          if (ichkit::detail::fault_due("train.step")) ichkit::detail::fault_kill();  // crash tests
          const double lv = loss.item<double>();
          if (!std::isfinite(lv))
            throw InvalidArgument("train: the loss became " + std::to_string(lv) + " in epoch " + std::to_string(epoch + 1) +
                                  " (lower the learning rate?)");
          loss_sum += lv * batch.size;
          loss_n += batch.size;
          for (auto& [k, v] : per) {
            head_sum[k] += v * batch.size;
            head_n[k] += batch.size;
          }
          scope.advance(1, st.name + " epoch " + std::to_string(epoch + 1) + "/" + std::to_string(st.epochs) + " loss " +
                               std::to_string(lv).substr(0, 6));
        }
      }
      // validation loss (no augmentation)
      double val = std::nan("");
      json val_heads = json::object();
      if (!val_set.cases.empty()) {
        net->eval();
        torch::NoGradGuard ng;
        double vs = 0;
        int64_t vn = 0;
        std::map<std::string, double> vh;
        std::map<std::string, int64_t> vhn;
        for (std::size_t q = 0; q < val_set.cases.size(); q += bs) {
          std::vector<const Case*> cs;
          std::vector<Sample> ss;
          for (std::size_t r = q; r < std::min(val_set.cases.size(), q + bs); ++r) {
            cs.push_back(&val_set.cases[r]);
            ss.push_back(store.get(val_set.cases[r]));
          }
          Batch batch = make_batch(net, cs, ss);
          auto out = net->forward(batch.x);
          std::map<std::string, double> per;
          // validation loss = the unweighted mean of the heads' losses (comparable across modes)
          torch::Tensor l = net->loss(out, batch.targets, &per);
          (void)l;
          double s = 0;
          for (auto& [k, v] : per) {
            s += v;
            vh[k] += v * batch.size;
            vhn[k] += batch.size;
          }
          vs += (per.empty() ? 0 : s / per.size()) * batch.size;
          vn += batch.size;
        }
        val = vs / std::max<int64_t>(1, vn);
        for (auto& [k, v] : vh) val_heads[k] = v / vhn[k];
      }
      json train_heads = json::object();
      for (auto& [k, v] : head_sum) train_heads[k] = v / head_n[k];
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const int global_epoch = epoch + (si == 1 ? o.epochs : 0);
      json rec{{"stage", st.name},
               {"epoch", epoch + 1},
               {"global_epoch", global_epoch + 1},
               {"train_loss", loss_sum / std::max<int64_t>(1, loss_n)},
               {"train_heads", train_heads},
               {"val_loss", std::isfinite(val) ? json(val) : json(nullptr)},
               {"val_heads", val_heads},
               {"lr", lr_at(st.lr, std::max<int64_t>(0, opt.step - 1), warmup, total_steps)},
               {"seconds", secs}};
      history.push_back(rec);
      // best epoch (by validation loss; the last epoch without validation)
      const bool improved = val_set.cases.empty() || val < best_val;
      if (improved) {
        best_val = std::isfinite(val) ? val : best_val;
        best_epoch = global_epoch + 1;
        bad_epochs = 0;
        best_state.clear();
        for (auto& [name, t] : named_state(net)) best_state.emplace_back(name, t.detach().clone());
      } else {
        ++bad_epochs;
      }
      const bool early = bad_epochs >= o.patience;
      const bool last = epoch + 1 == st.epochs;
      // a stage ends at its last epoch or by early stopping; a checkpoint written then resumes
      // at the start of the next stage (or returns the best weights)
      const bool stage_done = last || early;
      if (early)
        stop_reason = "early stopping after " + std::to_string(o.patience) + " epochs without a better validation loss";
      if (!o.checkpoint.empty() && rank == 0) {
        json h{{"options", options_json(o)},
               {"config", config_in.to_json()},
               {"stage", stage_done ? si + 1 : si},
               {"next_epoch", stage_done ? 0 : epoch + 1},
               {"step", stage_done ? 0 : opt.step},
               {"best_val", std::isfinite(best_val) ? json(best_val) : json(nullptr)},
               {"best_epoch", best_epoch},
               {"bad_epochs", bad_epochs},
               {"history", history},
               {"stop", stop_reason}};
        detail::NamedTensors ts;
        for (auto& [name, t] : named_state(net)) ts.emplace_back("w." + name, t);
        for (auto& [name, t] : best_state) ts.emplace_back("best." + name, t);
        if (!stage_done)
          for (auto& x : opt.state()) ts.push_back(x);
        const std::string bytes = detail::write_bundle(kCheckpointMagic, kCheckpointVersion, h, ts);
        io::AtomicFile f(o.checkpoint);
        f.write(bytes.data(), bytes.size());
        f.commit();
      }
      if (o.on_epoch) o.on_epoch(rec);
      if (early) {
        scope.advance(static_cast<std::int64_t>(st.epochs - epoch - 1) * static_cast<std::int64_t>(batches), "early stop");
        break;
      }
    }
    start_epoch = 0;
    resume_step = 0;
    resume_tensors.clear();
  }
  for (auto& p : net->parameters()) p.set_requires_grad(true);
  if (!best_state.empty()) load_state(net, best_state);
  net->eval();
  model.impl()->weights_changed();
  TrainResult r{model, json::object()};
  r.summary = json{{"options", options_json(o)},
                   {"n_train", train_set.cases.size()},
                   {"n_validation", val_set.cases.size()},
                   {"history", history},
                   {"best_epoch", best_epoch},
                   {"best_val_loss", std::isfinite(best_val) ? json(best_val) : json(nullptr)},
                   {"stop", stop_reason},
                   {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count()}};
  json meta = model.metadata();
  meta["training"] = r.summary;
  model.set_metadata(meta);
  r.model = model;
  return r;
}

// ---- evaluation ----------------------------------------------------------------------------

Evaluation evaluate(const Model& model, const Manifest& manifest, ProgressReporter* progress) {
  if (manifest.cases.empty()) throw InvalidArgument("evaluate: no cases");
  const ModelConfig cfg = model.config();
  Evaluation ev;
  std::map<std::string, std::vector<double>> truth, pred;
  std::map<std::string, std::vector<double>> seg_dice;
  std::vector<double> abc_truth, abc_est;
  std::string volume_head;
  for (const auto& h : cfg.heads)
    if (h.type == "regression" && volume_head.empty()) volume_head = h.name;
  ProgressScope scope(progress, "evaluate", static_cast<std::int64_t>(manifest.cases.size()));
  for (const Case& c : manifest.cases) {
    const Volume<float> scan = io::read(c.image);
    const Prediction p = model.predict(scan);
    json row{{"id", c.id}};
    Volume<std::uint8_t> true_mask;
    if (!c.mask.empty()) true_mask = io::read(c.mask).cast<std::uint8_t>();
    for (const HeadPrediction& hp : p.heads) {
      const HeadConfig& hc = cfg.heads[cfg.head_index(hp.name)];
      auto it = c.labels.find(hc.target);
      const double y = it == c.labels.end() ? std::nan("") : it->second;
      if (hp.type == "segmentation") {
        row[hp.name + "_ml"] = hp.value;
        row[hp.name + "_abc2_ml"] = hp.abc2_ml;
        if (!true_mask.empty()) {
          if (true_mask.shape() != hp.mask.shape()) throw InvalidArgument("case '" + c.id + "': mask and scan grids differ");
          const double d = metrics::dice(true_mask.data(), hp.mask.data(), hp.mask.size());
          row[hp.name + "_dice"] = d;
          seg_dice[hp.name].push_back(d);
        }
        continue;
      }
      if (!hp.probabilities.empty()) {
        for (std::size_t k = 0; k < hp.probabilities.size(); ++k) row[hp.name + "_p_" + hp.classes[k]] = hp.probabilities[k];
        row[hp.name + "_class"] = hp.value;
        if (std::isfinite(y) && hp.probabilities.size() == 2) {
          truth[hp.name].push_back(y);
          pred[hp.name].push_back(hp.probabilities[1]);
        }
      } else {
        row[hp.name] = hp.value;
        if (std::isfinite(y)) {
          truth[hp.name].push_back(y);
          pred[hp.name].push_back(hp.value);
        }
      }
      if (std::isfinite(y)) row[hc.target] = y;
    }
    if (!true_mask.empty() && !volume_head.empty()) {
      const HeadConfig& vh = cfg.heads[cfg.head_index(volume_head)];
      auto it = c.labels.find(vh.target);
      if (it != c.labels.end() && std::isfinite(it->second)) {
        const Eigen::Vector3d sp = true_mask.spacing();
        std::size_t count = 0;
        for (std::size_t x = 0; x < true_mask.size(); ++x) count += true_mask.data()[x] != 0;
        const double a = count == 0 ? 0.0
                                    : metrics::abc2_ml(true_mask.data(), true_mask.ni(), true_mask.nj(), true_mask.nk(), sp[0], sp[1], sp[2]);
        row["abc2_true_mask_ml"] = a;
        abc_truth.push_back(it->second);
        abc_est.push_back(a);
      }
    }
    ev.rows.push_back(row);
    scope.advance(1, c.id);
  }
  auto reg_json = [](const metrics::RegressionReport& r) {
    auto num = [](double v) { return std::isfinite(v) ? json(v) : json(nullptr); };
    return json{{"n", r.n},
                {"mae", r.mae},
                {"rmse", r.rmse},
                {"r2", r.r2},
                {"pearson_r", num(r.pearson_r)},
                {"icc2_1", num(r.icc2_1)},
                {"icc3_1", num(r.icc3_1)},
                {"bland_altman", {{"bias", r.bland_altman.bias}, {"lower", r.bland_altman.lower}, {"upper", r.bland_altman.upper}}}};
  };
  for (const auto& h : cfg.heads) {
    auto t = truth.find(h.name);
    if (h.type == "segmentation") {
      auto d = seg_dice.find(h.name);
      if (d != seg_dice.end() && !d->second.empty())
        ev.metrics[h.name] = {{"n", d->second.size()},
                              {"dice_mean", std::accumulate(d->second.begin(), d->second.end(), 0.0) / d->second.size()}};
      continue;
    }
    if (t == truth.end() || t->second.size() < 2) continue;
    if (h.type == "regression") {
      ev.metrics[h.name] = reg_json(metrics::regression_report(t->second, pred[h.name]));
    } else {
      std::vector<int> labels(t->second.begin(), t->second.end());
      const bool both = std::count(labels.begin(), labels.end(), 1) > 0 && std::count(labels.begin(), labels.end(), 0) > 0;
      if (!both || *std::max_element(labels.begin(), labels.end()) > 1) continue;
      const metrics::ClassificationReport r = metrics::classification_report(labels, pred[h.name], 0.5, 2000, 0);
      ev.metrics[h.name] = {{"n", r.n},          {"auc", r.auc},
                            {"auc_ci", {r.auc_ci.lower, r.auc_ci.upper}},
                            {"accuracy", r.accuracy}, {"sensitivity", r.sensitivity}, {"specificity", r.specificity},
                            {"f1", r.f1},        {"brier", r.brier},             {"ece", r.ece}};
    }
  }
  if (abc_truth.size() >= 2) ev.metrics["abc2_true_mask"] = reg_json(metrics::regression_report(abc_truth, abc_est));
  return ev;
}

}  // namespace ichkit::model
