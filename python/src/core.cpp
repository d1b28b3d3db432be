// Bindings of the core module: exceptions, threads, ichkit.Volume (zero-copy numpy/torch views).
#include <pybind11/eigen.h>

#include <sstream>

#include "bindings.h"
#include "ichkit/core/error.h"
#include "ichkit/core/runtime.h"
#include "ichkit/core/threading.h"

namespace ichkit::python {

namespace {

PyObject* g_error = nullptr;
PyObject* g_io_error = nullptr;
PyObject* g_format_error = nullptr;
PyObject* g_geometry_error = nullptr;
PyObject* g_invalid_argument = nullptr;
PyObject* g_resource_error = nullptr;

PyObject* make_exception(py::module_& m, const char* name, std::initializer_list<PyObject*> bases, const char* doc) {
  py::tuple b(bases.size());
  std::size_t i = 0;
  for (PyObject* base : bases) b[i++] = py::reinterpret_borrow<py::object>(base);
  const std::string full = std::string("ichkit.") + name;
  PyObject* e = PyErr_NewExceptionWithDoc(full.c_str(), doc, b.ptr(), nullptr);
  if (!e) throw py::error_already_set();
  m.add_object(name, py::reinterpret_borrow<py::object>(e));
  return e;
}

struct PyVolume {
  AnyVolume v;
};

template <class T>
py::array view_of(const Volume<T>& vol) {
  auto* keep = new std::shared_ptr<T>(vol.buffer());
  py::capsule owner(keep, [](void* p) { delete static_cast<std::shared_ptr<T>*>(p); });
  const py::ssize_t s = sizeof(T);
  std::vector<py::ssize_t> shape{py::ssize_t(vol.ni()), py::ssize_t(vol.nj()), py::ssize_t(vol.nk())};
  std::vector<py::ssize_t> strides{s, s * py::ssize_t(vol.ni()), s * py::ssize_t(vol.ni() * vol.nj())};
  return py::array_t<T>(shape, strides, const_cast<T*>(vol.data()), owner);
}

py::array array_of(const AnyVolume& v) {
  return std::visit([](const auto& vol) -> py::array { return view_of(vol); }, v);
}

Geometry geometry_from(const py::object& affine) {
  if (affine.is_none()) return Geometry();
  auto a = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(affine);
  if (!a || a.ndim() != 2 || a.shape(0) != 4 || a.shape(1) != 4) throw InvalidArgument("affine must be a 4x4 array");
  Eigen::Matrix4d m;
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) m(r, c) = a.at(r, c);
  return Geometry(m);
}

template <class T>
AnyVolume from_array_t(const py::array& arr, const Geometry& g) {
  auto f = py::array_t<T, py::array::f_style | py::array::forcecast>::ensure(arr);
  if (!f) throw InvalidArgument("cannot convert the array");
  Shape3 s{std::size_t(f.shape(0)), std::size_t(f.shape(1)), std::size_t(f.shape(2))};
  Volume<T> v = Volume<T>::uninitialized(s, g);
  std::memcpy(v.data(), f.data(), v.size() * sizeof(T));
  return v;
}

AnyVolume from_array(const py::array& arr, const Geometry& g) {
  if (arr.ndim() != 3)
    throw InvalidArgument("a Volume needs a 3D array of shape (ni, nj, nk); got " + std::to_string(arr.ndim()) + "D");
  for (int d = 0; d < 3; ++d)
    if (arr.shape(d) == 0) throw InvalidArgument("a Volume cannot have a zero-length axis");
  const char kind = arr.dtype().kind();
  const auto size = arr.dtype().itemsize();
  if (kind == 'b') return from_array_t<std::uint8_t>(arr, g);
  if (kind == 'u') {
    if (size == 1) return from_array_t<std::uint8_t>(arr, g);
    if (size == 2) return from_array_t<std::uint16_t>(arr, g);
    if (size == 4) return from_array_t<std::uint32_t>(arr, g);
    if (size == 8) return from_array_t<std::uint64_t>(arr, g);
  }
  if (kind == 'i') {
    if (size == 1) return from_array_t<std::int8_t>(arr, g);
    if (size == 2) return from_array_t<std::int16_t>(arr, g);
    if (size == 4) return from_array_t<std::int32_t>(arr, g);
    if (size == 8) return from_array_t<std::int64_t>(arr, g);
  }
  if (kind == 'f') {
    if (size <= 4) return from_array_t<float>(arr, g);
    if (size == 8) return from_array_t<double>(arr, g);
  }
  throw InvalidArgument("unsupported array dtype '" + std::string(py::str(arr.dtype())) +
                        "' (use bool, (u)int8/16/32/64, float32 or float64)");
}

const Geometry& geometry_of(const AnyVolume& v) {
  return std::visit([](const auto& x) -> const Geometry& { return x.geometry(); }, v);
}

Shape3 shape_of(const AnyVolume& v) {
  return std::visit([](const auto& x) { return x.shape(); }, v);
}

AnyVolume cast_to(const AnyVolume& v, DataType t) {
  AnyVolume out;
  auto go = [&](auto tag) { out = as<decltype(tag)>(v); };
  switch (t) {
    case DataType::UInt8: go(std::uint8_t{}); break;
    case DataType::Int8: go(std::int8_t{}); break;
    case DataType::Int16: go(std::int16_t{}); break;
    case DataType::UInt16: go(std::uint16_t{}); break;
    case DataType::Int32: go(std::int32_t{}); break;
    case DataType::UInt32: go(std::uint32_t{}); break;
    case DataType::Int64: go(std::int64_t{}); break;
    case DataType::UInt64: go(std::uint64_t{}); break;
    case DataType::Float32: go(float{}); break;
    case DataType::Float64: go(double{}); break;
  }
  return out;
}

}  // namespace

