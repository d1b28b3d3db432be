// Bindings of the phantom module.
#include <pybind11/eigen.h>

#include "bindings.h"
#include "ichkit/phantom/phantom.h"

namespace ichkit::python {

namespace {
phantom::CaseOptions case_options(const std::vector<std::size_t>& shape, const std::vector<double>& spacing, double tilt,
                                  double noise, int supersample, const py::object& location, const py::object& volume_ml,
                                  const py::object& ivh, bool hematoma, std::uint64_t seed) {
  if (shape.size() != 3) throw InvalidArgument("shape must have 3 values (ni, nj, nk)");
  if (spacing.size() != 3) throw InvalidArgument("spacing must have 3 values (mm)");
  phantom::CaseOptions o;
  o.shape = {shape[0], shape[1], shape[2]};
  o.spacing = {spacing[0], spacing[1], spacing[2]};
  o.tilt_deg = tilt;
  o.noise_sd = noise;
  o.supersample = supersample;
  if (!location.is_none()) o.location = phantom::location_from_string(location.cast<std::string>());
  if (!volume_ml.is_none()) o.target_volume_ml = volume_ml.cast<double>();
  if (!ivh.is_none()) o.ivh = ivh.cast<bool>();
  o.hematoma = hematoma;
  o.seed = seed;
  return o;
}

py::dict row_dict(const phantom::ManifestRow& r) {
  py::dict d;
  d["id"] = r.id;
  d["image"] = r.image;
  d["mask"] = r.mask;
  d["volume_ml"] = r.volume_ml;
  d["location"] = r.location;
  d["ivh"] = r.ivh;
  d["age"] = r.age;
  d["gcs"] = r.gcs;
  d["outcome"] = r.outcome;
  d["outcome_probability"] = r.outcome_probability;
  return d;
}
}  // namespace

void bind_phantom(py::module_& root) {
  py::module_ m = root.def_submodule("phantom", "Synthetic head CTs with known hematomas.");
  m.def("make_case", [](const std::vector<std::size_t>& shape, const std::vector<double>& spacing, double tilt, double noise,
                        int supersample, const py::object& location, const py::object& volume_ml, const py::object& ivh,
                        bool hematoma, std::uint64_t seed) {
          phantom::CaseOptions o = case_options(shape, spacing, tilt, noise, supersample, location, volume_ml, ivh, hematoma, seed);
          phantom::Case c;
          {
            py::gil_scoped_release nogil;
            c = phantom::make_case(o);
          }
          py::dict d;
          d["image"] = wrap(c.image);
          d["mask"] = wrap(c.mask);
          d["labels"] = wrap(c.labels);
          d["brain"] = wrap(c.brain);
          d["volume_ml"] = c.volume_ml;
          d["analytic_volume_ml"] = c.analytic_volume_ml;
          d["location"] = phantom::to_string(c.location);
          d["ivh"] = c.ivh;
          d["age"] = c.age;
          d["gcs"] = c.gcs;
          d["outcome_probability"] = c.outcome_probability;
          d["outcome"] = c.outcome;
          d["centroid_mm"] = py::make_tuple(c.centroid_mm[0], c.centroid_mm[1], c.centroid_mm[2]);
          d["seed"] = c.seed;
          return d;
        },
        py::kw_only(), py::arg("shape") = std::vector<std::size_t>{512, 512, 32},
        py::arg("spacing") = std::vector<double>{0.45, 0.45, 5.0}, py::arg("tilt") = 0.0, py::arg("noise") = 6.0,
        py::arg("supersample") = 3, py::arg("location") = py::none(), py::arg("volume_ml") = py::none(),
        py::arg("ivh") = py::none(), py::arg("hematoma") = true, py::arg("seed") = 0,
        R"pbdoc(One synthetic head CT. Returns a dict: image (HU Volume), mask (hematoma), labels
(tissue codes), brain (intracranial mask), volume_ml (from the mask), analytic_volume_ml,
location, ivh, age, gcs, outcome_probability, outcome, centroid_mm, seed.)pbdoc");
  m.def("make_cohort", [](const std::string& out_dir, int n, std::uint64_t seed, const std::vector<std::size_t>& shape,
                          const std::vector<double>& spacing, double tilt, double noise, bool compress,
                          const py::object& progress) {
          phantom::CohortOptions o;
          o.n = n;
          o.seed = seed;
          o.compress = compress;
          o.case_options = case_options(shape, spacing, tilt, noise, 3, py::none(), py::none(), py::none(), true, 0);
          std::unique_ptr<PyProgress> bar;
          if (!progress.is_none()) bar = std::make_unique<PyProgress>(progress);
          std::vector<phantom::ManifestRow> rows;
          {
            py::gil_scoped_release nogil;
            rows = phantom::make_cohort(out_dir, o, bar.get());
          }
          py::list out;
          for (const auto& r : rows) out.append(row_dict(r));
          return out;
        },
        py::arg("out_dir"), py::kw_only(), py::arg("n") = 10, py::arg("seed") = 1,
        py::arg("shape") = std::vector<std::size_t>{512, 512, 32}, py::arg("spacing") = std::vector<double>{0.45, 0.45, 5.0},
        py::arg("tilt") = 0.0, py::arg("noise") = 6.0, py::arg("compress") = true, py::arg("progress") = py::none(),
        "Write n cases (images/, masks/, manifest.csv) into out_dir; returns the manifest rows.");
  m.def("outcome_logit", [](double volume_ml, bool ivh, const std::string& location, int age, int gcs) {
          return phantom::outcome_logit(volume_ml, ivh, phantom::location_from_string(location), age, gcs);
        }, py::arg("volume_ml"), py::arg("ivh"), py::arg("location"), py::arg("age"), py::arg("gcs"),
        "Log-odds of poor outcome of the documented ICH-score-like model.");
}

}  // namespace ichkit::python
