// Bindings of the model module: ichkit.model.Model (load / save / predict / weights).
#include <torch/torch.h>

#include "bindings.h"
#include "ichkit/model/detail/impl.h"
#include "ichkit/model/model.h"

namespace ichkit::python {

namespace {
using namespace ichkit::model;
using nlohmann::json;

py::object to_py(const json& j) { return py::module_::import("json").attr("loads")(j.dump()); }
json from_py(const py::handle& o) { return json::parse(py::module_::import("json").attr("dumps")(o).cast<std::string>()); }

py::array to_numpy(const torch::Tensor& t0) {
  torch::Tensor t = t0.detach().contiguous().cpu();
  std::vector<py::ssize_t> shape(t.sizes().begin(), t.sizes().end());
  if (t.scalar_type() == torch::kFloat32) {
    py::array_t<float> a(shape);
    std::memcpy(a.mutable_data(), t.data_ptr<float>(), t.numel() * sizeof(float));
    return std::move(a);
  }
  if (t.scalar_type() == torch::kInt64) {
    py::array_t<std::int64_t> a(shape);
    std::memcpy(a.mutable_data(), t.data_ptr<std::int64_t>(), t.numel() * sizeof(std::int64_t));
    return std::move(a);
  }
  throw InvalidArgument("unsupported tensor type");
}

/// A float32 (N, C, D, H, W) tensor over a numpy array or a torch tensor (copied once).
torch::Tensor input_tensor(const py::object& x) {
  py::array_t<float, py::array::c_style | py::array::forcecast> a =
      py::hasattr(x, "detach") ? py::array_t<float, py::array::c_style | py::array::forcecast>(x.attr("detach")().attr("cpu")().attr("numpy")())
                               : py::array_t<float, py::array::c_style | py::array::forcecast>(x);
  if (a.ndim() != 5) throw InvalidArgument("network input must be (N, C, D, H, W), got " + std::to_string(a.ndim()) + " dimensions");
  std::vector<int64_t> shape(a.shape(), a.shape() + 5);
  return torch::from_blob(const_cast<float*>(a.data()), shape, torch::kFloat32).clone();
}

}  // namespace

py::dict prediction_dict(const model::Prediction& p) {
  py::dict d;
  for (const model::HeadPrediction& h : p.heads) {
    py::dict r;
    r["type"] = h.type;
    r["value"] = h.value;
    if (!h.probabilities.empty()) {
      r["probabilities"] = h.probabilities;
      r["classes"] = h.classes;
      py::dict byname;
      for (std::size_t c = 0; c < h.classes.size(); ++c) byname[py::str(h.classes[c])] = h.probabilities[c];
      r["probability"] = byname;
    }
    if (!h.mask.empty()) {
      r["probability_map"] = wrap(h.probability);
      r["mask"] = wrap(h.mask);
      r["abc2_ml"] = h.abc2_ml;
    }
    d[py::str(h.name)] = r;
  }
  return d;
}

void bind_model(py::module_& root) {
  py::module_ m = root.def_submodule("model", "Multi-task models: load, predict, save.");
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const c10::Error& e) {
      // LibTorch's own errors, without the C++ backtrace
      PyErr_SetString(PyExc_RuntimeError, e.what_without_backtrace());
    }
  });

  m.def("head_types", [] { return HeadRegistry::instance().types(); }, "Registered head types.");
  m.def("default_config", [] { return to_py(ModelConfig::default_multitask().to_json()); },
        "The paper's model: ResNet-18, volume regression (mL) + binary prognosis, default head-CT pipeline.");

  py::class_<Model>(m, "Model", R"pbdoc(
A multi-task model: 3D ResNet encoder + named heads + the preprocessing pipeline it was trained
with. ``Model(config, seed)`` initialises weights deterministically; ``Model.load(path)`` reads a
model file (refusing corrupt, truncated or unknown-version files); ``predict(volume)`` runs the
stored pipeline and returns each head's output in user units.)pbdoc")
      .def(py::init([](const py::dict& config, std::uint64_t seed) {
             return Model(ModelConfig::from_json(from_py(config)), seed);
           }), py::arg("config"), py::arg("seed") = 0)
      .def_static("load", [](const std::string& path, std::uint64_t max_bytes) {
                    LoadOptions o;
                    o.max_bytes = max_bytes;
                    py::gil_scoped_release nogil;
                    return Model::load(path, o);
                  }, py::arg("path"), py::arg("max_bytes") = std::uint64_t(4) << 30)
      .def_static("from_bytes", [](const py::bytes& b) { return Model::from_bytes(std::string(b)); }, py::arg("data"))
      .def("save", [](const Model& m, const std::string& path) {
             py::gil_scoped_release nogil;
             m.save(path);
           }, py::arg("path"), "Write the model file atomically (temporary file + rename).")
      .def("to_bytes", [](const Model& m) { return py::bytes(m.to_bytes()); })
      .def_property_readonly("config", [](const Model& m) { return to_py(m.config().to_json()); },
                             "The model config (JSON form, with fitted head parameters).")
      .def_property_readonly("pipeline", &Model::pipeline)
      .def_property("metadata", [](const Model& m) { return to_py(m.metadata()); },
                    [](Model& m, const py::dict& d) { m.set_metadata(from_py(d)); })
      .def_property_readonly("parameter_count", &Model::parameter_count)
      .def("predict_files", [](const Model& m, const std::vector<std::string>& paths, int batch_size, int readers, int ahead,
                               int reader_threads, const std::string& schedule, const py::object& progress) {
             CohortOptions o;
             std::unique_ptr<PyProgress> bar;
             if (!progress.is_none()) {
               bar = std::make_unique<PyProgress>(progress);
               o.progress = bar.get();
             }
             o.batch_size = batch_size;
             o.readers = readers;
             o.ahead = ahead;
             o.reader_threads = reader_threads;
             if (schedule == "overlap") o.schedule = CohortOptions::Schedule::Overlap;
             else if (schedule == "alternate") o.schedule = CohortOptions::Schedule::Alternate;
             else if (schedule != "auto") throw InvalidArgument("schedule must be 'auto', 'overlap' or 'alternate', not '" + schedule + "'");
             std::vector<CohortItem> items;
             {
               py::gil_scoped_release nogil;
               items = m.predict_files(paths, o);
             }
             py::list l;
             for (const auto& it : items) {
               py::dict d;
               d["path"] = it.path;
               d["ok"] = it.ok;
               d["error"] = it.error;
               d["prediction"] = it.ok ? py::object(prediction_dict(it.prediction)) : py::none();
               l.append(d);
             }
             return l;
           }, py::arg("paths"), py::arg("batch_size") = 4, py::arg("readers") = 0, py::arg("ahead") = 0,
           py::arg("reader_threads") = 0, py::arg("schedule") = "auto", py::arg("progress") = py::none(),
           "Predict a cohort of files; reader threads read and preprocess ahead of the network "
           "(readers, reader_threads, ahead: 0 = chosen for the device; schedule: 'overlap' beside the network, "
           "'alternate' only while it is not running, 'auto' = alternate on the CPU, overlap on a GPU; see CohortOptions). "
           "progress: a tqdm-like class or factory, advanced per scan done. "
           "A list of {'path', 'ok', 'error', 'prediction'} in input order; one bad file does not stop the others.")
      .def("set_device", &Model::set_device, py::arg("device"), py::arg("precision") = "float32",
           "Run predict/explain on 'cpu', 'cuda' or 'cuda:N', in float32 (or bfloat16/float16 on CUDA). "
           "The float32 CPU weights stay the master copy. ValueError when the device is not available.")
      .def_property_readonly("device", &Model::device)
      .def_property_readonly("precision", &Model::precision)
      .def_property("fast_inference", [](const Model& m) { return m.impl()->fast_inference; },
                    [](Model& m, bool on) { m.impl()->fast_inference = on; },
                    "Predict through oneDNN with BatchNorm folded (default on); off = the plain module.")
      .def_property_readonly("head_names", [](const Model& m) {
        std::vector<std::string> n;
        for (const auto& h : m.config().heads) n.push_back(h.name);
        return n;
      })
      .def("state_dict", [](const Model& m) {
             py::dict d;
             for (auto& [name, t] : named_state(m.impl()->net)) d[py::str(name)] = to_numpy(t);
             return d;
           }, "Weights and buffers by name (numpy copies), as a PyTorch state_dict.")
      .def("load_state_dict", [](Model& m, const py::dict& d) {
             std::vector<std::pair<std::string, torch::Tensor>> st;
             for (auto item : d) {
               const std::string name = py::str(item.first);
               py::array a = py::array::ensure(item.second);
               if (!a) throw InvalidArgument("state_dict['" + name + "'] is not an array");
               if (py::isinstance<py::array_t<std::int64_t>>(a) && a.dtype().kind() == 'i') {
                 auto c = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>(a);
                 std::vector<int64_t> shape(c.shape(), c.shape() + c.ndim());
                 st.emplace_back(name, torch::from_blob(const_cast<std::int64_t*>(c.data()), shape, torch::kInt64).clone());
               } else {
                 auto c = py::array_t<float, py::array::c_style | py::array::forcecast>(a);
                 std::vector<int64_t> shape(c.shape(), c.shape() + c.ndim());
                 st.emplace_back(name, torch::from_blob(const_cast<float*>(c.data()), shape, torch::kFloat32).clone());
               }
             }
             load_state(m.impl()->net, st);
             m.impl()->weights_changed();
           }, py::arg("state"), "Replace weights (names, shapes and types must match the architecture).")
      .def("forward", [](const Model& m, const py::object& x) {
             torch::Tensor t = input_tensor(x);
             MultiTaskNetImpl::Output o;
             {
               py::gil_scoped_release nogil;
               o = m.impl()->infer(t);
             }
             py::dict d;
             for (auto& [name, v] : o.heads) d[py::str(name)] = to_numpy(v);
             return d;
           }, py::arg("x"), "Raw head outputs (eval mode) for a network input (N, C, D, H, W).")
      .def("stages", [](const Model& m, const py::object& x) {
             torch::Tensor t = input_tensor(x);
             Stages s;
             {
               py::gil_scoped_release nogil;
               c10::InferenceMode guard;
               s = m.impl()->net->encoder()->forward(t);
             }
             py::list l;
             for (auto& v : s.maps) l.append(to_numpy(v));
             return l;
           }, py::arg("x"), "Encoder stage maps (stem, layer1..layer4) for a network input.")
      .def("predict", [](const Model& m, const py::object& vols, int batch_size) -> py::object {
             const bool single = !py::isinstance<py::list>(vols) && !py::isinstance<py::tuple>(vols);
             std::vector<Volume<float>> vs;
             if (single) vs.push_back(as<float>(unwrap(vols)));
             else
               for (auto v : vols) vs.push_back(as<float>(unwrap(v)));
             std::vector<Prediction> ps;
             {
               py::gil_scoped_release nogil;
               ps = m.predict(vs, batch_size);
             }
             if (single) return prediction_dict(ps.at(0));
             py::list l;
             for (const auto& p : ps) l.append(prediction_dict(p));
             return l;
           }, py::arg("volumes"), py::arg("batch_size") = 4,
           R"pbdoc(Predict for one Volume (HU) or a list of them. Returns {head: {"type", "value",
["probabilities", "classes", "probability"], ["probability_map", "mask", "abc2_ml"]}}: value is
the regression output in user units, the most probable class index, or the mask volume in mL.)pbdoc")
      .def("__repr__", [](const Model& m) {
        std::string heads;
        for (const auto& h : m.config().heads) heads += (heads.empty() ? "" : ", ") + h.name + ":" + h.type;
        const auto& e = m.config().encoder;
        return "<ichkit.model.Model ResNet-" + std::to_string(e.depth) + " width " + std::to_string(e.width) + " heads [" + heads +
               "], " + std::to_string(m.parameter_count()) + " parameters>";
      });
}

}  // namespace ichkit::python

