#include "ichkit/preprocess/pipeline.h"

#include <nlohmann/json.hpp>
#include <cmath>
#include <optional>
#include <sstream>

#include "ichkit/core/threading.h"
#include "ichkit/core/value_stats.h"
#include "ichkit/preprocess/crop.h"
#include "ichkit/preprocess/reorient.h"
#include "ichkit/preprocess/skull_strip.h"

namespace ichkit::preprocess {

using json = nlohmann::json;

Volume<float> PipelineResult::to_scan(const Volume<float>& on_network_grid, Interp interp, double fill) const {
  if (!on_network_grid.same_grid(volume, 1e-6))
    throw GeometryError("to_scan: the map is not on the pipeline's network grid (shape " +
                        std::to_string(volume.ni()) + " x " + std::to_string(volume.nj()) + " x " +
                        std::to_string(volume.nk()) + ")");
  return resample(on_network_grid, scan_geometry, scan_shape, interp, fill, false);
}

void check_hu(const Volume<float>& scan) { check_hu(scan, value_stats(scan.data(), scan.size())); }

void check_hu(const Volume<float>& scan, const ValueStats& all) {
  const std::size_t n = scan.size();
  if (n == 0) return;
  const float* x = scan.data();
  auto where = [&](std::size_t i) {
    return "(" + std::to_string(i % scan.ni()) + ", " + std::to_string(i / scan.ni() % scan.nj()) + ", " +
           std::to_string(i / (scan.ni() * scan.nj())) + ")";
  };
  auto num = [](float v) {
    std::ostringstream o;
    o << v;
    return o.str();
  };
  if (all.nan > 0 || std::isinf(all.lo) || std::isinf(all.hi)) {
    std::size_t bad = 0, first = n;
    for (std::size_t i = 0; i < n; ++i)
      if (!std::isfinite(x[i])) bad += 1, first = std::min(first, i);
    throw InvalidArgument("the scan holds " + std::to_string(bad) + " NaN or infinite voxel(s), the first at voxel " +
                          where(first) + " (i, j, k): ichkit needs finite HU; replace them first (air is -1024)");
  }
  if (all.hi < -500.0f)
    throw InvalidArgument("no voxel of the scan is above -500 HU (its values lie in [" + num(all.lo) + ", " + num(all.hi) +
                          "]): air or padding only, no head - is it a head CT in HU?");
  if (all.hi > 40000.0f)
    throw InvalidArgument("the scan's values reach " + num(all.hi) + " (range [" + num(all.lo) + ", " + num(all.hi) +
                          "]): above any CT scale (an extended HU scale ends near 31000) - wrong units or scaling?");
  if (all.hi - all.lo < 20.0f)
    throw InvalidArgument("the scan's values span only [" + num(all.lo) + ", " + num(all.hi) + "]: a CT in HU spans hundreds (air about -1000, "
                          "brain 20 to 45, bone above 700) - is it already normalised or windowed?");
  if (all.lo >= 0.0f && all.hi > 1500.0f)
    throw InvalidArgument("no voxel of the scan is below 0 HU and its values reach " + num(all.hi) + " (range [" + num(all.lo) + ", " +
                          num(all.hi) + "]): these look like stored CT values, not HU (the rescale slope / intercept "
                          "or NIfTI scl_slope / scl_inter not applied?), or the scan is not a CT; a head CT in HU holds air at about -1000");
  if (all.lo >= 0.0f && all.hi > 500.0f) {
    // Nothing below 0 and no bone above 1500: a skull-stripped scan (background 0) in HU, or one
    // in stored values (HU + 1024) without bone. Their bulk tells them apart: brain and blood
    // are 0..100 HU, stored 1024..1124. Most positive voxels above 500 cannot be a head in HU.
    std::size_t positive = 0, high = 0;
    for (std::size_t i = 0; i < n; ++i) {
      positive += x[i] > 0.0f;
      high += x[i] > 500.0f;
    }
    if (2 * high > positive)
      throw InvalidArgument("no voxel of the scan is below 0 HU and " + std::to_string(high * 100 / positive) +
                            " % of its positive voxels are above 500 (range [" + num(all.lo) + ", " + num(all.hi) +
                            "]): these look like stored CT values, not HU (the rescale slope / intercept or NIfTI "
                            "scl_slope / scl_inter not applied?) - brain and blood in HU lie between 0 and 100");
  }
}

void check_coverage(const Shape3& shape, const Geometry& geometry, std::size_t min_voxels, double min_mm) {
  const char* axis = "ijk";
  const Eigen::Vector3d sp = geometry.spacing();
  for (int a = 0; a < 3; ++a) {
    const std::size_t nv = shape[a];
    const double mm = static_cast<double>(nv) * sp[a];
    if (nv >= min_voxels && mm >= min_mm) continue;
    std::ostringstream o;
    o << "the scan has " << nv << " voxel(s) along " << axis[a] << ", " << mm << " mm (" << shape[0] << " x " << shape[1]
      << " x " << shape[2] << " voxels of " << sp[0] << " x " << sp[1] << " x " << sp[2]
      << " mm): " << (nv == 1 ? "a single image" : "a thin slab") << ", not a CT of the head - the model needs at least "
      << min_voxels << " voxels and " << min_mm << " mm along each axis (a DICOM series: give its folder, not one file)";
    throw InvalidArgument(o.str());
  }
}

Pipeline& Pipeline::add(Step s) {
  steps_.push_back(std::move(s));
  return *this;
}

Pipeline& Pipeline::reorient(const std::string& code) {
  (void)parse_orientation_code(code);  // a bad code is refused when the pipeline is built, not at run time
  Step s;
  s.op = "reorient";
  s.text = code;
  return add(std::move(s));
}
Pipeline& Pipeline::resample_to_spacing(const Eigen::Vector3d& spacing, Interp interp) {
  for (int a = 0; a < 3; ++a)
    if (!(spacing[a] > 0)) throw InvalidArgument("resample_to_spacing: spacing must be positive");
  Step s;
  s.op = "resample_to_spacing";
  s.values = {spacing[0], spacing[1], spacing[2]};
  s.text = to_string(interp);
  return add(std::move(s));
}
Pipeline& Pipeline::resample_to_shape(const Shape3& shape, Interp interp) {
  Step s;
  s.op = "resample_to_shape";
  s.values = {double(shape[0]), double(shape[1]), double(shape[2])};
  s.text = to_string(interp);
  return add(std::move(s));
}
Pipeline& Pipeline::crop_to_foreground(double threshold, double margin_mm) {
  if (!(margin_mm >= 0) || !std::isfinite(margin_mm))
    throw InvalidArgument("crop_to_foreground: margin must be finite and >= 0 mm");
  Step s;
  s.op = "crop_to_foreground";
  s.a = threshold;
  s.b = margin_mm;
  return add(std::move(s));
}
Pipeline& Pipeline::center_crop_or_pad(const Shape3& shape, float fill) {
  Step s;
  s.op = "center_crop_or_pad";
  s.values = {double(shape[0]), double(shape[1]), double(shape[2])};
  s.a = fill;
  return add(std::move(s));
}
Pipeline& Pipeline::skull_strip(float fill) {
  Step s;
  s.op = "skull_strip";
  s.a = fill;
  return add(std::move(s));
}
Pipeline& Pipeline::clip(double lo, double hi) {
  if (!(hi > lo)) throw InvalidArgument("clip: max must be > min");
  Step s;
  s.op = "clip";
  s.a = lo;
  s.b = hi;
  return add(std::move(s));
}
Pipeline& Pipeline::window(const std::vector<Window>& windows, double out_min, double out_max) {
  if (windows.empty()) throw InvalidArgument("window: no windows");
  Step s;
  s.op = "window";
  for (const Window& w : windows) {
    (void)detail::window_map(w, out_min, out_max, "window");  // refused here, not on the first scan
    s.windows.push_back({w.level, w.width});
  }
  s.a = out_min;
  s.b = out_max;
  return add(std::move(s));
}

std::string Pipeline::to_json() const {
  json steps = json::array();
  for (const Step& s : steps_) {
    json j{{"op", s.op}};
    if (s.op == "reorient") j["code"] = s.text;
    else if (s.op == "resample_to_spacing") j["spacing"] = s.values, j["interp"] = s.text;
    else if (s.op == "resample_to_shape") j["shape"] = s.values, j["interp"] = s.text;
    else if (s.op == "crop_to_foreground") j["threshold"] = s.a, j["margin_mm"] = s.b;
    else if (s.op == "center_crop_or_pad") j["shape"] = s.values, j["fill"] = s.a;
    else if (s.op == "skull_strip") j["fill"] = s.a;
    else if (s.op == "clip") j["min"] = s.a, j["max"] = s.b;
    else if (s.op == "window") j["windows"] = s.windows, j["out_min"] = s.a, j["out_max"] = s.b;
    steps.push_back(j);
  }
  return json{{"version", 1}, {"steps", steps}}.dump(2);
}

namespace {
double number(const json& j, const char* key, double fallback, bool required) {
  if (!j.contains(key)) {
    if (required) throw FormatError(std::string("pipeline step needs '") + key + "'");
    return fallback;
  }
  if (!j[key].is_number()) throw FormatError(std::string("pipeline parameter '") + key + "' must be a number");
  const double v = j[key].get<double>();
  if (!std::isfinite(v)) throw FormatError(std::string("pipeline parameter '") + key + "' must be finite");
  return v;
}
std::vector<double> triple(const json& j, const char* key) {
  if (!j.contains(key) || !j[key].is_array() || j[key].size() != 3)
    throw FormatError(std::string("pipeline parameter '") + key + "' must be a list of 3 numbers");
  std::vector<double> v;
  for (const auto& x : j[key]) {
    if (!x.is_number() || !std::isfinite(x.get<double>()) || !(x.get<double>() > 0))
      throw FormatError(std::string("pipeline parameter '") + key + "' must hold 3 positive numbers");
    v.push_back(x.get<double>());
  }
  return v;
}
Shape3 shape_of(const std::vector<double>& v) {
  Shape3 s{};
  for (int a = 0; a < 3; ++a) {
    if (v[a] != std::floor(v[a]) || v[a] > 65536) throw FormatError("pipeline shape must hold whole numbers <= 65536");
    s[a] = std::size_t(v[a]);
  }
  return s;
}
}  // namespace

Pipeline Pipeline::from_json(const std::string& text) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw FormatError(std::string("pipeline JSON does not parse: ") + e.what());
  }
  if (!j.is_object() || !j.contains("steps") || !j["steps"].is_array())
    throw FormatError("pipeline JSON needs an object with a 'steps' list");
  if (j.contains("version") && (!j["version"].is_number_integer() || j["version"].get<int>() != 1))
    throw FormatError("pipeline JSON version is not 1 (written by a newer ichkit?)");
  Pipeline p;
  try {
    for (const auto& s : j["steps"]) {
      if (!s.is_object() || !s.contains("op") || !s["op"].is_string()) throw FormatError("each pipeline step needs an 'op' string");
      const std::string op = s["op"].get<std::string>();
      auto text = [&](const char* key, const char* fallback) {
        if (!s.contains(key)) return std::string(fallback);
        if (!s[key].is_string()) throw FormatError(std::string("pipeline parameter '") + key + "' must be a string");
        return s[key].get<std::string>();
      };
      if (op == "reorient") {
        p.reorient(text("code", "RAS"));
      } else if (op == "resample_to_spacing") {
        auto v = triple(s, "spacing");
        p.resample_to_spacing({v[0], v[1], v[2]}, interp_from_string(text("interp", "linear")));
      } else if (op == "resample_to_shape") {
        p.resample_to_shape(shape_of(triple(s, "shape")), interp_from_string(text("interp", "linear")));
      } else if (op == "crop_to_foreground") {
        p.crop_to_foreground(number(s, "threshold", -500, false), number(s, "margin_mm", 5, false));
      } else if (op == "center_crop_or_pad") {
        p.center_crop_or_pad(shape_of(triple(s, "shape")), static_cast<float>(number(s, "fill", -1024, false)));
      } else if (op == "skull_strip") {
        p.skull_strip(static_cast<float>(number(s, "fill", -1024, false)));
      } else if (op == "clip") {
        p.clip(number(s, "min", 0, true), number(s, "max", 0, true));
      } else if (op == "window") {
        // no "windows": the default brain / subdural / bone stack
        std::vector<Window> ws = s.contains("windows") ? std::vector<Window>{} : default_windows();
        if (s.contains("windows") && !s["windows"].is_array()) throw FormatError("window step: 'windows' must be a list of [level, width]");
        for (const auto& w : s.contains("windows") ? s["windows"] : json::array()) {
          if (!w.is_array() || w.size() != 2 || !w[0].is_number() || !w[1].is_number())
            throw FormatError("each window is [level, width]");
          ws.push_back({w[0].get<double>(), w[1].get<double>()});
        }
        p.window(ws, number(s, "out_min", 0, false), number(s, "out_max", 1, false));
      } else {
        throw FormatError("unknown pipeline op '" + op + "'");
      }
    }
  } catch (const InvalidArgument& e) {
    throw FormatError(std::string("pipeline JSON: ") + e.what());
  }
  for (std::size_t i = 0; i + 1 < p.steps_.size(); ++i)
    if (p.steps_[i].op == "window") throw FormatError("pipeline JSON: 'window' must be the last step");
  return p;
}

