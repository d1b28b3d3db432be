// Bindings of the explain module: Grad-CAM family, localisation scores, overlays (LibTorch-free).
#include "bindings.h"
#include "ichkit/explain/gradcam.h"
#include "ichkit/explain/overlay.h"
#include "ichkit/explain/scores.h"

namespace ichkit::python {
namespace {
using namespace ichkit::explain;
using ichkit::explain::Target;  // not model::Target, which a unity build of these sources also sees

py::dict heatmap_dict(const Heatmap& h) {
  py::dict d;
  d["head"] = h.head;
  d["layer"] = h.layer;
  d["method"] = h.method;
  d["index"] = h.index;
  d["sign"] = h.sign;
  d["score"] = h.score;
  d["raw"] = wrap(h.raw);
  d["normalized"] = wrap(h.normalized);
  d["network"] = wrap(h.network);
  std::vector<py::ssize_t> shape(h.feature_shape.begin(), h.feature_shape.end());
  py::array_t<float> f(shape);
  std::copy(h.feature.begin(), h.feature.end(), f.mutable_data());
  d["feature"] = f;
  d["peak"] = py::make_tuple(h.peak[0], h.peak[1], h.peak[2]);
  d["peak_world"] = py::make_tuple(h.peak_world[0], h.peak_world[1], h.peak_world[2]);
  return d;
}

std::vector<Target> targets_from(const py::handle& obj) {
  std::vector<Target> out;
  for (auto t : obj) {
    if (py::isinstance<py::str>(t)) {
      out.emplace_back(t.cast<std::string>());
      continue;
    }
    // pybind11's own cast errors ("Unable to cast Python instance to C++ type") name nothing
    try {
      if (!py::isinstance<py::tuple>(t) && !py::isinstance<py::list>(t)) throw py::cast_error();
      const py::sequence tup = py::reinterpret_borrow<py::sequence>(t);
      if (tup.size() < 1 || tup.size() > 3) throw py::cast_error();
      Target x(tup[0].cast<std::string>());
      if (tup.size() > 1 && !tup[1].is_none()) x.index = tup[1].cast<int>();
      if (tup.size() > 2) x.sign = tup[2].cast<int>();
      out.push_back(x);
    } catch (const py::cast_error&) {
      throw InvalidArgument("a target is a head name or (head, index[, sign]) with int index and sign, got " +
                            std::string(py::repr(t)));
    }
  }
  return out;
}

py::array image_array(const Image& img) {
  py::array_t<std::uint8_t> a({py::ssize_t(img.height), py::ssize_t(img.width), py::ssize_t(3)});
  std::copy(img.rgb.begin(), img.rgb.end(), a.mutable_data());
  return std::move(a);
}

Image array_image(const py::handle& obj) {
  // uint8 only: forcecast would turn a float image in [0, 1] into a black one, and 300 into 44
  const py::array any = py::array::ensure(obj);
  if (!any || any.dtype().kind() != 'u' || any.dtype().itemsize() != 1)
    throw InvalidArgument("an image is a (height, width, 3) uint8 array, got " +
                          (any ? std::string(py::str(any.dtype())) : std::string(py::str(py::type::of(obj)))) +
                          " (scale it to 0-255 and convert it with .astype(np.uint8))");
  auto a = py::array_t<std::uint8_t, py::array::c_style | py::array::forcecast>::ensure(any);
  if (!a || a.ndim() != 3 || a.shape(2) != 3) throw InvalidArgument("an image is a (height, width, 3) uint8 array");
  Image img;
  img.height = int(a.shape(0));
  img.width = int(a.shape(1));
  img.rgb.assign(a.data(), a.data() + a.size());
  return img;
}

Volume<float> optional_float(const py::object& o) { return o.is_none() ? Volume<float>() : as<float>(unwrap(o)); }
Volume<std::uint8_t> optional_mask(const py::object& o) {
  if (o.is_none()) return {};
  const Volume<float> f = as<float>(unwrap(o));
  Volume<std::uint8_t> m(f.shape(), f.geometry());
  for (std::size_t x = 0; x < f.size(); ++x) m.data()[x] = f.data()[x] != 0;
  return m;
}

OverlayOptions overlay_options(double level, double width, float alpha, float threshold, int slices, int columns, double pixel_mm) {
  OverlayOptions o;
  o.level = level, o.width = width, o.alpha = alpha, o.threshold = threshold, o.slices = slices, o.columns = columns,
  o.pixel_mm = pixel_mm;
  return o;
}

}  // namespace

void bind_explain(py::module_& root) {
  py::module_ m = root.def_submodule("explain", "Grad-CAM / Grad-CAM++ / HiResCAM on the scan grid, scores, overlays.");
  m.def("explain", [](const model::Model& model, const py::object& volumes, const py::object& targets, const std::string& method,
                      const std::string& layer, bool to_scan, int batch_size, double smooth_mm) -> py::object {
          const bool single = !py::isinstance<py::list>(volumes) && !py::isinstance<py::tuple>(volumes);
          std::vector<Volume<float>> vs;
          if (single) vs.push_back(as<float>(unwrap(volumes)));
          else
            for (auto v : volumes) vs.push_back(as<float>(unwrap(v)));
          const std::vector<Target> ts = targets_from(targets);
          const Options o{method_from_string(method), layer, to_scan, smooth_mm};
          std::vector<Explanation> es;
          {
            py::gil_scoped_release nogil;
            es = explain::explain(model, vs, ts, o, batch_size);
          }
          py::list out;
          for (const Explanation& e : es) {
            py::dict d;
            d["prediction"] = prediction_dict(e.prediction);
            py::list maps;
            for (const Heatmap& h : e.maps) maps.append(heatmap_dict(h));
            d["maps"] = maps;
            out.append(d);
          }
          if (single) return out[0];
          return std::move(out);
        }, py::arg("model"), py::arg("volumes"), py::arg("targets"), py::arg("method") = "gradcam", py::arg("layer") = "",
        py::arg("to_scan") = true, py::arg("batch_size") = 4, py::arg("smooth_mm") = 0.0,
        R"pbdoc(Heatmaps for one Volume or a list. targets: head names or (head, index[, sign]) tuples.
Returns {"prediction": ..., "maps": [{"head", "layer", "method", "index", "sign", "score", "raw",
"normalized", "network", "feature", "peak", "peak_world"}]} per scan. Use ichkit.explain.gradcam.)pbdoc");
  m.def("pointing_game", [](const py::object& heatmap, const py::object& mask, double tolerance_mm) {
          const PointingGame r = pointing_game(as<float>(unwrap(heatmap)), optional_mask(mask), tolerance_mm);
          py::dict d;
          d["hit"] = r.hit;
          d["distance_mm"] = r.distance_mm;
          d["peak"] = py::make_tuple(r.peak[0], r.peak[1], r.peak[2]);
          return d;
        }, py::arg("heatmap"), py::arg("mask"), py::arg("tolerance_mm") = 0.0,
        "Is the heatmap's peak in the lesion or within tolerance_mm of it? {hit, distance_mm, peak}.");
  m.def("energy_inside", [](const py::object& heatmap, const py::object& mask) {
          return energy_inside(as<float>(unwrap(heatmap)), optional_mask(mask));
        }, py::arg("heatmap"), py::arg("mask"), "Share of the positive heatmap energy inside the lesion.");
  m.def("heatmap_auc", [](const py::object& heatmap, const py::object& mask) {
          const Volume<float> h = as<float>(unwrap(heatmap));
          const Volume<std::uint8_t> k = optional_mask(mask);
          py::gil_scoped_release nogil;
          return heatmap_auc(h, k);
        }, py::arg("heatmap"), py::arg("mask"), "AUC of the heatmap as a voxel-wise lesion detector (ties count half).");
  m.def("render_montage", [](const py::object& scan, const py::object& heatmap, const py::object& outline, double level, double width,
                             float alpha, float threshold, int slices, int columns, double pixel_mm) {
          return image_array(render_montage(as<float>(unwrap(scan)), optional_float(heatmap), optional_mask(outline),
                                            overlay_options(level, width, alpha, threshold, slices, columns, pixel_mm)));
        }, py::arg("scan"), py::arg("heatmap") = py::none(), py::arg("outline") = py::none(), py::arg("level") = 40.0,
        py::arg("width") = 80.0, py::arg("alpha") = 0.6f, py::arg("threshold") = 0.2f, py::arg("slices") = 12, py::arg("columns") = 6,
        py::arg("pixel_mm") = 0.0, "Axial montage (radiological view) as a (height, width, 3) uint8 array.");
  m.def("render_orthogonal", [](const py::object& scan, const py::object& heatmap, const py::object& outline, const py::object& through,
                                double level, double width, float alpha, float threshold, double pixel_mm) {
          std::optional<Shape3> at;
          if (!through.is_none()) {
            std::vector<std::size_t> t;
            try {
              t = through.cast<std::vector<std::size_t>>();
            } catch (const py::cast_error&) {
              t.clear();
            }
            if (t.size() != 3) throw InvalidArgument("through is a voxel index (i, j, k) of three integers >= 0");
            at = Shape3{t[0], t[1], t[2]};
          }
          return image_array(render_orthogonal(as<float>(unwrap(scan)), optional_float(heatmap), optional_mask(outline),
                                               overlay_options(level, width, alpha, threshold, 12, 6, pixel_mm), at));
        }, py::arg("scan"), py::arg("heatmap") = py::none(), py::arg("outline") = py::none(), py::arg("through") = py::none(),
        py::arg("level") = 40.0, py::arg("width") = 80.0, py::arg("alpha") = 0.6f, py::arg("threshold") = 0.2f, py::arg("pixel_mm") = 0.0,
        "Axial, coronal and sagittal slices through a voxel (default: the heatmap's peak) as a uint8 RGB array.");
  m.def("write_png", [](const std::string& path, const py::object& image) { write_png(path, array_image(image)); },
        py::arg("path"), py::arg("image"), "Write a (height, width, 3) uint8 array as PNG (libpng, atomic).");
}

}  // namespace ichkit::python
