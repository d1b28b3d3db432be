// Bindings of the preprocess module: every step as a function on ichkit.Volume; the GIL is
// released while it runs.
#include <pybind11/eigen.h>

#include "bindings.h"
#include "ichkit/preprocess/crop.h"
#include "ichkit/preprocess/pipeline.h"
#include "ichkit/preprocess/skull_strip.h"
#include "ichkit/preprocess/reorient.h"
#include "ichkit/preprocess/resample.h"
#include "ichkit/preprocess/window.h"

namespace ichkit::python {

namespace {
using namespace ichkit::preprocess;

template <class F>
py::object visit_nogil(const py::object& vol, F&& f) {
  const AnyVolume& v = unwrap(vol);
  AnyVolume out;
  {
    py::gil_scoped_release nogil;
    out = std::visit([&](const auto& x) -> AnyVolume { return f(x); }, v);
  }
  return wrap(std::move(out));
}

Shape3 to_shape(const std::vector<std::size_t>& s) {
  if (s.size() != 3) throw InvalidArgument("a shape has 3 values (ni, nj, nk)");
  return {s[0], s[1], s[2]};
}
Index3 to_index(const std::vector<std::int64_t>& s) {
  if (s.size() != 3) throw InvalidArgument("an index has 3 values (i, j, k)");
  return {s[0], s[1], s[2]};
}
std::vector<Window> to_windows(const std::vector<std::pair<double, double>>& w) {
  std::vector<Window> out;
  for (auto& [level, width] : w) out.push_back({level, width});
  return out;
}
Geometry geometry_from_matrix(const Eigen::Matrix4d& m) { return Geometry(m); }

py::array channels_array(const Channels& c) {
  auto* keep = new std::shared_ptr<float>(c.data);
  py::capsule owner(keep, [](void* p) { delete static_cast<std::shared_ptr<float>*>(p); });
  std::vector<py::ssize_t> shape{py::ssize_t(c.count), py::ssize_t(c.shape[2]), py::ssize_t(c.shape[1]), py::ssize_t(c.shape[0])};
  return py::array_t<float>(shape, c.data.get(), owner);
}
}  // namespace

void bind_preprocess(py::module_& root) {
  py::module_ m = root.def_submodule("preprocess", "Windowing, resampling, reorientation, crop/pad - geometry kept.");
  m.def("window", [](const py::object& v, double level, double width, double out_min, double out_max) {
          return visit_nogil(v, [&](const auto& x) { return window(x, Window{level, width}, out_min, out_max); });
        }, py::arg("volume"), py::arg("level") = 40.0, py::arg("width") = 80.0, py::arg("out_min") = 0.0,
        py::arg("out_max") = 1.0, "HU window (level/width) to [out_min, out_max], clipped; float32 Volume.");
  m.def("scale_intensity_range", [](const py::object& v, double a_min, double a_max, double b_min, double b_max, bool clip) {
          return visit_nogil(v, [&](const auto& x) { return scale_intensity_range(x, a_min, a_max, b_min, b_max, clip); });
        }, py::arg("volume"), py::arg("a_min"), py::arg("a_max"), py::arg("b_min") = 0.0, py::arg("b_max") = 1.0,
        py::arg("clip") = true, "MONAI's ScaleIntensityRange.");
  m.def("window_stack", [](const py::object& v, const std::vector<std::pair<double, double>>& windows, double out_min,
                           double out_max) {
          const AnyVolume& av = unwrap(v);
          Channels c;
          {
            py::gil_scoped_release nogil;
            c = std::visit([&](const auto& x) { return window_stack(x, to_windows(windows), out_min, out_max); }, av);
          }
          return channels_array(c);
        }, py::arg("volume"), py::arg("windows") = std::vector<std::pair<double, double>>{{40, 80}, {80, 200}, {600, 2800}},
        py::arg("out_min") = 0.0, py::arg("out_max") = 1.0,
        "Several (level, width) windows in one pass: a float32 array (C, D, H, W) = (C, nk, nj, ni), C-contiguous.");
  m.def("resample", [](const py::object& v, const Eigen::Matrix4d& affine, const std::vector<std::size_t>& shape,
                       const std::string& interp, double fill, bool antialias) {
          const Geometry g = geometry_from_matrix(affine);
          const Shape3 s = to_shape(shape);
          const Interp it = interp_from_string(interp);
          return visit_nogil(v, [&](const auto& x) { return resample(x, g, s, it, fill, antialias); });
        }, py::arg("volume"), py::arg("affine"), py::arg("shape"), py::arg("interp") = "linear", py::arg("fill") = 0.0,
        py::arg("antialias") = true, "Resample onto the grid (affine, shape) in world space.");
  m.def("resample_to_spacing", [](const py::object& v, const Eigen::Vector3d& spacing, const std::string& interp, double fill,
                                  bool antialias) {
          const Interp it = interp_from_string(interp);
          return visit_nogil(v, [&](const auto& x) { return resample_to_spacing(x, spacing, it, fill, antialias); });
        }, py::arg("volume"), py::arg("spacing"), py::arg("interp") = "linear", py::arg("fill") = 0.0, py::arg("antialias") = true,
        "Resample to a voxel size (mm); the grid centre stays put.");
  m.def("resample_to_shape", [](const py::object& v, const std::vector<std::size_t>& shape, const std::string& interp,
                                double fill, bool antialias) {
          const Interp it = interp_from_string(interp);
          const Shape3 s = to_shape(shape);
          return visit_nogil(v, [&](const auto& x) { return resample_to_shape(x, s, it, fill, antialias); });
        }, py::arg("volume"), py::arg("shape"), py::arg("interp") = "linear", py::arg("fill") = 0.0, py::arg("antialias") = true,
        "Resample to a shape; centre and physical extent kept.");
  m.def("resample_like", [](const py::object& v, const py::object& reference, const std::string& interp, double fill,
                            bool antialias) {
          const AnyVolume& ref = unwrap(reference);
          const Geometry g = std::visit([](const auto& r) { return r.geometry(); }, ref);
          const Shape3 s = std::visit([](const auto& r) { return r.shape(); }, ref);
          const Interp it = interp_from_string(interp);
          return visit_nogil(v, [&](const auto& x) { return resample(x, g, s, it, fill, antialias); });
        }, py::arg("volume"), py::arg("reference"), py::arg("interp") = "linear", py::arg("fill") = 0.0,
        py::arg("antialias") = true, "Resample onto another volume's grid.");
  m.def("reorient", [](const py::object& v, const std::string& code) {
          return visit_nogil(v, [&](const auto& x) { return reorient(x, code); });
        }, py::arg("volume"), py::arg("code") = "RAS",
        "Permute/flip axes to an orientation code (default RAS = nibabel's as_closest_canonical).");
  m.def("crop_or_pad", [](const py::object& v, const std::vector<std::int64_t>& lo, const std::vector<std::int64_t>& hi,
                          double fill) {
          return visit_nogil(v, [&](const auto& x) {
            using T = typename std::decay_t<decltype(x)>::value_type;
            return crop_or_pad(x, to_index(lo), to_index(hi), static_cast<T>(fill));
          });
        }, py::arg("volume"), py::arg("lo"), py::arg("hi"), py::arg("fill") = 0.0,
        "Sub-volume [lo, hi) per axis; outside the volume is `fill`. The affine follows.");
  m.def("center_crop_or_pad", [](const py::object& v, const std::vector<std::size_t>& shape, double fill) {
          const Shape3 s = to_shape(shape);
          return visit_nogil(v, [&](const auto& x) {
            using T = typename std::decay_t<decltype(x)>::value_type;
            return center_crop_or_pad(x, s, static_cast<T>(fill));
          });
        }, py::arg("volume"), py::arg("shape"), py::arg("fill") = 0.0);
  m.def("crop_to_foreground", [](const py::object& v, double threshold, double margin_mm) {
          return visit_nogil(v, [&](const auto& x) { return crop_to_foreground(x, threshold, margin_mm); });
        }, py::arg("volume"), py::arg("threshold") = -500.0, py::arg("margin_mm") = 0.0,
        "Crop to the bounding box of voxels above `threshold`, plus a margin in mm.");

  m.def("skull_strip", [](const py::object& v, float brain_min_hu, float brain_max_hu, double smooth_sigma_mm,
                          double opening_mm, double rim_max_hu, float blood_min_hu, double blood_core_mm,
                          double blood_core_min_ml, float blood_rim_fraction) {
          const AnyVolume& av = unwrap(v);
          Volume<float> hu = as<float>(av);
          SkullStripOptions o;
          o.brain_min_hu = brain_min_hu;
          o.brain_max_hu = brain_max_hu;
          o.smooth_sigma_mm = smooth_sigma_mm;
          o.opening_mm = opening_mm;
          o.rim_max_hu = static_cast<float>(rim_max_hu);
          o.blood_min_hu = blood_min_hu;
          o.blood_core_mm = blood_core_mm;
          o.blood_core_min_ml = blood_core_min_ml;
          o.blood_rim_fraction = blood_rim_fraction;
          Volume<std::uint8_t> mask;
          {
            py::gil_scoped_release nogil;
            mask = skull_strip(hu, o);
          }
          return wrap(mask);
        }, py::arg("volume"), py::arg("brain_min_hu") = SkullStripOptions{}.brain_min_hu,
        py::arg("brain_max_hu") = SkullStripOptions{}.brain_max_hu, py::arg("smooth_sigma_mm") = SkullStripOptions{}.smooth_sigma_mm,
        py::arg("opening_mm") = SkullStripOptions{}.opening_mm, py::arg("rim_max_hu") = double(SkullStripOptions{}.rim_max_hu),
        py::arg("blood_min_hu") = SkullStripOptions{}.blood_min_hu, py::arg("blood_core_mm") = SkullStripOptions{}.blood_core_mm,
        py::arg("blood_core_min_ml") = SkullStripOptions{}.blood_core_min_ml,
        py::arg("blood_rim_fraction") = SkullStripOptions{}.blood_rim_fraction,
        "Brain (intracranial) mask of a CT in HU on the scan's grid (uint8 Volume).");

  m.def("check_hu", [](const py::object& v) {
          const AnyVolume& av = unwrap(v);
          Volume<float> hu = as<float>(av);
          py::gil_scoped_release nogil;
          check_hu(hu);
        }, py::arg("volume"),
        "Raise InvalidArgument unless the scan can be a CT in HU: NaN or infinite voxels, no voxel above -500 "
        "(no head), values above 40000 or spanning under 20, or none below 0 with values above 1500 or most "
        "positive voxels above 500 (stored values, not HU). The model does this first; Pipeline.run does not.");

  m.def("check_coverage", [](const py::object& v, std::size_t min_voxels, double min_mm) {
          std::visit([&](const auto& x) { check_coverage(x, min_voxels, min_mm); }, unwrap(v));
        }, py::arg("volume"), py::arg("min_voxels") = 3, py::arg("min_mm") = 30.0,
        "Raise InvalidArgument when the scan is too thin along an axis to be a CT of the head (fewer than "
        "min_voxels voxels or min_mm mm): one DICOM image instead of its series, a localizer, a slab. The model "
        "does this first.");

  py::class_<PipelineResult>(m, "PipelineResult", "The network input of one scan and the way back to the scan grid.")
      .def_property_readonly("input", [](const PipelineResult& r) { return channels_array(r.input); },
                             "float32 (C, D, H, W) array (zero-copy).")
      .def_property_readonly("volume", [](const PipelineResult& r) { return wrap(r.volume); },
                             "The scan after the spatial steps (HU) on the network grid.")
      .def_property_readonly("scan_affine", [](const PipelineResult& r) { return Eigen::Matrix4d(r.scan_geometry.affine()); })
      .def_property_readonly("scan_shape", [](const PipelineResult& r) {
             return py::make_tuple(r.scan_shape[0], r.scan_shape[1], r.scan_shape[2]);
           })
      .def("to_scan", [](const PipelineResult& r, const py::object& map, const std::string& interp, double fill) {
             Volume<float> v = as<float>(unwrap(map));
             Volume<float> out;
             {
               py::gil_scoped_release nogil;
               out = r.to_scan(v, interp_from_string(interp), fill);
             }
             return wrap(out);
           }, py::arg("volume"), py::arg("interp") = "linear", py::arg("fill") = 0.0,
           "Carry a Volume on the network grid back onto the scan grid (world-space resampling).");

  py::class_<Pipeline>(m, "Pipeline", R"pbdoc(Ordered preprocessing steps, saved as JSON inside model files.
Build with chained calls (Pipeline().reorient("RAS").resample_to_spacing((1, 1, 5)).window()),
from_json(text), or Pipeline.default_head_ct(); run(volume) -> PipelineResult.)pbdoc")
      .def(py::init<>())
      .def("reorient", &Pipeline::reorient, py::arg("code") = "RAS", py::return_value_policy::reference_internal)
      .def("resample_to_spacing", [](Pipeline& p, const Eigen::Vector3d& s, const std::string& interp) -> Pipeline& {
             return p.resample_to_spacing(s, interp_from_string(interp));
           }, py::arg("spacing"), py::arg("interp") = "linear", py::return_value_policy::reference_internal)
      .def("resample_to_shape", [](Pipeline& p, const std::vector<std::size_t>& s, const std::string& interp) -> Pipeline& {
             return p.resample_to_shape(to_shape(s), interp_from_string(interp));
           }, py::arg("shape"), py::arg("interp") = "linear", py::return_value_policy::reference_internal)
      .def("crop_to_foreground", &Pipeline::crop_to_foreground, py::arg("threshold") = -500.0, py::arg("margin_mm") = 5.0,
           py::return_value_policy::reference_internal)
      .def("center_crop_or_pad", [](Pipeline& p, const std::vector<std::size_t>& s, float fill) -> Pipeline& {
             return p.center_crop_or_pad(to_shape(s), fill);
           }, py::arg("shape"), py::arg("fill") = -1024.0f, py::return_value_policy::reference_internal)
      .def("skull_strip", &Pipeline::skull_strip, py::arg("fill") = -1024.0f, py::return_value_policy::reference_internal)
      .def("clip", &Pipeline::clip, py::arg("min"), py::arg("max"), py::return_value_policy::reference_internal)
      .def("window", [](Pipeline& p, const std::vector<std::pair<double, double>>& w, double lo, double hi) -> Pipeline& {
             return p.window(to_windows(w), lo, hi);
           }, py::arg("windows") = std::vector<std::pair<double, double>>{{40, 80}, {80, 200}, {600, 2800}},
           py::arg("out_min") = 0.0, py::arg("out_max") = 1.0, py::return_value_policy::reference_internal)
      .def("to_json", &Pipeline::to_json)
      .def_static("from_json", &Pipeline::from_json, py::arg("text"))
      .def_static("default_head_ct", &Pipeline::default_head_ct)
      .def("run", [](const Pipeline& p, const py::object& vol) {
             Volume<float> v = as<float>(unwrap(vol));
             py::gil_scoped_release nogil;
             return p.run(v);
           }, py::arg("volume"))
      .def("__len__", [](const Pipeline& p) { return p.steps().size(); })
      .def("__repr__", [](const Pipeline& p) {
             std::string s = "Pipeline(";
             for (std::size_t i = 0; i < p.steps().size(); ++i) s += (i ? " -> " : "") + p.steps()[i].op;
             return s + ")";
           });
}

}  // namespace ichkit::python