PipelineResult Pipeline::run(const Volume<float>& scan) const {
  if (scan.empty()) throw InvalidArgument("pipeline: empty scan");
  PipelineResult r;
  r.scan_geometry = scan.geometry();
  r.scan_shape = scan.shape();
  Volume<float> v = scan;
  const Step* win = nullptr;
  auto is_resample = [](const Step& s) { return s.op == "resample_to_spacing" || s.op == "resample_to_shape"; };
  // A reorientation that only flips axes, followed by a resampling, is not carried out: the
  // resampling reads the scan as it is and maps it onto the grid the two steps give (flips are
  // exact in world space), without the reoriented copy. `pending` is that reoriented grid.
  std::optional<Reorientation> pending;
  for (std::size_t n = 0; n < steps_.size(); ++n) {
    const Step& s = steps_[n];
    if (s.op == "reorient") {
      Reorientation ro = reorientation(v.geometry(), v.shape(), s.text);
      if (ro.keeps_axes() && n + 1 < steps_.size() && is_resample(steps_[n + 1])) pending = std::move(ro);
      else v = preprocess::reorient(v, ro);
    } else if (is_resample(s)) {
      const Geometry& g = pending ? pending->geometry : v.geometry();
      const Shape3& shape = pending ? pending->shape : v.shape();
      std::pair<Geometry, Shape3> to;
      if (s.op == "resample_to_spacing") {
        to = grid_with_spacing(g, shape, {s.values[0], s.values[1], s.values[2]});
      } else {
        const Shape3 out{std::size_t(s.values[0]), std::size_t(s.values[1]), std::size_t(s.values[2])};
        to = {grid_with_shape(g, shape, out), out};
      }
      v = preprocess::resample(v, to.first, to.second, interp_from_string(s.text), -1024.0);
      pending.reset();
    } else if (s.op == "crop_to_foreground") v = preprocess::crop_to_foreground(v, s.a, s.b);
    else if (s.op == "center_crop_or_pad")
      v = preprocess::center_crop_or_pad(v, {std::size_t(s.values[0]), std::size_t(s.values[1]), std::size_t(s.values[2])},
                                         static_cast<float>(s.a));
    else if (s.op == "skull_strip") {
      const Volume<std::uint8_t> brain = preprocess::skull_strip(v);
      Volume<float> out = Volume<float>::uninitialized(v.shape(), v.geometry());
      out.metadata() = v.metadata();
      const float fill = static_cast<float>(s.a);
      const std::uint8_t* B = brain.data();
      const float* in = v.data();
      float* o = out.data();
      parallel_for(static_cast<std::int64_t>(out.size()), [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t n = b; n < e; ++n) o[n] = B[n] ? in[n] : fill;
      }, 1 << 16);
      v = out;
    } else if (s.op == "clip") {
      Volume<float> out = v.deep_copy();
      for (std::size_t n = 0; n < out.size(); ++n) out.data()[n] = std::min(float(s.b), std::max(float(s.a), out.data()[n]));
      v = out;
    } else if (s.op == "window") win = &s;
  }
  r.volume = v;
  if (win) {
    std::vector<Window> ws;
    for (const auto& w : win->windows) ws.push_back({w[0], w[1]});
    r.input = window_stack(v, ws, win->a, win->b);
  } else {
    r.input.shape = v.shape();
    r.input.geometry = v.geometry();
    r.input.count = 1;
    r.input.data = ichkit::detail::allocate_voxels<float>(v.size());
    std::copy(v.data(), v.data() + v.size(), r.input.data.get());
  }
  return r;
}

Pipeline Pipeline::default_head_ct() {
  Pipeline p;
  p.reorient("RAS").resample_to_spacing({1.0, 1.0, 5.0}).crop_to_foreground(-500, 5).center_crop_or_pad({192, 192, 32}).window();
  return p;
}

}  // namespace ichkit::preprocess
