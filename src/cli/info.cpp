// `ichkit info FILE`: dimensions, spacing, affine, orientation and value range of an image.
#include <algorithm>
#include <cmath>
#include <iostream>
#include <limits>

#include "cli.h"
#include "ichkit/core/runtime.h"
#include "ichkit/core/value_stats.h"
#include "ichkit/io/dicom.h"
#include "ichkit/io/nifti.h"
#include "ichkit/io/read.h"

namespace ichkit::cli {

namespace {
struct InfoArgs {
  std::vector<std::string> paths;
  bool json = false;
};

// `st`: v's value stats, as its reader gathered them (no second pass over the voxels)
nlohmann::json describe_volume(const Volume<float>& v, const ValueStats& st) {
  nlohmann::json j;
  j["shape"] = {v.ni(), v.nj(), v.nk()};
  auto sp = v.spacing();
  j["spacing_mm"] = {sp[0], sp[1], sp[2]};
  auto o = v.geometry().origin();
  j["origin_mm"] = {o[0], o[1], o[2]};
  nlohmann::json aff = nlohmann::json::array();
  for (int r = 0; r < 4; ++r) aff.push_back({v.affine()(r, 0), v.affine()(r, 1), v.affine()(r, 2), v.affine()(r, 3)});
  j["affine"] = aff;
  j["orientation"] = v.geometry().orientation_code();
  j["orthogonal"] = v.geometry().is_orthogonal();
  j["voxel_volume_ml"] = std::abs(v.affine().topLeftCorner<3, 3>().determinant()) / 1000.0;
  j["extent_mm"] = {sp[0] * v.ni(), sp[1] * v.nj(), sp[2] * v.nk()};
  if (st.nan == v.size()) j["value_range"] = nullptr;
  else j["value_range"] = {st.lo, st.hi};
  j["nan_voxels"] = st.nan;
  return j;
}

nlohmann::json describe(const std::string& path) {
  const io::Format f = io::detect_format(path);
  if (f == io::Format::Nifti) {
    io::NiftiHeader h = io::read_nifti_header(path);
    ValueStats st;
    const Volume<float> v = io::read_nifti(path, {}, st);
    nlohmann::json j = describe_volume(v, st);
    j["path"] = path;
    j["format"] = h.version == 1 ? "NIfTI-1" : "NIfTI-2";
    j["compressed"] = h.compressed;
    j["datatype"] = to_string(h.datatype);
    j["qform_code"] = h.qform_code;
    j["sform_code"] = h.sform_code;
    j["affine_source"] = h.sform_code > 0 ? "sform" : (h.qform_code > 0 ? "qform" : "pixdim (no qform/sform)");
    j["scl_slope"] = h.scl_slope;
    j["scl_inter"] = h.scl_inter;
    j["description"] = h.descrip;
    return j;
  }
  if (f == io::Format::Dicom || f == io::Format::DicomFolder) {
    std::vector<std::string> warnings;
    auto series = io::list_series(path, {}, &warnings);
    io::DicomVolume dv = io::read_dicom(path);
    nlohmann::json j = describe_volume(dv.volume, dv.stats);
    j["path"] = path;
    j["format"] = "DICOM";
    j["datatype"] = "float32 (HU)";
    nlohmann::json list = nlohmann::json::array();
    for (const auto& s : series)
      list.push_back({{"key", s.key}, {"series_uid", s.series_uid}, {"description", s.description}, {"modality", s.modality},
                      {"kernel", s.kernel}, {"kind", io::to_string(s.kind)}, {"orientation", s.orientation},
                      {"images", s.images}, {"rows", s.rows}, {"columns", s.columns}, {"files", s.files.size()}});
    j["series"] = list;
    j["report"] = nlohmann::json::parse(dv.report.to_json());
    j["affine_source"] = "DICOM ImagePositionPatient/ImageOrientationPatient/PixelSpacing (LPS -> RAS)";
    return j;
  }
  throw FormatError("'" + path + "' is not an image ichkit can read (supported: NIfTI-1/2 .nii/.nii.gz, DICOM files and folders)");
}

void print_text(const nlohmann::json& j) {
  std::cout << j["path"].get<std::string>() << "\n";
  if (j.contains("series")) {
    std::cout << "  series       " << j["series"].size() << " found\n";
    for (auto& s : j["series"])
      std::cout << "    " << s["key"].get<std::string>() << "  " << s["kind"].get<std::string>() << ", "
                << s["orientation"].get<std::string>() << ", " << s["images"] << " images " << s["columns"] << "x" << s["rows"]
                << (s["description"].get<std::string>().empty() ? "" : ", '" + s["description"].get<std::string>() + "'")
                << (s["kernel"].get<std::string>().empty() ? "" : ", kernel " + s["kernel"].get<std::string>()) << "\n";
    const auto& r = j["report"];
    std::cout << "  read         " << r["series_key"].get<std::string>() << " (" << r["images"] << " images)\n";
    std::cout << "  gantry tilt  " << fixed(r["tilt_deg"], 2) << " deg\n";
    std::cout << "  slice step   " << fixed(r["spacing_min_mm"], 2) << " / " << fixed(r["spacing_median_mm"], 2) << " / "
              << fixed(r["spacing_max_mm"], 2) << " mm (min / median / max along the normal)"
              << (r["uniform_spacing"].get<bool>() ? "" : ", varying") << "\n";
    if (!r["gaps"].empty()) std::cout << "  gaps         " << r["gaps"].size() << " (missing slices)\n";
    if (r["duplicates"].get<int>() > 0) std::cout << "  duplicates   " << r["duplicates"] << "\n";
    if (r["non_hu"].get<bool>()) std::cout << "  NOT HU       " << r["non_hu_reason"].get<std::string>() << "\n";
    for (auto& a : r["actions"]) std::cout << "  done:        " << a.get<std::string>() << "\n";
    for (auto& w : r["warnings"]) std::cout << "  warning:     " << w.get<std::string>() << "\n";
  }
  std::cout << "  format       " << j["format"].get<std::string>()
            << (j.value("compressed", false) ? " (gzip)" : "") << ", " << j["datatype"].get<std::string>() << "\n";
  auto s = j["shape"];
  std::cout << "  shape        " << s[0] << " x " << s[1] << " x " << s[2] << "  (i, j, k)\n";
  auto sp = j["spacing_mm"];
  std::cout << "  spacing      " << fixed(sp[0], 4) << " x " << fixed(sp[1], 4) << " x " << fixed(sp[2], 4) << " mm\n";
  std::cout << "  orientation  " << j["orientation"].get<std::string>()
            << (j["orthogonal"].get<bool>() ? "" : "  (oblique / sheared axes: e.g. gantry tilt)") << "\n";
  std::cout << "  affine       (" << j["affine_source"].get<std::string>() << ", index -> RAS mm)\n";
  for (auto& row : j["affine"])
    std::cout << "               [" << fixed(row[0], 4) << ", " << fixed(row[1], 4) << ", " << fixed(row[2], 4) << ", "
              << fixed(row[3], 4) << "]\n";
  if (j["value_range"].is_null()) {
    std::cout << "  values       all NaN\n";
  } else {
    std::cout << "  values       " << fixed(j["value_range"][0], 1) << " .. " << fixed(j["value_range"][1], 1)
              << " (HU for CT)";
    if (j.contains("scl_slope") && (j["scl_slope"].get<double>() != 1 || j["scl_inter"].get<double>() != 0))
      std::cout << "  scaled: slope " << j["scl_slope"].get<double>() << ", intercept " << j["scl_inter"].get<double>();
    std::cout << "\n";
  }
  if (j["nan_voxels"].get<std::size_t>() > 0) std::cout << "  NaN voxels   " << j["nan_voxels"] << "\n";
  std::cout << "  voxel volume " << fixed(j["voxel_volume_ml"], 6) << " mL\n";
}
}  // namespace

Runner add_info(CLI::App& app, Globals& g) {
  auto args = std::make_shared<InfoArgs>();
  auto* cmd = app.add_subcommand("info", "Describe images: shape, spacing, affine, orientation, value range");
  cmd->add_option("paths", args->paths, "NIfTI files (.nii, .nii.gz), DICOM files or DICOM folders")->required()->check(CLI::ExistingPath);
  cmd->add_flag("--json", args->json, "Print JSON instead of text");
  cmd->footer("Examples:\n  ichkit info scan.nii.gz\n  ichkit info DICOM_FOLDER      # series list + geometry report\n"
              "  ichkit info --json images/*.nii.gz > info.json");
  return [args, &g]() {
    nlohmann::json all = nlohmann::json::array();
    for (const auto& p : args->paths) {
      auto j = describe(p);
      if (args->json) all.push_back(j);
      else print_text(j);
    }
    if (args->json) std::cout << (all.size() == 1 ? all[0] : all).dump(2) << "\n";
    return 0;
  };
}

}  // namespace ichkit::cli
