// Bindings of the io module. The GIL is released while files are read, decoded and written.
#include <pybind11/eigen.h>

#include "bindings.h"
#include "ichkit/io/dicom.h"
#include "ichkit/io/nifti.h"
#include "ichkit/io/read.h"

namespace ichkit::python {

namespace {
py::dict header_dict(const io::NiftiHeader& h) {
  py::dict d;
  d["version"] = h.version;
  d["compressed"] = h.compressed;
  d["byteswapped"] = h.swapped;
  d["shape"] = py::make_tuple(h.shape[0], h.shape[1], h.shape[2]);
  d["datatype"] = to_string(h.datatype);
  d["pixdim"] = py::make_tuple(h.pixdim[0], h.pixdim[1], h.pixdim[2]);
  d["scl_slope"] = h.scl_slope;
  d["scl_inter"] = h.scl_inter;
  d["qform_code"] = h.qform_code;
  d["sform_code"] = h.sform_code;
  d["qform"] = Eigen::Matrix4d(h.qform);
  d["sform"] = Eigen::Matrix4d(h.sform);
  d["affine"] = Eigen::Matrix4d(h.affine);
  d["vox_offset"] = h.vox_offset;
  d["descrip"] = h.descrip;
  d["xyz_units"] = h.xyzt_units;
  return d;
}

io::ReadOptions read_options(std::uint64_t max_bytes) {
  io::ReadOptions o;
  if (max_bytes) o.max_bytes = max_bytes;
  return o;
}
}  // namespace

void bind_io(py::module_& root) {
  py::module_ m = root.def_submodule("io", "Image input/output (NIfTI-1/2).");
  m.def("is_nifti", &io::is_nifti, py::arg("path"), py::call_guard<py::gil_scoped_release>(),
        "True if the file's content (not its name) is NIfTI, plain or gzip.");
  m.def("read_nifti_header", [](const std::string& path, std::uint64_t max_bytes) {
          io::NiftiHeader h;
          {
            py::gil_scoped_release nogil;
            h = io::read_nifti_header(path, read_options(max_bytes));
          }
          return header_dict(h);
        }, py::arg("path"), py::arg("max_bytes") = 0, "Validated header fields as a dict.");
  m.def("read_nifti", [](const std::string& path, const py::object& dtype, std::uint64_t max_bytes) {
          AnyVolume v;
          const bool native = dtype.is_none();
          DataType t = DataType::Float32;
          if (!native) t = datatype_from_string(py::str(py::dtype::from_args(dtype)));
          {
            py::gil_scoped_release nogil;
            const io::ReadOptions o = read_options(max_bytes);
            if (native) {
              v = io::read_nifti_raw(path, nullptr, o);
            } else {
              switch (t) {
                case DataType::UInt8: v = io::read_nifti<std::uint8_t>(path, o); break;
                case DataType::Int8: v = io::read_nifti<std::int8_t>(path, o); break;
                case DataType::Int16: v = io::read_nifti<std::int16_t>(path, o); break;
                case DataType::UInt16: v = io::read_nifti<std::uint16_t>(path, o); break;
                case DataType::Int32: v = io::read_nifti<std::int32_t>(path, o); break;
                case DataType::UInt32: v = io::read_nifti<std::uint32_t>(path, o); break;
                case DataType::Int64: v = io::read_nifti<std::int64_t>(path, o); break;
                case DataType::UInt64: v = io::read_nifti<std::uint64_t>(path, o); break;
                case DataType::Float32: v = io::read_nifti<float>(path, o); break;
                case DataType::Float64: v = io::read_nifti<double>(path, o); break;
              }
            }
          }
          return wrap(std::move(v));
        }, py::arg("path"), py::arg("dtype") = "float32", py::arg("max_bytes") = 0,
        R"pbdoc(Read a NIfTI file. dtype="float32" (default: HU for CT) or any numpy dtype applies
scl_slope/scl_inter like nibabel's get_fdata; dtype=None keeps the on-disk type, unscaled.
max_bytes: refuse images larger than this (0: the 8 GiB default).)pbdoc");
  m.def("write_nifti", [](const py::object& vol, const std::string& path, int version, int compression_level,
                          int qform_code, int sform_code, double scl_slope, double scl_inter, const std::string& descrip) {
          AnyVolume v = unwrap(vol);
          io::WriteOptions o;
          o.version = version;
          o.compression_level = compression_level;
          o.qform_code = qform_code;
          o.sform_code = sform_code;
          o.scl_slope = scl_slope;
          o.scl_inter = scl_inter;
          o.descrip = descrip;
          py::gil_scoped_release nogil;
          io::write_nifti(v, path, o);
        }, py::arg("volume"), py::arg("path"), py::arg("version") = 1, py::arg("compression_level") = 1,
        py::arg("qform_code") = 1, py::arg("sform_code") = 1, py::arg("scl_slope") = 0.0, py::arg("scl_inter") = 0.0,
        py::arg("descrip") = "",
        "Write a Volume as .nii or .nii.gz (by extension), atomically (temporary file + rename). "
        "compression_level (.nii.gz, 0..12): 1-3 ISA-L igzip's fast levels, 0 (stored) and 4-12 libdeflate's.");
  m.def("read", [](const std::string& path, std::uint64_t max_bytes) {
          AnyVolume v;
          {
            py::gil_scoped_release nogil;
            v = io::read(path, read_options(max_bytes));
          }
          return wrap(std::move(v));
        }, py::arg("path"), py::arg("max_bytes") = 0, "Read any supported image (chosen by content) as float32.");
  m.def("detect_format", [](const std::string& path) {
          switch (io::detect_format(path)) {
            case io::Format::Nifti: return std::string("nifti");
            case io::Format::Dicom: return std::string("dicom");
            case io::Format::DicomFolder: return std::string("dicom_folder");
            default: return std::string("unknown");
          }
        }, py::arg("path"), "'nifti', 'dicom', 'dicom_folder' or 'unknown', judged by content.");
  m.def("is_dicom", &io::is_dicom, py::arg("path"), py::call_guard<py::gil_scoped_release>());
  m.def("list_series", [](const std::string& path, std::size_t max_files) {
          std::vector<io::DicomSeries> series;
          {
            py::gil_scoped_release nogil;
            io::ScanOptions o;
            o.max_files = max_files;
            series = io::list_series(path, o);
          }
          py::list out;
          for (const auto& s : series) {
            py::dict d;
            d["key"] = s.key;
            d["series_uid"] = s.series_uid;
            d["study_uid"] = s.study_uid;
            d["description"] = s.description;
            d["modality"] = s.modality;
            d["kernel"] = s.kernel;
            d["kind"] = io::to_string(s.kind);
            d["orientation"] = s.orientation;
            d["rows"] = s.rows;
            d["columns"] = s.columns;
            d["images"] = s.images;
            d["files"] = s.files;
            out.append(d);
          }
          return out;
        }, py::arg("path"), py::arg("max_files") = 200000,
        "Series in a DICOM folder (headers only, recursive, symlinks not followed), one dict each.");
  m.def("read_dicom", [](const std::string& path, const py::object& series, const std::string& tilt,
                         const std::string& spacing, double slice_spacing, float fill_hu) {
          io::DicomReadOptions o;
          if (!series.is_none()) o.series = series.cast<std::string>();
          if (tilt == "resample") o.tilt = io::TiltMode::Resample;
          else if (tilt == "keep") o.tilt = io::TiltMode::Keep;
          else throw InvalidArgument("tilt must be 'resample' or 'keep', not '" + tilt + "'");
          if (spacing == "resample") o.spacing = io::SpacingMode::Resample;
          else if (spacing == "refuse") o.spacing = io::SpacingMode::Refuse;
          else throw InvalidArgument("spacing must be 'resample' or 'refuse', not '" + spacing + "'");
          if (!(slice_spacing >= 0)) throw InvalidArgument("slice_spacing must be >= 0 mm");
          o.slice_spacing = slice_spacing;
          o.fill_hu = fill_hu;
          io::DicomVolume dv;
          {
            py::gil_scoped_release nogil;
            dv = io::read_dicom(path, o);
          }
          py::object report = py::module_::import("json").attr("loads")(dv.report.to_json());
          return py::make_tuple(wrap(dv.volume), report);
        }, py::arg("path"), py::arg("series") = py::none(), py::arg("tilt") = "resample", py::arg("spacing") = "resample",
        py::arg("slice_spacing") = 0.0, py::arg("fill_hu") = -1024.0f,
        R"pbdoc(Read a DICOM series (folder or file) into a float32 HU Volume with a RAS affine.
Returns (volume, report): the report says the gantry tilt, slice spacings, gaps, duplicates,
non-HU data and what was done. tilt="resample" (default) removes gantry-tilt shear by resampling
in world space, "keep" keeps the sheared affine; spacing="resample" (default) makes varying slice
spacing uniform (slice_spacing mm, default the smallest), "refuse" raises GeometryError.)pbdoc");
}

}  // namespace ichkit::python
