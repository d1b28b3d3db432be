#pragma once
// Shared declarations of the binding files: one bind_<module>() per file (Open3D style).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "ichkit/core/any_volume.h"
#include "ichkit/core/progress.h"

namespace ichkit::model {
struct Prediction;
}

namespace ichkit::python {
namespace py = pybind11;

void bind_core(py::module_& m);
void bind_io(py::module_& m);
void bind_phantom(py::module_& m);
void bind_preprocess(py::module_& m);
void bind_metrics(py::module_& m);
void bind_model(py::module_& m);
void bind_training(py::module_& m);
void bind_explain(py::module_& m);

/// A model::Prediction as {head: {"type", "value", ...}} (see Model.predict).
py::dict prediction_dict(const model::Prediction& p);

/// Wrap a C++ volume as the Python `ichkit.Volume` (shares the buffer).
py::object wrap(AnyVolume v);
/// The AnyVolume behind a Python `ichkit.Volume`.
const AnyVolume& unwrap(const py::handle& obj);

/// Adapts a Python progress object (tqdm-like: an object with update(n), set_description(s),
/// close(), and a `total` attribute) or a factory callable(total, desc) -> such object.
class PyProgress final : public ProgressReporter {
public:
  explicit PyProgress(py::object factory) : factory_(std::move(factory)) {}
  ~PyProgress() override;
  void begin(const std::string& task, std::int64_t total) override;
  void advance(std::int64_t steps, const std::string& message) override;
  void end() override;

private:
  py::object factory_, bar_;
};

}  // namespace ichkit::python
