/// \file config.cpp
/// ModelConfig <-> JSON, with validation that names the offending field.
#include "ichkit/model/config.h"

#include <algorithm>
#include <set>

#include "ichkit/core/error.h"
#include "ichkit/preprocess/pipeline.h"

namespace ichkit::model {

std::uint64_t EncoderConfig::conv_weight_count() const {
  const std::vector<int> blocks = depth == 10 ? std::vector<int>{1, 1, 1, 1}
                                  : depth == 34 ? std::vector<int>{3, 4, 6, 3}
                                                : std::vector<int>{2, 2, 2, 2};
  const std::vector<int> ch = stage_channels();
  auto u = [](int v) { return static_cast<std::uint64_t>(std::max(v, 0)); };
  std::uint64_t n = u(in_channels) * u(width) * u(stem_kernel[0]) * u(stem_kernel[1]) * u(stem_kernel[2]);
  std::uint64_t in = u(width);
  for (int s = 0; s < 4; ++s) {
    const std::uint64_t out = u(ch[s + 1]);
    for (int b = 0; b < blocks[s]; ++b) {
      const std::uint64_t cin = b == 0 ? in : out;
      n += cin * out * 27 + out * out * 27;
      if (b == 0 && (s > 0 || cin != out)) n += cin * out;  // 1x1x1 downsample
    }
    in = out;
  }
  return n;
}
namespace {
using json = nlohmann::json;

template <class T>
T get(const json& j, const char* key, const T& fallback, const std::string& where) {
  if (!j.contains(key) || j.at(key).is_null()) return fallback;
  try {
    return j.at(key).get<T>();
  } catch (const json::exception&) {
    throw FormatError("model config: '" + where + "." + key + "' has the wrong type: " + j.at(key).dump());
  }
}

void check_keys(const json& j, const std::set<std::string>& known, const std::string& where) {
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!known.count(it.key())) throw FormatError("model config: unknown field '" + where + "." + it.key() + "'");
}

}  // namespace

json ModelConfig::to_json() const {
  json enc{{"depth", encoder.depth},           {"width", encoder.width},
           {"in_channels", encoder.in_channels}, {"stem_stride", encoder.stem_stride},
           {"stem_kernel", encoder.stem_kernel}, {"stem_pool", encoder.stem_pool},
           {"norm", encoder.norm}};
  json hs = json::array();
  for (const HeadConfig& h : heads)
    hs.push_back({{"name", h.name}, {"type", h.type}, {"target", h.target}, {"weight", h.weight}, {"params", h.params}});
  return json{{"encoder", enc}, {"heads", hs}, {"weighting", weighting}, {"pipeline", pipeline}};
}

ModelConfig ModelConfig::from_json(const json& j) {
  if (!j.is_object()) throw FormatError("model config: expected a JSON object");
  check_keys(j, {"encoder", "heads", "weighting", "pipeline"}, "config");
  ModelConfig c;
  if (j.contains("encoder")) {
    const json& e = j.at("encoder");
    if (!e.is_object()) throw FormatError("model config: 'encoder' must be an object");
    check_keys(e, {"depth", "width", "in_channels", "stem_stride", "stem_kernel", "stem_pool", "norm"}, "encoder");
    c.encoder.depth = get(e, "depth", c.encoder.depth, "encoder");
    c.encoder.width = get(e, "width", c.encoder.width, "encoder");
    c.encoder.in_channels = get(e, "in_channels", c.encoder.in_channels, "encoder");
    c.encoder.stem_stride = get(e, "stem_stride", c.encoder.stem_stride, "encoder");
    c.encoder.stem_kernel = get(e, "stem_kernel", c.encoder.stem_kernel, "encoder");
    c.encoder.stem_pool = get(e, "stem_pool", c.encoder.stem_pool, "encoder");
    c.encoder.norm = get(e, "norm", c.encoder.norm, "encoder");
  }
  if (!j.contains("heads") || !j.at("heads").is_array()) throw FormatError("model config: 'heads' must be a list");
  for (const json& h : j.at("heads")) {
    if (!h.is_object()) throw FormatError("model config: every head must be an object");
    check_keys(h, {"name", "type", "target", "weight", "params"}, "heads[]");
    HeadConfig hc;
    hc.name = get<std::string>(h, "name", "", "heads[]");
    hc.type = get<std::string>(h, "type", "", "heads[]");
    hc.target = get<std::string>(h, "target", "", "heads[]");
    hc.weight = get(h, "weight", 1.0, "heads[]");
    if (h.contains("params")) {
      if (!h.at("params").is_object()) throw FormatError("model config: head '" + hc.name + "': 'params' must be an object");
      hc.params = h.at("params");
    }
    c.heads.push_back(std::move(hc));
  }
  c.weighting = get<std::string>(j, "weighting", c.weighting, "config");
  if (j.contains("pipeline")) c.pipeline = j.at("pipeline");
  try {
    c.validate();
  } catch (const InvalidArgument& e) {
    throw FormatError(std::string("model config: ") + e.what());
  }
  return c;
}

