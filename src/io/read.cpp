#include "ichkit/io/read.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

namespace ichkit::io {

Format detect_format(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw IoError("cannot open '" + path + "': " + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) return Format::DicomFolder;
  if (!S_ISREG(st.st_mode)) return Format::Unknown;
  if (is_nifti(path)) return Format::Nifti;
  if (is_dicom(path)) return Format::Dicom;
  return Format::Unknown;
}

namespace {

// read() with or without the value stats: one format dispatch for both.
Volume<float> read_impl(const std::string& path, const ReadOptions& options, ValueStats* stats) {
  switch (detect_format(path)) {
    case Format::Nifti: return stats ? read_nifti(path, options, *stats) : read_nifti<float>(path, options);
    case Format::Dicom:
    case Format::DicomFolder: {
      DicomReadOptions o;
      o.max_bytes = options.max_bytes;
      DicomVolume dv = read_dicom(path, o);
      if (stats) *stats = dv.stats;
      return std::move(dv.volume);
    }
    case Format::Unknown: break;
  }
  throw FormatError("'" + path + "' is not an image ichkit can read (supported: NIfTI-1/2 .nii/.nii.gz, DICOM files and folders)");
}

}  // namespace

Volume<float> read(const std::string& path, const ReadOptions& options) { return read_impl(path, options, nullptr); }

Volume<float> read(const std::string& path, const ReadOptions& options, ValueStats& stats) {
  return read_impl(path, options, &stats);
}

}  // namespace ichkit::io