py::object wrap(AnyVolume v) { return py::cast(PyVolume{std::move(v)}); }
const AnyVolume& unwrap(const py::handle& obj) { return obj.cast<const PyVolume&>().v; }

PyProgress::~PyProgress() {
  if (bar_) {
    py::gil_scoped_acquire gil;
    bar_ = py::object();
  }
  py::gil_scoped_acquire gil;
  factory_ = py::object();
}
void PyProgress::begin(const std::string& task, std::int64_t total) {
  py::gil_scoped_acquire gil;
  bar_ = factory_(py::arg("total") = total > 0 ? py::object(py::int_(total)) : py::object(py::none()), py::arg("desc") = task);
}
void PyProgress::advance(std::int64_t steps, const std::string& message) {
  py::gil_scoped_acquire gil;
  if (!bar_) return;
  bar_.attr("update")(steps);
  if (!message.empty() && py::hasattr(bar_, "set_postfix_str")) bar_.attr("set_postfix_str")(message);
}
void PyProgress::end() {
  py::gil_scoped_acquire gil;
  if (bar_ && py::hasattr(bar_, "close")) bar_.attr("close")();
  bar_ = py::object();
}

void bind_core(py::module_& m) {
  g_error = make_exception(m, "Error", {PyExc_RuntimeError}, "Base class of ichkit's errors.");
  g_io_error = make_exception(m, "IoError", {g_error, PyExc_OSError}, "A file could not be opened, read or written.");
  g_format_error = make_exception(m, "FormatError", {g_error, PyExc_ValueError}, "A file's content is not a valid image.");
  g_geometry_error = make_exception(m, "GeometryError", {g_error, PyExc_ValueError}, "Missing, singular or inconsistent geometry.");
  g_invalid_argument = make_exception(m, "InvalidArgument", {g_error, PyExc_ValueError}, "An argument outside its domain.");
  g_resource_error = make_exception(m, "ResourceError", {g_error, PyExc_MemoryError}, "A request exceeds the memory budget.");
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const IoError& e) {
      PyErr_SetString(g_io_error, e.what());
    } catch (const FormatError& e) {
      PyErr_SetString(g_format_error, e.what());
    } catch (const GeometryError& e) {
      PyErr_SetString(g_geometry_error, e.what());
    } catch (const InvalidArgument& e) {
      PyErr_SetString(g_invalid_argument, e.what());
    } catch (const ResourceError& e) {
      PyErr_SetString(g_resource_error, e.what());
    } catch (const Error& e) {
      PyErr_SetString(g_error, e.what());
    }
  });

  m.def("set_num_threads", &set_num_threads, py::arg("n"),
        "Threads used by ichkit's kernels and LibTorch (n <= 0: the default, $OMP_NUM_THREADS where "
        "set, otherwise ichkit.available_cores()).");
  m.def("num_threads", &num_threads, "Threads ichkit's kernels use.");
  m.def("available_cores", &available_cores,
        "The cores this process may use: its CPU affinity (taskset, Slurm / Docker cpusets), at most its "
        "cgroup's CPU quota (docker --cpus, Kubernetes limits). os.cpu_count() counts the machine's.");
  m.def("set_memory_budget", &set_memory_budget, py::arg("bytes"),
        "Largest voxel buffer one allocation may take; bigger volumes (a hostile header, a pipeline's "
        "shape) raise ichkit.ResourceError before anything is allocated.");
  m.def("memory_budget", &memory_budget, "The per-allocation voxel budget in bytes (default: physical memory).");
  m.def("runtime_info", [] {
    RuntimeInfo r = runtime_info();
    py::dict d;
    d["ichkit_version"] = r.ichkit_version;
    d["torch_version"] = r.torch_version;
    d["threads"] = r.threads;
    d["cores"] = r.cores;
    d["torch_threads"] = r.torch_threads;
    d["mkldnn"] = r.mkldnn;
    d["cuda"] = r.cuda;
    d["heap_retention"] = r.heap_retention;
    return d;
  }, "Versions and thread counts of the compiled library.");

  py::class_<PyVolume>(m, "Volume", R"pbdoc(
Voxels + geometry. ``array`` is a zero-copy numpy view of shape (ni, nj, nk) that indexes like
``nibabel.load(p).get_fdata()``; ``affine`` maps (i, j, k, 1) to RAS+ millimetres exactly as
nibabel's ``img.affine``; ``torch()`` is a zero-copy tensor (D, H, W) = (nk, nj, ni).
Constructing from a numpy array copies it (``Volume(array, affine)``); ``copy()`` duplicates.)pbdoc")
      .def(py::init([](const py::array& array, const py::object& affine) {
             Geometry g = geometry_from(affine);
             return PyVolume{from_array(array, g)};
           }),
           py::arg("array"), py::arg("affine") = py::none(),
           "Copy a 3D numpy array (ni, nj, nk) and pair it with a 4x4 index->RAS affine (default identity).")
      .def_property_readonly("array", [](const PyVolume& s) { return array_of(s.v); },
                             "Zero-copy numpy view, shape (ni, nj, nk); writes go to the volume.")
      .def("__array__", [](const PyVolume& s, const py::object& dtype) {
             py::array a = array_of(s.v);
             if (!dtype.is_none()) return py::array(a.attr("astype")(dtype));
             return a;
           }, py::arg("dtype") = py::none())
      .def_property("affine",
                    [](const PyVolume& s) { return Eigen::Matrix4d(geometry_of(s.v).affine()); },
                    [](PyVolume& s, const py::object& a) {
                      Geometry g = geometry_from(a);
                      std::visit([&](auto& x) { x.set_geometry(g); }, s.v);
                    },
                    "4x4 float64 index->RAS+ mm (a copy; assign to change the geometry).")
      .def_property_readonly("shape", [](const PyVolume& s) {
             Shape3 sh = shape_of(s.v);
             return py::make_tuple(sh[0], sh[1], sh[2]);
           })
      .def_property_readonly("dtype", [](const PyVolume& s) { return py::dtype(to_string(datatype(s.v))); })
      .def_property_readonly("spacing", [](const PyVolume& s) {
             Eigen::Vector3d sp = geometry_of(s.v).spacing();
             return py::make_tuple(sp[0], sp[1], sp[2]);
           }, "Voxel size along i, j, k in mm.")
      .def_property_readonly("origin", [](const PyVolume& s) {
             Eigen::Vector3d o = geometry_of(s.v).origin();
             return py::make_tuple(o[0], o[1], o[2]);
           }, "World position (RAS mm) of voxel (0, 0, 0).")
      .def_property_readonly("direction", [](const PyVolume& s) { return Eigen::Matrix3d(geometry_of(s.v).direction()); },
                             "Unit world directions of the i, j, k axes, as columns.")
      .def_property_readonly("orientation", [](const PyVolume& s) { return geometry_of(s.v).orientation_code(); },
                             "Axis codes like nibabel's aff2axcodes, e.g. 'RAS' or 'LPS'.")
      .def_property_readonly("metadata", [](const PyVolume& s) {
             return std::visit([](const auto& x) { return x.metadata().items(); }, s.v);
           })
      .def("index_to_world", [](const PyVolume& s, const Eigen::Vector3d& ijk) { return Eigen::Vector3d(geometry_of(s.v).index_to_world(ijk)); },
           py::arg("ijk"))
      .def("world_to_index", [](const PyVolume& s, const Eigen::Vector3d& xyz) { return Eigen::Vector3d(geometry_of(s.v).world_to_index(xyz)); },
           py::arg("xyz"))
      .def("copy", [](const PyVolume& s) {
             return PyVolume{std::visit([](const auto& x) -> AnyVolume { return x.deep_copy(); }, s.v)};
           }, "A deep copy (own voxel buffer).")
      .def("astype", [](const PyVolume& s, const py::object& dtype) {
             std::string name = py::str(py::dtype::from_args(dtype));
             return PyVolume{cast_to(s.v, datatype_from_string(name))};
           }, py::arg("dtype"), "A converted copy (values cast like numpy's astype without rounding).")
      .def("torch", [](const PyVolume& s) {
             py::object torch = py::module_::import("torch");
             return torch.attr("from_numpy")(array_of(s.v).attr("T"));
           }, "Zero-copy torch tensor of shape (D, H, W) = (nk, nj, ni).")
      .def("shares_memory_with", [](const PyVolume& a, const PyVolume& b) {
             return std::visit([&](const auto& x) {
               using V = std::decay_t<decltype(x)>;
               const V* y = std::get_if<V>(&b.v);
               return y && x.shares_buffer_with(*y);
             }, a.v);
           })
      .def("__repr__", [](const PyVolume& s) {
             Shape3 sh = shape_of(s.v);
             Eigen::Vector3d sp = geometry_of(s.v).spacing();
             std::ostringstream os;
             os.precision(4);
             os << "Volume(shape=(" << sh[0] << ", " << sh[1] << ", " << sh[2] << "), dtype=" << to_string(datatype(s.v))
                << ", spacing=(" << sp[0] << ", " << sp[1] << ", " << sp[2] << ") mm, orientation="
                << geometry_of(s.v).orientation_code() << ")";
             return os.str();
           });
}

}  // namespace ichkit::python