ModelConfig ModelConfig::from_json_text(const std::string& text) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw FormatError(std::string("model config: not valid JSON: ") + e.what());
  }
  return from_json(j);
}

ModelConfig ModelConfig::default_multitask() {
  ModelConfig c;
  c.heads.push_back({"volume", "regression", "volume_ml", 1.0, json{{"transform", "log1p"}}});
  c.heads.push_back({"prognosis", "classification", "outcome", 1.0, json{{"classes", {"good", "poor"}}}});
  c.pipeline = json::parse(preprocess::Pipeline::default_head_ct().to_json());
  return c;
}

std::size_t ModelConfig::head_index(const std::string& name) const {
  std::string known;
  for (std::size_t i = 0; i < heads.size(); ++i) {
    if (heads[i].name == name) return i;
    known += (i ? ", " : "") + heads[i].name;
  }
  throw InvalidArgument("no head called '" + name + "' (heads: " + known + ")");
}

void ModelConfig::validate() const {
  const EncoderConfig& e = encoder;
  if (e.depth != 10 && e.depth != 18 && e.depth != 34)
    throw InvalidArgument("encoder.depth must be 10, 18 or 34, got " + std::to_string(e.depth));
  if (e.width < 1 || e.width > 1024) throw InvalidArgument("encoder.width must be in [1, 1024], got " + std::to_string(e.width));
  if (e.in_channels < 1 || e.in_channels > 64)
    throw InvalidArgument("encoder.in_channels must be in [1, 64], got " + std::to_string(e.in_channels));
  for (int a = 0; a < 3; ++a) {
    if (e.stem_stride[a] < 1 || e.stem_stride[a] > 4) throw InvalidArgument("encoder.stem_stride values must be in [1, 4]");
    if (e.stem_kernel[a] < 1 || e.stem_kernel[a] > 11 || e.stem_kernel[a] % 2 == 0)
      throw InvalidArgument("encoder.stem_kernel values must be odd and in [1, 11]");
  }
  if (e.norm != "batch" && e.norm != "instance" && e.norm != "group")
    throw InvalidArgument("encoder.norm must be batch, instance or group, got '" + e.norm + "'");
  if (e.norm == "group")
    for (int c : e.stage_channels())
      if (c >= 8 && c % 8 != 0)
        throw InvalidArgument("encoder.norm 'group' uses 8 groups: every stage's channels (width, 2 width, 4 width, 8 width) "
                              "must be below 8 or a multiple of 8; width " + std::to_string(e.width) + " gives " + std::to_string(c));
  if (heads.empty()) throw InvalidArgument("a model needs at least one head");
  std::set<std::string> names;
  for (const HeadConfig& h : heads) {
    if (h.name.empty() || h.name.size() > 64 || h.name.find_first_of(". /\\\"") != std::string::npos)
      throw InvalidArgument("head name '" + h.name + "' must be 1-64 characters without '.', '/', '\\', '\"' or spaces");
    if (!names.insert(h.name).second) throw InvalidArgument("two heads are called '" + h.name + "'");
    if (h.type.empty()) throw InvalidArgument("head '" + h.name + "' has no type");
    if (!(h.weight >= 0) || !std::isfinite(h.weight)) throw InvalidArgument("head '" + h.name + "': weight must be finite and >= 0");
  }
  if (weighting != "fixed" && weighting != "uncertainty")
    throw InvalidArgument("weighting must be fixed or uncertainty, got '" + weighting + "'");
  if (!pipeline.is_null()) (void)preprocess::Pipeline::from_json(pipeline.dump());
}

}  // namespace ichkit::model
