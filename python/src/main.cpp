#include "bindings.h"

#include "ichkit/core/runtime.h"
#include "ichkit/core/version.h"

PYBIND11_MODULE(_core, m) {
  m.doc() = R"pbdoc(ichkit's compiled core: volumes with geometry, NIfTI IO, phantoms.
Use the `ichkit` package, which re-exports this module.)pbdoc";
  m.attr("__version__") = ichkit::version();
  ichkit::init_runtime();
  ichkit::python::bind_core(m);
  ichkit::python::bind_io(m);
  ichkit::python::bind_phantom(m);
  ichkit::python::bind_preprocess(m);
  ichkit::python::bind_metrics(m);
  ichkit::python::bind_model(m);
  ichkit::python::bind_training(m);
  ichkit::python::bind_explain(m);
}
