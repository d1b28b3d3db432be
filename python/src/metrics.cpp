// Bindings of ichkit/model/metrics.h as ichkit._core.metrics: every metric takes numpy arrays
// or sequences (sklearn's argument names y_true / y_pred / y_score), copies them into C++
// vectors and computes with the GIL released. Scalars come back as floats, curves as numpy
// arrays, structured results as dicts.
#include "bindings.h"
#include "ichkit/core/error.h"
#include "ichkit/model/metrics.h"

namespace ichkit::python {

namespace {
namespace mt = ichkit::metrics;

template <class F>
auto nogil(F&& f) -> decltype(f()) {
  py::gil_scoped_release release;
  return f();
}

/// A 1-D array (or sequence) of numbers as doubles; bool and integer dtypes convert.
std::vector<double> to_values(const py::handle& obj, const char* name) {
  py::array raw = py::array::ensure(obj);
  if (!raw) throw InvalidArgument(std::string(name) + ": expected a 1-D array of numbers");
  const char kind = raw.dtype().kind();
  if (kind != 'f' && kind != 'i' && kind != 'u' && kind != 'b')
    throw InvalidArgument(std::string(name) + ": expected numbers, got an array of dtype '" +
                          std::string(py::str(raw.dtype())) + "'");
  if (raw.ndim() != 1)
    throw InvalidArgument(std::string(name) + ": expected a 1-D array, got " + std::to_string(raw.ndim()) + "-D");
  auto a = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(raw);
  if (!a) throw InvalidArgument(std::string(name) + ": cannot convert to float64");
  return std::vector<double>(a.data(), a.data() + a.size());
}

/// A 1-D array (or sequence) of integer class labels; bool and integer dtypes convert, and
/// floats that are whole numbers (1.0) are accepted, anything else (0.5, NaN) is an error.
std::vector<int> to_labels(const py::handle& obj, const char* name) {
  py::array raw = py::array::ensure(obj);
  if (!raw) throw InvalidArgument(std::string(name) + ": expected a 1-D array of integer labels");
  if (raw.ndim() != 1)
    throw InvalidArgument(std::string(name) + ": expected a 1-D array, got " + std::to_string(raw.ndim()) + "-D");
  const char kind = raw.dtype().kind();
  const double lim = static_cast<double>(std::numeric_limits<int>::max());
  std::vector<int> out(static_cast<std::size_t>(raw.size()));
  if (kind == 'b' || kind == 'i' || kind == 'u' || kind == 'f') {
    auto a = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(raw);
    if (!a) throw InvalidArgument(std::string(name) + ": cannot convert the labels");
    for (py::ssize_t i = 0; i < a.size(); ++i) {
      const double v = a.data()[i];
      if (!(std::abs(v) <= lim) || v != std::floor(v))
        throw InvalidArgument(std::string(name) + ": labels must be integers; " + name + "[" + std::to_string(i) +
                              "] = " + mt::detail::fmt(v));
      out[static_cast<std::size_t>(i)] = static_cast<int>(v);
    }
    return out;
  }
  throw InvalidArgument(std::string(name) + ": labels must be integers or booleans, got dtype '" +
                        std::string(py::str(raw.dtype())) + "'");
}

bool is_label_array(const py::handle& obj) {
  py::array raw = py::array::ensure(obj);
  if (!raw) return false;
  const char kind = raw.dtype().kind();
  return kind == 'b' || kind == 'i' || kind == 'u';
}

py::array_t<double> to_array(const std::vector<double>& v) {
  return py::array_t<double>(static_cast<py::ssize_t>(v.size()), v.data());
}

py::array_t<std::int64_t> to_array(const std::vector<std::size_t>& v) {
  std::vector<std::int64_t> w(v.begin(), v.end());
  return py::array_t<std::int64_t>(static_cast<py::ssize_t>(w.size()), w.data());
}

py::dict ci_dict(const mt::AucCi& c) {
  py::dict d;
  d["auc"] = c.auc;
  d["lower"] = c.lower;
  d["upper"] = c.upper;
  d["alpha"] = c.alpha;
  d["n_boot"] = c.n_boot;
  d["n_valid"] = c.n_valid;
  return d;
}

py::dict counts_dict(const mt::ConfusionCounts& c) {
  py::dict d;
  d["tp"] = c.tp;
  d["fp"] = c.fp;
  d["tn"] = c.tn;
  d["fn"] = c.fn;
  return d;
}

py::dict abc2_dict(const mt::Abc2& r) {
  py::dict d;
  d["volume_ml"] = r.volume_ml;
  d["a_mm"] = r.a_mm;
  d["b_mm"] = r.b_mm;
  d["c_mm"] = r.c_mm;
  d["slice"] = r.slice;
  d["area_voxels"] = r.area_voxels;
  d["slices"] = r.slices;
  return d;
}

/// ABC/2 of an ichkit.Volume (spacing from its affine) or of an array (ni, nj, nk) with
/// `spacing` in mm; non-zero voxels are hematoma.
mt::Abc2 abc2_of(const py::handle& volume_type, const py::object& mask, const py::object& spacing, bool weighted) {
  std::vector<std::uint8_t> m;
  std::size_t shape[3];
  double sp[3];
  if (py::isinstance(mask, volume_type)) {
    if (!spacing.is_none())
      throw InvalidArgument("abc2: the spacing of an ichkit.Volume comes from its affine; do not pass spacing");
    const AnyVolume& av = unwrap(mask);
    std::visit([&](const auto& v) {
      m.resize(v.size());
      for (std::size_t n = 0; n < v.size(); ++n) m[n] = v.data()[n] != 0;
      shape[0] = v.ni();
      shape[1] = v.nj();
      shape[2] = v.nk();
      const Eigen::Vector3d s = v.spacing();
      for (int d = 0; d < 3; ++d) sp[d] = s[d];
    }, av);
  } else {
    if (spacing.is_none())
      throw InvalidArgument("abc2: pass spacing=(si, sj, sk) in mm with an array mask (or pass an ichkit.Volume)");
    const std::vector<double> s = to_values(spacing, "spacing");
    if (s.size() != 3) throw InvalidArgument("abc2: spacing must have 3 values (si, sj, sk) in mm");
    py::array raw = py::array::ensure(mask);
    if (!raw || raw.ndim() != 3)
      throw InvalidArgument("abc2: the mask must be a 3-D array (ni, nj, nk) or an ichkit.Volume");
    // non-zero -> 1, laid out i fastest (Fortran order), like a Volume's buffer
    py::object np = py::module_::import("numpy");
    auto b = py::array_t<std::uint8_t, py::array::f_style | py::array::forcecast>::ensure(
        np.attr("not_equal")(raw, 0).attr("astype")("uint8"));
    if (!b) throw InvalidArgument("abc2: cannot convert the mask");
    m.assign(b.data(), b.data() + b.size());
    for (int d = 0; d < 3; ++d) {
      shape[d] = static_cast<std::size_t>(raw.shape(d));
      sp[d] = s[static_cast<std::size_t>(d)];
    }
  }
  return nogil([&] { return mt::abc2(m.data(), shape[0], shape[1], shape[2], sp[0], sp[1], sp[2], weighted); });
}

}  // namespace

void bind_metrics(py::module_& root) {
  py::module_ m = root.def_submodule("metrics", "Regression, classification, segmentation metrics and ABC/2.");
  const py::object volume_class = root.attr("Volume");  // bind_core ran first; the module keeps it alive
  const py::handle volume_type = volume_class;

  // ---- regression
  m.def("mae", [](const py::object& t, const py::object& p) {
          auto a = to_values(t, "y_true"), b = to_values(p, "y_pred");
          return nogil([&] { return mt::mae(a, b); });
        }, py::arg("y_true"), py::arg("y_pred"), "Mean absolute error, mean |y_true - y_pred|.");
  m.def("rmse", [](const py::object& t, const py::object& p) {
          auto a = to_values(t, "y_true"), b = to_values(p, "y_pred");
          return nogil([&] { return mt::rmse(a, b); });
        }, py::arg("y_true"), py::arg("y_pred"), "Root mean squared error.");
  m.def("r2", [](const py::object& t, const py::object& p) {
          auto a = to_values(t, "y_true"), b = to_values(p, "y_pred");
          return nogil([&] { return mt::r2(a, b); });
        }, py::arg("y_true"), py::arg("y_pred"), "Coefficient of determination (sklearn.metrics.r2_score).");
  m.def("pearson_r", [](const py::object& t, const py::object& p) {
          auto a = to_values(t, "y_true"), b = to_values(p, "y_pred");
          return nogil([&] { return mt::pearson_r(a, b); });
        }, py::arg("y_true"), py::arg("y_pred"), "Pearson correlation coefficient (scipy.stats.pearsonr's statistic).");
  m.def("icc", [](const py::object& t, const py::object& p, const std::string& kind) {
          const mt::IccType type = mt::icc_type_from_string(kind);
          std::vector<std::vector<double>> raters;
          if (p.is_none()) {
            py::array raw = py::array::ensure(t);
            if (!raw || raw.ndim() != 2)
              throw InvalidArgument("icc: pass y_true and y_pred, or one 2-D array of ratings (n targets, k raters)");
            auto a = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(raw);
            if (!a) throw InvalidArgument("icc: cannot convert the ratings to float64");
            const std::size_t n = static_cast<std::size_t>(a.shape(0)), k = static_cast<std::size_t>(a.shape(1));
            raters.assign(k, std::vector<double>(n));
            for (std::size_t i = 0; i < n; ++i)
              for (std::size_t j = 0; j < k; ++j) raters[j][i] = a.data()[i * k + j];
          } else {
            raters = {to_values(t, "y_true"), to_values(p, "y_pred")};
            mt::detail::check_values(raters[0], raters[1], "icc", 2);
          }
          return nogil([&] { return mt::icc(raters, type); });
        }, py::arg("y_true"), py::arg("y_pred") = py::none(), py::arg("kind") = "ICC(2,1)",
        "Intraclass correlation ICC(1,1), ICC(2,1) or ICC(3,1) of y_true and y_pred, or of a 2-D array of ratings "
        "(n targets, k raters).");
  m.def("icc_anova", [](const py::object& ratings) {
          py::array raw = py::array::ensure(ratings);
          if (!raw || raw.ndim() != 2) throw InvalidArgument("icc_anova: ratings must be a 2-D array (n targets, k raters)");
          auto a = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(raw);
          if (!a) throw InvalidArgument("icc_anova: cannot convert the ratings to float64");
          const std::size_t n = static_cast<std::size_t>(a.shape(0)), k = static_cast<std::size_t>(a.shape(1));
          std::vector<std::vector<double>> raters(k, std::vector<double>(n));
          for (std::size_t i = 0; i < n; ++i)
            for (std::size_t j = 0; j < k; ++j) raters[j][i] = a.data()[i * k + j];
          const mt::TwoWayAnova t = nogil([&] { return mt::two_way_anova(raters); });
          py::dict d;
          d["n"] = t.n;
          d["k"] = t.k;
          d["grand_mean"] = t.grand_mean;
          d["ms_rows"] = t.ms_rows;
          d["ms_cols"] = t.ms_cols;
          d["ms_error"] = t.ms_error;
          d["ms_within"] = t.ms_within;
          return d;
        }, py::arg("ratings"), "Two-way ANOVA mean squares of a (n targets, k raters) table (Shrout & Fleiss's BMS, JMS, "
        "EMS, WMS).");
  m.def("bland_altman", [](const py::object& t, const py::object& p, double z) {
          auto a = to_values(t, "y_true"), b = to_values(p, "y_pred");
          const mt::BlandAltman r = nogil([&] { return mt::bland_altman(a, b, z); });
          py::dict d;
          d["bias"] = r.bias;
          d["sd"] = r.sd;
          d["lower"] = r.lower;
          d["upper"] = r.upper;
          return d;
        }, py::arg("y_true"), py::arg("y_pred"), py::arg("z") = 1.96,
        "Bias and limits of agreement of d = y_pred - y_true: {bias, sd (ddof=1), lower, upper}.");
  m.def("regression_report", [](const py::object& t, const py::object& p) {
          auto a = to_values(t, "y_true"), b = to_values(p, "y_pred");
          const mt::RegressionReport r = nogil([&] { return mt::regression_report(a, b); });
          py::dict d;
          d["n"] = r.n;
          d["mae"] = r.mae;
          d["rmse"] = r.rmse;
          d["r2"] = r.r2;
          d["pearson_r"] = r.pearson_r;
          d["icc2_1"] = r.icc2_1;
          d["icc3_1"] = r.icc3_1;
          d["bias"] = r.bland_altman.bias;
          d["sd"] = r.bland_altman.sd;
          d["loa_lower"] = r.bland_altman.lower;
          d["loa_upper"] = r.bland_altman.upper;
          return d;
        }, py::arg("y_true"), py::arg("y_pred"), "Every regression metric in one dict (NaN where undefined).");

  // ---- binary classification
  m.def("roc_auc", [](const py::object& t, const py::object& s) {
          auto y = to_labels(t, "y_true");
          auto sc = to_values(s, "y_score");
          return nogil([&] { return mt::roc_auc(y, sc); });
        }, py::arg("y_true"), py::arg("y_score"), "Exact ROC AUC (Mann-Whitney, ties one half).");
  m.def("roc_curve", [](const py::object& t, const py::object& s, bool drop_intermediate) {
          auto y = to_labels(t, "y_true");
          auto sc = to_values(s, "y_score");
          const mt::RocCurve c = nogil([&] { return mt::roc_curve(y, sc, drop_intermediate); });
          return py::make_tuple(to_array(c.fpr), to_array(c.tpr), to_array(c.thresholds));
        }, py::arg("y_true"), py::arg("y_score"), py::arg("drop_intermediate") = false,
        "(fpr, tpr, thresholds) as sklearn.metrics.roc_curve; thresholds[0] is +inf.");
  m.def("auc_bootstrap_ci", [](const py::object& t, const py::object& s, std::size_t n_boot, double alpha,
                               std::uint64_t seed) {
          auto y = to_labels(t, "y_true");
          auto sc = to_values(s, "y_score");
          return ci_dict(nogil([&] { return mt::auc_bootstrap_ci(y, sc, n_boot, alpha, seed); }));
        }, py::arg("y_true"), py::arg("y_score"), py::arg("n_boot") = 2000, py::arg("alpha") = 0.05, py::arg("seed") = 0,
        "Percentile bootstrap CI of the AUC: {auc, lower, upper, alpha, n_boot, n_valid}.");
  m.def("confusion_counts", [](const py::object& t, const py::object& s, double threshold) {
          auto y = to_labels(t, "y_true");
          auto sc = to_values(s, "y_score");
          return counts_dict(nogil([&] { return mt::confusion_counts(y, sc, threshold); }));
        }, py::arg("y_true"), py::arg("y_score"), py::arg("threshold") = 0.5,
        "{tp, fp, tn, fn} with positive when y_score >= threshold.");
  m.def("accuracy", [](const py::object& t, const py::object& s, double threshold) {
          if (is_label_array(s)) {  // predicted class labels: multi-class accuracy
            auto a = to_labels(t, "y_true"), b = to_labels(s, "y_pred");
            return nogil([&] { return mt::accuracy(a, b); });
          }
          auto y = to_labels(t, "y_true");
          auto sc = to_values(s, "y_score");
          return nogil([&] { return mt::accuracy(y, sc, threshold); });
        }, py::arg("y_true"), py::arg("y_score"), py::arg("threshold") = 0.5,
        "Accuracy: of binary labels against float scores at a threshold, or of class labels against integer "
        "predicted labels.");
  using ThresholdMetric = double (*)(const std::vector<int>&, const std::vector<double>&, double);
  struct Named {
    const char* name;
    ThresholdMetric f;
    const char* doc;
  };
  const Named threshold_metrics[] = {
      {"sensitivity", &mt::sensitivity, "Sensitivity TP / (TP + FN), positive when y_score >= threshold."},
      {"recall", &mt::recall, "Recall, the same as sensitivity."},
      {"specificity", &mt::specificity, "Specificity TN / (TN + FP), positive when y_score >= threshold."},
      {"precision", &mt::precision, "Precision TP / (TP + FP); 0 when nothing is predicted positive."},
      {"f1", &mt::f1, "F1 2 TP / (2 TP + FP + FN), positive when y_score >= threshold."}};
  for (const Named& tm : threshold_metrics) {
    const ThresholdMetric f = tm.f;
    m.def(tm.name, [f](const py::object& t, const py::object& s, double threshold) {
            auto y = to_labels(t, "y_true");
            auto sc = to_values(s, "y_score");
            return nogil([&] { return f(y, sc, threshold); });
          }, py::arg("y_true"), py::arg("y_score"), py::arg("threshold") = 0.5, tm.doc);
  }
  m.def("brier", [](const py::object& t, const py::object& s) {
          auto y = to_labels(t, "y_true");
          auto sc = to_values(s, "y_prob");
          return nogil([&] { return mt::brier(y, sc); });
        }, py::arg("y_true"), py::arg("y_prob"), "Brier score, mean (y_prob - y_true)^2.");
  m.def("calibration_bins", [](const py::object& t, const py::object& s, std::size_t n_bins) {
          auto y = to_labels(t, "y_true");
          auto sc = to_values(s, "y_prob");
          const mt::CalibrationBins c = nogil([&] { return mt::calibration_bins(y, sc, n_bins); });
          py::dict d;
          d["prob_true"] = to_array(c.prob_true);
          d["prob_pred"] = to_array(c.prob_pred);
          d["counts"] = to_array(c.counts);
          d["bins"] = to_array(c.bins);
          d["ece"] = c.ece;
          return d;
        }, py::arg("y_true"), py::arg("y_prob"), py::arg("n_bins") = 10,
        "Uniform calibration bins as sklearn.calibration.calibration_curve: {prob_true, prob_pred, counts, bins, ece}.");
  m.def("classification_report", [](const py::object& t, const py::object& s, double threshold, std::size_t n_boot,
                                    std::uint64_t seed, double alpha) {
          auto y = to_labels(t, "y_true");
          auto sc = to_values(s, "y_prob");
          const mt::ClassificationReport r =
              nogil([&] { return mt::classification_report(y, sc, threshold, n_boot, seed, alpha); });
          py::dict d;
          d["n"] = r.n;
          d["n_pos"] = r.n_pos;
          d["n_neg"] = r.n_neg;
          d["threshold"] = r.threshold;
          d["auc"] = r.auc;
          d["auc_lower"] = r.auc_ci.lower;
          d["auc_upper"] = r.auc_ci.upper;
          d["auc_n_valid"] = r.auc_ci.n_valid;
          d["accuracy"] = r.accuracy;
          d["sensitivity"] = r.sensitivity;
          d["specificity"] = r.specificity;
          d["precision"] = r.precision;
          d["f1"] = r.f1;
          d["brier"] = r.brier;
          d["ece"] = r.ece;
          d["tp"] = r.counts.tp;
          d["fp"] = r.counts.fp;
          d["tn"] = r.counts.tn;
          d["fn"] = r.counts.fn;
          return d;
        }, py::arg("y_true"), py::arg("y_prob"), py::arg("threshold") = 0.5, py::arg("n_boot") = 2000,
        py::arg("seed") = 0, py::arg("alpha") = 0.05, "Every binary classification metric in one dict.");

  // ---- multi-class
  m.def("confusion_matrix", [](const py::object& t, const py::object& p, int n_classes) {
          auto a = to_labels(t, "y_true"), b = to_labels(p, "y_pred");
          const mt::ConfusionMatrix c = nogil([&] { return mt::confusion_matrix(a, b, n_classes); });
          const py::ssize_t k = static_cast<py::ssize_t>(c.n_classes);
          py::array_t<std::int64_t> out({k, k});
          std::int64_t* o = out.mutable_data();
          for (std::size_t x = 0; x < c.counts.size(); ++x) o[x] = static_cast<std::int64_t>(c.counts[x]);
          return out;
        }, py::arg("y_true"), py::arg("y_pred"), py::arg("n_classes") = 0,
        "K x K int64 matrix, rows = true class, columns = predicted class.");
  m.def("macro_f1", [](const py::object& t, const py::object& p, int n_classes) {
          auto a = to_labels(t, "y_true"), b = to_labels(p, "y_pred");
          return nogil([&] { return mt::macro_f1(a, b, n_classes); });
        }, py::arg("y_true"), py::arg("y_pred"), py::arg("n_classes") = 0, "Macro-averaged F1 over classes.");

  // ---- segmentation and ABC/2
  m.def("dice", [](const py::object& a, const py::object& b) {
          py::object np = py::module_::import("numpy");
          py::array x = np.attr("asarray")(a), y = np.attr("asarray")(b);
          if (x.ndim() != y.ndim() || !std::equal(x.shape(), x.shape() + x.ndim(), y.shape()))
            throw InvalidArgument("dice: the masks differ in shape (" + std::string(py::str(x.attr("shape"))) + " vs " +
                                  std::string(py::str(y.attr("shape"))) + ")");
          auto fx = py::array_t<std::uint8_t, py::array::c_style | py::array::forcecast>::ensure(
              np.attr("not_equal")(x, 0).attr("astype")("uint8"));
          auto fy = py::array_t<std::uint8_t, py::array::c_style | py::array::forcecast>::ensure(
              np.attr("not_equal")(y, 0).attr("astype")("uint8"));
          if (!fx || !fy) throw InvalidArgument("dice: cannot convert the masks");
          const std::uint8_t *px = fx.data(), *py_ = fy.data();
          const std::size_t n = static_cast<std::size_t>(fx.size());
          return nogil([&] { return mt::dice(px, py_, n); });
        }, py::arg("a"), py::arg("b"), "Dice 2|A & B| / (|A| + |B|) of two masks (non-zero = foreground); 1 if both empty.");
  m.def("abc2", [volume_type](const py::object& mask, const py::object& spacing, bool weighted) {
          return abc2_dict(abc2_of(volume_type, mask, spacing, weighted));
        }, py::arg("mask"), py::arg("spacing") = py::none(), py::arg("weighted") = true,
        "ABC/2 (Kothari) of a hematoma mask: {volume_ml, a_mm, b_mm, c_mm, slice, area_voxels, slices}.");
  m.def("abc2_ml", [volume_type](const py::object& mask, const py::object& spacing, bool weighted) {
          return abc2_of(volume_type, mask, spacing, weighted).volume_ml;
        }, py::arg("mask"), py::arg("spacing") = py::none(), py::arg("weighted") = true, "ABC/2 volume in mL.");
}

}  // namespace ichkit::python