// ---- training ----------------------------------------------------------------------------
#include "ichkit/model/train.h"

namespace ichkit::python {
namespace {

model::TrainOptions train_options(const py::dict& d) {
  model::TrainOptions o;
  for (auto item : d) {
    const std::string k = py::str(item.first);
    const py::handle v = item.second;
    if (k == "mode") o.mode = v.cast<std::string>();
    else if (k == "task") o.task = v.cast<std::string>();
    else if (k == "epochs") o.epochs = v.cast<int>();
    else if (k == "head_epochs") o.head_epochs = v.cast<int>();
    else if (k == "batch_size") o.batch_size = v.cast<int>();
    else if (k == "lr") o.lr = v.cast<double>();
    else if (k == "head_lr") o.head_lr = v.cast<double>();
    else if (k == "weight_decay") o.weight_decay = v.cast<double>();
    else if (k == "warmup_epochs") o.warmup_epochs = v.cast<double>();
    else if (k == "grad_clip") o.grad_clip = v.cast<double>();
    else if (k == "patience") o.patience = v.cast<int>();
    else if (k == "seed") o.seed = v.cast<std::uint64_t>();
    else if (k == "cache_dir") o.cache_dir = v.cast<std::string>();
    else if (k == "checkpoint") o.checkpoint = v.cast<std::string>();
    else if (k == "prefetch") o.prefetch = v.cast<int>();
    else if (k == "rank") o.distributed.rank = v.cast<int>();
    else if (k == "world_size") o.distributed.world_size = v.cast<int>();
    else if (k == "master_addr") o.distributed.master_addr = v.cast<std::string>();
    else if (k == "master_port") o.distributed.master_port = v.cast<int>();
    else if (k == "augment") {
      if (v.is_none() || (py::isinstance<py::bool_>(v) && !v.cast<bool>())) {
        o.augment.enabled = false;
        continue;
      }
      if (py::isinstance<py::bool_>(v)) continue;
      for (auto a : v.cast<py::dict>()) {
        const std::string ak = py::str(a.first);
        if (ak == "flip_lr") o.augment.flip_lr = a.second.cast<bool>();
        else if (ak == "rotate_deg") o.augment.rotate_deg = a.second.cast<double>();
        else if (ak == "scale") o.augment.scale = a.second.cast<double>();
        else if (ak == "intensity") o.augment.intensity = a.second.cast<double>();
        else if (ak == "noise") o.augment.noise = a.second.cast<double>();
        else if (ak == "enabled") o.augment.enabled = a.second.cast<bool>();
        else throw InvalidArgument("unknown augmentation option '" + ak + "'");
      }
    } else {
      throw InvalidArgument("unknown training option '" + k + "'");
    }
  }
  return o;
}

model::Manifest as_manifest(const py::object& m) {
  if (py::isinstance<py::str>(m)) return model::Manifest::read(m.cast<std::string>());
  return m.cast<model::Manifest>();
}

}  // namespace

void bind_training(py::module_& root) {
  py::module_ m = root.attr("model").cast<py::module_>();
  py::class_<model::Manifest>(m, "Manifest", "Cases of a manifest CSV (image, optional mask, label columns).")
      .def_static("read", &model::Manifest::read, py::arg("path"))
      .def("subset", &model::Manifest::subset, py::arg("index"))
      .def_readonly("columns", &model::Manifest::columns)
      .def_property_readonly("ids", [](const model::Manifest& mf) {
        std::vector<std::string> ids;
        for (const auto& c : mf.cases) ids.push_back(c.id);
        return ids;
      })
      .def("__len__", [](const model::Manifest& mf) { return mf.cases.size(); });
  m.def("patient_folds", &model::patient_folds, py::arg("manifest"), py::arg("k"), py::arg("seed") = 0,
        "K folds of case indices with no patient in two folds.");
  m.def("train", [](const py::dict& config, const py::object& train_m, const py::object& val_m, const py::dict& options,
                    const py::object& progress) {
          model::ModelConfig cfg = model::ModelConfig::from_json(from_py(config));
          model::Manifest tr = as_manifest(train_m);
          model::Manifest va = val_m.is_none() ? model::Manifest{} : as_manifest(val_m);
          model::TrainOptions o = train_options(options);
          std::unique_ptr<PyProgress> bar;
          if (!progress.is_none()) {
            bar = std::make_unique<PyProgress>(progress);
            o.progress = bar.get();
          }
          model::TrainResult r = [&] {
            py::gil_scoped_release nogil;
            return model::train(cfg, tr, va, o);
          }();
          return py::make_tuple(r.model, to_py(r.summary));
        },
        py::arg("config"), py::arg("train"), py::arg("validation") = py::none(), py::arg("options") = py::dict(),
        py::arg("progress") = py::none(),
        R"pbdoc(Train a model of `config` (dict) on a manifest (path or Manifest); returns (Model, summary).
options: mode (joint | two-stage | single-task), task, epochs, head_epochs, batch_size, lr, head_lr,
weight_decay, warmup_epochs, grad_clip, patience, seed, augment (dict or False), cache_dir,
checkpoint, prefetch. progress: a tqdm-like class or factory.)pbdoc");
  m.def("evaluate", [](const model::Model& mdl, const py::object& manifest) {
          model::Manifest mf = as_manifest(manifest);
          model::Evaluation ev = [&] {
            py::gil_scoped_release nogil;
            return model::evaluate(mdl, mf);
          }();
          py::list rows;
          for (const auto& r : ev.rows) rows.append(to_py(r));
          return py::make_tuple(to_py(ev.metrics), rows);
        },
        py::arg("model"), py::arg("manifest"), "Metrics per head and one row per case: (metrics, rows).");
}

}  // namespace ichkit::python
