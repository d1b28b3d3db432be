// `ichkit convert IN OUT`: DICOM folder/file or NIfTI in, NIfTI out (float32 HU by default).
#include <cmath>
#include <iostream>
#include <limits>

#include "cli.h"
#include "ichkit/core/version.h"
#include "ichkit/io/dicom.h"
#include "ichkit/io/nifti.h"
#include "ichkit/io/read.h"

namespace ichkit::cli {

namespace {
struct ConvertArgs {
  std::string in, out, series, tilt = "resample", spacing = "resample", dtype = "float32";
  double slice_spacing = 0;
  bool json = false;
};

template <class T>
Volume<T> to_type(const Volume<float>& v) {
  if constexpr (std::is_same<T, float>::value) return v;
  Volume<T> o = Volume<T>::uninitialized(v.shape(), v.geometry());
  for (std::size_t n = 0; n < v.size(); ++n) {
    const double x = std::nearbyint(static_cast<double>(v.data()[n]));
    if (!(x >= double(std::numeric_limits<T>::lowest()) && x <= double(std::numeric_limits<T>::max())))
      throw InvalidArgument("value " + std::to_string(v.data()[n]) + " does not fit " + std::string(to_string(datatype_of<T>::value)));
    o.data()[n] = static_cast<T>(x);
  }
  return o;
}
}  // namespace

Runner add_convert(CLI::App& app, Globals& g) {
  auto a = std::make_shared<ConvertArgs>();
  auto* cmd = app.add_subcommand("convert", "Convert a DICOM series (folder or file) or a NIfTI file to NIfTI");
  cmd->add_option("input", a->in, "DICOM folder, DICOM file or NIfTI file")->required()->check(CLI::ExistingPath);
  cmd->add_option("output", a->out, "Output .nii or .nii.gz")->required();
  cmd->add_option("--series", a->series, "Series UID (or split key UID#n) to read; default: the axial CT series with the most images");
  cmd->add_option("--tilt", a->tilt, "Gantry tilt: resample onto an orthogonal grid, or keep the sheared affine (sform)")
      ->check(CLI::IsMember({"resample", "keep"}));
  cmd->add_option("--spacing", a->spacing, "Varying slice spacing / missing slices: resample to uniform, or refuse")
      ->check(CLI::IsMember({"resample", "refuse"}));
  cmd->add_option("--slice-spacing", a->slice_spacing, "Output slice spacing in mm when resampling (default: smallest found)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--dtype", a->dtype, "Output voxel type (values are rounded for integer types)")
      ->check(CLI::IsMember({"float32", "int16"}));
  cmd->add_flag("--json", a->json, "Print the geometry report as JSON");
  cmd->footer("Examples:\n  ichkit convert DICOM_FOLDER head.nii.gz\n"
              "  ichkit convert DICOM_FOLDER head.nii.gz --series 1.2.840.113619.2.1.2 --tilt keep\n"
              "  ichkit convert head.nii head.nii.gz --dtype int16");
  return [a, &g]() {
    const io::Format f = io::detect_format(a->in);
    Volume<float> v;
    std::string report;
    if (f == io::Format::Dicom || f == io::Format::DicomFolder) {
      io::DicomReadOptions o;
      o.series = a->series;
      o.tilt = a->tilt == "keep" ? io::TiltMode::Keep : io::TiltMode::Resample;
      o.spacing = a->spacing == "refuse" ? io::SpacingMode::Refuse : io::SpacingMode::Resample;
      o.slice_spacing = a->slice_spacing;
      io::DicomVolume dv = io::read_dicom(a->in, o);
      v = dv.volume;
      report = dv.report.to_json();
      if (!g.quiet && !a->json) {
        for (const auto& s : dv.report.actions) std::cerr << "ichkit: " << s << "\n";
        for (const auto& s : dv.report.warnings) std::cerr << "ichkit: warning: " << s << "\n";
      }
    } else if (f == io::Format::Nifti) {
      if (!a->series.empty()) throw InvalidArgument("--series applies to DICOM input only");
      v = io::read_nifti<float>(a->in);
    } else {
      throw FormatError("'" + a->in + "' is not an image ichkit can read");
    }
    io::WriteOptions wo;
    wo.descrip = "ichkit " + std::string(ichkit::version());
    if (a->dtype == "int16") io::write_nifti(to_type<std::int16_t>(v), a->out, wo);
    else io::write_nifti(v, a->out, wo);
    if (a->json) std::cout << (report.empty() ? "{}" : report) << "\n";
    else if (!g.quiet)
      std::cout << "wrote " << a->out << " (" << v.ni() << " x " << v.nj() << " x " << v.nk() << ", "
                << v.geometry().orientation_code() << ")\n";
    return 0;
  };
}

}  // namespace ichkit::cli
