/// \file model.cpp
/// Model: construction, the model file, prediction.
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <fstream>
#include <optional>
#include <condition_variable>
#include <sstream>
#include <thread>

#include <torch/cuda.h>
#include <torch/version.h>

#include "ichkit/core/error.h"
#include "ichkit/core/runtime.h"
#include "ichkit/core/version.h"
#include "ichkit/io/atomic_file.h"
#include "ichkit/io/read.h"
#include "ichkit/model/detail/impl.h"
#include "ichkit/model/metrics.h"
#include "bundle.h"

namespace ichkit::model {
namespace {
using json = nlohmann::json;

constexpr char kMagic[9] = "ICHKITMF";
constexpr char kEnd[9] = "ICHKEND\n";
constexpr std::size_t kAlign = 64;

/// Deterministic initialisation from a seed without touching LibTorch's global generator:
/// convolutions Kaiming-normal (fan-out, ReLU), linear layers uniform +-1/sqrt(fan_in),
/// biases 0, norm scales 1.
void initialise(MultiTaskNet& net, std::uint64_t seed) {
  torch::NoGradGuard no_grad;
  at::Generator gen = at::detail::createCPUGenerator(seed);
  for (auto& p : net->named_parameters(true)) {
    const std::string& name = p.key();
    torch::Tensor t = p.value();
    const bool is_bias = name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    const bool is_norm = name.find(".bn") != std::string::npos || name.find("downsample.1") != std::string::npos ||
                         name.find("stem.1") != std::string::npos || name.find(".norm.") != std::string::npos;
    if (name == "log_vars" || name.find("thresholds") != std::string::npos) continue;
    if (is_norm) {
      if (is_bias) t.zero_(); else t.fill_(1.0);
    } else if (is_bias) {
      t.zero_();
    } else if (t.dim() == 5) {
      const double fan_out = static_cast<double>(t.size(0) * t.size(2) * t.size(3) * t.size(4));
      t.normal_(0.0, std::sqrt(2.0 / fan_out), gen);
    } else if (t.dim() == 2) {
      const double bound = 1.0 / std::sqrt(static_cast<double>(t.size(1)));
      t.uniform_(-bound, bound, gen);
    }
  }
}

std::string now_iso() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

template <class T>
void put(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // little-endian hosts only (checked at load on big-endian too)
  out.append(b, sizeof(T));
}

template <class T>
T take(const std::string& s, std::size_t& pos, const char* what) {
  if (s.size() - pos < sizeof(T)) throw FormatError(std::string("model file: truncated (in the ") + what + ")");
  T v;
  std::memcpy(&v, s.data() + pos, sizeof(T));
  pos += sizeof(T);
  return v;
}

std::uint32_t crc(const char* p, std::size_t n) {
  uLong c = crc32(0L, Z_NULL, 0);
  while (n > 0) {
    const uInt chunk = static_cast<uInt>(std::min<std::size_t>(n, 1u << 30));
    c = crc32(c, reinterpret_cast<const Bytef*>(p), chunk);
    p += chunk;
    n -= chunk;
  }
  return static_cast<std::uint32_t>(c);
}

}  // namespace

torch::Tensor channels_tensor(const preprocess::Channels& c) {
  std::shared_ptr<float> keep = c.data;
  const auto n = static_cast<int64_t>(c.count);
  return torch::from_blob(keep.get(),
                          {n, static_cast<int64_t>(c.shape[2]), static_cast<int64_t>(c.shape[1]), static_cast<int64_t>(c.shape[0])},
                          [keep](void*) mutable { keep.reset(); }, torch::TensorOptions().dtype(torch::kFloat32));
}

const HeadPrediction& Prediction::operator[](const std::string& name) const {
  std::string known;
  for (const HeadPrediction& h : heads) {
    if (h.name == name) return h;
    known += (known.empty() ? "" : ", ") + h.name;
  }
  throw InvalidArgument("no head called '" + name + "' in this prediction (heads: " + known + ")");
}

// ---- construction ------------------------------------------------------------------------

Model::Model(const ModelConfig& config, std::uint64_t seed) : impl_(std::make_shared<Impl>()) {
  init_runtime();
  impl_->net = MultiTaskNet(config);
  initialise(impl_->net, seed);
  impl_->net->eval();
  impl_->pipeline = config.pipeline.is_null() ? preprocess::Pipeline::default_head_ct()
                                              : preprocess::Pipeline::from_json(config.pipeline.dump());
  impl_->metadata = json{{"ichkit_version", version()}, {"torch_version", runtime_info().torch_version},
                         {"created", now_iso()}, {"seed", seed}};
}

ModelConfig Model::config() const {
  ModelConfig c = impl_->net->current_config();
  c.pipeline = json::parse(impl_->pipeline.to_json());
  return c;
}

preprocess::Pipeline Model::pipeline() const { return impl_->pipeline; }
const json& Model::metadata() const { return impl_->metadata; }
void Model::set_metadata(const json& m) {
  if (!m.is_object()) throw InvalidArgument("model metadata must be a JSON object");
  impl_->metadata = m;
}

std::int64_t Model::parameter_count() const {
  std::int64_t n = 0;
  for (const auto& p : impl_->net->parameters()) n += p.numel();
  return n;
}

std::vector<NamedArray> Model::state() const {
  std::vector<NamedArray> out;
  for (auto& [name, t0] : named_state(impl_->net)) {
    torch::Tensor t = t0.detach().contiguous().cpu();
    NamedArray a;
    a.name = name;
    a.shape = t.sizes().vec();
    if (t.scalar_type() == torch::kFloat32) {
      a.dtype = "float32";
      a.f32.assign(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
    } else if (t.scalar_type() == torch::kInt64) {
      a.dtype = "int64";
      a.i64.assign(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
    } else {
      throw InvalidArgument("model state: tensor '" + name + "' has an unsupported type");
    }
    out.push_back(std::move(a));
  }
  return out;
}

void Model::set_state(const std::vector<NamedArray>& state) {
  std::vector<std::pair<std::string, torch::Tensor>> ts;
  for (const NamedArray& a : state) {
    int64_t n = 1;
    for (int64_t d : a.shape) {
      if (d < 0) throw FormatError("model weights: tensor '" + a.name + "' has a negative dimension");
      n *= d;
    }
    if (a.dtype == "float32") {
      if (static_cast<int64_t>(a.f32.size()) != n) throw FormatError("model weights: tensor '" + a.name + "' has the wrong number of values");
      ts.emplace_back(a.name, torch::from_blob(const_cast<float*>(a.f32.data()), a.shape, torch::kFloat32).clone());
    } else if (a.dtype == "int64") {
      if (static_cast<int64_t>(a.i64.size()) != n) throw FormatError("model weights: tensor '" + a.name + "' has the wrong number of values");
      ts.emplace_back(a.name, torch::from_blob(const_cast<int64_t*>(a.i64.data()), a.shape, torch::kInt64).clone());
    } else {
      throw FormatError("model weights: tensor '" + a.name + "' has unknown dtype '" + a.dtype + "'");
    }
  }
  load_state(impl_->net, ts);
  impl_->weights_changed();
}

// ---- container (model files and checkpoints) ------------------------------------------

namespace detail {

std::string write_bundle(const char (&magic)[9], std::uint32_t ver, json header, const NamedTensors& named) {
  json tensors = json::array();
  std::string data;
  for (const auto& [name, t0] : named) {
    torch::Tensor t = t0.detach().contiguous().cpu();
    std::string dtype;
    if (t.scalar_type() == torch::kFloat32) dtype = "float32";
    else if (t.scalar_type() == torch::kInt64) dtype = "int64";
    else throw InvalidArgument("tensor '" + name + "' has an unsupported type (float32 and int64 only)");
    data.resize((data.size() + kAlign - 1) / kAlign * kAlign, '\0');
    const std::size_t bytes = static_cast<std::size_t>(t.numel()) * t.element_size();
    tensors.push_back({{"name", name}, {"dtype", dtype}, {"shape", t.sizes().vec()}, {"offset", data.size()}, {"bytes", bytes}});
    data.append(static_cast<const char*>(t.data_ptr()), bytes);
  }
  header["tensors"] = std::move(tensors);
  const std::string h = header.dump();
  std::string out;
  out.reserve(64 + h.size() + data.size());
  out.append(magic, 8);
  put<std::uint32_t>(out, ver);
  put<std::uint32_t>(out, 0);
  put<std::uint64_t>(out, h.size());
  out += h;
  put<std::uint64_t>(out, data.size());
  out += data;
  put<std::uint32_t>(out, crc(out.data(), out.size()));
  out.append(kEnd, 8);
  return out;
}

Bundle read_bundle(const std::string& s, const char (&magic)[9], std::uint32_t want, const std::string& what) {
  if (s.size() < 8 || std::memcmp(s.data(), magic, 8) != 0) throw FormatError("not an ichkit " + what + " (bad magic)");
  std::size_t pos = 8;
  const auto ver = take<std::uint32_t>(s, pos, "version");
  if (ver != want)
    throw FormatError(what + " format version " + std::to_string(ver) + " is not supported (this ichkit reads version " +
                      std::to_string(want) + "); upgrade ichkit or re-export the file");
  (void)take<std::uint32_t>(s, pos, "header");
  const auto hlen = take<std::uint64_t>(s, pos, "header length");
  if (hlen > s.size() - pos) throw FormatError(what + ": truncated (header of " + std::to_string(hlen) + " bytes)");
  const std::string htext = s.substr(pos, hlen);
  pos += hlen;
  const auto dlen = take<std::uint64_t>(s, pos, "data length");
  if (dlen > s.size() - pos) throw FormatError(what + ": truncated (data of " + std::to_string(dlen) + " bytes)");
  const std::size_t data_pos = pos;
  pos += dlen;
  const std::size_t crc_pos = pos;
  const auto stored = take<std::uint32_t>(s, pos, "checksum");
  if (s.size() - pos < 8 || std::memcmp(s.data() + pos, kEnd, 8) != 0) throw FormatError(what + ": truncated (no end marker)");
  if (s.size() - pos != 8) throw FormatError(what + ": " + std::to_string(s.size() - pos - 8) + " unexpected bytes after the end marker");
  if (crc(s.data(), crc_pos) != stored) throw FormatError(what + ": checksum mismatch (the file is corrupt)");

  Bundle b;
  try {
    b.header = json::parse(htext);
  } catch (const json::exception& e) {
    throw FormatError(what + ": header is not valid JSON: " + e.what());
  }
  if (!b.header.is_object() || !b.header.contains("tensors") || !b.header.at("tensors").is_array())
    throw FormatError(what + ": header lacks the tensor list");
  for (const json& t : b.header.at("tensors")) {
    std::string name, dtype;
    std::vector<int64_t> shape;
    std::uint64_t offset = 0, bytes = 0;
    try {
      name = t.at("name").get<std::string>();
      dtype = t.at("dtype").get<std::string>();
      shape = t.at("shape").get<std::vector<int64_t>>();
      offset = t.at("offset").get<std::uint64_t>();
      bytes = t.at("bytes").get<std::uint64_t>();
    } catch (const json::exception& e) {
      throw FormatError(what + ": malformed tensor entry: " + e.what());
    }
    const std::size_t esize = dtype == "float32" ? 4 : dtype == "int64" ? 8 : 0;
    if (esize == 0) throw FormatError(what + ": tensor '" + name + "' has unknown dtype '" + dtype + "'");
    std::uint64_t n = 1;
    for (int64_t d : shape) {
      if (d < 0 || d > (int64_t(1) << 40) || (d > 0 && n > (std::uint64_t(1) << 40) / static_cast<std::uint64_t>(d)))
        throw FormatError(what + ": tensor '" + name + "' has an impossible shape");
      n *= static_cast<std::uint64_t>(d);
    }
    if (n * esize != bytes) throw FormatError(what + ": tensor '" + name + "' size does not match its shape");
    if (offset > dlen || bytes > dlen - offset) throw FormatError(what + ": tensor '" + name + "' lies outside the data");
    torch::Tensor v = torch::empty(shape, esize == 4 ? torch::kFloat32 : torch::kInt64);
    std::memcpy(v.data_ptr(), s.data() + data_pos + offset, bytes);
    if (esize == 4 && !torch::isfinite(v).all().item<bool>())
      throw FormatError(what + ": tensor '" + name + "' holds NaN or infinite values");
    b.tensors.emplace_back(name, v);
  }
  return b;
}

std::string read_file(const std::string& path, std::uint64_t max_bytes, const std::string& what) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw IoError("cannot open " + what + " '" + path + "'");
  f.seekg(0, std::ios::end);
  const std::streamoff size = f.tellg();
  if (size < 0) throw IoError("cannot read " + what + " '" + path + "'");
  if (static_cast<std::uint64_t>(size) > max_bytes)
    throw ResourceError(what + " '" + path + "' has " + std::to_string(size) + " bytes, over the limit of " + std::to_string(max_bytes));
  f.seekg(0);
  std::string bytes(static_cast<std::size_t>(size), '\0');
  if (!f.read(bytes.data(), size)) throw IoError("cannot read " + what + " '" + path + "'");
  return bytes;
}

}  // namespace detail

// ---- model file --------------------------------------------------------------------------

std::string Model::to_bytes() const {
  json meta = impl_->metadata;
  meta["saved"] = now_iso();
  meta["ichkit_version_saved"] = version();
  return detail::write_bundle(kMagic, kModelFormatVersion, json{{"config", config().to_json()}, {"metadata", meta}},
                              named_state(impl_->net));
}

void Model::save(const std::string& path) const {
  const std::string bytes = to_bytes();
  io::AtomicFile f(path);
  f.write(bytes.data(), bytes.size());
  f.commit();
}

Model Model::from_bytes(const std::string& s, const LoadOptions& options) {
  if (s.size() > options.max_bytes)
    throw ResourceError("model file: " + std::to_string(s.size()) + " bytes is over the limit of " + std::to_string(options.max_bytes));
  detail::Bundle b = detail::read_bundle(s, kMagic, kModelFormatVersion, "model file");
  if (!b.header.contains("config")) throw FormatError("model file: header lacks the model config");
  ModelConfig cfg = ModelConfig::from_json(b.header.at("config"));
  // The network is built from the config before its weights are copied in; a config that
  // describes far more weights than the file holds is refused first, so a small hostile file
  // cannot make the constructor allocate gigabytes. (The slack leaves ordinary mismatches, such
  // as one missing weight, to load_state's precise message.)
  std::uint64_t held = 0;
  for (const auto& [name, t] : b.tensors) held += static_cast<std::uint64_t>(t.numel());
  if (cfg.encoder.conv_weight_count() > 2 * held + (std::uint64_t(1) << 20))
    throw FormatError("model file: its config describes an encoder of " + std::to_string(cfg.encoder.conv_weight_count()) +
                      " convolution weights, but the file holds only " + std::to_string(held) + " values");
  Model m;
  m.impl_ = std::make_shared<Impl>();
  init_runtime();
  try {
    m.impl_->net = MultiTaskNet(cfg);
  } catch (const InvalidArgument& e) {
    throw FormatError(std::string("model file: cannot build its network: ") + e.what());
  }
  m.impl_->pipeline = cfg.pipeline.is_null() ? preprocess::Pipeline::default_head_ct()
                                             : preprocess::Pipeline::from_json(cfg.pipeline.dump());
  if (b.header.contains("metadata") && b.header.at("metadata").is_object()) m.impl_->metadata = b.header.at("metadata");
  load_state(m.impl_->net, b.tensors);
  m.impl_->net->eval();
  return m;
}

Model Model::load(const std::string& path, const LoadOptions& options) {
  const std::string bytes = detail::read_file(path, options.max_bytes, "model file");
  try {
    return from_bytes(bytes, options);
  } catch (const FormatError& e) {
    throw FormatError("'" + path + "': " + e.what());
  }
}

// ---- prediction --------------------------------------------------------------------------

std::pair<torch::Tensor, preprocess::PipelineResult> Model::Impl::prepare(const Volume<float>& scan, const ValueStats* stats) const {
  // NaN, no head, not HU, one image or a thin slab: a clear error rather than a number
  preprocess::check_coverage(scan);
  if (stats) preprocess::check_hu(scan, *stats);
  else preprocess::check_hu(scan);
  preprocess::PipelineResult pr = pipeline.run(scan);
  torch::Tensor x = channels_tensor(pr.input);
  const int64_t want = net->config().encoder.in_channels;
  if (x.size(0) != want)
    throw InvalidArgument("the pipeline makes " + std::to_string(x.size(0)) + " channel(s), the network expects " + std::to_string(want));
  return {x.unsqueeze(0), std::move(pr)};
}

std::pair<torch::Tensor, preprocess::PipelineResult> Model::Impl::prepare_file(const std::string& path,
                                                                               const io::ReadOptions& options) const {
  ValueStats stats;
  const Volume<float> scan = io::read(path, options, stats);
  return prepare(scan, &stats);
}

Prediction Model::Impl::decode(const MultiTaskNetImpl::Output& out, std::int64_t row, const preprocess::PipelineResult& pr) const {
  Prediction p;
  for (const auto& h : net->heads()) {
    const HeadConfig& hc = h->config();
    HeadPrediction hp;
    hp.name = hc.name;
    hp.type = hc.type;
    torch::Tensor u = h->to_user(out.heads.at(hc.name).narrow(0, row, 1)).squeeze(0).contiguous().to(torch::kFloat64);
    const std::string kind = h->label_kind();
    if (kind == "scalar") {
      hp.value = u.dim() == 0 ? u.item<double>() : u.flatten()[0].item<double>();
    } else if (kind == "class") {
      hp.classes = h->classes();
      hp.probabilities.assign(u.data_ptr<double>(), u.data_ptr<double>() + u.numel());
      hp.value = static_cast<double>(std::max_element(hp.probabilities.begin(), hp.probabilities.end()) - hp.probabilities.begin());
    } else if (kind == "mask") {
      // (D, H, W) = (nk, nj, ni) on the network grid -> a Volume there -> the scan grid
      torch::Tensor f = u.to(torch::kFloat32).contiguous();
      Volume<float> net_grid = Volume<float>::uninitialized(pr.volume.shape(), pr.volume.geometry());
      if (static_cast<std::size_t>(f.numel()) != net_grid.size())
        throw InvalidArgument("head '" + hc.name + "': output does not match the network grid");
      std::memcpy(net_grid.data(), f.data_ptr<float>(), net_grid.size() * sizeof(float));
      hp.probability = pr.to_scan(net_grid, preprocess::Interp::Linear, 0.0);
      hp.mask = Volume<std::uint8_t>::uninitialized(hp.probability.shape(), hp.probability.geometry());
      std::size_t count = 0;
      for (std::size_t x = 0; x < hp.mask.size(); ++x) {
        hp.mask.data()[x] = hp.probability.data()[x] >= 0.5f ? 1 : 0;
        count += hp.mask.data()[x];
      }
      hp.value = static_cast<double>(count) *
                 std::abs(hp.mask.geometry().affine().topLeftCorner<3, 3>().determinant()) / 1000.0;
      const Eigen::Vector3d sp = hp.mask.spacing();
      hp.abc2_ml = count == 0 ? 0.0
                              : metrics::abc2_ml(hp.mask.data(), hp.mask.ni(), hp.mask.nj(), hp.mask.nk(), sp[0], sp[1], sp[2]);
    } else {
      throw InvalidArgument("head '" + hc.name + "': unknown label kind '" + kind + "'");
    }
    p.heads.push_back(std::move(hp));
  }
  return p;
}

std::shared_ptr<const FastEncoder> Model::Impl::fast_encoder() const {
  MultiTaskNet n = net;  // a handle on the same module (this is const)
  if (!device.is_cpu() || !fast_inference || !FastEncoder::supported(n->config().encoder)) return nullptr;
  std::lock_guard<std::mutex> lock(fast_mutex_);
  if (!fast_) fast_ = std::make_shared<FastEncoder>(n->encoder());
  return fast_;
}

void Model::Impl::weights_changed() {
  {
    std::lock_guard<std::mutex> lock(fast_mutex_);
    fast_.reset();
    device_net_[0] = device_net_[1] = MultiTaskNet(nullptr);
  }
  std::lock_guard<std::mutex> lock(layout_mutex_);  // not inside fast_mutex_: channels_last() takes them the other way round
  layout_.clear();
}

MultiTaskNet Model::Impl::run_net(bool channels_last) const {
  if (device.is_cpu() && dtype == torch::kFloat32) return net;
  std::lock_guard<std::mutex> lock(fast_mutex_);
  MultiTaskNet& slot = device_net_[channels_last ? 1 : 0];
  if (!slot) {
    // the copy may be made inside an inference-mode call (predict); its weights must still be
    // ordinary tensors, since explain() runs autograd through them
    c10::InferenceMode not_inference(false);
    MultiTaskNet master = net;  // a handle (this is const)
    MultiTaskNet copy(master->config());
    load_state(copy, named_state(master));
    copy->to(device, dtype);
    copy->eval();
    if (channels_last) {
      torch::NoGradGuard ng;
      for (auto& p : copy->named_parameters(true))
        if (p.value().dim() == 5) p.value().set_data(p.value().contiguous(at::MemoryFormat::ChannelsLast3d));
    }
    slot = copy;
  }
  return slot;
}

torch::Tensor Model::Impl::to_device(const torch::Tensor& x, bool channels_last) const {
  if (device.is_cpu()) return x;  // set_device allows only float32 there
  // pinned staging buffer -> asynchronous host-to-device copy; the kernels that follow are
  // queued on the same stream, so no explicit synchronisation is needed
  torch::Tensor pinned = x.is_pinned() ? x : x.contiguous().pin_memory();
  torch::Tensor d = pinned.to(device, dtype, /*non_blocking=*/true);
  return channels_last ? d.contiguous(at::MemoryFormat::ChannelsLast3d) : d;
}

bool Model::Impl::channels_last(const torch::Tensor& x) const {
  if (!device.is_cuda()) return false;
  if (cuda_layout != CudaLayout::Auto) return cuda_layout == CudaLayout::ChannelsLast;
  std::lock_guard<std::mutex> lock(layout_mutex_);
  const std::vector<int64_t> shape = x.sizes().vec();
  if (auto it = layout_.find(shape); it != layout_.end()) return it->second;
  // Time a forward of this batch in both layouts: one untimed run each (cuDNN's own algorithm
  // search for the shape, allocations), then the best of three. A few forwards, once per shape.
  c10::InferenceMode guard;
  double best[2] = {0, 0};
  for (int cl = 0; cl < 2; ++cl) {
    MultiTaskNet n = run_net(cl == 1);
    const torch::Tensor xd = to_device(x, cl == 1);
    n->forward(xd);
    torch::cuda::synchronize();
    best[cl] = 1e300;
    for (int r = 0; r < 3; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      n->forward(xd);
      torch::cuda::synchronize();
      best[cl] = std::min(best[cl], std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
  }
  const bool cl = best[1] < best[0];
  layout_.emplace(shape, cl);
  return cl;
}

void Model::Impl::outputs_to_host(MultiTaskNetImpl::Output& out) {
  for (auto& [name, t] : out.heads)
    if (!t.device().is_cpu() || t.scalar_type() != torch::kFloat32) t = t.to(torch::kCPU, torch::kFloat32);
}

MultiTaskNetImpl::Output Model::Impl::infer(const torch::Tensor& x) const {
  c10::InferenceMode guard;
  if (auto fast = fast_encoder()) {
    MultiTaskNet n = net;
    bool all = false;
    for (const auto& h : n->heads()) all = all || h->reads_all_stages();
    return n->forward_heads(fast->forward(x, all), x);
  }
  const bool cl = channels_last(x);
  MultiTaskNet n = run_net(cl);
  MultiTaskNetImpl::Output out = n->forward(to_device(x, cl));
  outputs_to_host(out);
  return out;
}

void Model::set_device(const std::string& device, const std::string& precision) {
  torch::ScalarType dt;
  if (precision == "float32") dt = torch::kFloat32;
  else if (precision == "bfloat16") dt = torch::kBFloat16;
  else if (precision == "float16") dt = torch::kFloat16;
  else throw InvalidArgument("set_device: precision must be float32, bfloat16 or float16, not '" + precision + "'");
  torch::Device d(torch::kCPU);
  try {
    d = torch::Device(device);
  } catch (const c10::Error&) {
    throw InvalidArgument("set_device: '" + device + "' is not a device (cpu, cuda, cuda:N)");
  }
  if (!d.is_cpu() && !d.is_cuda()) throw InvalidArgument("set_device: only cpu and cuda are supported, not '" + device + "'");
  if (d.is_cuda()) {
    if (!torch::cuda::is_available())
      throw InvalidArgument("set_device: '" + device + "' asked for, but this LibTorch (" + std::string(TORCH_VERSION) +
                            ") has no CUDA device available");
    if (d.has_index() && d.index() >= static_cast<int>(torch::cuda::device_count()))
      throw InvalidArgument("set_device: '" + device + "' asked for, but only " + std::to_string(torch::cuda::device_count()) +
                            " CUDA device(s) are visible");
  }
  if (d.is_cpu() && dt != torch::kFloat32)
    throw InvalidArgument("set_device: reduced precision (" + precision + ") is for CUDA; the CPU runs float32");
  impl_->weights_changed();
  impl_->device = d;
  impl_->dtype = dt;
  // the network's input shape is fixed by the pipeline: the case cuDNN's algorithm search is
  // for (process-wide, as torch.backends.cudnn.benchmark)
  if (d.is_cuda()) at::globalContext().setBenchmarkCuDNN(true);
}

std::string Model::device() const { return impl_->device.str(); }

std::string Model::precision() const {
  switch (impl_->dtype) {
    case torch::kBFloat16: return "bfloat16";
    case torch::kFloat16: return "float16";
    default: return "float32";
  }
}

Prediction Model::predict(const Volume<float>& scan) const { return predict(std::vector<Volume<float>>{scan}, 1).at(0); }

torch::Tensor Model::Impl::stack(const std::vector<torch::Tensor>& xs) const {
  if (xs.size() == 1) return xs[0];
  // one batch buffer (pinned when it goes to a GPU: the copy is then asynchronous)
  std::vector<int64_t> shape = xs[0].sizes().vec();
  shape[0] = static_cast<int64_t>(xs.size());
  torch::Tensor x = torch::empty(shape, torch::TensorOptions().dtype(torch::kFloat32).pinned_memory(device.is_cuda()));
  // memcpy per scan on ichkit's threads, which follow the caller's ThreadCap: predict_files'
  // feeder on a GPU copies on its own core, beside the readers (LibTorch's copy_ would wake its
  // whole OpenMP team there); elsewhere the scans are copied side by side
  const std::size_t bytes = static_cast<std::size_t>(xs[0].numel()) * sizeof(float);
  std::vector<torch::Tensor> src(xs.size());
  for (std::size_t r = 0; r < xs.size(); ++r) src[r] = xs[r].to(torch::kFloat32).contiguous();
  char* dst = static_cast<char*>(x.data_ptr());
  parallel_for(static_cast<std::int64_t>(xs.size()), [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t r = b; r < e; ++r) std::memcpy(dst + std::size_t(r) * bytes, src[std::size_t(r)].data_ptr(), bytes);
  });
  return x;
}

namespace {
/// Run `fn` on the batch `x`; a LibTorch error (e.g. a network input smaller than the encoder's
/// strides allow) becomes ichkit's InvalidArgument with the input shape and LibTorch's first line.
template <class Fn>
void with_network_errors(const torch::Tensor& x, Fn&& fn) {
  try {
    fn();
  } catch (const c10::Error& e) {
    const std::string what = e.what_without_backtrace();
    throw InvalidArgument("the network cannot run on this input (shape " + std::to_string(x.size(2)) + "x" +
                          std::to_string(x.size(3)) + "x" + std::to_string(x.size(4)) +
                          " (D, H, W) after the pipeline): " + what.substr(0, what.find('\n')));
  }
}

/// Prepared scans grouped, in order, into batches of one input shape and at most `size`
/// scans; `run(xs, prs, idx)` gets each batch (idx: the scans' positions in the caller's list).
template <class Run>
class Batcher {
public:
  Batcher(std::size_t size, Run run) : size_(size), run_(std::move(run)) {}
  void add(torch::Tensor x, preprocess::PipelineResult pr, std::size_t i) {
    if (!xs_.empty() && x.sizes() != xs_.front().sizes()) flush();
    xs_.push_back(std::move(x));
    prs_.push_back(std::move(pr));
    idx_.push_back(i);
    if (xs_.size() == size_) flush();  // a full batch runs at once, not when the next scan arrives
  }
  std::size_t pending() const { return xs_.size(); }
  void flush() {
    if (xs_.empty()) return;
    run_(xs_, prs_, idx_);
    xs_.clear();
    prs_.clear();
    idx_.clear();
  }

private:
  std::size_t size_;
  Run run_;
  std::vector<torch::Tensor> xs_;
  std::vector<preprocess::PipelineResult> prs_;
  std::vector<std::size_t> idx_;
};
}  // namespace

void Model::Impl::for_each_batch(const std::vector<Volume<float>>& scans, int batch_size, const BatchFn& run) const {
  if (batch_size < 1) throw InvalidArgument("batch_size must be >= 1");
  Batcher batches(static_cast<std::size_t>(batch_size), [&](const std::vector<torch::Tensor>& xs,
                                                            const std::vector<preprocess::PipelineResult>& prs,
                                                            const std::vector<std::size_t>& idx) {
    const torch::Tensor x = stack(xs);
    with_network_errors(x, [&] { run(x, prs, idx); });
  });
  for (std::size_t s = 0; s < scans.size(); ++s) {
    auto [x, pr] = prepare(scans[s]);
    batches.add(std::move(x), std::move(pr), s);
  }
  batches.flush();
}

std::vector<Prediction> Model::predict(const std::vector<Volume<float>>& scans, int batch_size) const {
  std::vector<Prediction> out(scans.size());
  impl_->for_each_batch(scans, batch_size, [&](const torch::Tensor& x, const std::vector<preprocess::PipelineResult>& prs,
                                               const std::vector<std::size_t>& idx) {
    MultiTaskNetImpl::Output o = impl_->infer(x);
    for (std::size_t r = 0; r < idx.size(); ++r) out[idx[r]] = impl_->decode(o, static_cast<int64_t>(r), prs[r]);
  });
  return out;
}

// ---- cohorts ------------------------------------------------------------------------------

std::vector<CohortItem> Model::predict_files(const std::vector<std::string>& paths, const CohortOptions& options) const {
  if (options.batch_size < 1) throw InvalidArgument("predict_files: batch_size must be >= 1");
  if (options.readers < 0 || options.reader_threads < 0 || options.ahead < 0)
    throw InvalidArgument("predict_files: readers, reader_threads and ahead must be >= 0");
  const std::size_t n = paths.size();
  std::vector<CohortItem> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i].path = paths[i];
  if (n == 0) return out;
  const std::size_t batch = static_cast<std::size_t>(options.batch_size);
  // the cores ichkit may use: set_num_threads's number, by default the process's share of the
  // machine (its affinity and cgroup quota, not every CPU the machine has)
  const auto hw = static_cast<unsigned>(num_threads());  // >= 1
  // On a GPU the cores only prepare scans: one reader per core but one, one kernel thread each,
  // beside the network. On the CPU (alternating) one reader per core, one thread each, while
  // the network is not running; overlapping there, one reader per 4 cores beside it.
  const bool gpu = !impl_->device.is_cpu();
  const bool alternate = options.schedule == CohortOptions::Schedule::Alternate ||
                         (options.schedule == CohortOptions::Schedule::Auto && !gpu);
  const int readers = options.readers > 0 ? options.readers
                      : alternate         ? static_cast<int>(std::clamp(hw, 1u, 32u))
                      : gpu               ? static_cast<int>(std::clamp(hw > 1 ? hw - 1 : 1u, 1u, 32u))
                                          : static_cast<int>(std::clamp(hw / 4, 1u, 4u));
  const int reader_threads = options.reader_threads > 0 ? options.reader_threads : gpu || alternate ? 1 : 0;
  const std::size_t ahead = options.ahead > 0 ? static_cast<std::size_t>(options.ahead)
                                              : std::max<std::size_t>(2 * batch, 2 * static_cast<std::size_t>(readers));

  struct Ready {
    torch::Tensor x;
    preprocess::PipelineResult pr;
    std::string error;
  };
  std::mutex m;
  std::condition_variable cv;
  std::map<std::size_t, Ready> ready;
  std::size_t next_claim = 0, consumed = 0;
  bool stop = false;
  // Alternating: no scan is started while the network runs, nor past the batch being filled
  // (a reader busy with the next batch's scan would keep the network waiting).
  bool network_running = false;
  int in_flight = 0;  // scans being prepared
  std::size_t claim_limit = batch;

  auto reader = [&] {
    ThreadCap cap(reader_threads);
    for (;;) {
      std::size_t i;
      {
        std::unique_lock<std::mutex> lock(m);
        cv.wait(lock, [&] {
          return stop || next_claim >= n ||
                 (alternate ? !network_running && next_claim < claim_limit : next_claim < consumed + ahead);
        });
        if (stop || next_claim >= n) return;
        i = next_claim++;
        ++in_flight;
      }
      Ready r;
      try {
        auto [x, pr] = impl_->prepare_file(paths[i], options.read);
        r.x = std::move(x);
        r.pr = std::move(pr);
      } catch (const std::exception& e) {
        r.error = e.what();
      }
      {
        std::lock_guard<std::mutex> lock(m);
        ready.emplace(i, std::move(r));
        --in_flight;
      }
      cv.notify_all();
    }
  };
  std::vector<std::thread> threads;
  struct Joiner {  // stop and join the readers however the consumer leaves
    std::mutex& m;
    std::condition_variable& cv;
    bool& stop;
    std::vector<std::thread>& threads;
    ~Joiner() {
      {
        std::lock_guard<std::mutex> lock(m);
        stop = true;
      }
      cv.notify_all();
      for (auto& t : threads) t.join();
    }
  } joiner{m, cv, stop, threads};
  for (int r = 0; r < readers; ++r) threads.emplace_back(reader);

  ProgressScope progress(options.progress, "predict", static_cast<std::int64_t>(n));
  // On a GPU this thread only feeds the device, beside a reader on every other core: its own
  // kernels (decoding a batch) run on this thread alone, unless a mask head's decoding (a
  // full-size resampling per scan) needs the threads more than the readers do.
  bool mask_heads = false;
  for (const auto& h : impl_->net->heads()) mask_heads = mask_heads || h->label_kind() == "mask";
  std::optional<ThreadCap> feeder_cap;
  if (gpu && !alternate && !mask_heads) feeder_cap.emplace(1);
  Batcher batches(batch, [&](const std::vector<torch::Tensor>& xs, const std::vector<preprocess::PipelineResult>& prs,
                             const std::vector<std::size_t>& idx) {
    try {
      const torch::Tensor x = impl_->stack(xs);
      if (alternate) {  // the network waits for the scans in preparation, then runs alone
        std::unique_lock<std::mutex> lock(m);
        network_running = true;
        cv.wait(lock, [&] { return in_flight == 0; });
      }
      MultiTaskNetImpl::Output o;
      with_network_errors(x, [&] { o = impl_->infer(x); });
      // the scans of a batch are decoded side by side: a mask head's map goes back to its
      // scan's grid, a full-size resampling per scan, which would otherwise hold up the network
      parallel_for(static_cast<std::int64_t>(idx.size()), [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t r = b; r < e; ++r) out[idx[r]].prediction = impl_->decode(o, r, prs[r]);
      });
      for (std::size_t i : idx) out[i].ok = true;
    } catch (const std::exception& e) {  // this batch fails; the others go on
      for (std::size_t i : idx) out[i].error = e.what();
    }
    progress.advance(static_cast<std::int64_t>(idx.size()), paths[idx.back()]);
    if (alternate) {  // the readers go on (anything else thrown above stops them: the Joiner)
      {
        std::lock_guard<std::mutex> lock(m);
        network_running = false;
      }
      cv.notify_all();
    }
  });
  for (std::size_t i = 0; i < n; ++i) {
    Ready r;
    {
      std::unique_lock<std::mutex> lock(m);
      cv.wait(lock, [&] { return ready.count(i) > 0; });
      r = std::move(ready.at(i));
      ready.erase(i);
      consumed = i + 1;
    }
    cv.notify_all();
    if (!r.error.empty()) {
      out[i].error = std::move(r.error);
      progress.advance(1, paths[i]);
    } else {
      batches.add(std::move(r.x), std::move(r.pr), i);
    }
    if (alternate) {  // the scans that fill the pending batch (a failed one is replaced)
      {
        std::lock_guard<std::mutex> lock(m);
        claim_limit = consumed + (batch - batches.pending());
      }
      cv.notify_all();
    }
  }
  batches.flush();
  return out;
}

}  // namespace ichkit::model
